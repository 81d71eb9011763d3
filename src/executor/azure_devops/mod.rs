//! The `azure-devops` executor: runs a task as an Azure DevOps YAML pipeline run (Pipelines –
//! Run Pipeline, api-version 7.1), reads its state (Runs – Get) and cancels it (Builds – Update
//! Build with `status: cancelling`). DESIGN §6.
//!
//! Built for the engine's single System thread: awc futures are `!Send`, the token cache is an
//! async mutex, and concurrent `submit`s on that thread share one token refresh.

mod auth;
mod errors;
mod http;
mod logs;
mod preview;
mod request;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_failures;
#[cfg(test)]
mod tests_requests;
#[cfg(test)]
mod tests_with_simulator;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use async_trait::async_trait;
use serde_json::{json, Value};
use tracing::{field, Instrument};

use self::auth::{Credentials, Proof, TokenSource};
use self::errors::{expect_json, Purpose};
use self::http::{HttpClient, Payload, Replay, RetryPolicy};
use self::request::run_body;
pub(crate) use self::request::{describe as describe_value, PipelineTarget, RunLocation};
use super::{
    Executor, ExecutorError, Preview, RunLogs, RunRef, RunStatus, RunView, Secrets, Submission,
    Submitted, ViewError,
};
use crate::config::{AzureAuthSettings, AzureDevOpsSettings};
use crate::metrics::ExecutorMetrics;

pub struct AzureDevOpsExecutor {
    name: String,
    base_url: String,
    http: HttpClient,
    credentials: Credentials,
}

/// Who an `azure-devops` executor is to Azure DevOps, with its token cache: built once from
/// the settings and shared by every caller of that executor (the engine, the executor API on
/// each worker thread), so they share one Entra token.
#[derive(Clone)]
pub struct AzureIdentity(Credentials);

impl AzureIdentity {
    /// Checks the auth settings (the error names the key, e.g.
    /// `executors.azure-devops.auth.client_id is blank`).
    pub fn new(name: &str, settings: &AzureDevOpsSettings) -> Result<AzureIdentity, String> {
        let key = |field: &str| format!("executors.{name}.{field}");
        // Entra's address and who asks: checked before the proof, whose blank secret is the
        // default configuration's state.
        let token_source = |token_url: &str, client_id: &str, scope: &str| {
            let token_url = http_url(&key("auth.token_url"), token_url)?;
            if token_url.contains("<tenant>") {
                return Err(format!(
                    "{} still contains <tenant>: put the directory (tenant) id of the app \
                     registration there",
                    key("auth.token_url")
                ));
            }
            for (field, value) in [("client_id", client_id), ("scope", scope)] {
                if value.trim().is_empty() {
                    return Err(format!("{} is blank", key(&format!("auth.{field}"))));
                }
            }
            let (client_id, scope) = (client_id.to_owned(), scope.to_owned());
            Ok(move |proof| {
                Credentials::ClientCredentials(Arc::new(TokenSource::new(
                    &token_url, &client_id, proof, &scope,
                )))
            })
        };
        let credentials = match &settings.auth {
            AzureAuthSettings::ClientCredentials(c) => {
                let build = token_source(&c.token_url, &c.client_id, &c.scope)?;
                if c.client_secret.is_empty() {
                    return Err(format!(
                        "{} is blank (give it through the environment, e.g. \
                         ODM_DEVOPS__EXECUTORS__{}__AUTH__CLIENT_SECRET)",
                        key("auth.client_secret"),
                        name.to_uppercase().replace('-', "_")
                    ));
                }
                build(Proof::ClientSecret(c.client_secret.clone()))
            }
            AzureAuthSettings::WorkloadIdentity(w) => {
                let build = token_source(&w.token_url, &w.client_id, &w.scope)?;
                if w.token_file.trim().is_empty() {
                    return Err(format!("{} is blank", key("auth.token_file")));
                }
                if w.client_secret.as_ref().is_some_and(|s| !s.is_empty()) {
                    return Err(format!(
                        "{} is set, but kind workload_identity uses no secret: remove it (is \
                         ODM_DEVOPS__EXECUTORS__{}__AUTH__CLIENT_SECRET still set?)",
                        key("auth.client_secret"),
                        name.to_uppercase().replace('-', "_")
                    ));
                }
                build(Proof::FederatedTokenFile(PathBuf::from(
                    w.token_file.trim(),
                )))
            }
            AzureAuthSettings::Pat(p) => {
                if p.pat.is_empty() {
                    return Err(format!("{} is blank", key("auth.pat")));
                }
                Credentials::pat(&p.pat)
                    .map_err(|problem| format!("{} {problem}", key("auth.pat")))?
            }
        };
        Ok(AzureIdentity(credentials))
    }
}

