//! Every state transition of activities and tasks, as pure functions from a snapshot to a plan.
//! The db layer applies a plan with compare-and-set updates in one transaction; a plan whose
//! expectations no longer hold is a conflict and changes nothing.

mod activity;
mod callback;
#[cfg(test)]
mod retry_tests;
mod steps;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::models::{ActivityChanges, ActivityRow, TaskChanges, TaskRow};
use crate::domain::{ActivityStatus, Step, TaskStatus};
use crate::lifecycle::run_settings::RunSettings;
use crate::metrics::{TaskOutcome, TaskOutcomes};

pub use activity::{abort, abort_task, finish_task, start};
pub use callback::{callback, reported_outcome};
pub use steps::{
    await_unknown_dispatch, finish_step, retry_step, step_done, still_owned, submitted, Submittal,
};

/// An activity with all its tasks, in position order, read in the transaction that changes them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub activity: ActivityRow,
    pub tasks: Vec<TaskRow>,
}

/// The clock and the engine timings a transition needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub now: i64,
    pub poll_after_ms: i64,
    pub default_timeout_ms: i64,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub activity: Option<ActivityUpdate>,
    pub tasks: Vec<TaskUpdate>,
    /// Close the current lifecycle row of the product version and open one for this activity.
    pub promote_lifecycle: bool,
}

#[derive(Debug)]
pub struct ActivityUpdate {
    pub id: i64,
    pub expected: ActivityStatus,
    pub changes: ActivityChanges,
}

#[derive(Debug)]
pub struct TaskUpdate {
    pub id: i64,
    pub expected: TaskStatus,
    /// Set for engine steps: the update only applies while this claim still owns the task.
    pub expected_lease: Option<String>,
    pub changes: TaskChanges,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.activity.is_none() && self.tasks.is_empty() && !self.promote_lifecycle
    }

    /// The status `task_id` has once the plan is applied (`current` when the plan leaves it).
    pub fn task_status_after(&self, task_id: i64, current: TaskStatus) -> TaskStatus {
        self.tasks
            .iter()
            .find(|t| t.id == task_id)
            .and_then(|t| t.changes.status)
            .and_then(TaskStatus::parse)
            .unwrap_or(current)
    }

    /// True when the plan leaves a step for the engine to do now.
    pub fn schedules_work(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| matches!(t.changes.step, Some(Some(_))))
    }

    /// The tasks this plan ends, by outcome, and the failed runs it runs again.
    pub fn task_outcomes(&self) -> TaskOutcomes {
        let mut outcomes = TaskOutcomes::default();
        for update in &self.tasks {
            match update.changes.status.and_then(TaskStatus::parse) {
                Some(TaskStatus::Processed) => outcomes.add(TaskOutcome::Processed),
                Some(TaskStatus::Failed) => outcomes.add(TaskOutcome::Failed),
                Some(TaskStatus::Aborted) => outcomes.add(TaskOutcome::Aborted),
                Some(TaskStatus::Planned | TaskStatus::Processing) | None => {}
            }
            if update.changes.runs_failed.is_some() {
                outcomes.add(TaskOutcome::Retried);
            }
        }
        outcomes
    }
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

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Processed {
        results: Option<Value>,
    },
    /// The task cannot succeed (nothing sent, rejected, timed out): no retry.
    Failed {
        errors: String,
    },
    /// The provider's run failed: `configurations.retry` may run the task again.
    RunFailed {
        errors: String,
    },
    Aborted {
        reason: String,
    },
}

/// Text with NUL characters replaced by U+FFFD: providers' messages and pipelines' logs may
/// hold anything, and PostgreSQL cannot store NUL in text (the task would never finish).
fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

