//! ODM's wire format of activities, tasks and lifecycles: JSON-in-string fields, string
//! `activityId`, ODM timestamps, nulls included. Here rather than in `api` because the
//! notifications (`crate::notifications`) send the same shapes as the API returns.

use serde::Serialize;

use crate::clock::format_ms;
use crate::db::models::{ActivityRow, LifecycleRow, TaskRow};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityResource {
    pub id: i64,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub status: String,
    pub results: Option<String>,
    pub errors: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<ActivityRow> for ActivityResource {
    fn from(a: ActivityRow) -> Self {
        ActivityResource {
            id: a.id.get(),
            data_product_id: a.data_product_id,
            data_product_version: a.data_product_version,
            stage: a.stage,
            status: a.status.to_string(),
            results: a.results,
            errors: a.errors,
            created_at: Some(format_ms(a.created_at)),
            started_at: a.started_at.map(format_ms),
            finished_at: a.finished_at.map(format_ms),
        }
    }
}

/// `callbackRef` is ODM's field but stays null here: it holds the callback token.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResource {
    pub id: i64,
    pub activity_id: String,
    pub position: i32,
    pub name: String,
    pub description: Option<String>,
    pub executor_ref: Option<String>,
    pub callback_ref: Option<String>,
    pub template: Option<String>,
    pub configurations: Option<String>,
    pub status: String,
    pub results: Option<String>,
    pub errors: Option<String>,
    /// The provider's page for the run (an Azure DevOps run URL), when known.
    pub run_url: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<TaskRow> for TaskResource {
    fn from(t: TaskRow) -> Self {
        TaskResource {
            id: t.id.get(),
            activity_id: t.activity_id.to_string(),
            position: t.position,
            name: t.name,
            description: t.description,
            executor_ref: t.executor_ref,
            callback_ref: None,
            template: t.template,
            configurations: t.configurations,
            status: t.status.to_string(),
            results: t.results,
            errors: t.errors,
            run_url: t.run_url,
            created_at: Some(format_ms(t.created_at)),
            started_at: t.started_at.map(format_ms),
            finished_at: t.finished_at.map(format_ms),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleResource {
    pub id: i64,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub results: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<LifecycleRow> for LifecycleResource {
    fn from(l: LifecycleRow) -> Self {
        LifecycleResource {
            id: l.id,
            data_product_id: l.data_product_id,
            data_product_version: l.data_product_version,
            stage: l.stage,
            results: l.results,
            started_at: Some(format_ms(l.started_at)),
            finished_at: l.finished_at.map(format_ms),
        }
    }
}
