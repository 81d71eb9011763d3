//! One HTTP exchange with bounded retries, backoff with jitter and rate-limit courtesy.
//!
//! Retry rules:
//! * 429 and 503 are retried for every request: the service refused it before doing anything.
//! * Other 5xx, timeouts and connections lost after sending are retried only for requests that
//!   may be repeated (`Replay::Safe`: token, status, cancel). A run request (`Replay::Once`) that
//!   may have reached Azure is never sent again: a second run would deploy twice.
//! * Connection failures (nothing was sent) are retried for every request.
//! * The wait is `Retry-After` when the answer has one, else `base * 2^attempt` with "equal
//!   jitter" (a random point in its upper half), both capped at `max_delay`. A `Retry-After`
//!   longer than `max_delay` is not waited out here: the caller gets `RateLimited` at once and
//!   the engine reschedules the task, so no task holds the engine for minutes.
//!
//! Slowing down: Azure DevOps reports its budget in `X-RateLimit-Limit`/`-Remaining`/`-Reset`
//! (epoch seconds). When at most 10 % of the budget is left (or at most 10 units without a
//! limit), the next requests of this executor are spaced so the rest lasts until the reset:
//! `(reset - now) / (remaining + 1)`, capped at `max_delay`. A `Retry-After` on a successful
//! answer (Azure is already delaying us) pauses the next request by that much.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use actix_web::http::{Method, StatusCode};
use actix_web::rt::time::sleep;
use actix_web::web::Bytes;
use awc::error::SendRequestError;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::Value;

use super::errors::parse_retry_after;
use crate::executor::view::Tail;
use crate::executor::ExecutorError;
use crate::metrics::{ExecutorMetrics, WaitReason};

const BODY_LIMIT: usize = 4 * 1024 * 1024;
/// What is read of a non-2xx answer to a log content request: enough for Azure's error JSON.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
const USER_AGENT_VALUE: &str = concat!("odm-devops/", env!("CARGO_PKG_VERSION"));

/// An answer, read whole.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after").and_then(parse_retry_after)
    }
}

/// What goes in the request body. Not `Debug`: a form may hold the client secret.
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    Empty,
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Sending it twice does no harm.
    Safe,
    /// Creates something: resend only when the answer proves nothing was created.
    Once,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// The longest single wait, whatever the configuration or an answer says: backoff, pause,
/// `Retry-After` (larger ones are taken as this), so no wait can overflow an `Instant`.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(3600);

impl RetryPolicy {
    /// From the configured milliseconds, each capped at [`MAX_WAIT`].
    pub fn new(max_retries: u32, base_delay_ms: u64, max_delay_ms: u64) -> RetryPolicy {
        let base_delay = Duration::from_millis(base_delay_ms).min(MAX_WAIT);
        RetryPolicy {
            max_retries,
            base_delay,
            max_delay: Duration::from_millis(max_delay_ms)
                .max(base_delay)
                .min(MAX_WAIT),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max_delay);
        let half = full / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=full - half)
    }
}

pub(crate) struct HttpClient {
    client: awc::Client,
    policy: RetryPolicy,
    /// Rate-limit courtesy shared by every request of this executor (one System thread).
    not_before: Cell<Option<Instant>>,
    pub metrics: ExecutorMetrics,
}

enum Failure {
    /// Nothing reached the server.
    NotSent(String),
    /// The request may have been received and acted on.
    MaybeSent(String),
    /// It can never work (bad URL).
    Broken(String),
}

