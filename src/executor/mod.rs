//! The seam between the engine and the CI/CD providers. The engine only sees these types;
//! provider JSON stays inside each implementation.

pub mod azure_devops;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub mod odm_http;
mod set;
pub mod view;

pub use set::{AzureIdentities, ExecutorCatalog, Executors};
pub use view::{RunLogs, RunView, ViewError};

/// Secrets given with the request that created or started the activity, for one executor,
/// keyed by their type (`pat`, `token`, …: the `<type>` of `x-odm-<executor>-executor-secret-<type>`).
pub type Secrets = BTreeMap<String, Secret>;

/// What the engine asks an executor to run.
#[derive(Debug, Clone)]
pub struct Submission {
    pub task_id: i64,
    pub activity_id: i64,
    pub task_name: String,
    /// When the task became PROCESSING (epoch ms), as its TaskResource says.
    pub started_at: Option<i64>,
    pub callback_ref: String,
    /// The task's template (a JSON object), placeholders resolved.
    pub template: serde_json::Value,
    /// The task's configurations (a JSON object), placeholders resolved, with `context`.
    pub configurations: serde_json::Value,
    pub secrets: Secrets,
}

/// The executor's handle on a run, persisted as JSON so status and cancel work after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunRef(pub serde_json::Value);

#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub run: RunRef,
    pub web_url: Option<String>,
    /// Set when the provider already knows how the run ended (synchronous executors).
    pub outcome: Option<RunOutcome>,
}

/// How a finished run ended, with what it reported.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    Succeeded { results: Option<serde_json::Value> },
    Failed { errors: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed(String),
    Canceled,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecutorError {
    /// The task can never run as written (bad template, rejected by the provider). Permanent.
    #[error("{0}")]
    InvalidTask(String),
    /// The provider refused our credentials. Permanent.
    #[error("{0}")]
    Unauthorized(String),
    /// The provider asked us to slow down; nothing was created.
    #[error("rate limited by the provider: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// A passing failure (5xx, connection refused); nothing was created, trying again is safe.
    #[error("{0}")]
    Transient(String),
    /// The request may have reached the provider (timed out after sending): sending it again
    /// could start a second run, so the engine waits for the run's callback instead.
    #[error("{0}")]
    OutcomeUnknown(String),
}

impl ExecutorError {
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ExecutorError::InvalidTask(_) | ExecutorError::Unauthorized(_)
        )
    }
}

#[async_trait(?Send)]
pub trait Executor {
    async fn submit(&self, task: &Submission) -> Result<Submitted, ExecutorError>;
    /// `secrets` are the activity's, as for `submit` (a per-activity PAT authenticates these too).
    async fn status(&self, run: &RunRef, secrets: &Secrets) -> Result<RunStatus, ExecutorError>;
    async fn cancel(&self, run: &RunRef, secrets: &Secrets) -> Result<(), ExecutorError>;
    /// The run as the provider shows it now, for people (`GET /tasks/{id}/run`). Executors
    /// that cannot tell (ODM's executor protocol has no such route) keep this default.
    async fn run_view(&self, run: &RunRef, secrets: &Secrets) -> Result<RunView, ViewError> {
        let _ = (run, secrets);
        Err(ViewError::NotSupported("the state of its runs".into()))
    }
    /// The last `max_bytes` bytes of the run's logs, joined (`GET /tasks/{id}/logs`).
    async fn logs(
        &self,
        run: &RunRef,
        secrets: &Secrets,
        max_bytes: usize,
    ) -> Result<RunLogs, ViewError> {
        let _ = (run, secrets, max_bytes);
        Err(ViewError::NotSupported("the logs of its runs".into()))
    }
    /// Asks the provider whether it would accept `task` as a run, creating none (a dry run,
    /// DESIGN §6): `task` is exactly what `submit` would be given. A refusal is the error
    /// `submit` would meet (`InvalidTask` with the provider's message, `Unauthorized`…).
    /// Executors whose provider cannot check a run without starting it answer `NotChecked`.
    async fn preview(&self, task: &Submission) -> Result<Preview, ExecutorError> {
        let _ = task;
        Ok(Preview::NotChecked)
    }
}

/// What an executor's provider said of a run it was asked to check without running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// It would accept the run; the pipeline's final definition when the provider gives it
    /// (Azure DevOps: `finalYaml`, the YAML with templates expanded and parameters applied).
    Accepted { final_yaml: Option<String> },
    /// This executor has no way to check a run without starting it.
    NotChecked,
}
