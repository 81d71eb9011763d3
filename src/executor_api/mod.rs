//! The Azure DevOps executor as an independent module (DESIGN §6): ODM's executor protocol
//! answered by this binary, so a stock ODM DevOps server can use it as its Azure DevOps
//! executor. A task received here starts an Azure DevOps run at once (the caller's own engine
//! owns the task; nothing here is scheduled), the task → run mapping is kept in
//! `executor_runs`, and each status read asks Azure now and records what it said.
//!
//! Azure is reached through the same `AzureDevOpsExecutor` the engine uses (its token cache,
//! retries, `Retry-After`, timeouts), one per worker thread (awc is `!Send`), all sharing the
//! executor's identity, so one Entra token serves the engine and this API.

mod task;

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::config::{AzureDevOpsSettings, ExecutorSettings, OnMissing, Settings};
use crate::db::{self, Db, DbError, ExecutorRunRow, ExecutorRunUpdate, SUBMITTING};
use crate::executor::azure_devops::{check_task, AzureDevOpsExecutor, AzureIdentity, RunLocation};
use crate::executor::{AzureIdentities, Executor, ExecutorError, RunRef, Secrets, Submission};
use crate::metrics::{ExecutorMetrics, Metrics};
use crate::placeholders::{self, ResolveError, StageTaskNames};
use crate::telemetry::error_chain;

/// No run: the request was refused (by Azure, or by an unusable executor); `errors` says why.
const REFUSED: &str = "refused";
/// The run request may have created a run whose id never came back; the pipeline's callback
/// to the caller settles the task.
const UNCONFIRMED: &str = "unconfirmed";
/// Azure's state of a finished run.
const COMPLETED: &str = "completed";

#[derive(Debug, thiserror::Error)]
pub enum ExecutorApiError {
    /// The task cannot run as written; nothing was sent to Azure.
    #[error("{0}")]
    InvalidTask(String),
    /// This task id already has a run, started from another request.
    #[error("{0}")]
    Conflict(String),
    #[error("no task {0} was sent to this executor")]
    NotFound(i64),
    /// Azure DevOps could not be reached or throttled us; nothing was created, try again.
    #[error("{message}")]
    AzureUnavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Azure DevOps refused the request (credentials, a deleted run).
    #[error("{0}")]
    AzureRefused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ExecutorApiError {
    fn from(e: diesel::result::Error) -> Self {
        ExecutorApiError::Db(DbError::from(e))
    }
}

/// What every worker's `ExecutorApi` is built from (`Send`: no client in it).
#[derive(Clone)]
pub struct ExecutorApiParts {
    db: Db,
    name: String,
    executor: Result<(AzureDevOpsSettings, AzureIdentity), String>,
    on_missing: OnMissing,
    max_bytes: usize,
    metrics: ExecutorMetrics,
}

impl ExecutorApiParts {
    /// `None` when `executor_api.enabled` is false. An executor that cannot be used (missing,
    /// another kind, no credentials) leaves the API up: its tasks fail saying why, as the
    /// engine's do.
    pub fn new(
        settings: &Settings,
        db: Db,
        identities: &AzureIdentities,
        metrics: &Metrics,
    ) -> Option<ExecutorApiParts> {
        if !settings.executor_api.enabled {
            return None;
        }
        let name = settings.executor_api.executor.clone();
        let executor = match settings.executors.get(&name) {
            Some(ExecutorSettings::AzureDevops(s)) if s.active => identities
                .get(&name)
                .unwrap_or_else(|| AzureIdentity::new(&name, s))
                .map(|identity| (s.clone(), identity)),
            Some(ExecutorSettings::AzureDevops(_)) => {
                Err(format!("executors.{name} is not active"))
            }
            Some(_) => Err(format!(
                "executors.{name} is not an azure-devops executor (executor_api.executor)"
            )),
            None => Err(format!(
                "no executor is named {name} under executors (executor_api.executor)"
            )),
        };
        if let Err(problem) = &executor {
            tracing::warn!(%problem, "executor API: its tasks will fail until the executor is configured");
        }
        Some(ExecutorApiParts {
            db,
            metrics: metrics.executor(&name),
            name,
            executor,
            on_missing: settings.placeholders.on_missing,
            max_bytes: settings.limits.configurations_bytes,
        })
    }

