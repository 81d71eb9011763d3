//! Remote ODM executors (DESIGN §6 `odm-http`): ODM's TaskResource over HTTP.

use std::time::Duration;

use async_trait::async_trait;
use awc::error::SendRequestError;
use serde_json::{json, Value};

use super::{
    Executor, ExecutorError, RunOutcome, RunRef, RunStatus, Secrets, Submission, Submitted,
};
use crate::config::OdmHttpSettings;
use crate::metrics::ExecutorMetrics;

pub struct OdmHttpExecutor {
    name: String,
    address: String,
    client: awc::Client,
    metrics: ExecutorMetrics,
}

impl OdmHttpExecutor {
    pub fn new(name: &str, settings: &OdmHttpSettings) -> Result<OdmHttpExecutor, String> {
        let address = settings.address.trim().trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(format!(
                "executors.{name}.address must be an http(s) URL, found {:?}",
                settings.address
            ));
        }
        // Its own client: the connect and request timeouts are this executor's settings.
        let client = awc::Client::builder()
            .connector(
                awc::Connector::new().timeout(Duration::from_millis(settings.connect_timeout_ms)),
            )
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .disable_redirects()
            .finish();
        Ok(OdmHttpExecutor {
            name: name.to_owned(),
            address,
            client,
            metrics: ExecutorMetrics::default(),
        })
    }

    /// Records its requests to `metrics` rather than nowhere.
    pub fn recording_to(mut self, metrics: ExecutorMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts the exchange by its answer's class (or as unanswered).
    fn noted<S>(
        &self,
        sent: Result<awc::ClientResponse<S>, SendRequestError>,
    ) -> Result<awc::ClientResponse<S>, SendRequestError> {
        match &sent {
            Ok(response) => self.metrics.answered(response.status().as_u16()),
            Err(_) => self.metrics.no_answer(),
        }
        sent
    }

    fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        secrets: &Secrets,
    ) -> awc::ClientRequest {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        for (kind, value) in secrets {
            request = request.insert_header((format!("x-odm-{kind}"), value.expose()));
        }
        request
    }
}

/// Maps a failed send: before the request left (connect) is safe to retry, after it is not.
fn send_error(executor: &str, e: SendRequestError) -> ExecutorError {
    match e {
        SendRequestError::Connect(e) => {
            ExecutorError::Transient(format!("executor {executor} is unreachable: {e}"))
        }
        SendRequestError::Timeout => ExecutorError::OutcomeUnknown(format!(
            "executor {executor} did not answer in time; the task may have started"
        )),
        other => ExecutorError::OutcomeUnknown(format!("executor {executor}: {other}")),
    }
}

fn status_error(executor: &str, status: awc::http::StatusCode, body: &[u8]) -> ExecutorError {
    let text = String::from_utf8_lossy(body);
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(300).collect());
    let message = format!("executor {executor} answered {status}: {detail}");
    match status.as_u16() {
        401 | 403 => ExecutorError::Unauthorized(message),
        429 => ExecutorError::RateLimited {
            retry_after: None,
            message,
        },
        500..=599 => ExecutorError::Transient(message),
        _ => ExecutorError::InvalidTask(message),
    }
}

#[async_trait(?Send)]
impl Executor for OdmHttpExecutor {
    async fn submit(&self, task: &Submission) -> Result<Submitted, ExecutorError> {
        let resource = json!({
            "id": task.task_id,
            "activityId": task.activity_id.to_string(),
            "name": task.task_name,
            "executorRef": self.name,
            "callbackRef": task.callback_ref,
            "template": task.template.to_string(),
            "configurations": task.configurations.to_string(),
            "status": "PROCESSING",
            "results": null,
            "errors": null,
            "startedAt": task.started_at.map(crate::clock::format_ms),
            "finishedAt": null,
        });
        let sent = self
            .request(
                awc::http::Method::POST,
                "/api/v1/up/executor/tasks",
                &task.secrets,
            )
            .send_json(&resource)
            .await;
        let mut response = self.noted(sent).map_err(|e| send_error(&self.name, e))?;
        let body =
            response.body().limit(1 << 20).await.map_err(|e| {
                ExecutorError::OutcomeUnknown(format!("executor {}: {e}", self.name))
            })?;
        if !response.status().is_success() {
            return Err(status_error(&self.name, response.status(), &body));
        }
        let reply: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let outcome = match reply.get("status").and_then(Value::as_str) {
            Some("PROCESSED") => Some(RunOutcome::Succeeded {
                results: json_in_string(reply.get("results")),
            }),
            Some("FAILED") => Some(RunOutcome::Failed {
                errors: reply
                    .get("errors")
                    .and_then(Value::as_str)
                    .unwrap_or("the executor reported FAILED")
                    .to_owned(),
            }),
            _ => None,
        };
        Ok(Submitted {
            run: RunRef(json!({"taskId": task.task_id})),
            web_url: None,
            outcome,
        })
    }

    async fn status(&self, run: &RunRef, secrets: &Secrets) -> Result<RunStatus, ExecutorError> {
        let task_id = run.0.get("taskId").and_then(Value::as_i64).ok_or_else(|| {
            ExecutorError::InvalidTask(format!("run reference {} has no taskId", run.0))
        })?;
        let sent = self
            .request(
                awc::http::Method::GET,
                &format!("/api/v1/up/executor/tasks/{task_id}/status"),
                secrets,
            )
            .send()
            .await;
        let mut response = self
            .noted(sent)
            .map_err(|e| match send_error(&self.name, e) {
                // Reading a status never starts anything: always safe to try again.
                ExecutorError::OutcomeUnknown(m) => ExecutorError::Transient(m),
                other => other,
            })?;
        let body = response
            .body()
            .await
            .map_err(|e| ExecutorError::Transient(format!("executor {}: {e}", self.name)))?;
        if !response.status().is_success() {
            return Err(status_error(&self.name, response.status(), &body));
        }
        // ODM answers a bare JSON string ("PROCESSED"); tolerate an unquoted one.
        let status = serde_json::from_slice::<String>(&body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
        Ok(match status.as_str() {
            "PROCESSED" => RunStatus::Succeeded,
            "FAILED" => RunStatus::Failed(format!("executor {} reports FAILED", self.name)),
            "ABORTED" => RunStatus::Canceled,
            _ => RunStatus::Running,
        })
    }

    /// ODM executors offer no cancel route.
    async fn cancel(&self, _run: &RunRef, _secrets: &Secrets) -> Result<(), ExecutorError> {
        Ok(())
    }
}

/// ODM puts results in a string holding JSON; accept an inline object too.
fn json_in_string(value: Option<&Value>) -> Option<Value> {
    match value? {
        Value::String(text) => serde_json::from_str(text).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    }
}
