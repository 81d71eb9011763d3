//! The Azure DevOps executor as an independent module (DESIGN §6): ODM's executor protocol
//! answered by this binary, so a stock ODM DevOps server can use it as its Azure DevOps
//! executor. A task received here starts an Azure DevOps run at once (the caller's own engine
//! owns the task; nothing here is scheduled), the task → run mapping is kept in
//! `executor_runs`, and each status read asks Azure now and records what it said.
//!
//! Azure is reached through the same `AzureDevOpsExecutor` the engine uses (its token cache,
//! retries, `Retry-After`, timeouts), one per worker thread (awc is `!Send`), all sharing the
//! executor's identity, so one Entra token serves the engine and this API.

mod create;
mod status;
mod task;

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{AzureDevOpsSettings, ExecutorSettings, OnMissing, Settings};
use crate::db::{Db, DbError, ExecutorRunRow};
use crate::executor::azure_devops::{AzureDevOpsExecutor, AzureIdentity};
use crate::executor::{AzureIdentities, ExecutorError};
use crate::metrics::{ExecutorMetrics, Metrics};

/// No run: the request was refused (by Azure, or by an unusable executor); `errors` says why.
const REFUSED: &str = "refused";
/// The run request may have created a run whose id never came back; the pipeline's callback
/// to the caller settles the task.
const UNCONFIRMED: &str = "unconfirmed";
/// Azure's state of a finished run.
const COMPLETED: &str = "completed";