impl AzureDevOpsExecutor {
    /// Checks the settings (the error names the key) and prepares the HTTP client; nothing is
    /// sent until the first task. Its identity is its own (see `with_identity` to share one).
    pub fn new(name: &str, settings: &AzureDevOpsSettings) -> Result<Self, String> {
        Self::with_identity(name, settings, AzureIdentity::new(name, settings)?)
    }

    /// `new`, authenticating as `identity` (built from the same settings): callers on other
    /// threads share its token cache.
    pub fn with_identity(
        name: &str,
        settings: &AzureDevOpsSettings,
        identity: AzureIdentity,
    ) -> Result<Self, String> {
        let key = |field: &str| format!("executors.{name}.{field}");
        let base_url = http_url(&key("base_url"), &settings.base_url)?;
        for (field, value) in [
            ("connect_timeout_ms", settings.connect_timeout_ms),
            ("request_timeout_ms", settings.request_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{} must be positive", key(field)));
            }
        }
        let policy = RetryPolicy::new(
            settings.max_retries,
            settings.retry_base_delay_ms,
            settings.retry_max_delay_ms,
        );
        Ok(AzureDevOpsExecutor {
            name: name.to_owned(),
            base_url,
            http: HttpClient::new(
                Duration::from_millis(settings.connect_timeout_ms),
                Duration::from_millis(settings.request_timeout_ms),
                policy,
            ),
            credentials: identity.0,
        })
    }

    /// Records its requests (Entra's included) to `metrics` rather than nowhere.
    pub fn recording_to(mut self, metrics: ExecutorMetrics) -> Self {
        self.http.metrics = metrics;
        self
    }

    /// One authenticated exchange. A 401 on a cached service-principal token gets one more try
    /// with a fresh token (a revoked or clock-skewed token); a 401 created nothing.
    async fn call(
        &self,
        method: Method,
        url: &str,
        payload: Payload<'_>,
        replay: Replay,
        secrets: &Secrets,
        purpose: Purpose,
    ) -> Result<Value, ExecutorError> {
        let auth = self.credentials.authorization(secrets, &self.http).await?;
        let mut reply = self
            .http
            .send(method.clone(), url, Some(&auth.header), payload, replay)
            .await?;
        if reply.status.as_u16() == 401 && auth.cached {
            tracing::info!("Azure DevOps refused the cached token; fetching a new one");
            self.credentials.forget(&auth.header).await;
            let fresh = self.credentials.authorization(secrets, &self.http).await?;
            reply = self
                .http
                .send(method, url, Some(&fresh.header), payload, replay)
                .await?;
        }
        expect_json(&reply, purpose)
    }

    /// Runs – Get: the run as Azure DevOps describes it now (for its state, and for people).
    async fn get_run(
        &self,
        location: &RunLocation,
        secrets: &Secrets,
    ) -> Result<Value, ExecutorError> {
        self.call(
            Method::GET,
            &location.run_url(&self.base_url),
            Payload::Empty,
            Replay::Safe,
            secrets,
            Purpose::Status,
        )
        .await
    }

    /// The run's state as Azure DevOps reports it now (Runs – Get), and what it means.
    pub async fn run_state(
        &self,
        run: &RunRef,
        secrets: &Secrets,
    ) -> Result<RunState, ExecutorError> {
        let location = RunLocation::from_json(&run.0)?;
        let span = tracing::info_span!(
            "azure_devops_status",
            executor = %self.name,
            pipeline = location.pipeline_id,
            run_id = location.run_id,
        );
        let answer = self
            .get_run(&location, secrets)
            .instrument(span.clone())
            .await?;
        let text = |key: &str| answer.get(key).and_then(Value::as_str).map(str::to_owned);
        let state = RunState {
            state: text("state").unwrap_or_else(|| "unknown".into()),
            result: text("result"),
            status: run_status(&answer, &location),
        };
        span.in_scope(|| tracing::debug!(status = ?state.status, "pipeline run state"));
        Ok(state)
    }

