//! Policy gates (DESIGN §9): ODM's policy service asked at the three points it guards, and the
//! built-in stage order, which needs no policy server.
//!
//! This module knows the protocol and the rules, not when they apply: the lifecycle asks it
//! before START (`lifecycle::policy_gates`) and before a task's or an activity's result is
//! accepted (the engine, `lifecycle::engine::gates`). It imports no database and no metrics.

mod client;
pub mod fake;
mod stage_order;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use self::client::PolicyClient;
pub use self::stage_order::{stage_order, StageOrderRefusal};
use crate::config::PolicySettings;
use crate::domain::stored_enum;
use crate::registry::RemoteFailure;

stored_enum!(PolicyEvent {
    // START of an activity (and creation with startAfterCreation).
    ActivityStageTransition => "ACTIVITY_STAGE_TRANSITION",
    // A task's reported result, before it is accepted.
    TaskExecutionResult => "TASK_EXECUTION_RESULT",
    // The last task's success, before it makes the activity PROCESSED and moves the lifecycle.
    ActivityExecutionResult => "ACTIVITY_EXECUTION_RESULT",
});

/// What the policy service is asked (ODM's `PolicyEvaluationRequestResource`; nulls are sent).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRequest {
    /// ODM names the resource type after the event.
    pub resource_type: &'static str,
    pub event: &'static str,
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
    pub current_state: Option<Value>,
    pub after_state: Option<Value>,
    /// Every policy's result in the answer, so blocking ones can be named.
    pub verbose: bool,
}

impl ValidationRequest {
    pub fn new(event: PolicyEvent) -> ValidationRequest {
        ValidationRequest {
            resource_type: event.as_str(),
            event: event.as_str(),
            data_product_id: None,
            data_product_version: None,
            current_state: None,
            after_state: None,
            verbose: true,
        }
    }
}

/// A policy that failed its evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPolicy {
    pub id: Option<i64>,
    pub name: String,
}

impl std::fmt::Display for FailedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} (id {id})", self.name),
            None => write!(f, "{} (no id)", self.name),
        }
    }
}

/// The policy service's answer: the failed policies, blocking and not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `result == false` and `policy.blockingFlag == true`: the change must not happen.
    pub blocking: Vec<FailedPolicy>,
    /// Failed but not blocking: logged and counted, never in the way.
    pub advisory: Vec<FailedPolicy>,
}

impl Verdict {
    pub fn is_blocked(&self) -> bool {
        !self.blocking.is_empty()
    }

    /// "blocked by policy service (EVENT): a (id 1), b (id 2)"
    pub fn refusal(&self, event: PolicyEvent) -> String {
        format!(
            "blocked by {} of ODM's policy service ({event}): {}",
            if self.blocking.len() == 1 {
                "a blocking policy"
            } else {
                "blocking policies"
            },
            list(&self.blocking)
        )
    }
}

/// "a (id 1), b (id 2)"
pub fn list(policies: &[FailedPolicy]) -> String {
    policies
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// 503 50071: no answer (connection refused, timed out).
    #[error("{0}")]
    Unreachable(RemoteFailure),
    /// 502 50271: an answer other than 200 with a verdict.
    #[error("{0}")]
    Failed(RemoteFailure),
}

/// The configured gates: the stage order, and ODM's policy service when active.
#[derive(Clone, Default)]
pub struct Policies {
    stage_order: Vec<String>,
    remote: Option<PolicyClient>,
}

impl Policies {
    pub fn new(settings: &PolicySettings) -> Policies {
        let remote = match (settings.active, settings.address.as_deref()) {
            (true, Some(address)) => Some(PolicyClient::new(address, settings.timeout_ms)),
            _ => None,
        };
        Policies {
            stage_order: settings.stage_order.clone(),
            remote,
        }
    }

    /// ODM's policy service is asked.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Some gate guards START.
    pub fn guards_start(&self) -> bool {
        self.is_remote() || !self.stage_order.is_empty()
    }

    /// The stage order refusal of starting `stage` with `current` the version's stage.
    pub fn check_stage_order(
        &self,
        stage: &str,
        current: Option<&str>,
    ) -> Result<(), StageOrderRefusal> {
        stage_order(&self.stage_order, stage, current)
    }

    /// The policy service's verdict; a passing one when it is not active.
    pub async fn ask(&self, request: &ValidationRequest) -> Result<Verdict, PolicyError> {
        match &self.remote {
            Some(client) => client.validate(request).await,
            None => Ok(Verdict::default()),
        }
    }
}
