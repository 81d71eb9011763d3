//! `/metrics`: Prometheus text format 0.0.4. Outside `/api`, so no API token (like `/health`);
//! nothing on it is a secret, an id or a value a request can choose.

use actix_web::{web, HttpResponse};

use super::ApiState;
use crate::clock::now_ms;
use crate::db::{self, DbError};
use crate::metrics::CONTENT_TYPE;
use crate::telemetry::error_chain as chain;

/// The stored work is read in one pass on a pooled connection (never the SQLite writer's), so
/// a scrape does not queue behind the engine's writes; if it fails the page says so and keeps
/// the in-process metrics.
pub async fn page(state: web::Data<ApiState>) -> HttpResponse {
    let now = now_ms();
    let work = state
        .lifecycle
        .db()
        .read(move |conn| db::work_counts(conn, now).map_err(DbError::from))
        .await
        .inspect_err(
            |e| tracing::warn!(error = %chain(e), "metrics: the database could not be read"),
        )
        .ok();
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(state.metrics.render(work.as_ref(), now))
}
