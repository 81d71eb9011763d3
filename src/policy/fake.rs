//! A stand-in for ODM's policy service over real HTTP on loopback, for tests and the demo:
//! `POST /api/v1/pp/policy/validation` answers ODM's `{result, policyResults}` from the policies
//! declared for the request's event, and records every request as received. It can be told to
//! answer an error status, or to be down (nothing listens on its port until it is up again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::PolicyEvent;

/// A policy the fake evaluates, with the result it gives.
#[derive(Debug, Clone)]
pub struct FakePolicy {
    pub id: i64,
    pub name: String,
    pub blocking: bool,
    pub passes: bool,
}

impl FakePolicy {
    /// A blocking policy that fails.
    pub fn blocking(id: i64, name: &str) -> FakePolicy {
        FakePolicy {
            id,
            name: name.into(),
            blocking: true,
            passes: false,
        }
    }

    /// A non-blocking policy that fails.
    pub fn advisory(id: i64, name: &str) -> FakePolicy {
        FakePolicy {
            blocking: false,
            ..FakePolicy::blocking(id, name)
        }
    }

    /// A blocking policy that passes.
    pub fn passing(id: i64, name: &str) -> FakePolicy {
        FakePolicy {
            passes: true,
            ..FakePolicy::blocking(id, name)
        }
    }
}

#[derive(Default)]
struct FakeState {
    policies: HashMap<&'static str, Vec<FakePolicy>>,
    received: Vec<Value>,
    answer_status: Option<u16>,
}

pub struct FakePolicyService {
    port: u16,
    state: Arc<Mutex<FakeState>>,
    server: Mutex<Option<ServerHandle>>,
}

impl FakePolicyService {
    /// Serves on a free loopback port. Call it inside an actix System.
    pub async fn start() -> std::io::Result<FakePolicyService> {
        let fake = FakePolicyService {
            port: 0,
            state: Arc::default(),
            server: Mutex::new(None),
        };
        let port = fake.serve(0)?;
        Ok(FakePolicyService { port, ..fake })
    }

    /// What `policy.address` should be.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The policies evaluated for `event` (none: everything passes).
    pub fn set_policies(&self, event: PolicyEvent, policies: Vec<FakePolicy>) {
        self.lock().policies.insert(event.as_str(), policies);
    }

    /// Answer every request with this status and an error body (`None`: verdicts again).
    pub fn answer_with(&self, status: Option<u16>) {
        self.lock().answer_status = status;
    }

    /// The request bodies received, in order.
    pub fn received(&self) -> Vec<Value> {
        self.lock().received.clone()
    }

    /// The request bodies received for `event`.
    pub fn received_for(&self, event: PolicyEvent) -> Vec<Value> {
        let received = self.received();
        received
            .into_iter()
            .filter(|r| r["event"] == event.as_str())
            .collect()
    }

    /// Stops listening: requests find nothing on the port until `up`.
    pub async fn down(&self) {
        let handle = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            handle.stop(false).await;
        }
    }

    /// Listens again on the same port.
    pub fn up(&self) -> std::io::Result<()> {
        self.serve(self.port).map(|_| ())
    }

    fn serve(&self, port: u16) -> std::io::Result<u16> {
        let data = web::Data::from(self.state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/api/v1/pp/policy/validation", web::post().to(validate))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))?;
        let port = server.addrs()[0].port();
        let server = server.run();
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(server.handle());
        actix_web::rt::spawn(server);
        Ok(port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn validate(body: web::Json<Value>, state: web::Data<Mutex<FakeState>>) -> HttpResponse {
    let request = body.into_inner();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let event = request["event"].as_str().unwrap_or_default().to_owned();
    state.received.push(request);
    if let Some(status) = state.answer_status {
        let status = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        return HttpResponse::build(status).json(json!({"message": "fake policy service failure"}));
    }
    let policies = state
        .policies
        .get(event.as_str())
        .cloned()
        .unwrap_or_default();
    let results: Vec<Value> = policies
        .iter()
        .map(|p| {
            json!({
                "result": p.passes,
                "policy": {"id": p.id, "rootId": p.id, "name": p.name, "blockingFlag": p.blocking,
                           "evaluationEvent": event},
                "inputObject": null,
                "outputObject": null
            })
        })
        .collect();
    let result = policies.iter().all(|p| p.passes || !p.blocking);
    HttpResponse::Ok().json(json!({"result": result, "policyResults": results}))
}
