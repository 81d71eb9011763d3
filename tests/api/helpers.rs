//! The service under test, started for real on a random port, on SQLite or PostgreSQL.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use diesel::{Connection, PgConnection, RunQueryDsl};
use odm_devops::app::Application;
use odm_devops::config::{ExecutorSettings, OdmHttpSettings, Settings};
use serde_json::{json, Value};

pub const POSTGRES_URL_VAR: &str = "ODM_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend. Attributes given before the name (e.g.
/// `#[ignore = "bug: …"]`) go on both tests.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            $(#[$attr])*
            #[actix_web::test]
            async fn sqlite() {
                if let Some(db) = $crate::helpers::TestDb::new($crate::helpers::Backend::Sqlite) {
                    super::$name(db).await;
                }
            }

            $(#[$attr])*
            #[actix_web::test]
            async fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::new($crate::helpers::Backend::Postgres) {
                    super::$name(db).await;
                }
            }
        }
    };
}

/// A database of its own for one test: a SQLite file in a fresh folder, or a fresh PostgreSQL
/// database on the server named by `ODM_TEST_POSTGRES_URL`. Removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    sqlite_dir: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// `None` (and a notice on the terminal) when PostgreSQL is not configured.
    pub fn new(backend: Backend) -> Option<TestDb> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("odm-devops-test-{id}"));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}", dir.join("odm.db").display());
                Some(TestDb {
                    backend,
                    url,
                    sqlite_dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
                    announce_postgres_skipped();
                    return None;
                };
                let name = format!("odm_test_{id}");
                let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .unwrap();
                let (base, query) = admin
                    .split_once('?')
                    .map_or((admin.as_str(), ""), |(b, q)| (b, q));
                let (server, _) = base.rsplit_once('/').expect("a database in the URL");
                let url = if query.is_empty() {
                    format!("{server}/{name}")
                } else {
                    format!("{server}/{name}?{query}")
                };
                Some(TestDb {
                    backend,
                    url,
                    sqlite_dir: None,
                    postgres: Some((admin, name)),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = &self.postgres {
            if let Ok(mut conn) = PgConnection::establish(admin) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
    }
}

/// Written straight to the terminal: the test harness captures `println!` of passing tests.
fn announce_postgres_skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** {POSTGRES_URL_VAR} is not set: the PostgreSQL runs of the persistence tests are SKIPPED \
             (e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test) ***\n"
        );
    });
}

pub fn init_test_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
    });
}

/// Settings for a test: random port, the test database, quick engine ticks, and an `odm-http`
/// executor named `fake` at `executor_address` when given.
pub fn test_settings(db: &TestDb, executor_address: Option<&str>) -> Settings {
    let mut s = Settings::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    s.server.bind = "127.0.0.1:0".into();
    s.server.public_url = String::new();
    s.server.workers = 1;
    s.database.url = odm_devops::secret::Secret::new(db.url.clone());
    s.database.pool_size = 4;
    s.engine.tick_ms = 100;
    if let Some(address) = executor_address {
        s.executors.insert(
            "fake".into(),
            ExecutorSettings::OdmHttp(OdmHttpSettings {
                active: true,
                address: address.to_owned(),
                check_after_callback: false,
                connect_timeout_ms: 1000,
                request_timeout_ms: 5000,
            }),
        );
    }
    s
}

pub struct TestApp {
    pub address: String,
    pub client: awc::Client,
    running: Running,
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

pub async fn spawn_app(settings: Settings) -> TestApp {
    init_test_logs();
    let app = Application::build(settings)
        .await
        .expect("the service starts");
    let (port, handle) = (app.port(), app.server_handle());
    let join = actix_web::rt::spawn(app.run_until_stopped());
    TestApp::new(port, Running::InProcess { handle, join })
}

/// The real binary (`odm-devops serve`) in a process of its own, configured by `env`
/// (`ODM_DEVOPS__` variables without that prefix, e.g. `("DATABASE__URL", url)`) on top of what
/// `test_settings` gives: a free loopback port, quick ticks, quiet logs. Returns once it is ready.
pub async fn spawn_app_process(env: &[(&str, String)]) -> TestApp {
    let port = unused_port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_odm-devops"));
    command.arg("serve").env_clear();
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
            started.elapsed() < Duration::from_secs(10),
            "the service's process is not ready after 10 s"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const DEVOPS: &str = "/api/v1/pp/devops";

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
        }
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

    pub async fn put_descriptor(&self, product: &str, version: &str, descriptor: &Value) {
        let answer = self
            .call(
                "PUT",
                &format!("/api/v1/pp/registry/products/{product}/versions/{version}"),
                Some(descriptor),
            )
            .await;
        assert!(answer.status == 201 || answer.status == 200, "{answer:?}");
    }

    pub async fn create_activity(
        &self,
        product: &str,
        version: &str,
        stage: &str,
        start: bool,
    ) -> Answer {
        let body = json!({"dataProductId": product, "dataProductVersion": version, "stage": stage});
        self.call(
            "POST",
            &format!("{DEVOPS}/activities?startAfterCreation={start}"),
            Some(&body),
        )
        .await
    }

    /// Creates and starts an activity; its id.
    pub async fn start_activity(&self, product: &str, version: &str, stage: &str) -> i64 {
        let answer = self.create_activity(product, version, stage, true).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["id"].as_i64().unwrap()
    }

    /// Starts a PLANNED activity (`PATCH …/status?action=START`).
    pub async fn start_planned(&self, id: i64) -> Answer {
        let path = format!("{DEVOPS}/activities/{id}/status?action=START");
        self.call("PATCH", &path, None).await
    }

    pub async fn activity(&self, id: i64) -> Value {
        let answer = self.get(&format!("{DEVOPS}/activities/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    pub async fn tasks_of(&self, activity_id: i64) -> Vec<Value> {
        let answer = self
            .get(&format!("{DEVOPS}/tasks?activityId={activity_id}"))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json().as_array().unwrap().clone()
    }

    /// Polls the activity until its status is `status` (10 s at most).
    pub async fn wait_for_activity(&self, id: i64, status: &str) -> Value {
        eventually(&format!("activity {id} {status}"), || async move {
            let activity = self.activity(id).await;
            (activity["status"] == status).then_some(activity)
        })
        .await
    }

    /// Calls back like a pipeline: the callbackRef's path and query on this server.
    pub async fn call_back(&self, callback_ref: &str, body: Option<Value>) -> Answer {
        let path = callback_ref
            .split_once("/api/")
            .map(|(_, rest)| format!("/api/{rest}"))
            .unwrap();
        match body {
            Some(body) => self.call("PATCH", &path, Some(&body)).await,
            None => self.send("PATCH", &path, None, &[]).await,
        }
    }
}

/// Retries `check` until it gives a value, failing the test after 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A descriptor in the stage-map shape.
pub fn descriptor(lifecycle: Value) -> Value {
    json!({
        "dataProductDescriptor": "1.0.0",
        "info": {"name": "test-product", "version": "1.0.0"},
        "internalComponents": {"lifecycleInfo": lifecycle}
    })
}

/// A task on the fake executor.
pub fn fake_task(name: &str, configurations: Value) -> Value {
    json!({
        "service": {"$href": "{fake}"},
        "template": {"name": name, "definition": {"pipeline": name}},
        "configurations": configurations
    })
}

/// A port nothing listens on.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
