//! Reading a task's state: from the mapping when it cannot change, else from Azure now,
//! recorded in the mapping.

use super::{odm_status, unavailable, ExecutorApi, ExecutorApiError, COMPLETED};
use crate::clock::now_ms;
use crate::db::{self, ExecutorRunRow, ExecutorRunUpdate};
use crate::executor::azure_devops::RunLocation;
use crate::executor::{ExecutorError, RunRef, Secrets};
use crate::telemetry::error_chain;

impl ExecutorApi {
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
    pub(super) async fn record(
        &self,
        row: ExecutorRunRow,
        update: ExecutorRunUpdate,
    ) -> ExecutorRunRow {
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
}
