//! The page: every metric, its help and its samples (the README's "Metrics" lists them).

use super::text::{Exposition, Kind};
use super::*;
use crate::db::WorkCounts;
use crate::domain::{ActivityStatus, TaskStatus};

/// `(label, value)` samples of a counter array indexed like `ALL`.
fn counted<'a, T: Copy>(
    label: &'a str,
    all: &'a [T],
    name: fn(T) -> &'static str,
    counters: &'a [Counter],
) -> impl Iterator<Item = ([(&'a str, &'a str); 1], f64)> + 'a {
    all.iter()
        .zip(counters)
        .map(move |(v, c)| ([(label, name(*v))], c.get() as f64))
}

impl Metrics {
    /// The whole page. `work` is what the database holds now (`None`: it could not be read, and
    /// `odm_devops_database_up` says so).
    pub fn render(&self, work: Option<&WorkCounts>, now_ms: i64) -> String {
        let mut e = Exposition::default();
        e.family(
            "odm_devops_build_info",
            Kind::Gauge,
            "Always 1; the version of this replica's binary.",
            [([("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        );
        e.family(
            "process_start_time_seconds",
            Kind::Gauge,
            "When this process started, in seconds since the Unix epoch.",
            [([], self.started_secs())],
        );
        stored_work(&mut e, work, now_ms);
        self.notifications(&mut e, work, now_ms);
        self.http(&mut e);
        self.engine(&mut e);
        self.render_listen(&mut e);
        self.executors(&mut e);
        self.database(&mut e);
        e.finish()
    }

    fn http(&self, e: &mut Exposition) {
        let routes = self
            .http
            .read(|r| (r.seconds.snapshot(), r.statuses.read(Counter::get)));
        let mut requests = Vec::new();
        for ((method, route), (_, statuses)) in &routes {
            for (status, n) in statuses {
                requests.push((*method, route.as_str(), status.to_string(), *n as f64));
            }
        }
        e.family(
            "odm_devops_http_requests_total",
            Kind::Counter,
            "HTTP requests answered, by method, route pattern and status code.",
            requests.iter().map(|(method, route, status, n)| {
                (
                    [("method", *method), ("route", *route), ("status", status)],
                    *n,
                )
            }),
        );
        e.histograms(
            "odm_devops_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route pattern.",
            routes.iter().map(|((method, route), (seconds, _))| {
                (
                    [("method", *method), ("route", route.as_str())],
                    seconds.clone(),
                )
            }),
        );
    }

    fn engine(&self, e: &mut Exposition) {
        e.family(
            "odm_devops_engine_steps_run_total",
            Kind::Counter,
            "Engine steps carried out by this replica, by step and result.",
            Step::ALL.iter().flat_map(|step| {
                StepResult::ALL.iter().map(move |result| {
                    let n = self.steps[*step as usize][*result as usize].get();
                    (
                        [("step", step.as_str()), ("result", result.as_str())],
                        n as f64,
                    )
                })
            }),
        );
        e.histograms(
            "odm_devops_engine_step_duration_seconds",
            "Time engine steps took, executor calls included, by step.",
            Step::ALL.iter().map(|step| {
                let h = self.step_seconds[*step as usize].snapshot();
                ([("step", step.as_str())], h)
            }),
        );
        e.histograms(
            "odm_devops_next_dispatch_delay_seconds",
            "From a task ending (its callback recorded, usually) to the next task's run request \
             being sent, first runs only; millisecond resolution.",
            [([], self.next_dispatch.snapshot())],
        );
        e.family(
            "odm_devops_task_outcomes_total",
            Kind::Counter,
            "Tasks ended by this replica (callbacks, engine steps, aborts), by outcome; retried \
             counts failed runs run again.",
            counted(
                "outcome",
                TaskOutcome::ALL,
                TaskOutcome::as_str,
                &self.task_outcomes,
            ),
        );
        e.family(
            "odm_devops_policy_checks_total",
            Kind::Counter,
            "Policy gates asked by this replica, by event and answer (unreachable and failed: \
             START refused with 503/502, engine-side checks waiting and trying again).",
            PolicyEvent::ALL.iter().flat_map(|event| {
                PolicyAnswer::ALL.iter().map(move |answer| {
                    let n = self.policy_checks[*event as usize][*answer as usize].get();
                    (
                        [("event", event.as_str()), ("answer", answer.as_str())],
                        n as f64,
                    )
                })
            }),
        );
        e.family(
            "odm_devops_callbacks_total",
            Kind::Counter,
            "Pipeline callbacks received, by answer.",
            counted(
                "answer",
                CallbackAnswer::ALL,
                CallbackAnswer::as_str,
                &self.callbacks,
            ),
        );
    }

    fn executors(&self, e: &mut Exposition) {
        let executors = self
            .executors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let each = || executors.iter().map(|(name, m)| (name.as_str(), &*m.0));
        e.family(
            "odm_devops_executor_requests_total",
            Kind::Counter,
            "HTTP requests to executors (Entra token requests included), by executor and answer \
             class (error: no answer).",
            each().flat_map(|(executor, m)| {
                StatusClass::ALL.iter().map(move |class| {
                    let n = m.requests[*class as usize].get();
                    (
                        [("executor", executor), ("class", class.as_str())],
                        n as f64,
                    )
                })
            }),
        );
        e.family(
            "odm_devops_executor_retries_total",
            Kind::Counter,
            "Requests to executors sent again after a refusal or a failure.",
            each().map(|(executor, m)| ([("executor", executor)], m.retries.get() as f64)),
        );
        e.family(
            "odm_devops_executor_throttled_total",
            Kind::Counter,
            "HTTP 429 answers received from executors.",
            each().map(|(executor, m)| ([("executor", executor)], m.throttled.get() as f64)),
        );
        e.family(
            "odm_devops_executor_wait_seconds_total",
            Kind::Counter,
            "Time requests to executors waited before being sent, by reason.",
            each().flat_map(|(executor, m)| {
                WaitReason::ALL.iter().map(move |reason| {
                    let waited = m.waited[*reason as usize].get();
                    (
                        [("executor", executor), ("reason", reason.as_str())],
                        waited,
                    )
                })
            }),
        );
    }
}

impl Metrics {
    /// Per configured listener: tries (this replica's) and, from the database, the backlog.
    fn notifications(&self, e: &mut Exposition, work: Option<&WorkCounts>, now_ms: i64) {
        let listeners = self.listener_counts();
        if listeners.is_empty() {
            return;
        }
        e.family(
            "odm_devops_notifications_sent_total",
            Kind::Counter,
            "Tries to deliver a notification, by listener and result (delivered, failed).",
            listeners.iter().flat_map(|(listener, counts)| {
                [("delivered", counts[0]), ("failed", counts[1])].map(|(result, n)| {
                    (
                        [("listener", listener.as_str()), ("result", result)],
                        n as f64,
                    )
                })
            }),
        );
        let Some(work) = work else {
            return;
        };
        let backlog = |listener: &str| work.listeners.iter().find(|b| b.listener == listener);
        e.family(
            "odm_devops_notifications_pending",
            Kind::Gauge,
            "Notifications not delivered yet, by listener.",
            listeners.iter().map(|(listener, _)| {
                let n = backlog(listener).map_or(0, |b| b.pending);
                ([("listener", listener.as_str())], n as f64)
            }),
        );
        e.family(
            "odm_devops_notifications_failing",
            Kind::Gauge,
            "Notifications not delivered yet whose last try failed, by listener.",
            listeners.iter().map(|(listener, _)| {
                let n = backlog(listener).map_or(0, |b| b.failing);
                ([("listener", listener.as_str())], n as f64)
            }),
        );
        e.family(
            "odm_devops_notifications_oldest_pending_age_seconds",
            Kind::Gauge,
            "How long the oldest undelivered notification has waited, by listener (0 when none).",
            listeners.iter().map(|(listener, _)| {
                let age_ms = backlog(listener)
                    .and_then(|b| b.oldest_created_at)
                    .map_or(0, |at| (now_ms - at).max(0));
                ([("listener", listener.as_str())], age_ms as f64 / 1000.0)
            }),
        );
    }
}

/// The gauges read from the database, shared by every replica.
fn stored_work(e: &mut Exposition, work: Option<&WorkCounts>, now_ms: i64) {
    e.family(
        "odm_devops_database_up",
        Kind::Gauge,
        "1 when this scrape could read the database, else 0 (and the gauges of stored work are \
         missing).",
        [([], if work.is_some() { 1.0 } else { 0.0 })],
    );
    let Some(work) = work else {
        return;
    };
    e.family(
        "odm_devops_activities",
        Kind::Gauge,
        "Activities stored, by status.",
        ActivityStatus::ALL
            .iter()
            .zip(work.activities)
            .map(|(status, n)| ([("status", status.as_str())], n as f64)),
    );
    e.family(
        "odm_devops_tasks",
        Kind::Gauge,
        "Tasks stored, by status.",
        TaskStatus::ALL
            .iter()
            .zip(work.tasks)
            .map(|(status, n)| ([("status", status.as_str())], n as f64)),
    );
    let steps = || Step::ALL.iter().zip(&work.steps);
    e.family(
        "odm_devops_engine_steps_scheduled",
        Kind::Gauge,
        "Steps the engine owes, due or not, by step.",
        steps().map(|(step, c)| ([("step", step.as_str())], c.scheduled as f64)),
    );
    e.family(
        "odm_devops_engine_steps_overdue",
        Kind::Gauge,
        "Steps whose due time has come (being carried out or waiting for the engine), by step.",
        steps().map(|(step, c)| ([("step", step.as_str())], c.overdue as f64)),
    );
    e.family(
        "odm_devops_engine_oldest_overdue_step_age_seconds",
        Kind::Gauge,
        "How long the oldest overdue step has been due, by step (0 when none is).",
        steps().map(|(step, c)| {
            let age_ms = c.oldest_due_at.map_or(0, |due| (now_ms - due).max(0));
            ([("step", step.as_str())], age_ms as f64 / 1000.0)
        }),
    );
}
