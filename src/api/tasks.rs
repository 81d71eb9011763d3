//! `/api/v1/pp/devops/tasks`, including the pipelines' callback.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::body::{read_json, BodyRules};
use super::error::ApiError;
use super::request::{path_id, Query};
use super::resources::{StatusResource, TaskResource};
use super::ApiState;
use crate::db::TaskFilter;
use crate::domain::{ActivityId, Report, ReportedStatus, TaskId, TaskStatus};
use crate::metrics::CallbackAnswer;

pub async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let query = Query::of(&req)?;
    let filter = TaskFilter {
        activity_id: query.number("activityId")?.map(ActivityId),
        executor: query.get("executor"),
        status: query.status(TaskStatus::parse, TaskStatus::names)?,
        page: query.page()?,
    };
    let tasks = state.lifecycle.tasks(filter).await?;
    Ok(HttpResponse::Ok().json(
        tasks
            .into_iter()
            .map(TaskResource::from)
            .collect::<Vec<_>>(),
    ))
}

pub async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let task = state.lifecycle.task(TaskId(path_id(&req, "task")?)).await?;
    Ok(HttpResponse::Ok().json(TaskResource::from(task)))
}

pub async fn status(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let task = state.lifecycle.task(TaskId(path_id(&req, "task")?)).await?;
    Ok(HttpResponse::Ok().json(StatusResource::of(task.status)))
}

/// `?action=STOP` is the callback; `ABORT` aborts the task; tasks are never started one by one.
pub async fn change_status(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = TaskId(path_id(&req, "task")?);
    let query = Query::of(&req)?;
    let status = match query.action().as_deref() {
        Some("STOP") => {
            let rules = BodyRules { optional: true, any_content_type: true };
            let read = read_json(&req, payload, state.body_limit, rules)
                .await
                .and_then(callback_report);
            let report = match read {
                Ok(report) => report,
                Err(unreadable) => {
                    // Its token first, as for any callback (DESIGN §14: deny by default).
                    let token = query.get("token");
                    state.lifecycle.authenticate_callback(id, token).await?;
                    state.metrics.callback(CallbackAnswer::Invalid);
                    return Err(unreadable);
                }
            };
            state.lifecycle.callback(id, query.get("token"), report).await?
        }
        Some("ABORT") => state.lifecycle.abort_task(id).await?,
        Some("START") => {
            return Err(task_action_error(
                "tasks are not started one by one: they run in order through their activity (PATCH /api/v1/pp/devops/activities/{activityId}/status?action=START)"
                    .to_owned(),
            ))
        }
        other => return Err(task_action_error(format!("action must be STOP or ABORT, found {}", other.unwrap_or("nothing")))),
    };
    Ok(HttpResponse::Ok().json(StatusResource::of(status)))
}

fn task_action_error(message: String) -> ApiError {
    ApiError::new(400, "40065", "Task action is invalid", message)
}

/// `{"status": "PROCESSED"|"FAILED", "results": {…}, "errors": "text"}`; no body = PROCESSED.
fn callback_report(body: Option<Value>) -> Result<Report, ApiError> {
    let Some(body) = body else {
        return Ok(Report {
            status: ReportedStatus::Processed,
            results: None,
            errors: None,
        });
    };
    let object = body.as_object().ok_or_else(|| {
        ApiError::invalid_callback(format!(
            "the callback body must be a JSON object, found {body}"
        ))
    })?;
    let status = match object.get("status") {
        Some(Value::String(s)) if s == "PROCESSED" => ReportedStatus::Processed,
        Some(Value::String(s)) if s == "FAILED" => ReportedStatus::Failed,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_callback(
                "status is missing: PROCESSED or FAILED expected",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid_callback(format!(
                "status must be PROCESSED or FAILED, found {other}"
            )))
        }
    };
    let results = match object.get("results") {
        None | Some(Value::Null) => None,
        Some(r @ Value::Object(_)) => Some(r.clone()),
        Some(other) => {
            return Err(ApiError::invalid_callback(format!(
                "results must be a JSON object, found {other}"
            )))
        }
    };
    let errors = match object.get("errors") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.clone()),
        Some(other) => {
            return Err(ApiError::invalid_callback(format!(
                "errors must be a string, found {other}"
            )))
        }
    };
    Ok(Report {
        status,
        results,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn callback_bodies() {
        let ok = callback_report(Some(
            json!({"status": "PROCESSED", "results": {"url": "x"}}),
        ))
        .unwrap();
        assert_eq!(ok.results, Some(json!({"url": "x"})));
        assert_eq!(
            callback_report(None).unwrap().status,
            ReportedStatus::Processed
        );
        for (body, expected) in [
            (json!([]), "must be a JSON object"),
            (json!({}), "status is missing"),
            (
                json!({"status": "DONE"}),
                "status must be PROCESSED or FAILED",
            ),
            (
                json!({"status": "PROCESSED", "results": [1]}),
                "results must be a JSON object",
            ),
            (
                json!({"status": "FAILED", "errors": {"a": 1}}),
                "errors must be a string",
            ),
        ] {
            let err = callback_report(Some(body)).unwrap_err();
            assert_eq!(err.code, "42203");
            assert!(err.message.contains(expected), "{}", err.message);
        }
    }
}
