//! The REST API: thin handlers that parse, call one lifecycle command and map the result.

mod activities;
mod board;
mod body;
pub mod error;
mod executor_tasks;
pub mod guard;
mod health;
mod hooks;
mod lifecycles;
mod metrics;
mod notifications;
pub mod origin;
mod registry;
mod request;
pub mod resources;
mod runs;
mod tasks;
mod ui;

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use self::error::ApiError;
pub use self::guard::Perimeter;
pub use self::metrics::StoredWork;
pub use self::runs::{hook_secrets, RunViewParts};

use crate::lifecycle::LifecycleService;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct ApiState {
    pub lifecycle: LifecycleService,
    pub body_limit: usize,
    pub metrics: Arc<Metrics>,
    pub stored_work: Arc<StoredWork>,
    /// ODM's executor protocol; `None` when `executor_api.enabled` is false.
    pub executor_api: Option<crate::executor_api::ExecutorApiParts>,
    /// Run state and logs at the provider, service hooks (DESIGN §6).
    pub runs: RunViewParts,
    /// The executors dry runs ask (`POST /activities?dryRun=true`).
    pub dry_run: crate::lifecycle::DryRunParts,
}

/// Every route (DESIGN §5, §8).
pub fn routes(state: ApiState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let embedded_registry = state.lifecycle.registry().is_embedded();
        let executor_api = state.executor_api.clone();
        // Built on each worker thread: its executors are the thread's own (awc is !Send).
        cfg.app_data(web::Data::new(state.runs.on_this_thread()));
        // Built on each worker thread, as the executor API's: awc clients are !Send.
        cfg.app_data(web::Data::new(state.dry_run.on_this_thread()));
        cfg.app_data(web::Data::new(state))
            .route("/health/live", web::get().to(health::live))
            .route("/health/ready", web::get().to(health::ready))
            .route("/metrics", web::get().to(metrics::page))
            .route("/ui", web::get().to(ui::page))
            .route("/ui/", web::get().to(ui::page))
            .route("/api/v1/pp/devops/v3/api-docs", web::get().to(openapi))
            .service(
                web::scope("/api/v1/pp/devops")
                    .route("/activities", web::post().to(activities::create))
                    .route("/activities", web::get().to(activities::list))
                    .route("/activities/{id}", web::get().to(activities::get))
                    .route("/activities/{id}", web::delete().to(activities::delete))
                    .route("/activities/{id}/status", web::get().to(activities::status))
                    .route(
                        "/activities/{id}/status",
                        web::patch().to(activities::change_status),
                    )
                    .route("/tasks", web::get().to(tasks::list))
                    .route("/tasks/{id}", web::get().to(tasks::get))
                    .route("/tasks/{id}/status", web::get().to(tasks::status))
                    .route("/tasks/{id}/status", web::patch().to(tasks::change_status))
                    .route("/tasks/{id}/status", web::post().to(tasks::change_status))
                    .route("/tasks/{id}/run", web::get().to(runs::run))
                    .route("/tasks/{id}/logs", web::get().to(runs::logs))
                    .route("/hooks/{executor}", web::post().to(hooks::receive))
                    .route("/lifecycles", web::get().to(lifecycles::all))
                    .route(
                        "/lifecycles/{product}",
                        web::get().to(lifecycles::of_product),
                    )
                    .route(
                        "/lifecycles/{product}/{version}",
                        web::get().to(lifecycles::of_version),
                    )
                    .route(
                        "/lifecycles/{product}/{version}/current",
                        web::get().to(lifecycles::current),
                    )
                    .route("/notifications", web::get().to(notifications::list))
                    .route("/board", web::get().to(board::board))
                    .route(
                        "/api/v1/up/observer/notifications",
                        web::post().to(notifications::observe),
                    ),
            );
        for (path, body) in ui::SCRIPTS {
            cfg.route(path, web::get().to(move || async move { ui::script(body) }));
        }
        if let Some(parts) = &executor_api {
            // Built on each worker thread: its Azure client is the thread's own (awc is !Send).
            cfg.app_data(web::Data::new(parts.on_this_thread()))
                .service(
                    web::scope("/api/v1/up/executor/tasks")
                        .route("", web::post().to(executor_tasks::create))
                        .route("/{id}/status", web::get().to(executor_tasks::status)),
                );
        }
        if embedded_registry {
            cfg.service(
                web::scope("/api/v1/pp/registry/products/{product}/versions")
                    .route("", web::get().to(registry::versions))
                    .route("/{version}", web::put().to(registry::put))
                    .route("/{version}", web::get().to(registry::get)),
            );
        }
        cfg.default_service(web::to(guard::not_found));
    }
}

const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(OPENAPI)
}

/// What wraps every request: the perimeter and the metrics it counts into.
pub struct Edge {
    pub perimeter: Perimeter,
    pub metrics: Arc<Metrics>,
}

/// Wraps every request (as `from_fn` middleware): the perimeter's checks, ODM's error envelope,
/// a request id, one log line (the path only: query strings carry callback tokens), and its
/// count and duration under its route's pattern (never the path: ids and tokens are no labels).
pub async fn around(
    edge: Arc<Edge>,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
    let span = tracing::info_span!("request", id = %request_id, method = %req.method(), path = %req.path());
    async move {
        // Reads are many and uninteresting; what changed something belongs in the log.
        let changes_state = guard::changes_state(req.method());
        let route = guard::route_of(&req);
        let (res, called) = match edge.perimeter.check(req.request(), route.as_deref()) {
            Err(refused) => (req.error_response(refused), false),
            Ok(()) => (next.call(req).await?, true),
        };
        // The route that answered, when one did: it must be the one the perimeter judged.
        let routed = called && res.request().extensions().get::<guard::Unrouted>().is_none();
        let route = if routed {
            let matched = res.request().match_pattern();
            if matched != route {
                tracing::error!(decided = ?route, matched = ?matched, "the perimeter judged another route than the router took: check guard::route_of against this actix-web version");
            }
            matched
        } else {
            route
        };
        let mut res = with_envelope(res);
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            res.headers_mut()
                .insert(HeaderName::from_static("x-request-id"), value);
        }
        let status = res.status().as_u16();
        let took = started.elapsed();
        let method = res.request().method().as_str();
        edge.metrics.http_request(method, route, status, took);
        let ms = took.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::error!(status, ms, "request answered");
        } else if changes_state {
            tracing::info!(status, ms, "request answered");
        } else {
            tracing::debug!(status, ms, "request answered");
        }
        Ok(res)
    }
    .instrument(span)
    .await
}

/// Gives an `ApiError` response ODM's envelope, with the request path.
fn with_envelope(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let Some(error) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .cloned()
    else {
        return res;
    };
    let (req, _) = res.into_parts();
    let response = error.response(req.path());
    ServiceResponse::new(req, response)
}
