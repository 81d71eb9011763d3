//! A pipeline's callback: applied, held for confirmation, recognised as a replay, or refused.

use serde_json::Value;

use super::*;
use crate::db::models::{TaskChanges, TaskRow};
use crate::domain::{Step, TaskStatus};

/// A pipeline called back. With `confirm_first` the outcome is held until the provider agrees.
pub fn callback(
    s: &Snapshot,
    task_id: i64,
    report: Report,
    confirm_first: bool,
    t: &Timing,
) -> Result<CallbackDecision, Refusal> {
    let task = s.task(task_id).expect("snapshot holds the task");
    let report = report.without_nul();
    match task_status(task) {
        TaskStatus::Planned => Err(Refusal::TaskConflict(format!(
            "task {task_id} is not running (PLANNED): no callback is expected yet"
        ))),
        TaskStatus::Aborted => Err(Refusal::TaskConflict(format!(
            "task {task_id} was aborted; its callback is refused"
        ))),
        finished @ (TaskStatus::Processed | TaskStatus::Failed) => {
            if same_as_recorded(task, &report) {
                Ok(CallbackDecision::AlreadyRecorded(finished))
            } else {
                Err(Refusal::TaskConflict(format!(
                    "task {task_id} already finished as {finished} with another outcome"
                )))
            }
        }
        TaskStatus::Processing => {
            let pending = task
                .reported_outcome
                .as_deref()
                .and_then(|r| serde_json::from_str::<Report>(r).ok());
            match pending {
                Some(previous) if previous == report => {
                    Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processing))
                }
                Some(_) => Err(Refusal::TaskConflict(format!(
                    "task {task_id} already received a different callback, still being confirmed"
                ))),
                None if confirm_first => {
                    let held = TaskChanges {
                        reported_outcome: Some(Some(
                            serde_json::to_string(&report).expect("report serializes"),
                        )),
                        ..TaskChanges::default()
                    };
                    // A callback can beat the answer to the run request: then there is no run to
                    // ask about yet, and the dispatch's claim stays; `submitted` schedules the
                    // confirmation once the run is known.
                    let dispatching = task.step.as_deref() == Some(Step::Dispatch.as_str());
                    let changes = if dispatching {
                        held
                    } else {
                        TaskChanges {
                            step_attempts: Some(0),
                            ..reschedule(held, Step::Confirm, t.now)
                        }
                    };
                    Ok(CallbackDecision::Apply(Plan {
                        tasks: vec![TaskUpdate {
                            id: task.id,
                            expected: TaskStatus::Processing,
                            expected_lease: None,
                            changes,
                        }],
                        ..Plan::default()
                    }))
                }
                None => Ok(CallbackDecision::Apply(finish_task(
                    s,
                    task_id,
                    report.outcome(),
                    false,
                    None,
                    t,
                ))),
            }
        }
    }
}

fn same_as_recorded(task: &TaskRow, report: &Report) -> bool {
    if task_status(task) != report.task_status() {
        return false;
    }
    match report.status {
        ReportedStatus::Processed => {
            let recorded = task
                .results
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok());
            recorded == report.results
        }
        ReportedStatus::Failed => match &report.errors {
            Some(errors) => task.errors.as_deref() == Some(errors.as_str()),
            None => true,
        },
    }
}

/// The held callback is confirmed by the provider: apply it.
pub fn reported_outcome(task: &TaskRow) -> Option<Outcome> {
    task.reported_outcome
        .as_deref()
        .and_then(|r| serde_json::from_str::<Report>(r).ok())
        .map(|r| r.outcome())
}
