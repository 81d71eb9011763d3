//! `/_sim/...`: declare pipelines, inject faults, look at runs, requests and counters. Not
//! authenticated: the simulator is a test tool bound to loopback by default.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::config::{Behaviour, FaultSpec, ParameterSpec, PipelineSpec};
use super::hooks::HookSubscription;
use super::pipeline;
use super::state::{key, SimState, Stats};

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_sim")
            .route("/pipelines", web::get().to(list_pipelines))
            .route(
                "/pipelines/{org}/{project}/{id}",
                web::put().to(put_pipeline),
            )
            .route(
                "/pipelines/{org}/{project}/{id}",
                web::delete().to(delete_pipeline),
            )
            .route("/faults", web::get().to(list_faults))
            .route("/faults", web::post().to(add_fault))
            .route("/faults", web::delete().to(clear_faults))
            .route("/runs", web::get().to(list_runs))
            .route("/runs/{id}", web::get().to(get_run))
            .route("/runs/{id}/finish", web::post().to(finish_run))
            .route("/requests", web::get().to(list_requests))
            .route("/stats", web::get().to(stats))
            .route("/hooks", web::get().to(list_hooks))
            .route("/hooks", web::post().to(add_hook))
            .route("/hooks", web::delete().to(clear_hooks))
            .route("/hooks/deliveries", web::get().to(list_deliveries))
            .route("/tokens/expire", web::post().to(expire_tokens))
            .route("/reset", web::post().to(reset))
            .route("/previews", web::get().to(list_previews)),
    );
}

/// A pipeline declaration whose place comes from the path.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PipelineBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    parameters: Vec<ParameterSpec>,
    #[serde(default)]
    behaviour: Behaviour,
}

fn bad(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": message}))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, String> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

async fn list_pipelines(state: web::Data<SimState>) -> HttpResponse {
    let inner = state.lock();
    HttpResponse::Ok().json(inner.pipelines.values().collect::<Vec<_>>())
}

async fn put_pipeline(
    path: web::Path<(String, String, i32)>,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, id) = path.into_inner();
    let body: PipelineBody = match parse(&body) {
        Ok(body) => body,
        Err(message) => return bad(message),
    };
    let spec = PipelineSpec {
        organization,
        project,
        id,
        name: body.name,
        parameters: body.parameters,
        behaviour: body.behaviour,
    };
    put(&state, spec.clone());
    HttpResponse::Ok().json(spec)
}

pub(crate) fn put(state: &SimState, spec: PipelineSpec) {
    state
        .lock()
        .pipelines
        .insert(key(&spec.organization, &spec.project, spec.id), spec);
}

async fn delete_pipeline(
    path: web::Path<(String, String, i32)>,
    state: web::Data<SimState>,
) -> HttpResponse {
    let (organization, project, id) = path.into_inner();
    match state
        .lock()
        .pipelines
        .remove(&key(&organization, &project, id))
    {
        Some(_) => HttpResponse::NoContent().finish(),
        None => HttpResponse::NotFound().json(json!({"error": "no such pipeline"})),
    }
}

async fn list_faults(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.lock().faults)
}

async fn add_fault(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    match parse::<FaultSpec>(&body) {
        Ok(fault) => {
            state.lock().faults.push_back(fault.clone());
            HttpResponse::Created().json(fault)
        }
        Err(message) => bad(message),
    }
}

async fn clear_faults(state: web::Data<SimState>) -> HttpResponse {
    state.lock().faults.clear();
    HttpResponse::NoContent().finish()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunsQuery {
    completed_after: Option<u64>,
}

async fn list_runs(query: web::Query<RunsQuery>, state: web::Data<SimState>) -> HttpResponse {
    let inner = state.lock();
    match query.completed_after {
        Some(after) => HttpResponse::Ok().json(inner.completed_after(after)),
        None => HttpResponse::Ok().json(inner.runs.values().collect::<Vec<_>>()),
    }
}

async fn get_run(path: web::Path<i32>, state: web::Data<SimState>) -> HttpResponse {
    match state.lock().runs.get(&path.into_inner()) {
        Some(run) => HttpResponse::Ok().json(run),
        None => HttpResponse::NotFound().json(json!({"error": "no such run"})),
    }
}

/// Ends a run now, with its pipeline's behaviour or the one in the body.
async fn finish_run(
    path: web::Path<i32>,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    let id = path.into_inner();
    let behaviour = if body.is_empty() {
        match state.lock().runs.get(&id) {
            Some(run) => run.behaviour.clone(),
            None => return HttpResponse::NotFound().json(json!({"error": "no such run"})),
        }
    } else {
        match parse::<Behaviour>(&body) {
            Ok(behaviour) => behaviour,
            Err(message) => return bad(message),
        }
    };
    if !pipeline::finish(&state, id, &behaviour).await {
        return HttpResponse::Conflict().json(json!({"error": "the run is not in progress"}));
    }
    let run = state.lock().runs.get(&id).cloned();
    HttpResponse::Ok().json(run)
}

async fn list_hooks(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.lock().hooks)
}

/// Subscribes `{"url", "username", "password"}` to completed runs.
async fn add_hook(body: web::Bytes, state: web::Data<SimState>) -> HttpResponse {
    match parse::<HookSubscription>(&body) {
        Ok(hook) => {
            state.lock().hooks.push(hook.clone());
            HttpResponse::Created().json(hook)
        }
        Err(message) => bad(message),
    }
}

async fn clear_hooks(state: web::Data<SimState>) -> HttpResponse {
    state.lock().hooks.clear();
    HttpResponse::NoContent().finish()
}

async fn list_deliveries(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.lock().hook_deliveries)
}

async fn list_requests(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.lock().requests)
}

async fn stats(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.lock().stats)
}

async fn expire_tokens(state: web::Data<SimState>) -> HttpResponse {
    let now = Instant::now();
    let mut inner = state.lock();
    let expired = inner.tokens.len();
    inner.tokens.values_mut().for_each(|expires| *expires = now);
    HttpResponse::Ok().json(json!({"expired": expired}))
}

async fn reset(state: web::Data<SimState>) -> HttpResponse {
    let mut inner = state.lock();
    inner.runs.clear();
    inner.completed.clear();
    inner.faults.clear();
    inner.requests.clear();
    inner.hook_deliveries.clear();
    inner.previews.clear();
    inner.tokens.clear();
    inner.stats = Stats::default();
    HttpResponse::NoContent().finish()
}

async fn list_previews(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.lock().previews.iter().collect::<Vec<_>>())
}