#[derive(Debug, thiserror::Error)]
pub enum ExecutorApiError {
    /// The task cannot run as written; nothing was sent to Azure.
    #[error("{0}")]
    InvalidTask(String),
    /// This task id already has a run, started from another request.
    #[error("{0}")]
    Conflict(String),
    #[error("no task {0} was sent to this executor")]
    NotFound(i64),
    /// Azure DevOps could not be reached or throttled us; nothing was created, try again.
    #[error("{message}")]
    AzureUnavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Azure DevOps refused the request (credentials, a deleted run).
    #[error("{0}")]
    AzureRefused(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for ExecutorApiError {
    fn from(e: diesel::result::Error) -> Self {
        ExecutorApiError::Db(DbError::from(e))
    }
}

/// What every worker's `ExecutorApi` is built from (`Send`: no client in it).
#[derive(Clone)]
pub struct ExecutorApiParts {
    db: Db,
    name: String,
    executor: Result<(AzureDevOpsSettings, AzureIdentity), String>,
    on_missing: OnMissing,
    max_bytes: usize,
    metrics: ExecutorMetrics,
}

impl ExecutorApiParts {
    /// `None` when `executor_api.enabled` is false. An executor that cannot be used (missing,
    /// another kind, no credentials) leaves the API up: its tasks fail saying why, as the
    /// engine's do.
    pub fn new(
        settings: &Settings,
        db: Db,
        identities: &AzureIdentities,
        metrics: &Metrics,
    ) -> Option<ExecutorApiParts> {
        if !settings.executor_api.enabled {
            return None;
        }
        let name = settings.executor_api.executor.clone();
        let executor = match settings.executors.get(&name) {
            Some(ExecutorSettings::AzureDevops(s)) if s.active => identities
                .get(&name)
                .unwrap_or_else(|| AzureIdentity::new(&name, s))
                .map(|identity| (s.clone(), identity)),
            Some(ExecutorSettings::AzureDevops(_)) => {
                Err(format!("executors.{name} is not active"))
            }
            Some(_) => Err(format!(
                "executors.{name} is not an azure-devops executor (executor_api.executor)"
            )),
            None => Err(format!(
                "no executor is named {name} under executors (executor_api.executor)"
            )),
        };
        if let Err(problem) = &executor {
            tracing::warn!(%problem, "executor API: its tasks will fail until the executor is configured");
        }
        Some(ExecutorApiParts {
            db,
            metrics: metrics.executor(&name),
            name,
            executor,
            on_missing: settings.placeholders.on_missing,
            max_bytes: settings.limits.configurations_bytes,
        })
    }

    /// The API for the calling worker thread, with an Azure client of its own.
    pub fn on_this_thread(&self) -> ExecutorApi {
        let executor = self.executor.clone().and_then(|(settings, identity)| {
            AzureDevOpsExecutor::with_identity(&self.name, &settings, identity)
                .map(|e| Rc::new(e.recording_to(self.metrics.clone())))
        });
        ExecutorApi {
            parts: self.clone(),
            executor,
        }
    }
}

pub struct ExecutorApi {
    parts: ExecutorApiParts,
    executor: Result<Rc<AzureDevOpsExecutor>, String>,
}

/// ODM's TaskStatus for Azure's run `state` and `result` (or the mapping's own states).
pub fn odm_status(state: &str, result: Option<&str>) -> &'static str {
    match (state, result) {
        (REFUSED, _) => "FAILED",
        (COMPLETED, Some("succeeded")) => "PROCESSED",
        (COMPLETED, Some("canceled")) => "ABORTED",
        (COMPLETED, _) => "FAILED",
        _ => "PROCESSING",
    }
}

/// The task as it was sent, with the submission's outcome: PROCESSING once a run exists (or
/// may exist), FAILED with `errors` (and `finishedAt`) when there is none.
fn echo(task: task::OdmTask, row: &ExecutorRunRow) -> Value {
    let mut echo = task.echo;
    if row.state == REFUSED {
        echo.insert("status".into(), json!("FAILED"));
        echo.insert("errors".into(), json!(row.errors));
        if echo.get("finishedAt").is_none_or(Value::is_null) {
            echo.insert("finishedAt".into(), json!(row.finished_at));
        }
    } else {
        echo.insert("status".into(), json!("PROCESSING"));
    }
    Value::Object(echo)
}

fn unavailable(error: ExecutorError) -> ExecutorApiError {
    let retry_after = match &error {
        ExecutorError::RateLimited { retry_after, .. } => *retry_after,
        _ => None,
    };
    ExecutorApiError::AzureUnavailable {
        message: format!("Azure DevOps did not take the request, try again: {error}"),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::odm_status;

    #[test]
    fn azure_states_map_to_odm_statuses() {
        for (state, result, expected) in [
            ("inProgress", None, "PROCESSING"),
            ("canceling", None, "PROCESSING"),
            ("unknown", None, "PROCESSING"),
            ("submitting", None, "PROCESSING"),
            ("unconfirmed", None, "PROCESSING"),
            ("completed", Some("succeeded"), "PROCESSED"),
            ("completed", Some("failed"), "FAILED"),
            ("completed", Some("canceled"), "ABORTED"),
            ("completed", Some("skipped"), "FAILED"),
            ("completed", None, "FAILED"),
            ("refused", None, "FAILED"),
        ] {
            assert_eq!(odm_status(state, result), expected, "{state} {result:?}");
        }
    }
}

#[cfg(test)]
mod settings_tests {
    use crate::config::{AzureAuthSettings, ExecutorSettings, Settings};

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, String> {
        let dir = std::env::temp_dir().join(format!("odm-cfg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let loaded = Settings::load_with_env(file.map(|_| path.as_path()), env);
        let _ = std::fs::remove_dir_all(dir);
        loaded.map_err(|e| e.to_string())
    }

    #[test]
    fn the_executor_api_is_on_by_default_and_takes_its_tokens_from_the_environment() {
        let s = load(None, &[]).unwrap();
        assert!(s.executor_api.enabled && !s.executor_api.anonymous);
        assert!(s.executor_api.tokens.is_empty());
        assert_eq!(s.executor_api.executor, "azure-devops");
        let s = load(None, &[("ODM_DEVOPS__EXECUTOR_API__TOKENS", "a,b")]).unwrap();
        assert_eq!(s.executor_api.tokens.len(), 2);
        let err = load(None, &[("ODM_DEVOPS__EXECUTOR_API__TOKENS", "a, ")]).unwrap_err();
        assert!(err.contains("executor_api.tokens"), "{err}");
    }

    #[test]
    fn workload_identity_and_pat_replace_the_default_client_credentials() {
        let file = "executors:\n  azure-devops:\n    kind: azure-devops\n    base_url: https://dev.azure.com\n    auth:\n      kind: workload_identity\n      token_url: https://login.microsoftonline.com/t/oauth2/v2.0/token\n      client_id: app\n      token_file: /var/run/secrets/azure/tokens/azure-identity-token\n";
        let s = load(Some(file), &[]).unwrap();
        let ExecutorSettings::AzureDevops(azure) = &s.executors["azure-devops"] else {
            panic!("not azure-devops")
        };
        let AzureAuthSettings::WorkloadIdentity(w) = &azure.auth else {
            panic!("{:?}", azure.auth)
        };
        assert_eq!(w.scope, "499b84ac-1321-427f-aa17-267ca6975798/.default");
        // A secret left in the environment is refused, naming the key.
        let secret = [(
            "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET",
            "s",
        )];
        let s = load(Some(file), &secret).unwrap();
        let ExecutorSettings::AzureDevops(azure) = &s.executors["azure-devops"] else {
            panic!("not azure-devops")
        };
        let err = crate::executor::azure_devops::AzureIdentity::new("azure-devops", azure)
            .err()
            .unwrap();
        assert!(err.contains("auth.client_secret is set"), "{err}");
        let pat = "executors:\n  azure-devops:\n    auth:\n      kind: pat\n";
        let s = load(
            Some(pat),
            &[("ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__PAT", "x")],
        )
        .unwrap();
        let ExecutorSettings::AzureDevops(azure) = &s.executors["azure-devops"] else {
            panic!("not azure-devops")
        };
        assert!(
            matches!(azure.auth, AzureAuthSettings::Pat(_)),
            "{:?}",
            azure.auth
        );
    }
}
