//! A task's run, for people and for providers (DESIGN §6): what `GET /tasks/{id}/run` and
//! `/logs` need to ask the task's executor (its run and the activity's secrets), and what an
//! Azure DevOps service hook does: make the poll of a completed run due now.

use super::error::CommandError;
use super::service::{apply, snapshot, LifecycleService};
use super::state;
use crate::clock::now_ms;
use crate::db::{self, SnapshotOf};
use crate::domain::TaskId;
use crate::executor::azure_devops::RunLocation;
use crate::executor::{RunRef, Secrets};

/// Everything needed to ask a task's executor about its run.
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub executor: String,
    pub run: RunRef,
    /// The run's page as the executor gave it when the run was created.
    pub run_url: Option<String>,
    /// The activity's secrets for that executor (none once the activity ended: they are
    /// deleted then, and the executor's own credentials are used).
    pub secrets: Secrets,
}

impl LifecycleService {
    /// The task's run; `None` when it never had one (not dispatched yet, no executor, or the
    /// dispatch's outcome is unknown).
    pub async fn task_run(&self, id: TaskId) -> Result<Option<TaskRun>, CommandError> {
        let row = self
            .db
            .read(move |conn| db::find_task_run(conn, id)?.ok_or(CommandError::TaskNotFound(id)))
            .await?;
        let (Some(executor), Some(run_ref)) = (row.executor_ref, row.run_ref) else {
            return Ok(None);
        };
        let Ok(run) = serde_json::from_str(&run_ref) else {
            tracing::error!(task_id = id.get(), "the task's run reference is not JSON");
            return Ok(None);
        };
        let secrets = match &row.sealed_secrets {
            None => Secrets::new(),
            Some(sealed) => match self.keys().unseal(row.activity_id.get(), sealed) {
                Ok(mut all) => all.remove(&executor).unwrap_or_default(),
                Err(why) => {
                    // As for a poll: the executor's own credentials, and the provider decides.
                    tracing::warn!(task_id = id.get(), reason = %why, "the activity's secrets cannot be opened; asking with the executor's own credentials");
                    Secrets::new()
                }
            },
        };
        Ok(Some(TaskRun {
            executor,
            run: RunRef(run),
            run_url: row.run_url,
            secrets,
        }))
    }

    /// Azure DevOps said run `run_id` of pipeline `pipeline_id` completed: the poll of the task
    /// of `executor` awaiting that run is made due now and the engine woken, so the run is
    /// settled as any poll that finds it finished would (DESIGN §10). The task, when one was
    /// waiting; `None` for a run we do not know or a task no longer awaiting it (settled by its
    /// callback or a poll, or a poll under way): nothing changes then.
    pub async fn run_completed(
        &self,
        executor: String,
        pipeline_id: i32,
        run_id: i32,
    ) -> Result<Option<TaskId>, CommandError> {
        let listeners = self.listeners.clone();
        let (task, applied) = self
            .db
            .write(move |conn| {
                let now = now_ms();
                let mut polled = None;
                let mut applied = Vec::new();
                for (task_id, run_ref) in db::awaiting_tasks_of_run(conn, &executor, run_id)? {
                    let same_run = serde_json::from_str(&run_ref)
                        .ok()
                        .and_then(|json| RunLocation::from_json(&json).ok())
                        .is_some_and(|r| r.pipeline_id == pipeline_id && r.run_id == run_id);
                    if !same_run {
                        continue;
                    }
                    let missing = || CommandError::TaskNotFound(task_id);
                    let s = snapshot(conn, SnapshotOf::TaskActivity(task_id), missing)?;
                    let plan = state::poll_now(&s, task_id, now);
                    if !plan.is_empty() {
                        applied.push(apply(conn, &plan, s.activity.id, &listeners)?);
                        polled.get_or_insert(task_id);
                    }
                }
                Ok::<_, CommandError>((polled, applied))
            })
            .await?;
        for done in applied {
            done.committed(&self.metrics, &self.waker);
        }
        Ok(task)
    }

    /// Whether `executor` has a run request under way (`run_completed` may then find the run
    /// once its answer is recorded).
    pub async fn dispatching(&self, executor: String) -> Result<bool, CommandError> {
        self.db
            .read(move |conn| Ok(db::dispatching(conn, &executor)?))
            .await
    }
}
