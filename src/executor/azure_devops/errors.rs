//! Azure DevOps and Microsoft Entra answers turned into `ExecutorError`s whose text a user can act
//! on: the provider's own message and type, plus what to change when we know it.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::Value;

use super::http::{Reply, MAX_WAIT};
use crate::executor::ExecutorError;

/// What a request was for, so messages say "the run request", "the status request", ….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Run,
    Status,
    Cancel,
    /// Listing a run's logs, or reading one.
    Logs,
    /// The run request with `previewRun: true`: it creates nothing, so any failure is safe to
    /// repeat.
    Preview,
}

impl Purpose {
    fn text(self) -> &'static str {
        match self {
            Purpose::Run => "the run request",
            Purpose::Status => "the run status request",
            Purpose::Cancel => "the cancel request",
            Purpose::Logs => "the run logs request",
            Purpose::Preview => "the preview run request",
        }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Some Azure front ends put a UTF-8 byte order mark before the JSON; serde refuses it.
pub(crate) fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(BOM).unwrap_or(body)
}

/// The JSON of a successful answer, or the error it stands for.
pub(crate) fn expect_json(reply: &Reply, purpose: Purpose) -> Result<Value, ExecutorError> {
    let status = reply.status;
    if status.is_success() {
        let body = strip_bom(&reply.body);
        return serde_json::from_slice(body).map_err(|_| {
            // Azure DevOps answers unauthenticated calls with a 203 and its sign-in page.
            ExecutorError::Unauthorized(format!(
                "authentication failed: Azure DevOps answered {} with a non-JSON page (HTTP {}, \
                 {}), which is what it does when it does not accept the credentials: check the \
                 executor's client id/secret or PAT and that the identity belongs to the \
                 organization",
                purpose.text(),
                status.as_u16(),
                reply.content_type().unwrap_or("no content type"),
            ))
        });
    }
    Err(error_for(reply, purpose))
}

/// The error for a non-2xx answer (after the HTTP layer gave up retrying it).
pub(crate) fn error_for(reply: &Reply, purpose: Purpose) -> ExecutorError {
    let status = reply.status;
    let code = status.as_u16();
    let detail = azure_detail(&reply.body);
    let what = purpose.text();
    match code {
        300..=399 => ExecutorError::Unauthorized(format!(
            "authentication failed: Azure DevOps redirected {what} (HTTP {code}) to {}, a sign-in \
             page: check the executor's credentials",
            reply.header("location").unwrap_or("another page")
        )),
        401 | 403 => ExecutorError::Unauthorized(format!(
            "Azure DevOps refused {what} (HTTP {code}): {}. Check that the service principal or \
             PAT belongs to the organization and may queue and read this pipeline's runs",
            detail.as_deref().unwrap_or("not authorized")
        )),
        429 => ExecutorError::RateLimited {
            retry_after: reply.retry_after(),
            message: format!(
                "Azure DevOps still asked to slow down after every retry of {what}: {}",
                detail.as_deref().unwrap_or("HTTP 429")
            ),
        },
        500..=599 if purpose == Purpose::Run && !may_retry_run(reply) => {
            ExecutorError::OutcomeUnknown(format!(
                "Azure DevOps answered {what} with HTTP {code}{}: the run may or may not have \
                 been created, so it is not sent again; the task waits for its callback",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ))
        }
        500..=599 => ExecutorError::Transient(format!(
            "Azure DevOps failed {what} with HTTP {code}{}",
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        )),
        _ => ExecutorError::InvalidTask(format!(
            "Azure DevOps rejected {what} (HTTP {code}): {}",
            detail.unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned())
        )),
    }
}

/// A 5xx that created nothing: 503 (the service refused to take it) or an answer in Azure's own
/// error shape (the service ran and threw before creating the run). A bare 500/502/504 from a
/// gateway may hide a run created behind it.
pub(crate) fn may_retry_run(reply: &Reply) -> bool {
    reply.status == StatusCode::SERVICE_UNAVAILABLE
        || serde_json::from_slice::<Value>(strip_bom(&reply.body))
            .ok()
            .is_some_and(|v| v.get("typeKey").is_some())
}

/// Azure's error text: `message (typeKey)`, the validation results when it sends them, and a
/// hint for the two mistakes everyone makes with pipeline parameters.
fn azure_detail(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(strip_bom(body)).ok()?;
    let message = json.get("message").and_then(Value::as_str)?.trim();
    let mut text = match json.get("typeKey").and_then(Value::as_str) {
        Some(key) => format!("{message} [{key}]"),
        None => message.to_owned(),
    };
    let results: Vec<&str> = json
        .pointer("/customProperties/ValidationResults")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|r| r.get("message").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if !results.is_empty() {
        text.push_str(": ");
        text.push_str(&results.join("; "));
    }
    if text.contains("Unexpected parameter") {
        text.push_str(
            ". Every parameter the task sends must be declared in the `parameters:` section of \
             the pipeline YAML: each key of configurations.params, and `callbackRef` (type: \
             string), which this service always sends",
        );
    } else if text.contains("parameter must be provided") {
        text.push_str(
            ". Give that parameter a value in configurations.params or a default in the \
             pipeline YAML",
        );
    }
    Some(text)
}

/// Entra's answer to a failed token request: `error: error_description`.
pub(crate) fn entra_error(reply: &Reply) -> ExecutorError {
    let code = reply.status.as_u16();
    let json: Option<Value> = serde_json::from_slice(strip_bom(&reply.body)).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match (field("error"), field("error_description")) {
        (Some(error), description) if code < 500 && code != 429 => {
            ExecutorError::Unauthorized(format!(
                "Microsoft Entra refused the executor's client credentials (HTTP {code}): \
                 {error}: {}",
                description.unwrap_or_default()
            ))
        }
        (error, description) => {
            let detail = error
                .map(|e| format!(": {e}: {}", description.unwrap_or_default()))
                .unwrap_or_default();
            if code == 429 {
                ExecutorError::RateLimited {
                    retry_after: reply.retry_after(),
                    message: format!("Microsoft Entra token endpoint answered HTTP 429{detail}"),
                }
            } else if code >= 500 {
                ExecutorError::Transient(format!(
                    "Microsoft Entra token endpoint failed with HTTP {code}{detail}"
                ))
            } else {
                ExecutorError::Unauthorized(format!(
                    "Microsoft Entra token endpoint answered HTTP {code} without an OAuth error: \
                     check executors.*.auth.token_url"
                ))
            }
        }
    }
}

/// Seconds only: Azure DevOps and Entra send delta-seconds, never an HTTP date. Anything else
/// (negative, fractional, `1e300`, text) is ignored and the usual backoff applies. A longer
/// one than [`MAX_WAIT`] (an hour) is taken as that: no answer can park a task for years or
/// overflow a deadline.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Whole seconds however many digits: more than a u64 holds is more than the cap.
    let secs = digits.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_capped_at_an_hour() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("3600"), Some(MAX_WAIT));
        assert_eq!(parse_retry_after("3601"), Some(MAX_WAIT));
        assert_eq!(parse_retry_after(&u64::MAX.to_string()), Some(MAX_WAIT));
        // Beyond a u64 is still a wait, the longest: not "no Retry-After" (retried at once).
        assert_eq!(parse_retry_after("99999999999999999999999"), Some(MAX_WAIT));
        for absurd in ["-5", "+5", "1e300", "1.5", "soon", "", "7 s"] {
            assert_eq!(parse_retry_after(absurd), None, "{absurd:?}");
        }
    }
}
