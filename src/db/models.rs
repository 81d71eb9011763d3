//! Rows as stored, for the API's reads and for creating activities. JSON columns are kept as
//! text: the API returns them as JSON-in-string (ODM). The engine and the state machine never
//! see these rows: they get domain types (`crate::domain`), mapped in `queries/`.

use diesel::prelude::*;

use super::schema::{activities, lifecycles, tasks};
use crate::domain::{
    ActivityChanges, ActivityId, ActivityStatus, Step, TaskChanges, TaskId, TaskStatus,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = activities)]
pub struct ActivityRow {
    pub id: ActivityId,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub status: ActivityStatus,
    pub results: Option<String>,
    pub errors: Option<String>,
    pub sealed_secrets: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl ActivityRow {
    /// The row as `apply_plan` leaves it after `changes`: what a command that wrote it
    /// answers, without reading it back (a round trip on PostgreSQL).
    pub fn changed_by(mut self, changes: &ActivityChanges) -> ActivityRow {
        let ActivityChanges {
            status,
            results,
            errors,
            drop_secrets,
            started_at,
            finished_at,
        } = changes;
        if let Some(status) = status {
            self.status = *status;
        }
        if let Some(results) = results {
            self.results.clone_from(results);
        }
        if let Some(errors) = errors {
            self.errors.clone_from(errors);
        }
        if *drop_secrets {
            self.sealed_secrets = None;
        }
        if let Some(started_at) = started_at {
            self.started_at = *started_at;
        }
        if let Some(finished_at) = finished_at {
            self.finished_at = *finished_at;
        }
        self
    }
}

impl NewActivity<'_> {
    /// The row inserted with `changes` already made (a start decided before the INSERT), or
    /// `None` when they set a column the INSERT does not write.
    pub fn changed_by(self, changes: &ActivityChanges) -> Option<Self> {
        let ActivityChanges {
            status,
            results: None,
            errors: None,
            drop_secrets: false,
            started_at,
            finished_at: None,
        } = changes
        else {
            return None;
        };
        Some(NewActivity {
            status: status.unwrap_or(self.status),
            started_at: started_at.unwrap_or(self.started_at),
            ..self
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = activities)]
pub struct NewActivity<'a> {
    pub data_product_id: &'a str,
    pub data_product_version: &'a str,
    pub stage: &'a str,
    pub status: ActivityStatus,
    pub sealed_secrets: Option<&'a str>,
    pub created_at: i64,
    pub started_at: Option<i64>,
}

/// A task as the API shows it (the engine's own columns are left out).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tasks)]
pub struct TaskRow {
    pub id: TaskId,
    pub activity_id: ActivityId,
    pub position: i32,
    pub name: String,
    pub description: Option<String>,
    pub executor_ref: Option<String>,
    pub template: Option<String>,
    /// As planned until the first dispatch, then as resolved for the last run.
    pub configurations: Option<String>,
    pub status: TaskStatus,
    pub results: Option<String>,
    pub errors: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempt: i32,
    pub run_url: Option<String>,
    pub step: Option<Step>,
}

impl NewTask<'_> {
    /// The row inserted with `changes` already made (a start decided before the INSERT), or
    /// `None` when they set a column the INSERT does not write.
    pub fn changed_by(self, changes: &TaskChanges) -> Option<Self> {
        let TaskChanges {
            status,
            results: None,
            errors: None,
            configurations: None,
            started_at,
            finished_at: None,
            run_ref: None,
            run_url: None,
            step,
            due_at,
            lease_owner,
            lease_until,
            deadline_at,
            step_attempts,
            reported_outcome: None,
            attempt,
            runs_failed: None,
        } = changes
        else {
            return None;
        };
        let was = self.begun;
        Some(NewTask {
            status: status.unwrap_or(self.status),
            begun: BegunColumns {
                started_at: started_at.unwrap_or(was.started_at),
                deadline_at: deadline_at.unwrap_or(was.deadline_at),
                attempt: attempt.unwrap_or(was.attempt),
                step: step.unwrap_or(was.step),
                step_attempts: step_attempts.unwrap_or(was.step_attempts),
                due_at: due_at.unwrap_or(was.due_at),
                lease_owner: lease_owner.clone().unwrap_or(was.lease_owner),
                lease_until: lease_until.unwrap_or(was.lease_until),
            },
            ..self
        })
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    pub activity_id: ActivityId,
    pub position: i32,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub executor_ref: Option<&'a str>,
    pub template: Option<String>,
    pub configurations: Option<String>,
    /// The same as `configurations`: kept when a run stores its resolved ones there.
    pub planned_configurations: Option<String>,
    pub status: TaskStatus,
    pub created_at: i64,
    pub timeout_ms: Option<i64>,
    pub retry_max: Option<i32>,
    pub retry_backoff_ms: Option<i64>,
    #[diesel(embed)]
    pub begun: BegunColumns,
}

/// What a task's start writes in its row (`NewTask::changed_by`); a PLANNED task has none of it
/// (`Default`).
#[derive(Debug, Default, Insertable)]
#[diesel(table_name = tasks)]
pub struct BegunColumns {
    pub started_at: Option<i64>,
    pub deadline_at: Option<i64>,
    pub attempt: i32,
    pub step: Option<Step>,
    pub step_attempts: i32,
    pub due_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = lifecycles)]
pub struct LifecycleRow {
    pub id: i64,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub activity_id: Option<ActivityId>,
    pub results: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// What the Context needs of an activity.
#[derive(Debug, Clone, Queryable)]
pub struct StageActivity {
    pub id: ActivityId,
    pub stage: String,
    pub status: ActivityStatus,
    pub finished_at: Option<i64>,
    pub results: Option<String>,
}
