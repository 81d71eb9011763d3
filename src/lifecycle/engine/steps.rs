//! The steps the engine owes a task: dispatch (`dispatch.rs`), await (poll / time out),
//! confirm a held callback, cancel a run.

use std::rc::Rc;

use super::gates::Gate;
use super::{backoff_ms, Engine, EngineError, CONFIRM_CAP_MS, MAX_CANCEL_ATTEMPTS, RETRY_CAP_MS};
use crate::clock::now_ms;
use crate::domain::{ClaimedStep, ClaimedTask, Outcome, Step, TaskId};
use crate::executor::{Executor, RunRef, RunStatus, Secrets};
use crate::lifecycle::context::TaskContext;
use crate::lifecycle::state::{self, ResultVerdict};
use crate::metrics::StepResult;

impl Engine {
    /// `context`: a dispatch's Context, when it was read with its hand-off.
    pub(super) async fn run_step(
        &self,
        claimed: ClaimedStep,
        context: Option<TaskContext>,
    ) -> Result<StepResult, EngineError> {
        match claimed.step {
            Step::Dispatch if claimed.abandoned => self.dispatch_abandoned(claimed).await,
            Step::Dispatch => self.dispatch(claimed, context).await,
            Step::Await => self.check_run(claimed).await,
            Step::Confirm => self.confirm(claimed).await,
            Step::Cancel => self.cancel(claimed).await,
        }
    }

    /// Ends the claimed step's task with `outcome` (when the claim still holds), once the
    /// policy gates on results agree (`gates.rs`).
    pub(super) async fn finish(
        &self,
        claimed: &ClaimedStep,
        step: Step,
        outcome: Outcome,
        cancel_run: bool,
    ) -> Result<StepResult, EngineError> {
        let (task_id, lease) = (claimed.task.id, claimed.claim.clone());
        let (outcome, verdict) = match self.gate_result(claimed, step, &outcome).await? {
            Gate::Accept(verdict) => (outcome, verdict),
            Gate::TaskBlocked(errors) => (Outcome::Failed { errors }, ResultVerdict::default()),
            Gate::Wait(why) => return self.wait_for_policy(claimed, step, why).await,
        };
        log_outcome(task_id, &outcome);
        if let Some(why) = &verdict.activity_blocked {
            tracing::warn!(task_id = task_id.get(), activity_id = claimed.task.activity_id.get(), reason = %why, "activity result blocked: the activity fails, the lifecycle stays");
        }
        self.decide(claimed.task.activity_id, move |s, t| {
            let plan = state::finish_step(s, task_id, &lease, step, outcome, cancel_run, t);
            state::gated(plan, task_id, &verdict)
        })
        .await
    }

    pub(super) async fn retry(
        &self,
        claimed: &ClaimedStep,
        step: Step,
        due: i64,
    ) -> Result<StepResult, EngineError> {
        self.requeue(claimed, step, step, due).await
    }

    /// The claimed `owned` step gives way to `next` at `due`.
    pub(super) async fn requeue(
        &self,
        claimed: &ClaimedStep,
        owned: Step,
        next: Step,
        due: i64,
    ) -> Result<StepResult, EngineError> {
        let (task_id, lease) = (claimed.task.id, claimed.claim.clone());
        self.decide(claimed.task.activity_id, move |s, _| {
            state::requeue_step(s, task_id, &lease, owned, next, due)
        })
        .await?;
        Ok(StepResult::Rescheduled)
    }

    /// The activity's secrets for the task's executor (none when they cannot be read: the
    /// provider then refuses, which the step handles like any refusal).
    fn secrets_of(&self, claimed: &ClaimedStep) -> Secrets {
        let executor = claimed.task.executor.as_deref().unwrap_or_default();
        self.secrets_for(&claimed.activity, executor)
            .unwrap_or_default()
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
        let poll_cap = self.timings.poll_after_ms.max(1000);
        let poll_again = || {
            now.saturating_add(backoff_ms(task.step_attempts, poll_cap, None))
                .min(deadline)
        };
        match executor.status(&run, &self.secrets_of(&claimed)).await {
            Ok(RunStatus::Running) => self.retry(&claimed, Step::Await, poll_again()).await,
            Ok(RunStatus::Succeeded) => {
                let done = Outcome::Processed { results: None };
                self.finish(&claimed, Step::Await, done, false).await
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
                tracing::warn!(task_id = task.id.get(), error = %e, "polling the run failed; will try again");
                self.retry(&claimed, Step::Await, poll_again()).await
            }
        }
    }