    /// The API for the calling worker thread, with an Azure client of its own.
    pub fn on_this_thread(&self) -> ExecutorApi {
        let executor = self.executor.clone().and_then(|(settings, identity)| {
            AzureDevOpsExecutor::with_identity(&self.name, &settings, identity)
                .map(|e| Rc::new(e.recording_to(self.metrics.clone())))
        });
        ExecutorApi {
            parts: self.clone(),
            executor,
        }
    }
}

pub struct ExecutorApi {
    parts: ExecutorApiParts,
    executor: Result<Rc<AzureDevOpsExecutor>, String>,
}

impl ExecutorApi {
    /// Starts the task's run, or answers the run it already has (the same request again).
    /// The answer is the task as sent, `status` PROCESSING, or FAILED with Azure's `errors`.
    pub async fn create(&self, body: Value, secrets: Secrets) -> Result<Value, ExecutorApiError> {
        let task = task::parse(body).map_err(|problems| {
            ExecutorApiError::InvalidTask(format!("the task is invalid: {}", problems.join("; ")))
        })?;
        let (template, configurations) = self.resolve(&task)?;
        let target = check_task(&template, &configurations)
            .map_err(|e| ExecutorApiError::InvalidTask(e.to_string()))?;
        let now = now_ms();
        let claim = ExecutorRunRow {
            task_id: task.id,
            fingerprint: task.fingerprint.clone(),
            organization: target.organization,
            project: target.project,
            pipeline_id: target.pipeline_id,
            run_id: None,
            run_url: None,
            state: SUBMITTING.into(),
            result: None,
            errors: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let (standing, owned) = self
            .parts
            .db
            .write(move |conn| db::claim_executor_run(conn, &claim).map_err(ExecutorApiError::from))
            .await?;
        if !owned {
            if standing.fingerprint != task.fingerprint {
                return Err(ExecutorApiError::Conflict(format!(
                    "task {} already has a pipeline run here, started from a different request \
                     (another callbackRef, template or configurations): a task id runs once",
                    task.id
                )));
            }
            tracing::info!(
                task_id = task.id,
                "the same task again: answered with its run, nothing started"
            );
            return Ok(echo(task, &standing));
        }
        let submission = Submission {
            task_id: task.id,
            activity_id: task.activity_id.unwrap_or(0),
            task_name: format!("task {}", task.id),
            callback_ref: task.callback_ref.clone(),
            template,
            configurations,
            secrets,
        };
        let submitted = match &self.executor {
            Ok(executor) => executor.submit(&submission).await,
            Err(problem) => Err(ExecutorError::InvalidTask(format!(
                "Executor [{}] is not configured correctly: {problem}",
                self.parts.name
            ))),
        };
        let now = now_ms();
        let settled = |state: &str, errors: Option<String>, finished_at| ExecutorRunUpdate {
            run_id: None,
            run_url: None,
            state: state.into(),
            result: None,
            errors,
            updated_at: now,
            finished_at,
        };
        let update = match submitted {
            Ok(submitted) => ExecutorRunUpdate {
                run_id: RunLocation::from_json(&submitted.run.0)
                    .ok()
                    .map(|run| run.run_id),
                run_url: submitted.web_url,
                ..settled("inProgress", None, None)
            },
            Err(ExecutorError::OutcomeUnknown(message)) => {
                settled(UNCONFIRMED, Some(message), None)
            }
            Err(ExecutorError::InvalidTask(message) | ExecutorError::Unauthorized(message)) => {
                settled(REFUSED, Some(message), Some(now))
            }
            Err(error @ (ExecutorError::RateLimited { .. } | ExecutorError::Transient(_))) => {
                let task_id = task.id;
                self.parts
                    .db
                    .write(move |conn| {
                        db::release_executor_run(conn, task_id).map_err(ExecutorApiError::from)
                    })
                    .await?;
                return Err(unavailable(error));
            }
        };
        Ok(echo(task, &self.record(standing, update).await))
    }

    /// The task's state as ODM names it, asked from Azure now while its run is going, and
    /// recorded in the mapping.
    pub async fn status(
        &self,
        task_id: i64,
        secrets: Secrets,
    ) -> Result<&'static str, ExecutorApiError> {
        let row = self
            .parts
            .db
            .read(move |conn| db::find_executor_run(conn, task_id).map_err(ExecutorApiError::from))
            .await?
            .ok_or(ExecutorApiError::NotFound(task_id))?;
        let run_id = match row.run_id {
            Some(run_id) if row.state != COMPLETED => run_id,
            // Refused, finished, or no run id to ask about: nothing can change it from here.
            _ => return Ok(odm_status(&row.state, row.result.as_deref())),
        };
        let executor = self.executor.as_ref().map_err(|problem| {
            ExecutorApiError::AzureRefused(format!(
                "Executor [{}] is not configured correctly: {problem}",
                self.parts.name
            ))
        })?;
        let location = RunLocation {
            organization: row.organization.clone(),
            project: row.project.clone(),
            pipeline_id: row.pipeline_id,
            run_id,
        };
        let live = executor
            .run_state(&RunRef(location.to_json()), &secrets)
            .await
            .map_err(|error| match error {
                ExecutorError::InvalidTask(message) | ExecutorError::Unauthorized(message) => {
                    ExecutorApiError::AzureRefused(message)
                }
                other => unavailable(other),
            })?;
        let status = odm_status(&live.state, live.result.as_deref());
        let now = now_ms();
        let finished_at = (live.state == COMPLETED).then_some(now);
        let update = ExecutorRunUpdate {
            run_id: row.run_id,
            run_url: row.run_url.clone(),
            state: live.state,
            result: live.result,
            errors: row.errors.clone(),
            updated_at: now,
            finished_at,
        };
        self.record(row, update).await;
        Ok(status)
    }