    async fn submit_run(&self, task: &Submission) -> Result<Submitted, ExecutorError> {
        let target = PipelineTarget::from_template(&task.template)?;
        let span = tracing::Span::current();
        span.record("pipeline", field::display(target.describe()));
        let run = run_body(&target, &task.configurations, &task.callback_ref)?;
        if run.stage_to_skip_used {
            tracing::warn!(
                "configurations.stageToSkip is a misspelling of stagesToSkip: accepted, but \
                 rename it"
            );
        }
        if run.callback_ref_overridden {
            tracing::warn!(
                "configurations.params.callbackRef is replaced by the task's own callback URL"
            );
        }
        let answer = self
            .call(
                Method::POST,
                &target.runs_url(&self.base_url),
                Payload::Json(&run.body),
                Replay::Once,
                &task.secrets,
                Purpose::Run,
            )
            .await?;
        let run_id = answer
            .get("id")
            .and_then(Value::as_i64)
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                // Only the keys: the answer echoes templateParameters, callbackRef's token too.
                let keys = answer
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_else(|| request::describe(&answer));
                ExecutorError::OutcomeUnknown(format!(
                    "Azure DevOps accepted the run request but its answer has no run id (it \
                     has: {keys}); the task waits for its callback"
                ))
            })?;
        span.record("run_id", run_id);
        let web_url = answer
            .pointer("/_links/web/href")
            .and_then(Value::as_str)
            .map(str::to_owned);
        tracing::info!(
            web_url = web_url.as_deref().unwrap_or(""),
            "pipeline run created"
        );
        let location = RunLocation {
            organization: target.organization,
            project: target.project,
            pipeline_id: target.pipeline_id,
            run_id,
        };
        Ok(Submitted {
            run: RunRef(location.to_json()),
            web_url,
            outcome: None,
        })
    }
}

#[async_trait(?Send)]
impl Executor for AzureDevOpsExecutor {
    async fn submit(&self, task: &Submission) -> Result<Submitted, ExecutorError> {
        let span = tracing::info_span!(
            "azure_devops_submit",
            executor = %self.name,
            task_id = task.task_id,
            activity_id = task.activity_id,
            pipeline = field::Empty,
            run_id = field::Empty,
        );
        let result = self.submit_run(task).instrument(span.clone()).await;
        if let Err(error) = &result {
            span.in_scope(|| tracing::warn!(%error, "pipeline run not created"));
        }
        result
    }

    async fn status(&self, run: &RunRef, secrets: &Secrets) -> Result<RunStatus, ExecutorError> {
        Ok(self.run_state(run, secrets).await?.status)
    }

    async fn cancel(&self, run: &RunRef, secrets: &Secrets) -> Result<(), ExecutorError> {
        let location = RunLocation::from_json(&run.0)?;
        let span = tracing::info_span!(
            "azure_devops_cancel",
            executor = %self.name,
            pipeline = location.pipeline_id,
            run_id = location.run_id,
        );
        self.call(
            Method::PATCH,
            &location.build_url(&self.base_url),
            Payload::Json(&json!({"status": "cancelling"})),
            Replay::Safe,
            secrets,
            Purpose::Cancel,
        )
        .instrument(span.clone())
        .await?;
        span.in_scope(|| tracing::info!("pipeline run cancellation requested"));
        Ok(())
    }

    async fn run_view(&self, run: &RunRef, secrets: &Secrets) -> Result<RunView, ViewError> {
        Ok(self.view_run(run, secrets).await?)
    }

    async fn logs(
        &self,
        run: &RunRef,
        secrets: &Secrets,
        max_bytes: usize,
    ) -> Result<RunLogs, ViewError> {
        Ok(self.read_logs(run, secrets, max_bytes).await?)
    }

    async fn preview(&self, task: &Submission) -> Result<Preview, ExecutorError> {
        self.preview_run(task).await
    }
}

/// A run as Azure DevOps reports it: its `state` and `result` as Azure spells them (kept by the
/// executor API's mapping), and what they mean for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub state: String,
    pub result: Option<String>,
    pub status: RunStatus,
}

/// Checks a task's template and configurations as `submit` would, sending nothing: which
/// pipeline it runs, or what is wrong with it (naming the field).
pub(crate) fn check_task(
    template: &Value,
    configurations: &Value,
) -> Result<PipelineTarget, ExecutorError> {
    let target = PipelineTarget::from_template(template)?;
    run_body(&target, configurations, "")?;
    Ok(target)
}

/// `state` inProgress/canceling/unknown → Running; completed → by `result`.
fn run_status(answer: &Value, run: &RunLocation) -> RunStatus {
    let text = |key: &str| answer.get(key).and_then(Value::as_str);
    if text("state") != Some("completed") {
        return RunStatus::Running;
    }
    let web = answer
        .pointer("/_links/web/href")
        .and_then(Value::as_str)
        .map(|url| format!(" (see {url})"))
        .unwrap_or_default();
    match text("result") {
        Some("succeeded") => RunStatus::Succeeded,
        Some("canceled") => RunStatus::Canceled,
        Some("failed") => RunStatus::Failed(format!(
            "Azure DevOps pipeline run {} failed{web}",
            run.run_id
        )),
        other => RunStatus::Failed(format!(
            "Azure DevOps pipeline run {} completed with result '{}'{web}",
            run.run_id,
            other.unwrap_or("none")
        )),
    }
}

fn http_url(key: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("{key} is blank"));
    }
    if !(value.starts_with("https://") || value.starts_with("http://")) {
        return Err(format!("{key} must be an http(s) URL, got \"{value}\""));
    }
    Ok(value.trim_end_matches('/').to_owned())
}
