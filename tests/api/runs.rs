//! A task's run seen from the service (DESIGN §6): its live state and logs at Azure DevOps
//! (`GET /tasks/{id}/run`, `/logs`), and the service hook that completes a pipeline without a
//! callback step. Everything against the Azure DevOps simulator over HTTP, on both databases.
//!
//! * `view`: run state and logs through every state of a run, the `logs.max_bytes` bound,
//!   Azure down, slow or throttling, tasks without a run or without a viewable executor.
//! * `hooks`: authenticated and not, known, unknown and settled runs, the route absent without
//!   a secret; `race`: a hook racing the pipeline's callback.

mod hooks;
mod race;
mod view;

use actix_web::http::header::HeaderMap;
use base64::Engine as _;
use odm_devops::simulator::{Behaviour, PipelineSpec};
use serde_json::{json, Value};

use crate::azure::{azure_task, Azure, ORG, PROJECT};
use crate::helpers::{descriptor, TestApp, DEVOPS};

/// Stays in progress until the test ends it; writes `log_lines` lines of output.
pub const LONG_RUNNING: i32 = 20;

/// A pipeline of the simulator that waits for the test to end it.
pub fn long_running(log_lines: usize) -> PipelineSpec {
    PipelineSpec::calling_back(
        ORG,
        PROJECT,
        LONG_RUNNING,
        "long-running",
        &["target", "endpoint"],
        Behaviour {
            manual: true,
            log_lines,
            ..Behaviour::default()
        },
    )
}

/// Starts a one-task `dev` stage of product `product` running `pipeline`; the task's id once
/// the service recorded its run, with the run's id at the simulator.
pub async fn task_with_run(azure: &Azure, product: &str, pipeline: i32) -> (i64, i32) {
    let app = &azure.app;
    let configurations = if pipeline == LONG_RUNNING {
        json!({"params": {"target": "eu-west"}})
    } else {
        json!({})
    };
    let task = azure_task("deploy", pipeline, None, configurations);
    let lifecycle = json!({"dev": [task]});
    app.put_descriptor(product, "1.0.0", &descriptor(lifecycle))
        .await;
    let activity = app.start_activity(product, "1.0.0", "dev").await;
    let task_id = app.tasks_of(activity).await[0]["id"].as_i64().unwrap();
    let run = azure.wait_for_run_of_task(task_id).await;
    crate::helpers::eventually("the run recorded by the service", || async move {
        app.task(task_id).await["runUrl"].as_str().map(|_| ())
    })
    .await;
    (task_id, run.id)
}

/// A GET whose headers and raw body matter.
pub async fn get_raw(app: &TestApp, path: &str) -> (u16, HeaderMap, Vec<u8>) {
    let mut response = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    let body = response.body().limit(64 << 20).await.unwrap();
    (
        response.status().as_u16(),
        response.headers().clone(),
        body.to_vec(),
    )
}

pub fn run_path(task_id: i64) -> String {
    format!("{DEVOPS}/tasks/{task_id}/run")
}

pub fn logs_path(task_id: i64) -> String {
    format!("{DEVOPS}/tasks/{task_id}/logs")
}

pub fn hook_path(executor: &str) -> String {
    format!("{DEVOPS}/hooks/{executor}")
}

/// An Azure DevOps run-state-changed event as a Web Hooks subscription sends it.
pub fn run_event(run_id: i32, pipeline_id: i32, state: &str, result: Option<&str>) -> Value {
    json!({
        "subscriptionId": "4f6e6328-0251-4814-a009-c01dfa368e3f",
        "notificationId": 1,
        "id": "33433986-7f56-4969-bfd4-3e59774c75ad",
        "eventType": "ms.vss-pipelines.run-state-changed-event",
        "publisherId": "pipelines",
        "message": {"text": format!("Run {run_id} {state}")},
        "resource": {
            "run": {"id": run_id, "name": format!("sim.{run_id}"), "state": state, "result": result,
                    "pipeline": {"id": pipeline_id, "name": "p", "folder": "\\"}},
            "pipeline": {"id": pipeline_id, "name": "p", "folder": "\\"}
        },
        "resourceVersion": "5.1-preview.1",
        "resourceContainers": {"project": {"id": "00000000-0000-0000-0000-000000000001"}},
        "createdDate": "2026-12-03T08:00:00.000Z"
    })
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// POSTs `event` to the hook route of `executor` with `authorization` (when given).
pub async fn send_hook(
    app: &TestApp,
    executor: &str,
    event: &Value,
    authorization: Option<&str>,
) -> crate::helpers::Answer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    app.send(
        "POST",
        &hook_path(executor),
        Some(("application/json; charset=utf-8", event.to_string())),
        &headers,
    )
    .await
}