impl Outcome {
    /// The outcome as it can be stored (see `without_nul`).
    pub fn without_nul(self) -> Outcome {
        match self {
            Outcome::Failed { errors } => Outcome::Failed {
                errors: without_nul(errors),
            },
            Outcome::RunFailed { errors } => Outcome::RunFailed {
                errors: without_nul(errors),
            },
            Outcome::Aborted { reason } => Outcome::Aborted {
                reason: without_nul(reason),
            },
            processed @ Outcome::Processed { .. } => processed,
        }
    }
}

/// What a callback said, kept as-is to recognise a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub status: ReportedStatus,
    pub results: Option<Value>,
    pub errors: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportedStatus {
    Processed,
    Failed,
}

impl Report {
    /// The report as it can be stored, so that a replay compares equal to what was recorded.
    fn without_nul(self) -> Report {
        Report {
            errors: self.errors.map(without_nul),
            ..self
        }
    }

    fn outcome(&self) -> Outcome {
        match self.status {
            ReportedStatus::Processed => Outcome::Processed {
                results: self.results.clone(),
            },
            ReportedStatus::Failed => Outcome::RunFailed {
                errors: self
                    .errors
                    .clone()
                    .unwrap_or_else(|| "the pipeline reported a failure".into()),
            },
        }
    }

    pub(super) fn task_status(&self) -> TaskStatus {
        match self.status {
            ReportedStatus::Processed => TaskStatus::Processed,
            ReportedStatus::Failed => TaskStatus::Failed,
        }
    }
}

#[derive(Debug)]
pub enum CallbackDecision {
    Apply(Plan),
    /// The same callback was already recorded: answer with the task's status, change nothing.
    AlreadyRecorded(TaskStatus),
}

pub(super) fn activity_status(s: &Snapshot) -> ActivityStatus {
    ActivityStatus::parse(&s.activity.status).unwrap_or(ActivityStatus::Failed)
}

pub(super) fn task_status(t: &TaskRow) -> TaskStatus {
    TaskStatus::parse(&t.status).unwrap_or(TaskStatus::Failed)
}

impl Snapshot {
    pub fn task(&self, id: i64) -> Option<&TaskRow> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

/// Releases whatever the engine held on a task.
pub(super) fn released(mut c: TaskChanges) -> TaskChanges {
    c.step = Some(None);
    c.due_at = Some(None);
    c.lease_owner = Some(None);
    c.lease_until = Some(None);
    c
}

pub(super) fn reschedule(mut c: TaskChanges, step: Step, due: i64) -> TaskChanges {
    c.step = Some(Some(step.as_str()));
    c.due_at = Some(Some(due));
    c.lease_owner = Some(None);
    c.lease_until = Some(None);
    c
}

/// The task's `timeout` and `retry` settings, from its configurations as planned.
pub(super) fn run_settings(task: &TaskRow) -> RunSettings {
    RunSettings::of(task.configurations_as_planned())
}

/// The task's own timeout (`configurations.timeout`, seconds) or the default.
pub(super) fn timeout_ms(task: &TaskRow, default_ms: i64) -> i64 {
    run_settings(task).timeout_ms.unwrap_or(default_ms)
}

/// Records the resolved configurations of a run, keeping the planned ones for the next run.
pub(super) fn resolved_configurations(task: &TaskRow, resolved: Option<String>) -> TaskChanges {
    let keep_planned = resolved.is_some() && task.planned_configurations.is_none();
    // "{}" for none at all: NULL would make the next run resolve the resolved ones.
    let planned = || Some(task.configurations.clone().unwrap_or_else(|| "{}".into()));
    TaskChanges {
        planned_configurations: keep_planned.then(planned),
        configurations: resolved.map(Some),
        ..TaskChanges::default()
    }
}

pub(super) fn begin(task: &TaskRow, t: &Timing) -> TaskUpdate {
    let changes = TaskChanges {
        status: Some(TaskStatus::Processing.as_str()),
        started_at: Some(Some(t.now)),
        deadline_at: Some(Some(
            t.now.saturating_add(timeout_ms(task, t.default_timeout_ms)),
        )),
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
