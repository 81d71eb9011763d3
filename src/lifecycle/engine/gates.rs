//! The gates on results (DESIGN §9), asked by the engine before it accepts a result, never inside
//! a request: `TASK_EXECUTION_RESULT` on a reported result (a callback's body, or an executor's
//! immediate results), and `ACTIVITY_EXECUTION_RESULT` before the last task's success makes the
//! activity PROCESSED. The decision is then applied with the finish, in one transaction
//! (`state::finish_gated`). An unreachable or failing policy service makes the step wait and
//! try again with backoff until the task's deadline, saying so in the task's `errors`.

use serde_json::{json, Value};

use super::{backoff_ms, Engine, EngineError};
use crate::clock::{format_ms, now_ms};
use crate::db;
use crate::domain::{ClaimedStep, Outcome, Report, ReportedStatus, Step};
use crate::executor::ExecutorCatalog;
use crate::lifecycle::policy_gates::asked;
use crate::lifecycle::state::{self, ResultVerdict};
use crate::metrics::StepResult;
use crate::policy::{Policies, PolicyEvent, ValidationRequest};
use crate::registry::Registry;
use crate::resources::{ActivityResource, TaskResource};

/// The start of a task's `errors` while its result waits for the policy service.
const WAITING: &str = "waiting for ODM's policy service";
/// Longest wait between two questions to a policy service that did not answer.
const POLICY_RETRY_CAP_MS: i64 = 30_000;

/// What the engine needs to gate results: the policy service, the registry (the descriptor
/// goes with an activity's result) and which executors confirm callbacks with their provider.
pub struct ResultGates {
    pub policies: Policies,
    pub registry: Registry,
    pub catalog: ExecutorCatalog,
}

/// What the gates said of a result.
pub(super) enum Gate {
    Accept(ResultVerdict),
    /// `TASK_EXECUTION_RESULT` blocked: the task fails with this text.
    TaskBlocked(String),
    /// No verdict (the policy service or the registry failed): wait and ask again.
    Wait(String),
}

impl Engine {
    /// Policy gates are asked for results: callbacks and immediate successes are held for them.
    pub(super) fn gates_results(&self) -> bool {
        self.gates.is_some()
    }

    /// A held callback is confirmed with the provider only where the executor asks for it.
    pub(super) fn confirms_with_provider(&self, executor: Option<&str>) -> bool {
        self.gates
            .as_ref()
            .is_none_or(|g| g.catalog.check_after_callback(executor))
    }

