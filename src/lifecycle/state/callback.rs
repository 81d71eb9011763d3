//! A pipeline's callback: applied, held for confirmation, recognised as a replay, or refused.

use serde_json::Value;

use super::*;
use crate::domain::{Recorded, Report, ReportedStatus, Snapshot, TaskId};

/// A pipeline called back. With `confirm_first` the outcome is held until the provider agrees.
/// The snapshot was read for this callback (`recorded` is its task's).
pub fn callback(
    s: &Snapshot,
    task_id: TaskId,
    report: Report,
    confirm_first: bool,
    t: &Timing,
) -> Result<CallbackDecision, Refusal> {
    let task = s.task(task_id).expect("snapshot holds the task");
    let recorded = s
        .recorded
        .as_ref()
        .filter(|r| r.task == task_id)
        .expect("a callback's snapshot holds what its task recorded");
    let report = report.without_nul();
    match task.status {
        TaskStatus::Planned => Err(Refusal::TaskConflict(format!(
            "task {task_id} is not running (PLANNED): no callback is expected yet"
        ))),
        TaskStatus::Aborted => Err(Refusal::TaskConflict(format!(
            "task {task_id} was aborted; its callback is refused"
        ))),
        finished @ (TaskStatus::Processed | TaskStatus::Failed) => {
            if same_as_recorded(finished, recorded, &report) {
                Ok(CallbackDecision::AlreadyRecorded(finished))
            } else {
                Err(Refusal::TaskConflict(format!(
                    "task {task_id} already finished as {finished} with another outcome"
                )))
            }
        }
        TaskStatus::Processing => match &recorded.held {
            Some(previous) if *previous == report => {
                Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processing))
            }
            Some(_) => Err(Refusal::TaskConflict(format!(
                "task {task_id} already received a different callback, still being confirmed"
            ))),
            None if confirm_first => {
                let held = TaskChanges {
                    reported_outcome: Some(Some(report)),
                    ..TaskChanges::default()
                };
                // A callback can beat the answer to the run request: then there is no run to
                // ask about yet, and the dispatch's claim stays; `submitted` schedules the
                // confirmation once the run is known.
                let changes = if task.step == Some(Step::Dispatch) {
                    held
                } else {
                    TaskChanges {
                        step_attempts: Some(0),
                        ..reschedule(held, Step::Confirm, t.now)
                    }
                };
                Ok(CallbackDecision::Apply(single(
                    task,
                    TaskStatus::Processing,
                    None,
                    changes,
                )))
            }
            None => {
                let mut plan = finish_task(s, task_id, report.outcome(), false, None, t);
                // Kept with the task it finished, as a held callback is: a replay is the same
                // callback even when the task's errors say more than it did ("all 2 runs
                // failed"). A run retried instead keeps nothing of it.
                if let Some(update) = plan.tasks.iter_mut().find(|u| u.id == task_id) {
                    if update.changes.status.is_some_and(TaskStatus::is_terminal) {
                        update.changes.reported_outcome = Some(Some(report));
                    }
                }
                Ok(CallbackDecision::Apply(plan))
            }
        },
    }
}

fn same_as_recorded(status: TaskStatus, recorded: &Recorded, report: &Report) -> bool {
    // The callback that finished the task, as it was sent (kept since this version).
    if let Some(finished_by) = &recorded.held {
        return finished_by == report;
    }
    // A task finished before: compared with what it stored.
    if status != report.task_status() {
        return false;
    }
    match report.status {
        ReportedStatus::Processed => {
            let stored = recorded
                .results
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok());
            stored == report.results
        }
        ReportedStatus::Failed => match &report.errors {
            Some(errors) => recorded.errors.as_deref() == Some(errors.as_str()),
            None => true,
        },
    }
}
