//! Every state transition of activities and tasks, as pure functions from a snapshot to a plan
//! (both domain types, `crate::domain`). The db layer reads the snapshot and applies the plan
//! with compare-and-set updates in one transaction; a plan whose expectations no longer hold is
//! a conflict and changes nothing. What an engine claim does is decided here too (`claim`).
//!
//! This module imports nothing but the domain: no database, metrics or configuration.

mod activity;
mod callback;
mod claimed;
#[cfg(test)]
mod claimed_tests;
mod hook;
#[cfg(test)]
mod retry_tests;
#[cfg(test)]
mod tests;

use crate::domain::{Plan, Step, TaskChanges, TaskState, TaskStatus, TaskUpdate};

pub use activity::{abort, abort_task, finish_task, merge_results, start};
pub use callback::callback;
pub use claimed::{
    await_unknown_dispatch, claim, finish_step, gated, hand_off, requeue_step, retry_step,
    step_done, still_owned, submitted, submitted_on_claim, wait_for_policy, ResultVerdict,
    Submittal,
};
pub use hook::poll_now;

/// The clock and the engine timings a transition needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub now: i64,
    pub poll_after_ms: i64,
    pub default_timeout_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 409 40901
    #[error("{0}")]
    ActivityConflict(String),
    /// 422 42201
    #[error("{0}")]
    NotStartable(String),
    /// 409 40911
    #[error("{0}")]
    TaskConflict(String),
}

#[derive(Debug)]
pub enum CallbackDecision {
    Apply(Plan),
    /// The same callback was already recorded: answer with the task's status, change nothing.
    AlreadyRecorded(TaskStatus),
}

/// Releases whatever the engine held on a task.
fn released(mut c: TaskChanges) -> TaskChanges {
    c.step = Some(None);
    c.due_at = Some(None);
    c.lease_owner = Some(None);
    c.lease_until = Some(None);
    c
}

fn reschedule(mut c: TaskChanges, step: Step, due: i64) -> TaskChanges {
    c.step = Some(Some(step));
    c.due_at = Some(Some(due));
    c.lease_owner = Some(None);
    c.lease_until = Some(None);
    c
}

/// PLANNED → PROCESSING, due for dispatch now, with its deadline: its own timeout
/// (`configurations.timeout`) or the default.
fn begin(task: &TaskState, t: &Timing) -> TaskUpdate {
    let timeout_ms = task.settings.timeout_ms.unwrap_or(t.default_timeout_ms);
    let changes = TaskChanges {
        status: Some(TaskStatus::Processing),
        started_at: Some(Some(t.now)),
        deadline_at: Some(Some(t.now.saturating_add(timeout_ms))),
        step_attempts: Some(0),
        ..reschedule(TaskChanges::default(), Step::Dispatch, t.now)
    };
    TaskUpdate {
        id: task.id,
        expected: TaskStatus::Planned,
        expected_lease: None,
        changes,
    }
}

/// A plan that changes one task.
fn single(
    task: &TaskState,
    expected: TaskStatus,
    lease: Option<&str>,
    changes: TaskChanges,
) -> Plan {
    Plan {
        tasks: vec![TaskUpdate {
            id: task.id,
            expected,
            expected_lease: lease.map(str::to_owned),
            changes,
        }],
        ..Plan::default()
    }
}
