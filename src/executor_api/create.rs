//! Starting a task's run: read, resolve, check, claim the task id, submit, record.

use serde_json::Value;

use super::task::{self, OdmTask};
use super::{echo, unavailable, ExecutorApi, ExecutorApiError, REFUSED, UNCONFIRMED};
use crate::clock::now_ms;
use crate::db::{self, ExecutorRunRow, ExecutorRunUpdate, SUBMITTING};
use crate::executor::azure_devops::{check_task, RunLocation};
use crate::executor::{Executor, ExecutorError, Secrets, Submission};
use crate::placeholders::{self, ResolveError, StageTaskNames};

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
            started_at: None,
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

    /// The template and configurations with leftover placeholders resolved against the
    /// task's `context` (`taskN` references; the caller's task names are unknown here).
    fn resolve(&self, task: &OdmTask) -> Result<(Value, Value), ExecutorApiError> {
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