    /// Stores `update` on the mapping; the row as it now is. A failed write is logged, not
    /// answered: Azure already did what the answer reports.
    async fn record(&self, row: ExecutorRunRow, update: ExecutorRunUpdate) -> ExecutorRunRow {
        let task_id = row.task_id;
        let stored = update.clone();
        let written = self
            .parts
            .db
            .write(move |conn| {
                db::update_executor_run(conn, task_id, &stored).map_err(ExecutorApiError::from)
            })
            .await;
        if let Err(error) = written {
            tracing::error!(task_id, error = %error_chain(&error), "the executor run mapping was not updated");
        }
        ExecutorRunRow {
            run_id: update.run_id,
            run_url: update.run_url,
            state: update.state,
            result: update.result,
            errors: update.errors,
            updated_at: update.updated_at,
            finished_at: update.finished_at,
            ..row
        }
    }

    /// The template and configurations with leftover placeholders resolved against the
    /// task's `context` (`taskN` references; the caller's task names are unknown here).
    fn resolve(&self, task: &task::OdmTask) -> Result<(Value, Value), ExecutorApiError> {
        let names = StageTaskNames::new();
        let resolve = |what: &str, value: &Value| {
            let max = self.parts.max_bytes;
            placeholders::resolve(value, &task.context, &names, self.parts.on_missing, max).map_err(
                |e| {
                    ExecutorApiError::InvalidTask(match e {
                        ResolveError::Unresolved(unresolved) => {
                            format!("the task's {what}: {unresolved}")
                        }
                        ResolveError::TooLarge { max } => format!(
                            "the task's {what}: its placeholders insert more than {max} bytes \
                             (limits.configurations_bytes)"
                        ),
                    })
                },
            )
        };
        Ok((
            resolve("template", &task.template)?,
            resolve("configurations", &task.configurations)?,
        ))
    }
}

/// ODM's TaskStatus for Azure's run `state` and `result` (or the mapping's own states).
pub fn odm_status(state: &str, result: Option<&str>) -> &'static str {
    match (state, result) {
        (REFUSED, _) => "FAILED",
        (COMPLETED, Some("succeeded")) => "PROCESSED",
        (COMPLETED, Some("canceled")) => "ABORTED",
        (COMPLETED, _) => "FAILED",
        _ => "PROCESSING",
    }
}

/// The task as it was sent, with the submission's outcome: PROCESSING once a run exists (or
/// may exist), FAILED with `errors` (and `finishedAt`) when there is none.
fn echo(task: task::OdmTask, row: &ExecutorRunRow) -> Value {
    let mut echo = task.echo;
    if row.state == REFUSED {
        echo.insert("status".into(), json!("FAILED"));
        echo.insert("errors".into(), json!(row.errors));
        if echo.get("finishedAt").is_none_or(Value::is_null) {
            echo.insert("finishedAt".into(), json!(row.finished_at));
        }
    } else {
        echo.insert("status".into(), json!("PROCESSING"));
    }
    Value::Object(echo)
}

fn unavailable(error: ExecutorError) -> ExecutorApiError {
    let retry_after = match &error {
        ExecutorError::RateLimited { retry_after, .. } => *retry_after,
        _ => None,
    };
    ExecutorApiError::AzureUnavailable {
        message: format!("Azure DevOps did not take the request, try again: {error}"),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::odm_status;

    #[test]
    fn azure_states_map_to_odm_statuses() {
        for (state, result, expected) in [
            ("inProgress", None, "PROCESSING"),
            ("canceling", None, "PROCESSING"),
            ("unknown", None, "PROCESSING"),
            ("submitting", None, "PROCESSING"),
            ("unconfirmed", None, "PROCESSING"),
            ("completed", Some("succeeded"), "PROCESSED"),
            ("completed", Some("failed"), "FAILED"),
            ("completed", Some("canceled"), "ABORTED"),
            ("completed", Some("skipped"), "FAILED"),
            ("completed", None, "FAILED"),
            ("refused", None, "FAILED"),
        ] {
            assert_eq!(odm_status(state, result), expected, "{state} {result:?}");
        }
    }
}
