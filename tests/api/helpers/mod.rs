//! The service under test, started for real on a random port, on SQLite or PostgreSQL
//! (`database.rs`), spoken to over HTTP (`app.rs`), with what tests share (`builders.rs`).

mod app;
mod builders;
mod database;

use std::future::Future;
use std::sync::Once;
use std::time::{Duration, Instant};

pub use app::*;
pub use builders::*;
pub use database::*;

pub const DEVOPS: &str = "/api/v1/pp/devops";

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

/// How long a test waits for what should happen at once before it fails. Generous: CI once ran
/// the suite three times slower than a workstation, with tests stalled for over a minute; a
/// passing test never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Retries `check` until it gives a value, failing the test after `PATIENCE`.
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
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on and nothing will: below the range the system hands out for port 0,
/// so no server another test starts meanwhile can take it (a free port of that range could be,
/// and then answered a test that expected a refusal).
pub fn refused_port() -> u16 {
    (1..1024)
        .find(|port| {
            let refused = std::net::TcpStream::connect(("127.0.0.1", *port));
            matches!(refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
        .expect("a port under 1024 that refuses connections")
}

/// A free port to bind a server to.
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
