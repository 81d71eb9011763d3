//! What the command service and the engine share, owned by neither: the waker that tells the
//! engine work is due (or hands it a dispatch, `handoff.rs`), the engine's timings every
//! decision needs, and what a committed plan did (`Applied`: tasks ended, for the metrics; work
//! left due, to wake the engine; the dispatch it handed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use super::handoff::{Handoffs, Reservation};
use super::state::Timing;
use crate::domain::{Plan, TaskId, TaskStatus};
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
    /// Set by the engine this waker wakes: it takes dispatches handed to it.
    handoffs: OnceLock<Arc<Handoffs>>,
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

    /// The engine takes dispatches handed to it from now on. Set once.
    pub(super) fn accept_handoffs(&self, handoffs: Arc<Handoffs>) {
        let _ = self.0.handoffs.set(handoffs);
    }

    /// A committed plan aborted tasks (`Applied::committed`): hand-offs read before it are read
    /// again (`handoff.rs`).
    pub fn aborted(&self) {
        if let Some(handoffs) = self.0.handoffs.get() {
            handoffs.aborted();
        }
    }

    /// Room for one dispatch on the engine, for a write that may make one due (`handoff.rs`);
    /// none without an engine taking hand-offs or without room.
    pub fn reserve(&self) -> Reservation {
        match self.0.handoffs.get() {
            Some(handoffs) => handoffs.reserve(),
            None => Reservation::default(),
        }
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
    /// The dispatch the plan leased for this replica's engine (`handoff.rs`).
    handed: Option<TaskId>,
}

impl Applied {
    /// What `plan`, applied at `now`, did.
    pub fn of(plan: &Plan, now: i64) -> Applied {
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
            // A step due later is claimed by a later tick: waking the engine for it now would
            // only cost a claim that finds nothing.
            scheduled: plan.makes_work_due(now),
            outcomes,
            announced: false,
            handed: None,
        }
    }

    /// `handed`: the dispatch the plan leased for the engine.
    pub fn handing(self, handed: Option<TaskId>) -> Applied {
        Applied { handed, ..self }
    }

    pub fn handed(&self) -> Option<TaskId> {
        self.handed
    }

    /// `announced`: outbox rows were written with it.
    pub fn announcing(self, announced: bool) -> Applied {
        Applied { announced, ..self }
    }

    /// The tasks the plan ends, by outcome, and the failed runs it runs again.
    pub fn outcomes(&self) -> TaskOutcomes {
        self.outcomes
    }

    /// Once committed: count the tasks it ended, wake the engine for the work it left, and
    /// say when it aborted tasks (whatever asked: an abort, a product forgotten), since a
    /// hand-off read before may be stale (`handoff.rs`).
    pub fn committed(self, metrics: &Metrics, waker: &Waker) {
        metrics.tasks_ended(self.outcomes);
        if self.outcomes.0[TaskOutcome::Aborted as usize] > 0 {
            waker.aborted();
        }
        if self.announced {
            waker.outbox_due();
        }
        if self.scheduled {
            waker.wake();
        }
    }
}
