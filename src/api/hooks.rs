//! `POST /api/v1/pp/devops/hooks/{executor}` (DESIGN §6 "Azure DevOps service hooks"): Azure
//! DevOps' `ms.vss-pipelines.run-state-changed-event`, sent by a Web Hooks subscription with
//! HTTP Basic authentication whose password is `executors.<name>.service_hook_secret`. Not
//! behind the API token (`guard::Access::ServiceHook`): the secret is checked here, and an
//! executor without one has no such route.
//!
//! A completed run makes the engine poll it now (`LifecycleService::run_completed`): the poll
//! settles the task as any poll that finds a run finished does, so polling stays the fallback
//! for hooks that never come, and a callback and a hook can never both settle a task.

use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde_json::{json, Value};

use super::body::{read_json, BodyRules};
use super::error::ApiError;
use super::guard::{constant_time_eq, not_found};
use super::runs::RunViews;
use super::ApiState;
use crate::secret::Secret;

/// The event this route takes (a subscription to another one is refused, so its history in
/// Azure DevOps shows the mistake).
pub const RUN_STATE_CHANGED: &str = "ms.vss-pipelines.run-state-changed-event";
/// Azure's run-state events are a few kilobytes; more is not one.
const BODY_LIMIT: usize = 256 * 1024;

/// 200 `{"taskId": <the task now being settled> | null, "polling": bool}`.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
    views: web::Data<RunViews>,
) -> Result<HttpResponse, ApiError> {
    let executor = req
        .match_info()
        .get("executor")
        .unwrap_or_default()
        .to_owned();
    let Some(secret) = views.hook_secret(&executor) else {
        // No secret, no route: exactly what a path without a route answers (the perimeter
        // asked this request for an API token, as for one, `Perimeter::hook_executors`).
        return not_found(req).await;
    };
    authenticate(&req, secret)?;
    let limit = state.body_limit.min(BODY_LIMIT);
    let body = read_json(&req, payload, limit, BodyRules::REQUIRED).await?;
    let event = RunEvent::parse(&body.unwrap_or_default())?;
    if event.state != "completed" {
        tracing::debug!(%executor, run_id = event.run_id, state = %event.state, "service hook: run not completed, nothing to do");
        return Ok(HttpResponse::Ok().json(json!({"taskId": null, "polling": false})));
    }
    let task = completed(&state, &executor, &event).await?;
    match task {
        Some(task) => tracing::info!(%executor, run_id = event.run_id, task_id = task.get(),
            result = event.result.as_deref().unwrap_or(""), "service hook: run completed, polling it now"),
        None => tracing::info!(%executor, run_id = event.run_id,
            "service hook: no task awaits this run (unknown, or already settled)"),
    }
    Ok(HttpResponse::Ok().json(json!({
        "taskId": task.map(|t| t.get()),
        "polling": task.is_some(),
    })))
}

/// `LifecycleService::run_completed`, looked for again for a little while when no task awaits
/// the run but a run request of the executor is under way: a run that ends at once can be
/// announced before its run request's answer is recorded (`DISPATCH_WAIT`, then polling covers
/// it).
async fn completed(
    state: &ApiState,
    executor: &str,
    event: &RunEvent,
) -> Result<Option<crate::domain::TaskId>, ApiError> {
    let started = std::time::Instant::now();
    loop {
        let lifecycle = &state.lifecycle;
        let task = lifecycle
            .run_completed(executor.to_owned(), event.pipeline_id, event.run_id)
            .await?;
        if task.is_some()
            || started.elapsed() >= DISPATCH_WAIT
            || !lifecycle.dispatching(executor.to_owned()).await?
        {
            return Ok(task);
        }
        actix_web::rt::time::sleep(DISPATCH_WAIT / 10).await;
    }
}

/// How long a hook waits for a run request under way to be answered.
const DISPATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// HTTP Basic, any user name, the executor's hook secret as password, compared in constant
/// time. Every failure gets the same answer.
fn authenticate(req: &HttpRequest, secret: &Secret) -> Result<(), ApiError> {
    let password = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, encoded) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(encoded)
        })
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| {
            let colon = decoded.iter().position(|b| *b == b':')?;
            Some(decoded[colon + 1..].to_vec())
        });
    match password {
        Some(password) if constant_time_eq(secret.expose().as_bytes(), &password) => Ok(()),
        _ => Err(ApiError::unauthorized(
            "a service hook needs HTTP Basic authentication whose password is the executor's \
             service_hook_secret",
        )),
    }
}

/// What the route reads of a run-state-changed event.
#[derive(Debug, PartialEq)]
struct RunEvent {
    run_id: i32,
    pipeline_id: i32,
    state: String,
    result: Option<String>,
}

impl RunEvent {
    fn parse(body: &Value) -> Result<RunEvent, ApiError> {
        let invalid = |what: String| {
            ApiError::invalid_callback(format!(
                "not a run state change event ({RUN_STATE_CHANGED}): {what}"
            ))
        };
        match body.get("eventType").and_then(Value::as_str) {
            Some(RUN_STATE_CHANGED) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "eventType is {other:?}; subscribe this route to \"Run state changed\" only"
                )))
            }
            None => return Err(invalid("eventType is missing".into())),
        }
        let int32 = |pointer: &str| {
            body.pointer(pointer)
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
        };
        let run_id = int32("/resource/run/id")
            .ok_or_else(|| invalid("resource.run.id is missing or not an int32".into()))?;
        let pipeline_id = int32("/resource/pipeline/id")
            .or_else(|| int32("/resource/run/pipeline/id"))
            .ok_or_else(|| invalid("resource.pipeline.id is missing or not an int32".into()))?;
        let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str);
        let state = text("/resource/run/state")
            .ok_or_else(|| invalid("resource.run.state is missing".into()))?;
        Ok(RunEvent {
            run_id,
            pipeline_id,
            state: state.to_owned(),
            result: text("/resource/run/result").map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_from_azure_s_shape() {
        let event = json!({"eventType": RUN_STATE_CHANGED, "resource": {
            "run": {"id": 1001, "state": "completed", "result": "succeeded",
                    "pipeline": {"id": 9}},
            "pipeline": {"id": 3}}});
        assert_eq!(
            RunEvent::parse(&event).unwrap(),
            RunEvent {
                run_id: 1001,
                pipeline_id: 3,
                state: "completed".into(),
                result: Some("succeeded".into())
            }
        );
        let only_in_run = json!({"eventType": RUN_STATE_CHANGED, "resource": {
            "run": {"id": 5, "state": "inProgress", "pipeline": {"id": 9}}}});
        assert_eq!(RunEvent::parse(&only_in_run).unwrap().pipeline_id, 9);
        for (body, named) in [
            (json!({"eventType": "build.complete"}), "build.complete"),
            (json!({}), "eventType is missing"),
            (
                json!({"eventType": RUN_STATE_CHANGED, "resource": {"run": {"id": 1e12}}}),
                "resource.run.id",
            ),
            (
                json!({"eventType": RUN_STATE_CHANGED, "resource": {"run": {"id": 1, "state": "completed"}}}),
                "resource.pipeline.id",
            ),
        ] {
            let error = RunEvent::parse(&body).unwrap_err();
            assert_eq!(error.code, "42203");
            assert!(error.message.contains(named), "{}", error.message);
        }
    }
}
