//! What the command service and the engine share, owned by neither: the waker that tells the
//! engine work is due, the engine's timings every decision needs, and what a committed plan
//! did (`Applied`: tasks ended, for the metrics; work left due, to wake the engine).

use std::sync::Arc;

use tokio::sync::Notify;

use super::state::Timing;
use crate::domain::{Plan, TaskStatus};
use crate::metrics::{Metrics, TaskOutcome, TaskOutcomes};

/// Wakes the engine at once instead of at its next tick. Shared by every thread.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one()
    }

    pub async fn woken(&self) {
        self.0.notified().await
    }
}

/// `engine.poll_after_secs` and `engine.task_timeout_secs`, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct EngineTimings {
    pub poll_after_ms: i64,
    pub default_timeout_ms: i64,
}

impl EngineTimings {
    pub fn at(&self, now: i64) -> Timing {
        Timing {
            now,
            poll_after_ms: self.poll_after_ms,
            default_timeout_ms: self.default_timeout_ms,
        }
    }
}

/// What applying a plan did: work left due for the engine, tasks ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    scheduled: bool,
    outcomes: TaskOutcomes,
}

impl Applied {
    pub fn of(plan: &Plan) -> Applied {
        let mut outcomes = TaskOutcomes::default();
        for update in &plan.tasks {
            match update.changes.status {
                Some(TaskStatus::Processed) => outcomes.add(TaskOutcome::Processed),
                Some(TaskStatus::Failed) => outcomes.add(TaskOutcome::Failed),
                Some(TaskStatus::Aborted) => outcomes.add(TaskOutcome::Aborted),
                Some(TaskStatus::Planned | TaskStatus::Processing) | None => {}
            }
            if update.changes.runs_failed.is_some() {
                outcomes.add(TaskOutcome::Retried);
            }
        }
        Applied {
            scheduled: plan.schedules_work(),
            outcomes,
        }
    }

    /// The tasks the plan ends, by outcome, and the failed runs it runs again.
    pub fn outcomes(&self) -> TaskOutcomes {
        self.outcomes
    }

    /// Once committed: count the tasks it ended, wake the engine for the work it left.
    pub fn committed(self, metrics: &Metrics, waker: &Waker) {
        metrics.tasks_ended(self.outcomes);
        if self.scheduled {
            waker.wake();
        }
    }
}
