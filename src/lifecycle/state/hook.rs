//! A provider said a task's run completed (an Azure DevOps service hook): the engine's poll of
//! that run becomes due now. The poll, not the hook, settles the task, through the same step
//! and the same transitions as any poll that finds a run finished, so a hook can neither
//! settle a task a callback already settled nor settle it differently than its provider would.

use super::*;
use crate::domain::{Snapshot, TaskId};

/// The task's awaiting step due `now` (its backoff reset), when the task is still awaiting its
/// run and no engine holds that step; otherwise nothing: a callback or a poll got there first,
/// or a poll is under way.
pub fn poll_now(s: &Snapshot, task_id: TaskId, now: i64) -> Plan {
    let Some(task) = s.task(task_id) else {
        return Plan::default();
    };
    let awaiting = task.status == TaskStatus::Processing
        && task.step == Some(Step::Await)
        && task.has_run
        && !task.holds_callback
        && task.lease_owner.is_none();
    if !awaiting {
        return Plan::default();
    }
    let changes = TaskChanges {
        step_attempts: Some(0),
        ..reschedule(TaskChanges::default(), Step::Await, now)
    };
    single(task, TaskStatus::Processing, None, changes)
}
