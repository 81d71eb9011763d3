//! The four steps the engine owes a task: dispatch, await (poll / time out), confirm, cancel.

use std::rc::Rc;

use serde_json::Value;

use super::{backoff_ms, Engine, EngineError};
use crate::clock::now_ms;
use crate::db::models::{ActivityRow, TaskRow};
use crate::db::{self, ClaimedStep};
use crate::domain::Step;
use crate::executor::{
    Executor, ExecutorError, RunOutcome, RunRef, RunStatus, Secrets, Submission,
};
use crate::lifecycle::context::{self, TaskContext};
use crate::lifecycle::state::{self, Outcome, Submittal};
use crate::metrics::StepResult;

const RETRY_CAP_MS: i64 = 60_000;
const CONFIRM_CAP_MS: i64 = 30_000;
const MAX_CANCEL_ATTEMPTS: i32 = 10;

impl Engine {
    pub(super) async fn run_step(
        &self,
        step: Step,
        claimed: ClaimedStep,
    ) -> Result<StepResult, EngineError> {
        match step {
            Step::Dispatch if claimed.abandoned => self.dispatch_abandoned(claimed).await,
            Step::Dispatch => self.dispatch(claimed).await,
            Step::Await => self.check_run(claimed).await,
            Step::Confirm => self.confirm(claimed).await,
            Step::Cancel => self.cancel(claimed).await,
        }
    }

    /// Ends the claimed step's task with `outcome` (when the claim still holds).
    async fn finish(
        &self,
        claimed: &ClaimedStep,
        step: Step,
        outcome: Outcome,
        cancel_run: bool,
    ) -> Result<StepResult, EngineError> {
        let (task_id, lease) = (claimed.task.id, claimed.claim.clone());
        log_outcome(task_id, &outcome);
        self.decide(claimed.task.activity_id, move |s, t| {
            state::finish_step(s, task_id, &lease, step, outcome, cancel_run, t)
        })
        .await
    }

    async fn retry(
        &self,
        claimed: &ClaimedStep,
        step: Step,
        due: i64,
    ) -> Result<StepResult, EngineError> {
        let (task_id, lease) = (claimed.task.id, claimed.claim.clone());
        self.decide(claimed.task.activity_id, move |s, _| {
            state::retry_step(s, task_id, &lease, step, due)
        })
        .await?;
        Ok(StepResult::Rescheduled)
    }

