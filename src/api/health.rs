//! `/health/live` (the process answers) and `/health/ready` (and its database too).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiState;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "UP"}))
}

pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    match state.lifecycle.db().ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "UP"})),
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "readiness check: database unreachable");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "DOWN", "reason": "database unreachable"}))
        }
    }
}
