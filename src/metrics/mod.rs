//! What the service counts, and the `/metrics` page (Prometheus text format 0.0.4).
//!
//! The API, the lifecycle commands, the engine and the executors record through the typed
//! methods of `Metrics` (one registry per process, in the application state); only `render`
//! knows the exposition format. Counters and histograms are this replica's, since it started.
//! The gauges of stored work (`db::WorkCounts`) are read from the database at scrape time, so
//! every replica shows the same ones.
//!
//! Label values come from fixed sets (enums, route patterns, configured executor names, HTTP
//! status codes): never an id, a token, a product or anything else a request can choose.

mod database;
mod listen;
mod render;
mod series;
mod text;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::{stored_enum, Step};
use crate::policy::PolicyEvent;

use series::{Counter, Family, Histogram, Seconds};
pub use text::CONTENT_TYPE;

stored_enum!(StepResult {
    // The step did its work (the task was sent, finished, confirmed, its run cancelled).
    Done => "done",
    // It will run again later: a transient failure, a rate limit, a run still going.
    Rescheduled => "rescheduled",
    // A dispatch that may or may not have reached the provider: it is not sent again.
    OutcomeUnknown => "outcome_unknown",
    // It failed unexpectedly (e.g. the database): its lease runs out and it is claimed again.
    Error => "error",
});

stored_enum!(TaskOutcome {
    Processed => "processed",
    Failed => "failed",
    Aborted => "aborted",
    // A failed run followed by another (`configurations.retry`).
    Retried => "retried",
});

stored_enum!(CallbackAnswer {
    // Recorded (or held for confirmation with the provider).
    Accepted => "accepted",
    // The same callback again: answered, nothing changed.
    Replay => "replay",
    // 409: another outcome for a finished task, an aborted task, an earlier run's token.
    Refused => "refused",
    // 401: no token or a wrong one.
    Unauthorized => "unauthorized",
    // 422 or 404: a malformed body, an unknown task.
    Invalid => "invalid",
    // 500: the service could not record it.
    Error => "error",
});

stored_enum!(PolicyAnswer {
    // No policy failed.
    Passed => "passed",
    // Only non-blocking policies failed: logged, never in the way.
    Advisory => "advisory",
    // A blocking policy failed: the change was refused.
    Blocked => "blocked",
    // No answer (connection refused, timed out): START answered 503, the engine waits.
    Unreachable => "unreachable",
    // An answer other than a verdict: START answered 502, the engine waits.
    Failed => "failed",
});

stored_enum!(WaitReason {
    // Waiting out a `Retry-After` before retrying a refused request.
    RetryAfter => "retry_after",
    // Spacing requests because the provider's budget is low (`X-RateLimit-*`, `Retry-After`
    // on a success).
    RateLimit => "rate_limit",
    // Backing off before a retry the provider gave no delay for.
    Backoff => "backoff",
});

stored_enum!(StatusClass {
    Informational => "1xx",
    Success => "2xx",
    Redirection => "3xx",
    ClientError => "4xx",
    ServerError => "5xx",
    // No HTTP answer: the connection failed or the request timed out.
    NoAnswer => "error",
});

