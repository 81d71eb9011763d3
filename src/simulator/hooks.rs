//! Service hooks, as a Web Hooks subscription to "Run state changed" would send them: when a
//! run completes, `POST {url}` with the event `ms.vss-pipelines.run-state-changed-event`
//! (resource version 5.1-preview.1: `resource.run` is the Run of Runs – Get, `resource.pipeline`
//! its pipeline), authenticated with HTTP Basic `username:password` when a password is given.
//! Subscriptions come from `serviceHooks` in the configuration or `POST /_sim/hooks`; what was
//! sent, and how it was answered, is listed at `GET /_sim/hooks/deliveries`.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::azure::run_json;
use super::state::{now_text, SimState};

pub const RUN_STATE_CHANGED: &str = "ms.vss-pipelines.run-state-changed-event";
/// Deliveries kept for `/_sim/hooks/deliveries`.
const DELIVERIES_KEPT: usize = 1_000;

/// A Web Hooks subscription to "Run state changed" (completed runs only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookSubscription {
    pub url: String,
    #[serde(default)]
    pub username: String,
    /// Not shown by `GET /_sim/hooks`.
    #[serde(default, skip_serializing)]
    pub password: String,
}

/// One event sent, and its answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookDelivery {
    pub url: String,
    pub run_id: i32,
    pub result: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Sends the completed run's event to every subscription, one after the other; returns once
/// each was answered (or failed).
pub(crate) async fn announce(state: &SimState, run_id: i32) {
    let (subscriptions, event) = {
        let mut inner = state.lock();
        if inner.hooks.is_empty() {
            return;
        }
        let Some(run) = inner.runs.get(&run_id).cloned() else {
            return;
        };
        inner.hook_events += 1;
        let run_json = run_json(&run, &inner.base_url);
        let result = run.result.clone().unwrap_or_default();
        let event = json!({
            "subscriptionId": uuid::Uuid::new_v4().to_string(),
            "notificationId": inner.hook_events,
            "id": uuid::Uuid::new_v4().to_string(),
            "eventType": RUN_STATE_CHANGED,
            "publisherId": "pipelines",
            "message": {"text": format!("Run sim.{run_id} {result}.")},
            "detailedMessage": {"text": format!("Run sim.{run_id} of pipeline {} {result}.", run.pipeline_name)},
            "resource": {"run": run_json, "pipeline": run_json["pipeline"].clone()},
            "resourceVersion": "5.1-preview.1",
            "resourceContainers": {"project": {"id": run.project}},
            "createdDate": now_text(),
        });
        (inner.hooks.clone(), event)
    };
    for subscription in subscriptions {
        let delivery = send(&subscription, &event, run_id).await;
        let mut inner = state.lock();
        if inner.hook_deliveries.len() == DELIVERIES_KEPT {
            inner.hook_deliveries.pop_front();
        }
        inner.hook_deliveries.push_back(delivery);
    }
}

/// `announce` on the caller's runtime, without waiting for it (a cancel answers first, as
/// Azure's does). Outside a runtime nothing is sent, and the log says so.
pub(crate) fn announce_later(state: std::sync::Arc<SimState>, run_id: i32) {
    if state.lock().hooks.is_empty() {
        return;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!(run_id, "service hook not sent: no runtime on this thread");
        return;
    }
    actix_web::rt::spawn(async move { announce(&state, run_id).await });
}

async fn send(subscription: &HookSubscription, event: &Value, run_id: i32) -> HookDelivery {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut request = client.post(&subscription.url);
    if !subscription.password.is_empty() {
        let credentials = format!("{}:{}", subscription.username, subscription.password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        request = request.insert_header(("Authorization", format!("Basic {encoded}")));
    }
    let (status, error) = match request.send_json(event).await {
        Ok(mut response) => {
            let _ = response.body().await;
            (Some(response.status().as_u16()), None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    if let Some(error) = &error {
        tracing::warn!(%error, "simulated service hook could not be delivered");
    }
    HookDelivery {
        url: subscription.url.clone(),
        run_id,
        result: event
            .pointer("/resource/run/result")
            .and_then(Value::as_str)
            .map(str::to_owned),
        status,
        error,
    }
}
