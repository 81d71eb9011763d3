//! `GET /tasks/{id}/run` and `GET /tasks/{id}/logs` (DESIGN §6 "Run status and logs, for
//! people"): the task's executor is asked now, with the activity's secrets, and nothing is
//! stored. Each worker thread has executors of its own (awc is `!Send`), built at its first
//! such request, sharing the engine's Azure identities (one token cache per executor).

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::request::path_id;
use super::ApiState;
use crate::clock::{format_ms, now_ms};
use crate::config::{ExecutorSettings, Settings};
use crate::domain::TaskId;
use crate::executor::{AzureIdentities, Executor, ExecutorError, Executors, ViewError};
use crate::lifecycle::TaskRun;
use crate::metrics::Metrics;
use crate::secret::Secret;

/// What each worker builds its executors from (`Send`: no client in it), and the secrets of
/// the service hooks (`hooks.rs`).
#[derive(Clone)]
pub struct RunViewParts {
    executors: BTreeMap<String, ExecutorSettings>,
    identities: AzureIdentities,
    metrics: Arc<Metrics>,
    max_bytes: usize,
    /// `executors.<name>.service_hook_secret` of each active `azure-devops` executor that has one.
    pub(super) hook_secrets: Arc<HashMap<String, Secret>>,
}

impl RunViewParts {
    pub fn new(settings: &Settings, identities: &AzureIdentities, metrics: &Arc<Metrics>) -> Self {
        RunViewParts {
            executors: settings.executors.clone(),
            identities: identities.clone(),
            metrics: metrics.clone(),
            max_bytes: settings.logs.max_bytes,
            hook_secrets: Arc::new(hook_secrets(settings)),
        }
    }

    pub fn on_this_thread(&self) -> RunViews {
        RunViews {
            parts: self.clone(),
            executors: OnceCell::new(),
        }
    }
}

/// The executors of one worker thread, built when first needed.
pub struct RunViews {
    parts: RunViewParts,
    executors: OnceCell<Executors>,
}

impl RunViews {
    /// The service hook secret of `executor`; `None`: it takes no service hooks.
    pub(super) fn hook_secret(&self, executor: &str) -> Option<&Secret> {
        self.parts.hook_secrets.get(executor)
    }

    fn executors(&self) -> &Executors {
        self.executors.get_or_init(|| {
            let p = &self.parts;
            Executors::build(&p.executors, &p.metrics, &p.identities)
        })
    }
}

/// The executors whose service hook route is on (`service_hook_secret` set), with the secret.
pub fn hook_secrets(settings: &Settings) -> HashMap<String, Secret> {
    settings
        .executors
        .iter()
        .filter_map(|(name, executor)| match executor {
            ExecutorSettings::AzureDevops(s) if s.active => s
                .service_hook_secret
                .clone()
                .filter(|secret| !secret.is_empty())
                .map(|secret| (name.clone(), secret)),
            _ => None,
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunResource {
    state: String,
    result: Option<String>,
    url: Option<String>,
    checked_at: String,
}

/// The task of the path, its run, and the executor that can show it.
async fn task_and_executor(
    req: &HttpRequest,
    state: &ApiState,
    views: &RunViews,
) -> Result<(TaskId, TaskRun, Rc<dyn Executor>), ApiError> {
    let id = TaskId(path_id(req, "task")?);
    let task = task_run(state, id).await?;
    let executor = views
        .executors()
        .lookup(&task.executor)
        .map_err(|why| not_offered(&why))?;
    Ok((id, task, executor))
}

/// `{"state", "result", "url", "checkedAt"}` as the provider reports the run now.
pub async fn run(
    req: HttpRequest,
    state: web::Data<ApiState>,
    views: web::Data<RunViews>,
) -> Result<HttpResponse, ApiError> {
    let (id, task, executor) = task_and_executor(&req, &state, &views).await?;
    let view = executor
        .run_view(&task.run, &task.secrets)
        .await
        .map_err(|e| provider_error(id, &task, "the state of its run", e))?;
    Ok(HttpResponse::Ok().json(RunResource {
        state: view.state,
        result: view.result,
        url: view.url.or(task.run_url),
        checked_at: format_ms(now_ms()),
    }))
}

/// The run's logs as text: the last `logs.max_bytes` bytes (`X-Logs-Truncated: true` when
/// earlier text was left out).
pub async fn logs(
    req: HttpRequest,
    state: web::Data<ApiState>,
    views: web::Data<RunViews>,
) -> Result<HttpResponse, ApiError> {
    let (id, task, executor) = task_and_executor(&req, &state, &views).await?;
    let logs = executor
        .logs(&task.run, &task.secrets, views.parts.max_bytes)
        .await
        .map_err(|e| provider_error(id, &task, "the logs of its run", e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Logs-Truncated", logs.truncated.to_string()))
        .insert_header(("X-Logs-Max-Bytes", views.parts.max_bytes.to_string()))
        .body(logs.text))
}

async fn task_run(state: &ApiState, id: TaskId) -> Result<TaskRun, ApiError> {
    state.lifecycle.task_run(id).await?.ok_or_else(|| {
        ApiError::new(
            404,
            "40412",
            "Task has no run",
            format!(
                "task {id} has no run at its executor: it has not been dispatched, it needs no \
                 executor, or its dispatch's outcome is unknown (it waits for its callback)"
            ),
        )
    })
}

/// 404 40413: the executor is no longer configured, or cannot show runs.
fn not_offered(why: &str) -> ApiError {
    ApiError::new(404, "40413", "Run not viewable", why.to_owned())
}

/// The provider could not answer (503 50081, `Retry-After`) or refused (502 50281). The
/// message says which executor and what happened; the whole error goes to the log.
fn provider_error(id: TaskId, task: &TaskRun, what: &str, error: ViewError) -> ApiError {
    let executor = &task.executor;
    tracing::warn!(task_id = id.get(), %executor, %error, "reading {what} failed");
    let error = match error {
        ViewError::NotSupported(_) => {
            return not_offered(&format!(
                "executor [{executor}] cannot show {what}: its kind (ODM's executor protocol) \
                 has no such request"
            ))
        }
        ViewError::Provider(error) => error,
    };
    match error {
        ExecutorError::RateLimited { retry_after, .. } => ApiError {
            retry_after: Some(retry_after.map_or(1, |d| d.as_secs().max(1))),
            ..ApiError::new(
                503,
                "50081",
                "Executor provider unavailable",
                format!(
                    "executor [{executor}]: its provider asked to slow down (HTTP 429) while \
                     reading {what} of task {id}; try again later"
                ),
            )
        },
        ExecutorError::Transient(message) | ExecutorError::OutcomeUnknown(message) => ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                503,
                "50081",
                "Executor provider unavailable",
                format!(
                    "executor [{executor}]: its provider did not answer reading {what} of task \
                     {id}: {message}; try again"
                ),
            )
        },
        ExecutorError::Unauthorized(message) | ExecutorError::InvalidTask(message) => {
            ApiError::new(
                502,
                "50281",
                "Executor provider refused",
                format!("executor [{executor}] could not read {what} of task {id}: {message}"),
            )
        }
    }
}