impl HttpClient {
    pub fn new(connect_timeout: Duration, request_timeout: Duration, policy: RetryPolicy) -> Self {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().timeout(connect_timeout))
            .timeout(request_timeout)
            // A redirect from Azure DevOps leads to a sign-in page; report it, don't follow it.
            .disable_redirects()
            .no_default_headers()
            .finish();
        HttpClient {
            client,
            policy,
            not_before: Cell::new(None),
            metrics: ExecutorMetrics::default(),
        }
    }

    /// Sends until an answer is final. Non-2xx answers are returned as `Ok` once retries are
    /// over (or not allowed); the caller maps them with `errors::error_for`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&HeaderValue>,
        payload: Payload<'_>,
        replay: Replay,
    ) -> Result<Reply, ExecutorError> {
        let mut attempt = 0;
        loop {
            self.wait_for_budget().await;
            let outcome = self.send_once(&method, url, authorization, &payload).await;
            match &outcome {
                Ok(reply) => self.metrics.answered(reply.status.as_u16()),
                Err(Failure::NotSent(_) | Failure::MaybeSent(_)) => self.metrics.no_answer(),
                Err(Failure::Broken(_)) => {}
            }
            let last = attempt >= self.policy.max_retries;
            let (delay, reason) = match outcome {
                Ok(reply) => {
                    self.note_budget(&reply);
                    let retryable = match reply.status.as_u16() {
                        429 | 503 => true,
                        500 | 502 | 504 => replay == Replay::Safe,
                        _ => false,
                    };
                    if !retryable || last {
                        return Ok(reply);
                    }
                    let (delay, reason) = match reply.retry_after() {
                        Some(wait) if wait > self.policy.max_delay => return Ok(reply),
                        Some(wait) => (wait, WaitReason::RetryAfter),
                        None => (self.policy.backoff(attempt), WaitReason::Backoff),
                    };
                    tracing::warn!(%method, attempt, status = reply.status.as_u16(),
                        delay_ms = delay.as_millis() as u64, "provider refused the request, retrying");
                    (delay, reason)
                }
                Err(Failure::Broken(message)) => return Err(ExecutorError::InvalidTask(message)),
                Err(Failure::MaybeSent(message)) if replay == Replay::Once => {
                    return Err(ExecutorError::OutcomeUnknown(format!(
                        "{message}; the request may have reached Azure DevOps and created the \
                         run, so it is not sent again: the task waits for its callback"
                    )))
                }
                Err(Failure::MaybeSent(message) | Failure::NotSent(message)) => {
                    if last {
                        return Err(ExecutorError::Transient(format!(
                            "{message} (after {} attempts)",
                            attempt + 1
                        )));
                    }
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(%method, attempt, error = %message,
                        delay_ms = delay.as_millis() as u64, "request failed, retrying");
                    (delay, WaitReason::Backoff)
                }
            };
            self.metrics.retry();
            self.metrics.waited(reason, delay);
            sleep(delay).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        authorization: Option<&HeaderValue>,
        payload: &Payload<'_>,
    ) -> Result<Reply, Failure> {
        let mut request = self
            .client
            .request(method.clone(), url)
            .insert_header((ACCEPT, "application/json"))
            .insert_header((USER_AGENT, USER_AGENT_VALUE))
            // Without it Azure DevOps answers a bad credential with a sign-in page, not a 401.
            .insert_header(("X-TFS-FedAuthRedirect", "Suppress"));
        if let Some(value) = authorization {
            request = request.insert_header((AUTHORIZATION, value.clone()));
        }
        let sent = match payload {
            Payload::Empty => request.send().await,
            Payload::Json(value) => request.send_json(value).await,
            Payload::Form(fields) => request.send_form(fields).await,
        };
        let mut response = sent.map_err(classify)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.body().limit(BODY_LIMIT).await.map_err(|e| {
            Failure::MaybeSent(format!(
                "the answer (HTTP {}) could not be read: {e}",
                status.as_u16()
            ))
        })?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// GETs a pre-signed `url` (no credentials: it carries its own signature, and the host is
    /// whatever Azure DevOps named) keeping only the last `keep` bytes of its body. Retried as a
    /// status read is (429, 5xx, lost connections). `Ok(Err(reply))`: a final non-2xx answer.
    pub async fn get_tail(
        &self,
        url: &str,
        keep: usize,
    ) -> Result<Result<(Vec<u8>, bool), Reply>, ExecutorError> {
        let mut attempt = 0;
        loop {
            self.wait_for_budget().await;
            let outcome = self.get_tail_once(url, keep).await;
            match &outcome {
                Ok(Ok(_)) => self.metrics.answered(200),
                Ok(Err(reply)) => self.metrics.answered(reply.status.as_u16()),
                Err(Failure::NotSent(_) | Failure::MaybeSent(_)) => self.metrics.no_answer(),
                Err(Failure::Broken(_)) => {}
            }
            let last = attempt >= self.policy.max_retries;
            let (delay, reason) = match outcome {
                Ok(Ok(tail)) => return Ok(Ok(tail)),
                Ok(Err(reply)) => {
                    self.note_budget(&reply);
                    let retryable = matches!(reply.status.as_u16(), 429 | 500 | 502 | 503 | 504);
                    if !retryable || last {
                        return Ok(Err(reply));
                    }
                    match reply.retry_after() {
                        Some(wait) if wait > self.policy.max_delay => return Ok(Err(reply)),
                        Some(wait) => (wait, WaitReason::RetryAfter),
                        None => (self.policy.backoff(attempt), WaitReason::Backoff),
                    }
                }
                Err(Failure::Broken(message)) => return Err(ExecutorError::InvalidTask(message)),
                Err(Failure::MaybeSent(message) | Failure::NotSent(message)) => {
                    if last {
                        return Err(ExecutorError::Transient(format!(
                            "{message} (after {} attempts)",
                            attempt + 1
                        )));
                    }
                    (self.policy.backoff(attempt), WaitReason::Backoff)
                }
            };
            self.metrics.retry();
            self.metrics.waited(reason, delay);
            sleep(delay).await;
            attempt += 1;
        }
    }

    async fn get_tail_once(
        &self,
        url: &str,
        keep: usize,
    ) -> Result<Result<(Vec<u8>, bool), Reply>, Failure> {
        let mut response = self
            .client
            .get(url)
            .insert_header((ACCEPT, "text/plain"))
            .insert_header((USER_AGENT, USER_AGENT_VALUE))
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        // 203 is Azure's sign-in page: no log text.
        if !status.is_success() || status == StatusCode::NON_AUTHORITATIVE_INFORMATION {
            let headers = response.headers().clone();
            let body = response
                .body()
                .limit(ERROR_BODY_LIMIT)
                .await
                .unwrap_or_default();
            return Ok(Err(Reply {
                status,
                headers,
                body,
            }));
        }
        let mut tail = Tail::new(keep);
        while let Some(chunk) = response.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::MaybeSent(format!("the log text could not be read whole: {e}"))
            })?;
            tail.push(&chunk);
        }
        Ok(Ok(tail.finish()))
    }

    async fn wait_for_budget(&self) {
        if let Some(at) = self.not_before.get() {
            let now = Instant::now();
            if at > now {
                self.metrics.waited(WaitReason::RateLimit, at - now);
                sleep(at - now).await;
            }
        }
    }

    fn note_budget(&self, reply: &Reply) {
        let pause = if reply.status.is_success() {
            reply
                .retry_after()
                .or_else(|| budget_pause(reply, unix_now(), self.policy.max_delay))
        } else {
            budget_pause(reply, unix_now(), self.policy.max_delay)
        };
        if let Some(pause) = pause.map(|p| p.min(self.policy.max_delay)) {
            // At most MAX_WAIT: this cannot overflow.
            let until = Instant::now() + pause;
            if self.not_before.get().is_none_or(|at| at < until) {
                tracing::info!(
                    pause_ms = pause.as_millis() as u64,
                    "Azure DevOps budget low, slowing down"
                );
                self.not_before.set(Some(until));
            }
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// When the budget is low, the pause that makes the rest last until `X-RateLimit-Reset`
/// (epoch seconds; `now` likewise), at most `cap`. Headers that are not finite numbers are
/// ignored, and a reset years away is `cap`: no answer can overflow a duration.
fn budget_pause(reply: &Reply, now: f64, cap: Duration) -> Option<Duration> {
    let number = |name: &str| {
        reply
            .header(name)?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
    };
    let remaining = number("x-ratelimit-remaining")?;
    let low = match number("x-ratelimit-limit") {
        Some(limit) if limit > 0.0 => remaining <= limit * 0.1,
        _ => remaining <= 10.0,
    };
    if !low {
        return None;
    }
    let window = number("x-ratelimit-reset")
        .map(|reset| reset - now)
        .filter(|w| *w > 0.0)
        .unwrap_or(1.0);
    let pause = Duration::try_from_secs_f64(window / (remaining.max(0.0) + 1.0)).unwrap_or(cap);
    Some(pause.min(cap))
}

fn classify(error: SendRequestError) -> Failure {
    match error {
        SendRequestError::Connect(e) => Failure::NotSent(format!("could not connect: {e}")),
        SendRequestError::Url(e) => Failure::Broken(format!("invalid request URL: {e}")),
        SendRequestError::Http(e) => Failure::Broken(format!("invalid request: {e}")),
        SendRequestError::Timeout => {
            Failure::MaybeSent("no answer within the request timeout".to_owned())
        }
        other => Failure::MaybeSent(format!("the exchange failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn reply(headers: &[(&str, &str)]) -> Reply {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Reply {
            status: StatusCode::OK,
            headers: map,
            body: Bytes::new(),
        }
    }

    const CAP: Duration = Duration::from_secs(30);
    const NOW: f64 = 1_700_000_000.0;

    #[test]
    fn a_low_budget_spreads_the_rest_until_the_reset() {
        let low = reply(&[
            ("x-ratelimit-limit", "200"),
            ("x-ratelimit-remaining", "9"),
            ("x-ratelimit-reset", "1700000010"),
        ]);
        assert_eq!(budget_pause(&low, NOW, CAP), Some(Duration::from_secs(1)));
        let plenty = reply(&[
            ("x-ratelimit-limit", "200"),
            ("x-ratelimit-remaining", "150"),
        ]);
        assert_eq!(budget_pause(&plenty, NOW, CAP), None);
    }

    /// A reset of 1e300 or u64::MAX once panicked the engine (`Duration::from_secs_f64`).
    #[test]
    fn absurd_rate_limit_headers_saturate_at_the_cap() {
        for reset in [
            "1e300",
            "18446744073709551615",
            "1e19",
            "inf",
            "-inf",
            "NaN",
            "-5",
            "soon",
        ] {
            let pause = budget_pause(
                &reply(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)]),
                NOW,
                CAP,
            );
            assert!(pause.is_some_and(|p| p <= CAP), "reset {reset}: {pause:?}");
        }
        for remaining in [
            "-1e300",
            "-18446744073709551615",
            "1e300",
            "NaN",
            "inf",
            "x",
        ] {
            let pause = budget_pause(
                &reply(&[
                    ("x-ratelimit-remaining", remaining),
                    ("x-ratelimit-reset", "1e300"),
                ]),
                NOW,
                CAP,
            );
            assert!(
                pause.is_none_or(|p| p <= CAP),
                "remaining {remaining}: {pause:?}"
            );
        }
        let tiny_remaining = reply(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000000.5"),
        ]);
        assert_eq!(
            budget_pause(&tiny_remaining, NOW, CAP),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn configured_waits_are_capped_at_an_hour() {
        let policy = RetryPolicy::new(3, u64::MAX, u64::MAX);
        assert_eq!((policy.base_delay, policy.max_delay), (MAX_WAIT, MAX_WAIT));
        assert!(policy.backoff(u32::MAX) <= MAX_WAIT);
        let policy = RetryPolicy::new(3, 500, 100);
        assert_eq!(policy.max_delay, Duration::from_millis(500));
    }

    #[test]
    fn an_absurd_retry_after_is_an_hour() {
        let answer = reply(&[("retry-after", "18446744073709551615")]);
        assert_eq!(answer.retry_after(), Some(MAX_WAIT));
        assert_eq!(reply(&[("retry-after", "-1")]).retry_after(), None);
        assert_eq!(reply(&[("retry-after", "1e300")]).retry_after(), None);
    }
}