    async fn dispatch_abandoned(&self, claimed: ClaimedStep) -> Result<StepResult, EngineError> {
        tracing::warn!(
            task_id = claimed.task.id,
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

    async fn dispatch(&self, claimed: ClaimedStep) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let Some(executor_name) = task.executor_ref.clone() else {
            tracing::info!(task_id = task.id, "task has no executor: done at once");
            let done = Outcome::Processed { results: None };
            return self.finish(&claimed, Step::Dispatch, done, false).await;
        };
        let (executor, submission) = match self.prepare(task, &executor_name).await? {
            Ok(prepared) => prepared,
            // Nothing was sent: the task fails with the reason before any provider sees it.
            Err(errors) => {
                let failed = Outcome::Failed { errors };
                return self.finish(&claimed, Step::Dispatch, failed, false).await;
            }
        };
        let stored_configurations = submission.configurations.to_string();
        tracing::info!(task_id = task.id, activity_id = task.activity_id, executor = %executor_name, attempt = task.attempt, "dispatching task");
        self.note_next_dispatch(task);
        match executor.submit(&submission).await {
            Ok(submitted) => {
                tracing::info!(task_id = task.id, run = %submitted.run.0, url = submitted.web_url.as_deref().unwrap_or(""), "task dispatched");
                let run = Submittal {
                    attempt: task.attempt,
                    run_ref: Some(submitted.run.0.to_string()),
                    run_url: submitted.web_url,
                    configurations: stored_configurations,
                    immediate: submitted.outcome.map(|o| self.outcome_of(o)),
                };
                let (task_id, lease) = (task.id, claimed.claim.clone());
                self.decide(task.activity_id, move |s, t| {
                    state::submitted(s, task_id, &lease, run, t)
                })
                .await
            }
            Err(ExecutorError::OutcomeUnknown(why)) => {
                tracing::warn!(task_id = task.id, %why, "dispatch outcome unknown: waiting for the callback instead of sending again");
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
                self.finish(
                    &claimed,
                    Step::Dispatch,
                    Outcome::Failed {
                        errors: e.to_string(),
                    },
                    false,
                )
                .await
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
                let due = now_ms().saturating_add(backoff_ms(
                    task.step_attempts,
                    RETRY_CAP_MS,
                    retry_after,
                ));
                tracing::warn!(task_id = task.id, error = %e, attempts, "dispatch will be tried again");
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
    fn note_next_dispatch(&self, task: &TaskRow) {
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
        task: &TaskRow,
        executor_name: &str,
    ) -> Result<Result<(Rc<dyn Executor>, Submission), String>, EngineError> {
        let executor = match self.executors.lookup(executor_name) {
            Ok(executor) => executor,
            Err(why) => return Ok(Err(why)),
        };
        let (activity, task_context) = self.load_context(task.activity_id).await?;
        let submission =
            self.resolve(task, &task_context)
                .and_then(|(template, configurations)| {
                    Ok(Submission {
                        task_id: task.id,
                        activity_id: task.activity_id,
                        task_name: task.name.clone(),
                        callback_ref: self.callback_ref(task.id, task.attempt),
                        template,
                        configurations,
                        secrets: self.secrets_for(&activity, executor_name)?,
                    })
                });
        Ok(submission.map(|s| (executor, s)))
    }

    async fn load_context(
        &self,
        activity_id: i64,
    ) -> Result<(ActivityRow, TaskContext), EngineError> {
        self.db
            .read(move |conn| {
                let activity =
                    db::find_activity(conn, activity_id)?.ok_or(EngineError::Gone(activity_id))?;
                let task_context = context::load(conn, &activity)?;
                Ok((activity, task_context))
            })
            .await
    }

    /// The task's template and configurations with placeholders resolved and the context added.
    fn resolve(
        &self,
        task: &TaskRow,
        task_context: &TaskContext,
    ) -> Result<(Value, Value), String> {
        let parse = |text: Option<&str>| -> Value {
            text.and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_else(|| Value::Object(Default::default()))
        };
        crate::lifecycle::task_placeholders::resolve_task(
            &parse(task.template.as_deref()),
            &parse(task.configurations_as_planned()),
            task_context,
            self.config.on_missing,
            self.config.limits.configurations_bytes,
        )
    }

    fn secrets_for(&self, activity: &ActivityRow, executor: &str) -> Result<Secrets, String> {
        match &activity.sealed_secrets {
            None => Ok(Secrets::new()),
            Some(sealed) => Ok(self
                .keys
                .unseal(activity.id, sealed)?
                .remove(executor)
                .unwrap_or_default()),
        }
    }

    async fn activity_secrets(&self, task: &TaskRow) -> Result<Secrets, EngineError> {
        let activity_id = task.activity_id;
        let activity = self
            .db
            .read(move |conn| {
                db::find_activity(conn, activity_id)?.ok_or(EngineError::Gone(activity_id))
            })
            .await?;
        Ok(self
            .secrets_for(&activity, task.executor_ref.as_deref().unwrap_or_default())
            .unwrap_or_default())
    }

    /// No callback yet: time out, or ask the provider how the run is doing.
    async fn check_run(&self, claimed: ClaimedStep) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let now = now_ms();
        if task.deadline_at.is_some_and(|deadline| now >= deadline) {
            let allowed = (task.deadline_at.unwrap_or(now) - task.started_at.unwrap_or(now)) / 1000;
            let errors = if task.run_ref.is_some() {
                format!("timed out: no result within {allowed} s; the run is being cancelled")
            } else {
                format!(
                    "timed out: the dispatch was interrupted before its outcome was known and no callback came within {allowed} s"
                )
            };
            return self
                .finish(&claimed, Step::Await, Outcome::Failed { errors }, true)
                .await;
        }
        let deadline = task.deadline_at.unwrap_or(i64::MAX);
        let Some((executor, run)) = self.run_of(task) else {
            // Nothing to ask: wait for the callback until the deadline.
            return self.retry(&claimed, Step::Await, deadline).await;
        };
        let secrets = self.activity_secrets(task).await?;
        let poll_cap = self.timings.poll_after_ms.max(1000);
        match executor.status(&run, &secrets).await {
            Ok(RunStatus::Running) => {
                let due = now
                    .saturating_add(backoff_ms(task.step_attempts, poll_cap, None))
                    .min(deadline);
                self.retry(&claimed, Step::Await, due).await
            }
            Ok(RunStatus::Succeeded) => {
                self.finish(
                    &claimed,
                    Step::Await,
                    Outcome::Processed { results: None },
                    false,
                )
                .await
            }
            Ok(RunStatus::Failed(reason)) => {
                let errors = format!("the run failed without calling back: {reason}");
                self.finish(&claimed, Step::Await, Outcome::RunFailed { errors }, false)
                    .await
            }
            Ok(RunStatus::Canceled) => {
                let reason = "the run was canceled at the provider".to_owned();
                self.finish(&claimed, Step::Await, Outcome::Aborted { reason }, false)
                    .await
            }
            Err(e) => {
                tracing::warn!(task_id = task.id, error = %e, "polling the run failed; will try again");
                let due = now
                    .saturating_add(backoff_ms(task.step_attempts, poll_cap, None))
                    .min(deadline);
                self.retry(&claimed, Step::Await, due).await
            }
        }
    }

    /// A callback is held until the provider confirms the run ended the same way.
    async fn confirm(&self, claimed: ClaimedStep) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let Some(reported) = state::reported_outcome(task) else {
            return self.retry(&claimed, Step::Await, now_ms()).await;
        };
        let Some((executor, run)) = self.run_of(task) else {
            // No run to ask about (dispatch outcome unknown): the callback is all we have.
            return self.finish(&claimed, Step::Confirm, reported, false).await;
        };
        let secrets = self.activity_secrets(task).await?;
        let now = now_ms();
        match executor.status(&run, &secrets).await {
            Ok(RunStatus::Succeeded) => self.finish(&claimed, Step::Confirm, reported, false).await,
            Ok(RunStatus::Failed(reason)) => {
                let errors = format!(
                    "the pipeline called back but the provider reports the run failed: {reason}"
                );
                self.finish(
                    &claimed,
                    Step::Confirm,
                    Outcome::RunFailed { errors },
                    false,
                )
                .await
            }
            Ok(RunStatus::Canceled) => {
                let reason =
                    "the pipeline called back but the provider reports the run canceled".to_owned();
                self.finish(&claimed, Step::Confirm, Outcome::Aborted { reason }, false)
                    .await
            }
            outcome @ (Ok(RunStatus::Running) | Err(_)) => {
                if let Err(e) = outcome {
                    tracing::warn!(task_id = task.id, error = %e, "confirming the run failed; will try again");
                }
                if task.deadline_at.is_some_and(|d| now >= d) {
                    let errors = "timed out: the run never finished after its callback".to_owned();
                    return self
                        .finish(&claimed, Step::Confirm, Outcome::Failed { errors }, true)
                        .await;
                }
                let due = now.saturating_add(backoff_ms(task.step_attempts, CONFIRM_CAP_MS, None));
                self.retry(&claimed, Step::Confirm, due).await
            }
        }
    }

    async fn cancel(&self, claimed: ClaimedStep) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let (task_id, lease) = (task.id, claimed.claim.clone());
        if let Some((executor, run)) = self.run_of(task) {
            let secrets = self.activity_secrets(task).await?;
            match executor.cancel(&run, &secrets).await {
                Ok(()) => tracing::info!(task_id, "run cancelled at the provider"),
                Err(e) if !e.is_permanent() && task.step_attempts + 1 < MAX_CANCEL_ATTEMPTS => {
                    tracing::warn!(task_id, error = %e, "cancelling the run failed; will try again");
                    let due =
                        now_ms().saturating_add(backoff_ms(task.step_attempts, RETRY_CAP_MS, None));
                    return self.retry(&claimed, Step::Cancel, due).await;
                }
                Err(e) => {
                    tracing::error!(task_id, error = %e, "the run could not be cancelled; giving up")
                }
            }
        }
        self.decide(task.activity_id, move |s, _| {
            state::step_done(s, task_id, &lease, Step::Cancel)
        })
        .await
    }

    fn run_of(
        &self,
        task: &TaskRow,
    ) -> Option<(std::rc::Rc<dyn crate::executor::Executor>, RunRef)> {
        let run = task
            .run_ref
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())?;
        let executor = self.executors.lookup(task.executor_ref.as_deref()?).ok()?;
        Some((executor, RunRef(run)))
    }
}

fn log_outcome(task_id: i64, outcome: &Outcome) {
    match outcome {
        Outcome::Processed { .. } => tracing::info!(task_id, "task processed"),
        Outcome::Failed { errors } => tracing::warn!(task_id, %errors, "task failed"),
        Outcome::RunFailed { errors } => {
            tracing::warn!(task_id, %errors, "run failed: retried when the task allows it")
        }
        Outcome::Aborted { reason } => tracing::warn!(task_id, %reason, "task aborted"),
    }
}