    /// The gates' verdict on ending the claimed task with `outcome` at `step`.
    pub(super) async fn gate_result(
        &self,
        claimed: &ClaimedStep,
        step: Step,
        outcome: &Outcome,
    ) -> Result<Gate, EngineError> {
        let accepted = Gate::Accept(ResultVerdict::default());
        let Some(gates) = &self.gates else {
            return Ok(accepted);
        };
        let report = claimed
            .task
            .held
            .as_ref()
            .filter(|r| step == Step::Confirm && carries_something(r));
        let succeeded = matches!(outcome, Outcome::Processed { .. });
        if report.is_none() && !succeeded {
            return Ok(accepted);
        }
        let (task_id, activity_id) = (claimed.task.id, claimed.task.activity_id);
        let (activity, task, last) = self
            .while_database_fails(|| {
                self.db.read(move |conn| -> Result<_, EngineError> {
                    let gone = EngineError::Gone(activity_id);
                    let activity = db::find_activity(conn, activity_id)?.ok_or(gone)?;
                    let task =
                        db::find_task(conn, task_id)?.ok_or(EngineError::Gone(activity_id))?;
                    let last = db::last_position(conn, activity_id)?;
                    Ok((activity, task, last))
                })
            })
            .await?;
        let verdict = ResultVerdict {
            clear_wait_note: task
                .errors
                .as_deref()
                .is_some_and(|e| e.starts_with(WAITING)),
            activity_blocked: None,
        };
        if let Some(report) = report {
            let event = PolicyEvent::TaskExecutionResult;
            let mut reported = TaskResource::from(task.clone());
            reported.status = report.task_status().to_string();
            reported.results = report.results.as_ref().map(Value::to_string);
            reported.errors = report.errors.clone();
            reported.finished_at = Some(format_ms(now_ms()));
            let request = ValidationRequest {
                current_state: Some(json!({ "task": reported })),
                ..ValidationRequest::new(event)
            };
            match asked(&self.metrics, event, gates.policies.ask(&request).await) {
                Ok(v) if v.is_blocked() => return Ok(Gate::TaskBlocked(v.refusal(event))),
                Ok(_) => {}
                Err(e) => return Ok(Gate::Wait(format!("{WAITING} ({event}): {e}"))),
            }
        }
        let Outcome::Processed { results } = outcome else {
            return Ok(Gate::Accept(verdict));
        };
        if last != Some(task.position) {
            return Ok(Gate::Accept(verdict));
        }
        let event = PolicyEvent::ActivityExecutionResult;
        let descriptor = match gates
            .registry
            .descriptor(&activity.data_product_id, &activity.data_product_version)
            .await
        {
            Ok(descriptor) => descriptor,
            Err(e) => {
                tracing::warn!(activity_id = activity_id.get(), error = %e, "the descriptor for the activity's result could not be read");
                return Ok(Gate::Wait(format!(
                    "{WAITING} ({event}): the descriptor could not be read: {e}"
                )));
            }
        };
        let mut after = ActivityResource::from(activity.clone());
        after.status = "PROCESSED".into();
        after.results =
            state::merge_results(activity.results.as_deref(), task.position, results.as_ref());
        after.finished_at = Some(format_ms(now_ms()));
        let request = ValidationRequest {
            data_product_id: Some(activity.data_product_id.clone()),
            data_product_version: Some(activity.data_product_version.clone()),
            current_state: Some(json!({ "activity": after, "dataProductVersion": descriptor })),
            ..ValidationRequest::new(event)
        };
        match asked(&self.metrics, event, gates.policies.ask(&request).await) {
            Ok(v) if v.is_blocked() => Ok(Gate::Accept(ResultVerdict {
                activity_blocked: Some(v.refusal(event)),
                ..verdict
            })),
            Ok(_) => Ok(Gate::Accept(verdict)),
            Err(e) => Ok(Gate::Wait(format!("{WAITING} ({event}): {e}"))),
        }
    }

    /// The result waits for the policy service: the step again after a backoff, or the task
    /// fails once its deadline has passed.
    pub(super) async fn wait_for_policy(
        &self,
        claimed: &ClaimedStep,
        step: Step,
        why: String,
    ) -> Result<StepResult, EngineError> {
        let task = &claimed.task;
        let now = now_ms();
        let deadline = task.deadline_at.unwrap_or(i64::MAX);
        if now >= deadline {
            let errors = format!("timed out {why}");
            let outcome = Outcome::Failed { errors };
            let (task_id, lease) = (task.id, claimed.claim.clone());
            return self
                .decide(task.activity_id, move |s, t| {
                    state::finish_step(s, task_id, &lease, step, outcome, false, t)
                })
                .await;
        }
        let due = now
            .saturating_add(backoff_ms(task.step_attempts, POLICY_RETRY_CAP_MS, None))
            .min(deadline);
        let note = format!("{why}; asking again at {}", format_ms(due));
        tracing::warn!(task_id = task.id.get(), reason = %note, "result waits for the policy service");
        let (task_id, lease) = (task.id, claimed.claim.clone());
        self.decide(task.activity_id, move |s, _| {
            state::wait_for_policy(s, task_id, &lease, step, due, note)
        })
        .await?;
        Ok(StepResult::Rescheduled)
    }
}

/// A report with a body: something for `TASK_EXECUTION_RESULT` to judge. A callback without
/// a body (PROCESSED, nothing else) carries nothing.
fn carries_something(report: &Report) -> bool {
    report.status == ReportedStatus::Failed || report.results.is_some() || report.errors.is_some()
}
