//! The dispatch step: resolve the task's placeholders against its Context, send it to its
//! executor, and record what came of it.

use std::rc::Rc;

use serde_json::Value;

use super::{Engine, EngineError, RETRY_CAP_MS};
use crate::clock::now_ms;
use crate::domain::{
    ActivityKeys, ClaimedStep, ClaimedTask, Outcome, Report, ReportedStatus, Step,
};
use crate::executor::{Executor, ExecutorError, RunOutcome, Secrets, Submission};
use crate::lifecycle::context::{self, TaskContext};
use crate::lifecycle::state::{self, Submittal};
use crate::metrics::StepResult;

impl Engine {
    /// A dispatch claimed from a holder that let its lease expire: it may have reached the
    /// provider, so it is not sent again.
    pub(super) async fn dispatch_abandoned(
        &self,
        claimed: ClaimedStep,
    ) -> Result<StepResult, EngineError> {
        tracing::warn!(
            task_id = claimed.task.id.get(),
            "a dispatch was interrupted (restart or crash) before its outcome was recorded; \
             not sending it again: waiting for the callback until the task's deadline"
        );
        let (task_id, lease, attempt) =
            (claimed.task.id, claimed.claim.clone(), claimed.task.attempt);
        self.decide(claimed.task.activity_id, move |s, t| {
            state::await_unknown_dispatch(s, task_id, &lease, attempt, None, t)
        })
        .await?;
        Ok(StepResult::OutcomeUnknown)
    }

