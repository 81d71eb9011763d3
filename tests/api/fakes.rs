//! A remote ODM executor and an ODM registry, served over real HTTP on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::eventually;

/// One task the executor received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: i64,
    pub activity_id: String,
    pub name: Value,
    pub started_at: Value,
    pub callback_ref: String,
    pub template: Value,
    pub configurations: Value,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct ExecutorState {
    received: Vec<Received>,
    /// Status the POST answers with: PROCESSING (wait for callback), PROCESSED or FAILED.
    reply_status: String,
    reply_results: Option<Value>,
    /// Answer for GET …/status (a bare JSON string).
    run_status: String,
    status_requests: usize,
    /// Answer the next POSTs with this HTTP status instead.
    fail_next: Vec<u16>,
    /// Wait this long before answering a POST (after recording it).
    reply_delay_ms: u64,
}

pub struct FakeExecutor {
    pub address: String,
    state: Arc<Mutex<ExecutorState>>,
}

impl FakeExecutor {
    pub async fn start() -> FakeExecutor {
        let state = Arc::new(Mutex::new(ExecutorState {
            reply_status: "PROCESSING".into(),
            run_status: "PROCESSING".into(),
            ..Default::default()
        }));
        let shared = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/api/v1/up/executor/tasks", web::post().to(receive))
                .route(
                    "/api/v1/up/executor/tasks/{id}/status",
                    web::get().to(run_status),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let address = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        FakeExecutor { address, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `n` tasks were received; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} task(s) at the executor"), || async move {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }

    pub fn reply_with(&self, status: &str, results: Option<Value>) {
        let mut state = self.state.lock().unwrap();
        state.reply_status = status.into();
        state.reply_results = results;
    }

    pub fn set_run_status(&self, status: &str) {
        self.state.lock().unwrap().run_status = status.into();
    }

    pub fn status_requests(&self) -> usize {
        self.state.lock().unwrap().status_requests
    }

    pub fn delay_replies(&self, ms: u64) {
        self.state.lock().unwrap().reply_delay_ms = ms;
    }

    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.lock().unwrap().fail_next = statuses.to_vec();
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<Mutex<ExecutorState>>,
) -> HttpResponse {
    let (reply, delay) = record(&req, body.into_inner(), &state);
    actix_web::rt::time::sleep(std::time::Duration::from_millis(delay)).await;
    reply
}

fn record(req: &HttpRequest, body: Value, state: &Mutex<ExecutorState>) -> (HttpResponse, u64) {
    let mut state = state.lock().unwrap();
    let delay = state.reply_delay_ms;
    if !state.fail_next.is_empty() {
        let status = state.fail_next.remove(0);
        let reply = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(json!({"message": format!("fake failure {status}")}));
        return (reply, delay);
    }
    let parse = |key: &str| {
        body[key]
            .as_str()
            .map(|s| serde_json::from_str(s).unwrap())
            .unwrap_or(Value::Null)
    };
    let received = Received {
        id: body["id"].as_i64().unwrap(),
        activity_id: body["activityId"].as_str().unwrap_or_default().to_owned(),
        name: body["name"].clone(),
        started_at: body["startedAt"].clone(),
        callback_ref: body["callbackRef"].as_str().unwrap_or_default().to_owned(),
        template: parse("template"),
        configurations: parse("configurations"),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    };
    state.received.push(received);
    let mut reply = body;
    reply["status"] = json!(state.reply_status);
    reply["results"] = state
        .reply_results
        .as_ref()
        .map_or(Value::Null, |r| json!(r.to_string()));
    (HttpResponse::Ok().json(reply), delay)
}

async fn run_status(state: web::Data<Mutex<ExecutorState>>) -> HttpResponse {
    let mut state = state.lock().unwrap();
    state.status_requests += 1;
    HttpResponse::Ok().json(json!(state.run_status))
}

#[derive(Default)]
struct RegistryState {
    descriptors: HashMap<(String, String), Value>,
    queries: Vec<String>,
    answer_with: Option<u16>,
    templates: HashMap<String, Value>,
    template_requests: Vec<String>,
    answer_templates_with: Option<u16>,
    template_delay_ms: u64,
}

/// An ODM registry answering `GET …/products/{id}/versions/{version}` and `GET …/templates/{id}`.
pub struct FakeRegistry {
    pub address: String,
    state: Arc<Mutex<RegistryState>>,
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let state = Arc::new(Mutex::new(RegistryState::default()));
        let shared = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route(
                    "/api/v1/pp/registry/products/{id}/versions/{version}",
                    web::get().to(serve_descriptor),
                )
                .route(
                    "/api/v1/pp/registry/templates/{id}",
                    web::get().to(serve_template),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let address = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        FakeRegistry { address, state }
    }

    pub fn insert(&self, product: &str, version: &str, descriptor: Value) {
        self.state
            .lock()
            .unwrap()
            .descriptors
            .insert((product.into(), version.into()), descriptor);
    }

    pub fn queries(&self) -> Vec<String> {
        self.state.lock().unwrap().queries.clone()
    }

    pub fn answer_with(&self, status: u16) {
        self.state.lock().unwrap().answer_with = Some(status);
    }

    /// What `GET …/templates/{id}` answers (ODM's ExternalComponentResource).
    pub fn insert_template(&self, id: &str, answer: Value) {
        self.state
            .lock()
            .unwrap()
            .templates
            .insert(id.into(), answer);
    }

    /// The template ids asked for, in order.
    pub fn template_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().template_requests.clone()
    }

    /// Answer template requests with this HTTP status (`None`: answer normally).
    pub fn answer_templates_with(&self, status: Option<u16>) {
        self.state.lock().unwrap().answer_templates_with = status;
    }

    pub fn delay_templates(&self, ms: u64) {
        self.state.lock().unwrap().template_delay_ms = ms;
    }
}

async fn serve_descriptor(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<Mutex<RegistryState>>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    state.queries.push(req.query_string().to_owned());
    if let Some(status) = state.answer_with {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .body("registry trouble");
    }
    match state.descriptors.get(&path.into_inner()) {
        Some(descriptor) => HttpResponse::Ok().json(descriptor),
        None => HttpResponse::NotFound().json(json!({"message": "not found"})),
    }
}

async fn serve_template(
    path: web::Path<String>,
    state: web::Data<Mutex<RegistryState>>,
) -> HttpResponse {
    let id = path.into_inner();
    let delay = {
        let mut state = state.lock().unwrap();
        state.template_requests.push(id.clone());
        state.template_delay_ms
    };
    actix_web::rt::time::sleep(std::time::Duration::from_millis(delay)).await;
    let state = state.lock().unwrap();
    if let Some(status) = state.answer_templates_with {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .body("registry trouble");
    }
    match state.templates.get(&id) {
        Some(answer) => HttpResponse::Ok().json(answer),
        None => HttpResponse::NotFound()
            .json(json!({"code": "40405", "message": format!("Definition [{id}] does not exist")})),
    }
}
