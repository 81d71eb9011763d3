//! The service under test, started for real on a random port: in this process (its engine
//! running, or stepped by the test) or as the real binary in a process of its own. Spoken to
//! over HTTP.

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use odm_devops::app::{Application, EngineMode};
use odm_devops::config::Settings;
use odm_devops::lifecycle::engine::{Engine, StepReport};
use serde_json::Value;

use super::{init_test_logs, unused_port};

pub struct TestApp {
    pub address: String,
    pub client: awc::Client,
    running: Running,
    /// Set when the test ticks the engine itself (`spawn_stepped_app`).
    engine: Option<Rc<Engine>>,
}

enum Running {
    /// On the test's actix System.
    InProcess {
        handle: ServerHandle,
        join: tokio::task::JoinHandle<std::io::Result<()>>,
    },
    /// The real binary in a process of its own.
    Process(KilledWhenDropped),
}

/// A failing test leaves no process behind.
struct KilledWhenDropped(std::process::Child);

impl Drop for KilledWhenDropped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The service with its engine running on its own, for tests that need it to (time passing,
/// restarts, replicas, requests racing the engine).
pub async fn spawn_app(settings: Settings) -> TestApp {
    spawn_in_process(settings, EngineMode::Background).await
}

/// The service with its engine stepped by the test: `drive_until_idle` carries out everything
/// due, so the test goes on as soon as the engine is done, never waiting on a clock.
pub async fn spawn_stepped_app(settings: Settings) -> TestApp {
    spawn_in_process(settings, EngineMode::Stepped).await
}

async fn spawn_in_process(settings: Settings, mode: EngineMode) -> TestApp {
    init_test_logs();
    let app = Application::build_with(settings, mode)
        .await
        .expect("the service starts");
    let (port, handle) = (app.port(), app.server_handle());
    let engine = app.stepped_engine();
    let join = actix_web::rt::spawn(app.run_until_stopped());
    let mut test_app = TestApp::new(port, Running::InProcess { handle, join });
    test_app.engine = engine;
    test_app
}

/// The real binary (`odm-devops serve`) in a process of its own, configured by `env`
/// (`ODM_DEVOPS__` variables without that prefix, e.g. `("DATABASE__URL", url)`) on top of what
/// `test_settings` gives: a free loopback port, quick ticks, quiet logs. Returns once it is ready.
pub async fn spawn_app_process(env: &[(&str, String)]) -> TestApp {
    spawn_process(env, None).await
}

/// `spawn_app_process` with a settings file (`--config`) under the environment.
pub async fn spawn_app_process_with_config(
    env: &[(&str, String)],
    config: &std::path::Path,
) -> TestApp {
    spawn_process(env, Some(config)).await
}

async fn spawn_process(env: &[(&str, String)], config: Option<&std::path::Path>) -> TestApp {
    let port = unused_port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_odm-devops"));
    command.arg("serve").env_clear();
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let defaults = [
        ("SERVER__BIND", format!("127.0.0.1:{port}")),
        ("SERVER__PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("SERVER__WORKERS", "1".into()),
        ("DATABASE__POOL_SIZE", "4".into()),
        ("ENGINE__TICK_MS", "100".into()),
        ("LOG__FILTER", "error".into()),
    ];
    for (key, value) in defaults.iter().chain(env) {
        command.env(format!("ODM_DEVOPS__{key}"), value);
    }
    let mut process = KilledWhenDropped(command.spawn().expect("the service's binary starts"));
    let client = awc::Client::default();
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    let started = Instant::now();
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            panic!("the service's process exited: {status}");
        }
        if client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return TestApp::new(port, Running::Process(process));
        }
        assert!(
            started.elapsed() < super::PATIENCE,
            "the service's process is not ready after {:?}",
            super::PATIENCE
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The ids of a 200 list answer, in order (a task's id is a number like the others).
    #[track_caller]
    pub fn ids(&self) -> Vec<i64> {
        assert_eq!(self.status, 200, "{self:?}");
        let rows = self.json();
        rows.as_array()
            .unwrap_or_else(|| panic!("not a list: {rows}"))
            .iter()
            .map(|row| row["id"].as_i64().unwrap())
            .collect()
    }

    /// Asserts ODM's error envelope with this status and code; returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status);
        assert!(
            body["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        assert!(
            body["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/")),
            "{body}"
        );
        assert!(body["timestamp"].as_i64().is_some(), "{body}");
        body["message"].as_str().unwrap().to_owned()
    }
}

impl TestApp {
    fn new(port: u16, running: Running) -> TestApp {
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(20))
                .finish(),
            running,
            engine: None,
        }
    }

    /// The stepped engine takes the dispatches this app's writes make due, as a running one
    /// does (`Engine::accept_handoffs`), instead of leaving them to claims.
    pub fn accept_handoffs(&self) {
        self.engine
            .as_ref()
            .expect("accept_handoffs needs a stepped app (spawn_stepped_app)")
            .accept_handoffs();
    }

    /// Built with `spawn_stepped_app`: nothing happens in the engine unless the test drives it.
    pub fn is_stepped(&self) -> bool {
        self.engine.is_some()
    }

    /// Ticks the stepped engine until nothing is due: every step claimed and carried out, and
    /// the steps those made due. What each step did.
    pub async fn drive_until_idle(&self) -> Vec<StepReport> {
        let engine = self
            .engine
            .as_ref()
            .expect("drive_until_idle needs a stepped app (spawn_stepped_app)");
        let mut reports = Vec::new();
        for _ in 0..1000 {
            let tick = engine.tick().await.expect("the engine claims due steps");
            if tick.claimed() == 0 {
                return reports;
            }
            reports.extend(tick.finished().await);
        }
        panic!("the engine still has work due after 1000 ticks: {reports:?}")
    }

    /// A graceful stop (SIGTERM for a process): the server stops taking requests, the engine
    /// finishes its steps.
    pub async fn stop(self) {
        match self.running {
            Running::InProcess { handle, join } => {
                handle.stop(true).await;
                let _ = join.await;
            }
            Running::Process(mut process) => {
                let pid = process.0.id().to_string();
                let _ = std::process::Command::new("kill").arg(&pid).status();
                let _ = actix_web::web::block(move || process.0.wait()).await;
            }
        }
    }

    /// A crash (SIGKILL) of an app started by `spawn_app_process`: nothing drains, its leases
    /// stay in the database.
    pub async fn kill(self) {
        let Running::Process(process) = self.running else {
            panic!("only an app in a process of its own can be killed");
        };
        let _ = actix_web::web::block(move || drop(process)).await;
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.send(
            method,
            path,
            body.map(|b| ("application/json", b.to_string())),
            &[],
        )
        .await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.address)
        };
        let mut request = self.client.request(method.parse().unwrap(), url);
        for header in headers {
            request = request.insert_header(*header);
        }
        let mut response = match body {
            Some((content_type, body)) => {
                request
                    .insert_header(("Content-Type", content_type))
                    .send_body(body)
                    .await
            }
            None => request.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let bytes = response.body().limit(16 << 20).await.unwrap();
        Answer {
            status: response.status().as_u16(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    /// The JSON a GET answers with 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        answer.json()
    }
}
