//! Rows as stored. JSON columns are kept as text: the API returns them as JSON-in-string (ODM).

use diesel::prelude::*;

use super::schema::{activities, lifecycles, tasks};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = activities)]
pub struct ActivityRow {
    pub id: i64,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub status: String,
    pub results: Option<String>,
    pub errors: Option<String>,
    pub sealed_secrets: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = activities)]
pub struct NewActivity<'a> {
    pub data_product_id: &'a str,
    pub data_product_version: &'a str,
    pub stage: &'a str,
    pub status: &'a str,
    pub sealed_secrets: Option<&'a str>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tasks)]
pub struct TaskRow {
    pub id: i64,
    pub activity_id: i64,
    pub position: i32,
    pub name: String,
    pub description: Option<String>,
    pub executor_ref: Option<String>,
    pub template: Option<String>,
    pub configurations: Option<String>,
    pub status: String,
    pub results: Option<String>,
    pub errors: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempt: i32,
    pub run_ref: Option<String>,
    pub run_url: Option<String>,
    pub step: Option<String>,
    pub due_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub deadline_at: Option<i64>,
    pub step_attempts: i32,
    pub reported_outcome: Option<String>,
    /// Runs of this task that failed and were followed by another (`configurations.retry`).
    pub runs_failed: i32,
    /// The configurations as created, set once the stored ones are the resolved ones: each new
    /// run resolves these again.
    pub planned_configurations: Option<String>,
}

impl TaskRow {
    /// The configurations as created: each run resolves these, not the resolved ones stored.
    pub fn configurations_as_planned(&self) -> Option<&str> {
        self.planned_configurations
            .as_deref()
            .or(self.configurations.as_deref())
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    pub activity_id: i64,
    pub position: i32,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub executor_ref: Option<&'a str>,
    pub template: Option<String>,
    pub configurations: Option<String>,
    pub status: &'a str,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = lifecycles)]
pub struct LifecycleRow {
    pub id: i64,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub activity_id: Option<i64>,
    pub results: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A partial update of an activity: `None` leaves a column alone, `Some(None)` sets NULL.
#[derive(Debug, Clone, Default, PartialEq, AsChangeset)]
#[diesel(table_name = activities)]
pub struct ActivityChanges {
    pub status: Option<&'static str>,
    pub results: Option<Option<String>>,
    pub errors: Option<Option<String>>,
    pub sealed_secrets: Option<Option<String>>,
    pub started_at: Option<Option<i64>>,
    pub finished_at: Option<Option<i64>>,
}

/// A partial update of a task: `None` leaves a column alone, `Some(None)` sets NULL.
#[derive(Debug, Clone, Default, PartialEq, AsChangeset)]
#[diesel(table_name = tasks)]
pub struct TaskChanges {
    pub status: Option<&'static str>,
    pub results: Option<Option<String>>,
    pub errors: Option<Option<String>>,
    pub configurations: Option<Option<String>>,
    pub started_at: Option<Option<i64>>,
    pub finished_at: Option<Option<i64>>,
    pub run_ref: Option<Option<String>>,
    pub run_url: Option<Option<String>>,
    pub step: Option<Option<&'static str>>,
    pub due_at: Option<Option<i64>>,
    pub lease_owner: Option<Option<String>>,
    pub lease_until: Option<Option<i64>>,
    pub deadline_at: Option<Option<i64>>,
    pub step_attempts: Option<i32>,
    pub reported_outcome: Option<Option<String>>,
    pub attempt: Option<i32>,
    pub runs_failed: Option<i32>,
    pub planned_configurations: Option<Option<String>>,
}

/// What the Context needs of an activity.
#[derive(Debug, Clone, Queryable)]
pub struct StageActivity {
    pub id: i64,
    pub stage: String,
    pub status: String,
    pub finished_at: Option<i64>,
    pub results: Option<String>,
}