    /// A callback is held until the provider confirms the run ended the same way.
    async fn confirm(&self, claimed: ClaimedStep) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let Some(reported) = task.held.as_ref().map(|report| report.outcome()) else {
            // Nothing to confirm: wait for a callback as if none had come.
            let due = now_ms()
                .saturating_add(self.timings.poll_after_ms)
                .min(task.deadline_at.unwrap_or(i64::MAX));
            return self
                .requeue(&claimed, Step::Confirm, Step::Await, due)
                .await;
        };
        let provider = self
            .run_of(task)
            .filter(|_| self.confirms_with_provider(task.executor.as_deref()));
        let Some((executor, run)) = provider else {
            // No run to ask about (dispatch outcome unknown), or held for the policy gates only:
            // the callback is all we have.
            return self.finish(&claimed, Step::Confirm, reported, false).await;
        };
        let now = now_ms();
        match executor.status(&run, &self.secrets_of(&claimed)).await {
            Ok(RunStatus::Succeeded) => self.finish(&claimed, Step::Confirm, reported, false).await,
            Ok(RunStatus::Failed(reason)) => {
                let errors = format!(
                    "the pipeline called back but the provider reports the run failed: {reason}"
                );
                let failed = Outcome::RunFailed { errors };
                self.finish(&claimed, Step::Confirm, failed, false).await
            }
            Ok(RunStatus::Canceled) => {
                let reason =
                    "the pipeline called back but the provider reports the run canceled".to_owned();
                self.finish(&claimed, Step::Confirm, Outcome::Aborted { reason }, false)
                    .await
            }
            outcome @ (Ok(RunStatus::Running) | Err(_)) => {
                if let Err(e) = outcome {
                    tracing::warn!(task_id = task.id.get(), error = %e, "confirming the run failed; will try again");
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
            match executor.cancel(&run, &self.secrets_of(&claimed)).await {
                Ok(()) => tracing::info!(task_id = task_id.get(), "run cancelled at the provider"),
                Err(e) if !e.is_permanent() && task.step_attempts + 1 < MAX_CANCEL_ATTEMPTS => {
                    tracing::warn!(task_id = task_id.get(), error = %e, "cancelling the run failed; will try again");
                    let due =
                        now_ms().saturating_add(backoff_ms(task.step_attempts, RETRY_CAP_MS, None));
                    return self.retry(&claimed, Step::Cancel, due).await;
                }
                Err(e) => {
                    tracing::error!(task_id = task_id.get(), error = %e, "the run could not be cancelled; giving up")
                }
            }
        }
        self.decide(task.activity_id, move |s, _| {
            state::step_done(s, task_id, &lease, Step::Cancel)
        })
        .await
    }

    fn run_of(&self, task: &ClaimedTask) -> Option<(Rc<dyn Executor>, RunRef)> {
        let run = task
            .run_ref
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())?;
        let executor = self.executors.lookup(task.executor.as_deref()?).ok()?;
        Some((executor, RunRef(run)))
    }
}

fn log_outcome(task_id: TaskId, outcome: &Outcome) {
    match outcome {
        Outcome::Processed { .. } => tracing::info!(task_id = task_id.get(), "task processed"),
        Outcome::Failed { errors } => {
            tracing::warn!(task_id = task_id.get(), %errors, "task failed")
        }
        Outcome::RunFailed { errors } => {
            tracing::warn!(task_id = task_id.get(), %errors, "run failed: retried when the task allows it")
        }
        Outcome::Aborted { reason } => {
            tracing::warn!(task_id = task_id.get(), %reason, "task aborted")
        }
    }
}
