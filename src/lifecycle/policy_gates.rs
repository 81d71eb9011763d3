//! The gates of START (DESIGN §9): the stage order (`policy.stage_order`, pure, checked first)
//! and then ODM's policy service (`ACTIVITY_STAGE_TRANSITION`), both before the transaction that
//! starts the activity. That transaction checks again what the answer was based on: the
//! activity still PLANNED and the version's lifecycle as it was when the policy was asked.
//!
//! The results' gates run in the engine (`engine/gates.rs`).

use serde_json::{json, Value};

use super::error::CommandError;
use super::service::LifecycleService;
use crate::db::models::{ActivityRow, LifecycleRow, TaskRow};
use crate::db::{self, TaskFilter};
use crate::domain::{ActivityId, ActivityStatus};
use crate::metrics::{Metrics, PolicyAnswer};
use crate::policy::{FailedPolicy, PolicyError, PolicyEvent, ValidationRequest, Verdict};
use crate::resources::{ActivityResource, LifecycleResource, TaskResource};

/// What START of an activity would meet now.
#[derive(Debug, Clone, Default)]
pub struct StartCheck {
    /// Why START would be refused: the stage order's refusal, or each blocking policy's
    /// (one text naming them all). Empty: it would pass.
    pub refusals: Vec<String>,
    /// Policies that failed without blocking.
    pub advisory: Vec<FailedPolicy>,
    /// The current lifecycle row the answer was based on (its id).
    pub(super) lifecycle: Option<i64>,
}