    /// `context`: the task's Context when it was read already (with the dispatch's hand-off).
    pub(super) async fn dispatch(
        &self,
        claimed: ClaimedStep,
        context: Option<TaskContext>,
    ) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let Some(executor_name) = task.executor.clone() else {
            tracing::info!(
                task_id = task.id.get(),
                "task has no executor: done at once"
            );
            let done = Outcome::Processed { results: None };
            return self.finish(&claimed, Step::Dispatch, done, false).await;
        };
        let prepared = self
            .prepare(task, &claimed.activity, &executor_name, context)
            .await?;
        let (executor, submission) = match prepared {
            Ok(prepared) => prepared,
            // Nothing was sent: the task fails with the reason before any provider sees it.
            Err(errors) => {
                let failed = Outcome::Failed { errors };
                return self.finish(&claimed, Step::Dispatch, failed, false).await;
            }
        };
        let stored_configurations = submission.configurations.to_string();
        tracing::info!(task_id = task.id.get(), activity_id = task.activity_id.get(), executor = %executor_name, attempt = task.attempt, "dispatching task");
        self.note_next_dispatch(task);
        match executor.submit(&submission).await {
            Ok(submitted) => {
                tracing::info!(task_id = task.id.get(), run = %submitted.run.0, url = submitted.web_url.as_deref().unwrap_or(""), "task dispatched");
                let mut run = Submittal {
                    attempt: task.attempt,
                    run_ref: Some(submitted.run.0.to_string()),
                    run_url: submitted.web_url,
                    configurations: stored_configurations,
                    immediate: submitted.outcome.map(|o| self.outcome_of(o)),
                    held: None,
                };
                if let (true, Some(Outcome::Processed { results })) =
                    (self.gates_results(), &run.immediate)
                {
                    // Its result waits for the policy gates, as a callback's would.
                    run.held = Some(Report {
                        status: ReportedStatus::Processed,
                        results: results.clone(),
                        errors: None,
                    });
                    run.immediate = None;
                }
                // Usually decided on the claim alone, without a snapshot (`submitted_on_claim`).
                let on_claim = {
                    let (read, lease, run) = (task.read(), claimed.claim.clone(), run.clone());
                    move |t: &_| state::submitted_on_claim(&read, &lease, &run, t)
                };
                let (task_id, lease) = (task.id, claimed.claim.clone());
                self.decide_on_claim(task.activity_id, Some(on_claim), move |s, t| {
                    state::submitted(s, task_id, &lease, run, t)
                })
                .await
            }
            Err(ExecutorError::OutcomeUnknown(why)) => {
                tracing::warn!(task_id = task.id.get(), %why, "dispatch outcome unknown: waiting for the callback instead of sending again");
                let (task_id, lease, attempt) = (task.id, claimed.claim.clone(), task.attempt);
                self.decide(task.activity_id, move |s, t| {
                    state::await_unknown_dispatch(
                        s,
                        task_id,
                        &lease,
                        attempt,
                        Some(stored_configurations),
                        t,
                    )
                })
                .await?;
                Ok(StepResult::OutcomeUnknown)
            }
            Err(e) if e.is_permanent() => {
                let failed = Outcome::Failed {
                    errors: e.to_string(),
                };
                self.finish(&claimed, Step::Dispatch, failed, false).await
            }
            Err(e) => {
                let attempts = task.step_attempts + 1;
                if attempts as u32 >= self.config.max_dispatch_attempts {
                    let errors = format!("gave up after {attempts} attempts: {e}");
                    return self
                        .finish(&claimed, Step::Dispatch, Outcome::Failed { errors }, false)
                        .await;
                }
                let retry_after = match &e {
                    ExecutorError::RateLimited { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let due = now_ms().saturating_add(super::backoff_ms(
                    task.step_attempts,
                    RETRY_CAP_MS,
                    retry_after,
                ));
                tracing::warn!(task_id = task.id.get(), error = %e, attempts, "dispatch will be tried again");
                self.retry(&claimed, Step::Dispatch, due).await
            }
        }
    }

    /// What an executor's immediate answer means; results over `limits.results_bytes` fail the
    /// task, naming the limit, as a callback carrying them is refused.
    fn outcome_of(&self, outcome: RunOutcome) -> Outcome {
        match outcome {
            RunOutcome::Succeeded { results } => {
                match results
                    .as_ref()
                    .map(|r| self.config.limits.check_results("the executor's", r))
                {
                    Some(Err(over)) => Outcome::Failed { errors: over.0 },
                    _ => Outcome::Processed { results },
                }
            }
            RunOutcome::Failed { errors } => Outcome::RunFailed { errors },
        }
    }

    /// The first run of a task after the first: from its predecessor's end (the transaction
    /// that made it due) to its run request leaving, as the benchmark's callback → next dispatch.
    fn note_next_dispatch(&self, task: &ClaimedTask) {
        let first_run = task.attempt == 1 && task.step_attempts == 0 && task.runs_failed == 0;
        if let (true, true, Some(due)) = (task.position > 1, first_run, task.due_at) {
            let delay_ms = u64::try_from(now_ms() - due).unwrap_or(0);
            self.metrics
                .next_dispatch(std::time::Duration::from_millis(delay_ms));
        }
    }

    /// The executor and what to send it, or why the task cannot be sent.
    async fn prepare(
        &self,
        task: &ClaimedTask,
        activity: &ActivityKeys,
        executor_name: &str,
        context: Option<TaskContext>,
    ) -> Result<Result<(Rc<dyn Executor>, Submission), String>, EngineError> {
        let executor = match self.executors.lookup(executor_name) {
            Ok(executor) => executor,
            Err(why) => return Ok(Err(why)),
        };
        let task_context = match context {
            Some(read_already) => read_already,
            None => self.load_context(activity).await?,
        };
        let submission =
            self.resolve(task, &task_context)
                .and_then(|(template, configurations)| {
                    Ok(Submission {
                        task_id: task.id.get(),
                        activity_id: task.activity_id.get(),
                        task_name: task.name.clone(),
                        started_at: task.started_at,
                        callback_ref: self.callback_ref(task.id, task.attempt),
                        template,
                        configurations,
                        secrets: self.secrets_for(activity, executor_name)?,
                    })
                });
        Ok(submission.map(|s| (executor, s)))
    }

    async fn load_context(&self, activity: &ActivityKeys) -> Result<TaskContext, EngineError> {
        self.while_database_fails(|| {
            let activity = activity.clone();
            self.db
                .read(move |conn| Ok(context::load(conn, &activity)?))
        })
        .await
    }

    /// The task's template and configurations with placeholders resolved and the context added.
    fn resolve(
        &self,
        task: &ClaimedTask,
        task_context: &TaskContext,
    ) -> Result<(Value, Value), String> {
        let parse = |text: Option<&str>| -> Value {
            text.and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_else(|| Value::Object(Default::default()))
        };
        crate::lifecycle::task_placeholders::resolve_task(
            &parse(task.template.as_deref()),
            &parse(task.planned_configurations.as_deref()),
            task_context,
            self.config.on_missing,
            self.config.limits.configurations_bytes,
        )
    }

    /// The activity's secrets for `executor`, unsealed.
    pub(super) fn secrets_for(
        &self,
        activity: &ActivityKeys,
        executor: &str,
    ) -> Result<Secrets, String> {
        match &activity.sealed_secrets {
            None => Ok(Secrets::new()),
            Some(sealed) => Ok(self
                .keys
                .unseal(activity.id.get(), sealed)?
                .remove(executor)
                .unwrap_or_default()),
        }
    }
}
