//! `/api/v1/pp/devops/activities`

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::body::{read_json, BodyRules};
use super::error::ApiError;
use super::request::{executor_secrets, path_id, Query};
use super::resources::{ActivityResource, StatusResource};
use super::ApiState;
use crate::db::ActivityFilter;
use crate::domain::{ActivityId, ActivityStatus};
use crate::lifecycle::{DryRunExecutors, NewActivityRequest};

/// `POST /activities`: 201 with the activity created (and started when asked); with
/// `?dryRun=true`, 200 with the plan and nothing stored or run (`startAfterCreation` then
/// changes nothing: the plan always says what a start now would meet).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
    dry_runs: web::Data<DryRunExecutors>,
) -> Result<HttpResponse, ApiError> {
    let query = Query::of(&req)?;
    let start = query.flag("startAfterCreation")?;
    let dry_run = query.flag("dryRun")?;
    let rules = BodyRules {
        optional: false,
        any_content_type: false,
    };
    let body = read_json(&req, payload, state.body_limit, rules)
        .await?
        .unwrap_or_default();
    let request = new_activity_request(&body)?;
    if dry_run {
        let plan = state
            .lifecycle
            .dry_run(request, executor_secrets(&req), &dry_runs)
            .await?;
        return Ok(HttpResponse::Ok().json(plan));
    }
    let activity = state
        .lifecycle
        .create_activity(request, start, executor_secrets(&req))
        .await?;
    Ok(HttpResponse::Created().json(ActivityResource::from(activity)))
}

/// The three fields that matter; anything else (an `id` included) is ignored.
fn new_activity_request(body: &Value) -> Result<NewActivityRequest, ApiError> {
    let object = body.as_object().ok_or_else(|| {
        ApiError::invalid_activity(
            "the body must be a JSON object with dataProductId, dataProductVersion and stage",
        )
    })?;
    let mut problems = Vec::new();
    let mut field = |name: &str| match object.get(name) {
        Some(Value::String(s)) if s.contains('\0') => {
            problems.push(format!("{name} contains a NUL character (\\u0000)"));
            String::new()
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        None | Some(Value::Null) => {
            problems.push(format!("{name} is missing"));
            String::new()
        }
        Some(Value::String(_)) => {
            problems.push(format!("{name} is blank"));
            String::new()
        }
        Some(other) => {
            problems.push(format!("{name} must be a string, found {other}"));
            String::new()
        }
    };
    let request = NewActivityRequest {
        data_product_id: field("dataProductId"),
        data_product_version: field("dataProductVersion"),
        stage: field("stage"),
    };
    if problems.is_empty() {
        Ok(request)
    } else {
        Err(ApiError::invalid_activity(problems.join("; ")))
    }
}

pub async fn list(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let query = Query::of(&req)?;
    let filter = ActivityFilter {
        data_product_id: query.get("dataProductId"),
        data_product_version: query.get("dataProductVersion"),
        stage: query.get("stage"),
        status: query.status(ActivityStatus::parse, ActivityStatus::names)?,
        page: query.page()?,
    };
    let activities = state.lifecycle.activities(filter).await?;
    Ok(HttpResponse::Ok().json(
        activities
            .into_iter()
            .map(ActivityResource::from)
            .collect::<Vec<_>>(),
    ))
}

pub async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let activity = state
        .lifecycle
        .activity(ActivityId(path_id(&req, "activity")?))
        .await?;
    Ok(HttpResponse::Ok().json(ActivityResource::from(activity)))
}

pub async fn status(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let activity = state
        .lifecycle
        .activity(ActivityId(path_id(&req, "activity")?))
        .await?;
    Ok(HttpResponse::Ok().json(StatusResource::of(activity.status)))
}

pub async fn change_status(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = ActivityId(path_id(&req, "activity")?);
    let action = Query::of(&req)?.action();
    let status = match action.as_deref() {
        Some("START") => {
            state
                .lifecycle
                .start_activity(id, executor_secrets(&req))
                .await?
        }
        Some("ABORT") => state.lifecycle.abort_activity(id).await?,
        other => {
            return Err(ApiError::new(
                400,
                "40055",
                "Activity action is invalid",
                format!(
                    "action must be START or ABORT, found {}",
                    other.unwrap_or("nothing")
                ),
            ))
        }
    };
    Ok(HttpResponse::Ok().json(StatusResource::of(status)))
}

pub async fn delete(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let activity = state
        .lifecycle
        .delete_activity(ActivityId(path_id(&req, "activity")?))
        .await?;
    Ok(HttpResponse::Ok().json(ActivityResource::from(activity)))
}