impl StartCheck {
    pub fn passes(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// An activity as START's gates see it: stored, or as it would be created (a dry run).
#[derive(Debug, Clone)]
pub struct WouldStart {
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    /// The activity in ODM's wire format (`ActivityResource`), PLANNED.
    pub activity: Value,
    /// Its tasks in ODM's wire format (`TaskResource`), PLANNED.
    pub tasks: Vec<Value>,
}

impl WouldStart {
    pub fn stored(activity: ActivityRow, tasks: Vec<TaskRow>) -> WouldStart {
        WouldStart {
            data_product_id: activity.data_product_id.clone(),
            data_product_version: activity.data_product_version.clone(),
            stage: activity.stage.clone(),
            activity: json!(ActivityResource::from(activity)),
            tasks: tasks
                .into_iter()
                .map(|t| json!(TaskResource::from(t)))
                .collect(),
        }
    }
}

impl LifecycleService {
    /// What START of the stored activity `id` would meet now (see `start_check_for`).
    pub async fn start_check(&self, id: ActivityId) -> Result<StartCheck, CommandError> {
        let (activity, tasks) = self
            .db
            .read(move |conn| -> Result<_, CommandError> {
                let activity =
                    db::find_activity(conn, id)?.ok_or(CommandError::ActivityNotFound(id))?;
                let filter = TaskFilter {
                    activity_id: Some(id),
                    ..TaskFilter::default()
                };
                Ok((activity, db::list_tasks(conn, &filter)?))
            })
            .await?;
        self.start_check_for(WouldStart::stored(activity, tasks))
            .await
    }

    /// What START of `would` would meet now, with no side effect (a dry run asks this with the
    /// activity as it would be created): the stage order's refusal, else the policy service's
    /// blocking policies. The policy service unreachable or failing is an error (503 50071 /
    /// 502 50271).
    pub async fn start_check_for(&self, would: WouldStart) -> Result<StartCheck, CommandError> {
        let (product, version) = (
            would.data_product_id.clone(),
            would.data_product_version.clone(),
        );
        let current = self
            .db
            .read(move |conn| -> Result<_, CommandError> {
                Ok(db::current_lifecycle(conn, &product, &version)?)
            })
            .await?;
        let mut check = StartCheck {
            lifecycle: current.as_ref().map(|l| l.id),
            ..StartCheck::default()
        };
        let event = PolicyEvent::ActivityStageTransition;
        let reached = current.as_ref().map(|l| l.stage.as_str());
        if let Err(refusal) = self.policies.check_stage_order(&would.stage, reached) {
            self.metrics.policy_check(event, PolicyAnswer::Blocked);
            check.refusals.push(refusal.to_string());
            return Ok(check);
        }
        if !self.policies.is_remote() {
            return Ok(check);
        }
        let request = stage_transition(would, current);
        let verdict = asked(&self.metrics, event, self.policies.ask(&request).await)?;
        if verdict.is_blocked() {
            check.refusals.push(verdict.refusal(event));
        }
        check.advisory = verdict.advisory;
        Ok(check)
    }

    /// START's gates, when some are configured and the activity is PLANNED (any other state is
    /// refused by the start itself, without asking anyone). The lifecycle row the answer was
    /// based on, for the start's transaction to check; `None` when nothing was asked.
    pub(super) async fn pass_start_gates(
        &self,
        id: ActivityId,
        created: bool,
    ) -> Result<Option<Option<i64>>, CommandError> {
        if !self.policies.guards_start() {
            return Ok(None);
        }
        let status = self.db.read(move |conn| -> Result<_, CommandError> {
            let activity =
                db::find_activity(conn, id)?.ok_or(CommandError::ActivityNotFound(id))?;
            Ok(activity.status)
        });
        if status.await? != ActivityStatus::Planned {
            return Ok(None);
        }
        let kept = if created {
            format!("activity {id} was created and stays PLANNED")
        } else {
            format!("activity {id} stays PLANNED")
        };
        // Unanswered, the caller is told what is left behind too: after `startAfterCreation`
        // the same POST again would create nothing (42202), the start is what to try again.
        let check = match self.start_check(id).await {
            Err(CommandError::Policy(error)) => {
                return Err(CommandError::PolicyUnanswered { error, kept })
            }
            other => other?,
        };
        if !check.passes() {
            let refusals = check.refusals.join("; ");
            tracing::warn!(activity_id = id.get(), %refusals, "START blocked by a policy gate");
            return Err(CommandError::PolicyBlocked(format!("{refusals}; {kept}")));
        }
        Ok(Some(check.lifecycle))
    }
}

/// Counts the answer and logs advisory failures; unreachable or failing is the caller's error.
pub(super) fn asked(
    metrics: &Metrics,
    event: PolicyEvent,
    answer: Result<Verdict, PolicyError>,
) -> Result<Verdict, PolicyError> {
    let counted = match &answer {
        Ok(v) if v.is_blocked() => PolicyAnswer::Blocked,
        Ok(v) if !v.advisory.is_empty() => PolicyAnswer::Advisory,
        Ok(_) => PolicyAnswer::Passed,
        Err(PolicyError::Unreachable(_)) => PolicyAnswer::Unreachable,
        Err(PolicyError::Failed(_)) => PolicyAnswer::Failed,
    };
    metrics.policy_check(event, counted);
    if let Ok(verdict) = &answer {
        if !verdict.advisory.is_empty() {
            let failed = crate::policy::list(&verdict.advisory);
            tracing::warn!(%event, %failed, "non-blocking policies failed; going on");
        }
    }
    answer
}

/// `ACTIVITY_STAGE_TRANSITION` as ODM sends it: the current lifecycle row, then the same with
/// the activity to start and its tasks.
fn stage_transition(would: WouldStart, current: Option<LifecycleRow>) -> ValidationRequest {
    let lifecycle: Option<Value> = current.map(|l| json!(LifecycleResource::from(l)));
    ValidationRequest {
        data_product_id: Some(would.data_product_id),
        data_product_version: Some(would.data_product_version),
        current_state: lifecycle.as_ref().map(|l| json!({ "lifecycle": l })),
        after_state: Some(json!({
            "lifecycle": lifecycle,
            "activity": would.activity,
            "tasks": would.tasks,
        })),
        ..ValidationRequest::new(PolicyEvent::ActivityStageTransition)
    }
}
