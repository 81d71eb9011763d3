//! Shared by the executor's tests: settings with short delays, submissions, an Entra stand-in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::AzureDevOpsExecutor;
use crate::config::{
    AzureAuthSettings, AzureDevOpsSettings, ClientCredentialsSettings, PatSettings,
};
use crate::executor::{Secrets, Submission};
use crate::secret::Secret;

pub const TOKEN_PATH: &str = "/tenant-1/oauth2/v2.0/token";
pub const CLIENT_SECRET: &str = "very-secret-value";
pub const RUNS_PATH: &str = "/org/Data%20Platform/_apis/pipelines/7/runs";

pub fn settings(base_url: &str, auth: AzureAuthSettings) -> AzureDevOpsSettings {
    AzureDevOpsSettings {
        active: true,
        base_url: base_url.to_owned(),
        auth,
        check_after_callback: false,
        connect_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        max_retries: 3,
        retry_base_delay_ms: 10,
        retry_max_delay_ms: 2_000,
        service_hook_secret: None,
    }
}

pub fn client_credentials(token_url: String) -> AzureAuthSettings {
    AzureAuthSettings::ClientCredentials(ClientCredentialsSettings {
        token_url,
        client_id: "app-1".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        scope: "499b84ac-1321-427f-aa17-267ca6975798/.default".into(),
    })
}

pub fn pat(value: &str) -> AzureAuthSettings {
    AzureAuthSettings::Pat(PatSettings {
        pat: Secret::new(value),
        token_url: None,
        client_id: None,
        client_secret: None,
        scope: None,
    })
}

/// An executor using a service principal whose Entra is `server` itself.
pub fn executor(server: &MockServer) -> AzureDevOpsExecutor {
    let auth = client_credentials(format!("{}{TOKEN_PATH}", server.uri()));
    AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), auth)).unwrap()
}

pub fn template() -> Value {
    json!({"organization": "org", "project": "Data Platform", "pipelineId": 7})
}

pub fn submission(template: Value, configurations: Value) -> Submission {
    Submission {
        task_id: 11,
        activity_id: 5,
        task_name: "deploy".into(),
        started_at: None,
        callback_ref: "http://odm/api/v1/pp/devops/tasks/11/status?action=STOP&token=t".into(),
        template,
        configurations,
        secrets: Secrets::new(),
    }
}

/// Entra: numbered tokens `tok-1`, `tok-2`, … valid `expires_in` seconds.
pub struct Entra {
    pub issued: Arc<AtomicUsize>,
    pub expires_in: u64,
}

impl Respond for Entra {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer", "expires_in": self.expires_in, "ext_expires_in": self.expires_in,
            "access_token": format!("tok-{n}"),
        }))
    }
}

pub async fn mount_entra(server: &MockServer, expires_in: u64) -> Arc<AtomicUsize> {
    let issued = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(Entra {
            issued: issued.clone(),
            expires_in,
        })
        .mount(server)
        .await;
    issued
}

pub fn run_answer(id: i32) -> Value {
    json!({
        "id": id, "name": format!("2024.{id}"), "state": "inProgress",
        "_links": {"web": {"href": format!("https://dev.azure.com/org/Data%20Platform/_build/results?buildId={id}")}},
    })
}

pub async fn mount_run(server: &MockServer, id: i32) {
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(run_answer(id)))
        .mount(server)
        .await;
}

/// Requests the server got for `path`, in order.
pub async fn requests_to(server: &MockServer, path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .collect()
}

pub fn header(request: &Request, name: &str) -> String {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub fn azure_error(message: &str, type_key: &str) -> Value {
    json!({"$id": "1", "innerException": null, "message": message,
           "typeName": format!("Microsoft.Azure.Pipelines.WebApi.{type_key}, Microsoft.Azure.Pipelines.WebApi"),
           "typeKey": type_key, "errorCode": 0, "eventId": 3000})
}