impl StatusClass {
    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

/// How many tasks a state change ended, by outcome (indexed like `TaskOutcome::ALL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskOutcomes(pub [u64; TaskOutcome::ALL.len()]);

impl TaskOutcomes {
    pub fn add(&mut self, outcome: TaskOutcome) {
        self.0[outcome as usize] += 1;
    }
}

/// Request durations: mostly a few milliseconds here.
const HTTP_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Engine steps: a database transaction, or an executor call with its retries.
const STEP_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// A task ending → the next run request sent (the target is 20 ms at p99, DESIGN §13).
const NEXT_DISPATCH_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The requests of one `(method, route pattern)`.
struct RouteSeries {
    seconds: Histogram,
    statuses: Family<u16, Counter>,
}

impl RouteSeries {
    fn new() -> RouteSeries {
        RouteSeries {
            seconds: Histogram::new(HTTP_SECONDS),
            statuses: Family::new(Counter::default),
        }
    }
}

pub struct Metrics {
    started: SystemTime,
    http: Family<(&'static str, String), RouteSeries>,
    steps: [[Counter; StepResult::ALL.len()]; Step::ALL.len()],
    step_seconds: [Histogram; Step::ALL.len()],
    task_outcomes: [Counter; TaskOutcome::ALL.len()],
    callbacks: [Counter; CallbackAnswer::ALL.len()],
    policy_checks: [[Counter; PolicyAnswer::ALL.len()]; PolicyEvent::ALL.len()],
    next_dispatch: Histogram,
    executors: Mutex<Vec<(String, ExecutorMetrics)>>,
    /// Per configured listener: deliveries that succeeded, and that failed.
    listeners: Mutex<Vec<(String, [u64; 2])>>,
    /// The database writer's commits (`count_writes_of`).
    writes: database::WriteSource,
    /// The LISTEN connection to PostgreSQL (`listen.rs`).
    listen: listen::ListenSeries,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: SystemTime::now(),
            http: Family::new(RouteSeries::new),
            steps: Default::default(),
            step_seconds: std::array::from_fn(|_| Histogram::new(STEP_SECONDS)),
            task_outcomes: Default::default(),
            callbacks: Default::default(),
            policy_checks: Default::default(),
            next_dispatch: Histogram::new(NEXT_DISPATCH_SECONDS),
            executors: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            writes: Default::default(),
            listen: Default::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// One answered request. `route` is the matched route's pattern (`None`: no route matched);
    /// methods outside the standard ones count as `OTHER`.
    pub fn http_request(&self, method: &str, route: Option<String>, status: u16, took: Duration) {
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("OTHER");
        let key = (method, route.unwrap_or_else(|| "unmatched".to_owned()));
        self.http.with(&key, |route| {
            route.seconds.observe(took);
            route.statuses.with(&status, Counter::inc);
        });
    }

    pub fn step_run(&self, step: Step, result: StepResult, took: Duration) {
        self.steps[step as usize][result as usize].inc();
        self.step_seconds[step as usize].observe(took);
    }

    pub fn tasks_ended(&self, outcomes: TaskOutcomes) {
        for (counter, n) in self.task_outcomes.iter().zip(outcomes.0) {
            if n > 0 {
                counter.add(n);
            }
        }
    }

    pub fn callback(&self, answer: CallbackAnswer) {
        self.callbacks[answer as usize].inc();
    }

    /// One question to the policy service (or the stage order), and how it was answered.
    pub fn policy_check(&self, event: PolicyEvent, answer: PolicyAnswer) {
        self.policy_checks[event as usize][answer as usize].inc();
    }

    /// From a task ending to the next task's run request being sent.
    pub fn next_dispatch(&self, delay: Duration) {
        self.next_dispatch.observe(delay);
    }

    /// The series of one configured executor (made on first use; its name is a label).
    pub fn executor(&self, name: &str) -> ExecutorMetrics {
        let mut all = self
            .executors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, series)) = all.iter().find(|(n, _)| n == name) {
            return series.clone();
        }
        let series = ExecutorMetrics::default();
        all.push((name.to_owned(), series.clone()));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        series
    }

    /// A configured listener: its series show (at 0) before anything is sent.
    pub fn listener(&self, name: &str) {
        let mut all = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !all.iter().any(|(n, _)| n == name) {
            all.push((name.to_owned(), [0, 0]));
            all.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }

    /// One try to deliver an outbox row to `listener`.
    pub fn notification_sent(&self, listener: &str, delivered: bool) {
        self.listener(listener);
        let mut all = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counts)) = all.iter_mut().find(|(n, _)| n == listener) {
            counts[usize::from(!delivered)] += 1;
        }
    }

    fn listener_counts(&self) -> Vec<(String, [u64; 2])> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn started_secs(&self) -> f64 {
        self.started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// What one executor records: its requests by answer class, retries, 429s and waits.
/// `Default` gives a detached one (an executor built outside the service, in tests).
#[derive(Clone, Default)]
pub struct ExecutorMetrics(Arc<ExecutorSeries>);

#[derive(Default)]
struct ExecutorSeries {
    requests: [Counter; StatusClass::ALL.len()],
    retries: Counter,
    throttled: Counter,
    waited: [Seconds; WaitReason::ALL.len()],
}

impl ExecutorMetrics {
    /// A request got an HTTP answer with this status.
    pub fn answered(&self, status: u16) {
        self.0.requests[StatusClass::of(status) as usize].inc();
        if status == 429 {
            self.0.throttled.inc();
        }
    }

    /// A request got no HTTP answer (connection failed, timed out).
    pub fn no_answer(&self) {
        self.0.requests[StatusClass::NoAnswer as usize].inc();
    }

    /// A request is sent again.
    pub fn retry(&self) {
        self.0.retries.inc();
    }

    pub fn waited(&self, reason: WaitReason, d: Duration) {
        self.0.waited[reason as usize].add(d);
    }
}

#[cfg(test)]
mod tests;
