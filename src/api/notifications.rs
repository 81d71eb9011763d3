//! `/api/v1/pp/devops/notifications` (the outbox, DESIGN §9) and ODM's observer route
//! `/api/v1/pp/devops/api/v1/up/observer/notifications` (inbound events).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};

use super::body::{read_json, BodyRules};
use super::error::ApiError;
use super::request::Query;
use super::ApiState;
use crate::clock::format_ms;
use crate::db::{NotificationFilter, NotificationRow, NotificationState};

/// An outbox row as listed: where it goes, how far it got, and the event (as stored: the `id`
/// is the row's, and a descriptor is added when it is sent).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationResource {
    id: i64,
    listener: String,
    #[serde(rename = "type")]
    event_type: String,
    entity_id: String,
    activity_id: String,
    status: &'static str,
    attempts: i32,
    last_error: Option<String>,
    created_at: String,
    /// When it is (or was last) due.
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
    event: Value,
}

impl From<NotificationRow> for NotificationResource {
    fn from(row: NotificationRow) -> Self {
        let status = match (row.delivered_at, &row.last_error) {
            (Some(_), _) => "DELIVERED",
            (None, Some(_)) => "FAILING",
            (None, None) => "PENDING",
        };
        NotificationResource {
            id: row.id,
            listener: row.listener,
            event_type: row.event_type,
            entity_id: row.entity_id.to_string(),
            activity_id: row.activity_id.to_string(),
            status,
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: format_ms(row.created_at),
            next_attempt_at: row.delivered_at.is_none().then(|| format_ms(row.due_at)),
            delivered_at: row.delivered_at.map(format_ms),
            event: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
        }
    }
}

fn state(name: &str) -> Option<NotificationState> {
    match name {
        "PENDING" => Some(NotificationState::Pending),
        "DELIVERED" => Some(NotificationState::Delivered),
        "FAILING" => Some(NotificationState::Failing),
        _ => None,
    }
}

pub async fn list(req: HttpRequest, state_: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let query = Query::of(&req)?;
    let filter = NotificationFilter {
        state: query.status(state, || "pending, delivered, failing".into())?,
        listener: query.get("listener"),
        page: query.page()?,
    };
    let rows = state_.lifecycle.notifications(filter).await?;
    Ok(HttpResponse::Ok().json(
        rows.into_iter()
            .map(NotificationResource::from)
            .collect::<Vec<_>>(),
    ))
}

/// ODM's `NotificationResource`: `{id, event: {type, entityId, beforeState, afterState, …}, …}`.
/// A product version (or product) deleted in ODM takes its activities and tasks with it; any
/// other event is answered and ignored.
pub async fn observe(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let rules = BodyRules {
        optional: false,
        any_content_type: false,
    };
    let body = read_json(&req, payload, state.body_limit, rules)
        .await?
        .unwrap_or_default();
    let event = &body["event"];
    let Some(event_type) = event["type"].as_str() else {
        return Err(ApiError::bad_request(
            "the body must be ODM's notification: {\"event\": {\"type\": …, \"entityId\": …}}",
        ));
    };
    let product = || {
        event["entityId"]
            .as_str()
            .map(str::trim)
            .filter(|p| !p.is_empty() && !p.contains('\0'))
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "event.entityId (the product id) is missing from the {event_type} event"
                ))
            })
    };
    let (product, version) = match event_type {
        "DATA_PRODUCT_VERSION_DELETED" => {
            let version = event["beforeState"]["dataProductVersion"]["info"]["version"]
                .as_str()
                .filter(|v| !v.trim().is_empty() && !v.contains('\0'))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "event.beforeState.dataProductVersion.info.version is missing from the \
                         DATA_PRODUCT_VERSION_DELETED event",
                    )
                })?;
            (product()?, Some(version.trim().to_owned()))
        }
        "DATA_PRODUCT_DELETED" => (product()?, None),
        _ => {
            return Ok(HttpResponse::Ok().json(json!({"type": event_type, "handled": false})));
        }
    };
    let forgotten = state.lifecycle.forget_product(product, version).await?;
    Ok(HttpResponse::Ok().json(json!({
        "type": event_type,
        "handled": true,
        "abortedActivities": forgotten.aborted,
        "deletedActivities": forgotten.deleted,
    })))
}
