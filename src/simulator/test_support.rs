//! A small HTTP server standing for odm-devops' callback route in tests: it records every
//! callback (method, path and query, body) and answers `{"status": …}` like the real one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReceivedCallback {
    pub method: String,
    pub path_and_query: String,
    pub body: Option<Value>,
}

pub(crate) struct CallbackServer {
    pub url: String,
    received: Arc<Mutex<Vec<ReceivedCallback>>>,
    handle: ServerHandle,
}

impl CallbackServer {
    pub async fn start() -> CallbackServer {
        let received = Arc::new(Mutex::new(Vec::new()));
        let data = web::Data::new(Arc::clone(&received));
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).default_service(web::to(
                |req: HttpRequest,
                 body: web::Bytes,
                 seen: web::Data<Arc<Mutex<Vec<ReceivedCallback>>>>| async move {
                    let body: Option<Value> = serde_json::from_slice(&body).ok();
                    let status = body
                        .as_ref()
                        .and_then(|b| b.get("status"))
                        .cloned()
                        .unwrap_or_else(|| Value::String("PROCESSED".into()));
                    seen.lock().unwrap().push(ReceivedCallback {
                        method: req.method().to_string(),
                        path_and_query: req.uri().to_string(),
                        body,
                    });
                    HttpResponse::Ok().json(serde_json::json!({"status": status}))
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        CallbackServer {
            url,
            received,
            handle,
        }
    }

    /// A callbackRef as odm-devops builds them.
    pub fn callback_ref(&self, task_id: i64) -> String {
        format!(
            "{}/api/v1/pp/devops/tasks/{task_id}/status?action=STOP&token=tk{task_id}",
            self.url
        )
    }

    pub fn received(&self) -> Vec<ReceivedCallback> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` callbacks arrived (or 5 s passed) and returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<ReceivedCallback> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.received().len() < count && Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
