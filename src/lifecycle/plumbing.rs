//! What the command service and the engine share, owned by neither: the waker that tells the
//! engine work is due, the engine's timings every decision needs, and what a committed plan
//! did (`Applied`: tasks ended, for the metrics; work left due, to wake the engine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use super::state::Timing;
use crate::domain::{Plan, TaskStatus};
use crate::metrics::{Metrics, TaskOutcome, TaskOutcomes};

/// Wakes the engine at once instead of at its next tick. Shared by every thread.
#[derive(Clone, Default)]
pub struct Waker(Arc<Wake>);

#[derive(Default)]
struct Wake {
    notify: Notify,
    /// Outbox rows were written or delivered: some may be due now.
    outbox: AtomicBool,
    /// An ODM observer asked for activities to be deleted.
    deletions: AtomicBool,
}

impl Waker {
    pub fn wake(&self) {
        self.0.notify.notify_one()
    }

    pub async fn woken(&self) {
        self.0.notify.notified().await
    }

    /// Outbox rows may be due: the engine claims them at once.
    pub fn outbox_due(&self) {
        self.0.outbox.store(true, Ordering::Release);
        self.wake();
    }

    pub fn take_outbox_due(&self) -> bool {
        self.0.outbox.swap(false, Ordering::AcqRel)
    }

    /// Deletions were asked for: the engine carries out what it can at once.
    pub fn deletions_due(&self) {
        self.0.deletions.store(true, Ordering::Release);
        self.wake();
    }

    pub fn take_deletions_due(&self) -> bool {
        self.0.deletions.swap(false, Ordering::AcqRel)
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

/// What applying a plan did: work left due for the engine, tasks ended, events announced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    scheduled: bool,
    outcomes: TaskOutcomes,
    /// Outbox rows were written.
    announced: bool,
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
            announced: false,
        }
    }

    /// `announced`: outbox rows were written with it.
    pub fn announcing(self, announced: bool) -> Applied {
        Applied { announced, ..self }
    }

    /// The tasks the plan ends, by outcome, and the failed runs it runs again.
    pub fn outcomes(&self) -> TaskOutcomes {
        self.outcomes
    }

    /// Once committed: count the tasks it ended, wake the engine for the work it left.
    pub fn committed(self, metrics: &Metrics, waker: &Waker) {
        metrics.tasks_ended(self.outcomes);
        if self.announced {
            waker.outbox_due();
        }
        if self.scheduled {
            waker.wake();
        }
    }
}
