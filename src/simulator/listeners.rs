//! Notification listeners (DESIGN §9), for tests and the demo: each named sink records what it
//! receives, and can be told to refuse (an HTTP status) or to answer slowly.
//!
//! * `POST /_sim/listeners/{name}/api/v1/pp/notification/dispatch` — an ODM listener whose
//!   `address` is `{simulator}/_sim/listeners/{name}`.
//! * `POST /_sim/listeners/{name}` — a webhook receiver at that address.
//! * `GET /_sim/listeners/{name}/received` — what it accepted, in order (`body` as JSON when it
//!   is, `headers`, `path`); `DELETE` forgets it.
//! * `PUT /_sim/listeners/{name}/behaviour` with `{"status": 503, "delayMs": 2000}` — answer
//!   every request with `status` (non-2xx: nothing recorded) after `delayMs`; `{}` restores 200
//!   at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every sink of one simulator.
#[derive(Clone, Default)]
pub struct ListenerSinks(Arc<Mutex<HashMap<String, Sink>>>);

#[derive(Default)]
struct Sink {
    behaviour: SinkBehaviour,
    received: Vec<Received>,
    /// Requests answered with a refusal.
    refused: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkBehaviour {
    /// The answer's status (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub delay_ms: u64,
}

/// One accepted request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    /// The body, as JSON when it is (else a string).
    pub body: Value,
    pub received_at_ms: i64,
}

impl ListenerSinks {
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Sink) -> T) -> T {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(all.entry(name.to_owned()).or_default())
    }

    pub fn received(&self, name: &str) -> Vec<Received> {
        self.with(name, |s| s.received.clone())
    }

    pub fn refused(&self, name: &str) -> u64 {
        self.with(name, |s| s.refused)
    }

    pub fn set_behaviour(&self, name: &str, behaviour: SinkBehaviour) {
        self.with(name, |s| s.behaviour = behaviour);
    }

    pub fn clear(&self, name: &str) {
        self.with(name, |s| {
            s.received.clear();
            s.refused = 0;
        });
    }
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_sim/listeners/{name}")
            .route("", web::post().to(receive))
            .route("/api/v1/pp/notification/dispatch", web::post().to(receive))
            .route("/received", web::get().to(list))
            .route("/received", web::delete().to(forget))
            .route("/behaviour", web::put().to(behave)),
    );
}

fn name(req: &HttpRequest) -> String {
    req.match_info().get("name").unwrap_or_default().to_owned()
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    sinks: web::Data<ListenerSinks>,
) -> HttpResponse {
    let name = name(&req);
    let behaviour = sinks.with(&name, |s| s.behaviour);
    if behaviour.delay_ms > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(behaviour.delay_ms)).await;
    }
    let status = behaviour.status.unwrap_or(200);
    if !(200..300).contains(&status) {
        sinks.with(&name, |s| s.refused += 1);
        let status = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
        return HttpResponse::build(status).finish();
    }
    let received = Received {
        path: req.path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        received_at_ms: crate::clock::now_ms(),
    };
    sinks.with(&name, |s| s.received.push(received));
    HttpResponse::Ok().json(serde_json::json!({"received": true}))
}

async fn list(req: HttpRequest, sinks: web::Data<ListenerSinks>) -> HttpResponse {
    HttpResponse::Ok().json(sinks.received(&name(&req)))
}

async fn forget(req: HttpRequest, sinks: web::Data<ListenerSinks>) -> HttpResponse {
    sinks.clear(&name(&req));
    HttpResponse::NoContent().finish()
}

async fn behave(
    req: HttpRequest,
    body: web::Json<SinkBehaviour>,
    sinks: web::Data<ListenerSinks>,
) -> HttpResponse {
    sinks.set_behaviour(&name(&req), body.into_inner());
    HttpResponse::NoContent().finish()
}
