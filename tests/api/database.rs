//! The database door under pressure and in the logs: an overloaded database answers 503 50301
//! with `Retry-After` and writes nothing; what runs inside `Db::read`/`Db::write` logs in the
//! caller's span.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use actix_web::rt::task::JoinHandle;
use odm_devops::app::Application;
use odm_devops::db::{Db, DbConnection, DbError};
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::Instrument;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::helpers::{descriptor, test_settings, Answer, TestDb, DEVOPS};
use crate::on_both_backends;

/// An HTTP answer and its `Retry-After` header.
async fn send(
    client: &awc::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> (Answer, Option<String>) {
    let request = client.request(method.parse().unwrap(), url);
    let mut response = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    }
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.body().await.unwrap();
    let answer = Answer {
        status: response.status().as_u16(),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    };
    (answer, retry_after)
}

/// Asserts a 503 50301 with `Retry-After: 1` whose message names `key`.
#[track_caller]
fn assert_overloaded((answer, retry_after): &(Answer, Option<String>), key: &str) {
    let message = answer.assert_error(503, "50301");
    assert!(message.contains(key), "{message}");
    assert_eq!(retry_after.as_deref(), Some("1"), "{answer:?}");
}

/// What `hold` keeps busy.
enum Held {
    /// A pooled connection (`Db::read`).
    PooledConnection,
    /// The writer thread (`Db::write`), on either backend.
    Writer,
}

/// Keeps `what` busy until released; returns once it is.
async fn hold(store: &Db, what: Held) -> (std::sync::mpsc::Sender<()>, JoinHandle<()>) {
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // Shared, since a read may run again (on a connection the server closed).
    let (started, released) = (
        Arc::new(Mutex::new(Some(started))),
        Arc::new(Mutex::new(released)),
    );
    let work = move |_: &mut DbConnection| {
        if let Some(started) = started.lock().unwrap().take() {
            let _ = started.send(());
        }
        released.lock().unwrap().recv().expect("released");
        Ok::<_, DbError>(())
    };
    let store = store.clone();
    let join = actix_web::rt::spawn(async move {
        match what {
            Held::PooledConnection => store.read(work).await,
            Held::Writer => store.write(work).await,
        }
        .expect("the held work succeeds")
    });
    running.await.expect("the held work started");
    (release, join)
}

on_both_backends!(an_overloaded_database_answers_503_with_retry_after_and_writes_nothing);
async fn an_overloaded_database_answers_503_with_retry_after_and_writes_nothing(db: TestDb) {
    let mut settings = test_settings(&db, None);
    settings.database.pool_size = 1;
    settings.database.pool_timeout_ms = 200;
    settings.database.write_queue = 1;
    settings.engine.tick_ms = 60_000;
    let app = Application::build(settings)
        .await
        .expect("the service starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store: Db = app.lifecycle().db().clone();
    let server = app.server_handle();
    let running = actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();

    let lifecycle = json!({"dev": [{"template": {"name": "build", "definition": {}}}]});
    // With one write allowed to wait, the engine's first writes at start may fill the queue for
    // a moment: the setup tries again, as a client told `Retry-After` would.
    let client = &client;
    let put = || {
        let url = format!("{base}/api/v1/pp/registry/products/p/versions/1.0.0");
        let body = descriptor(lifecycle.clone());
        async move {
            let (stored, _) = send(client, "PUT", &url, Some(body)).await;
            (stored.status != 503).then_some(stored)
        }
    };
    let stored = crate::helpers::eventually("the descriptor stored", put).await;
    assert!(stored.status == 201 || stored.status == 200, "{stored:?}");
    let create = || {
        let url = format!("{base}{DEVOPS}/activities");
        let body = json!({"dataProductId": "p", "dataProductVersion": "1.0.0", "stage": "dev"});
        async move { send(client, "POST", &url, Some(body)).await }
    };
    let list = format!("{base}{DEVOPS}/activities");

    // Every pooled connection busy for longer than database.pool_timeout_ms.
    let (release, held) = hold(&store, Held::PooledConnection).await;
    assert_overloaded(
        &send(client, "GET", &list, None).await,
        "database.pool_size",
    );
    assert_overloaded(&create().await, "database.pool_size");
    release.send(()).unwrap();
    held.await.unwrap();

    // The writer thread busy, and database.write_queue (1) write waiting for it.
    let (release, held) = hold(&store, Held::Writer).await;
    let mut waiting = Box::pin(store.write(|_| Ok::<_, DbError>("queued")));
    std::future::poll_fn(|cx| {
        let _ = Pin::new(&mut waiting).poll(cx);
        Poll::Ready(())
    })
    .await;
    assert_overloaded(&create().await, "database.write_queue");
    release.send(()).unwrap();
    held.await.unwrap();
    assert_eq!(
        waiting.await.unwrap(),
        "queued",
        "a queued write is not lost"
    );

    let (listed, _) = send(client, "GET", &list, None).await;
    assert_eq!(listed.json(), json!([]), "a refused request wrote nothing");
    let (created, _) = create().await;
    assert_eq!(created.status, 201, "the service recovers: {created:?}");
    let (listed, _) = send(client, "GET", &list, None).await;
    assert_eq!(listed.json().as_array().unwrap().len(), 1);

    server.stop(true).await;
    let _ = running.await;
}

/// The text of an event's or a span's fields.
#[derive(Default, Clone)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

/// Each event logged: its fields, and the fields of the spans it was logged in.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope(event)
            .into_iter()
            .flatten()
            .filter_map(|span| span.extensions().get::<Fields>().map(|f| f.0.clone()))
            .collect::<String>();
        self.0.lock().unwrap().push((fields.0, spans));
    }
}

on_both_backends!(what_database_work_logs_carries_the_request_span);
async fn what_database_work_logs_carries_the_request_span(db: TestDb) {
    let captured = Captured::default();
    let _logs =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let url = db.url.clone();
    let store = actix_web::web::block(move || Db::connect(&url, 2))
        .await
        .unwrap()
        .unwrap();

    async {
        store
            .write(|_| {
                tracing::info!("inside a write");
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
        store
            .read(|_| {
                tracing::info!("inside a read");
                Ok::<_, DbError>(())
            })
            .await
            .unwrap();
    }
    .instrument(tracing::info_span!("request", id = "r-42"))
    .await;

    let events = captured.0.lock().unwrap().clone();
    for logged in ["inside a write", "inside a read"] {
        let (_, spans) = events
            .iter()
            .find(|(fields, _)| fields.contains(logged))
            .unwrap_or_else(|| panic!("{logged:?} was not logged: {events:?}"));
        assert!(
            spans.contains("id=\"r-42\""),
            "{logged:?} was logged outside the request span: {spans:?}"
        );
    }
}

on_both_backends!(a_dispatch_whose_database_work_fails_for_a_moment_is_still_sent_once);
/// A dispatch's database work failing for a moment before the send (no pooled connection free)
/// once left the step under its lease; claimed again as abandoned, the task was never sent and
/// failed at its timeout. Now the step tries its database work again and sends the task once.
async fn a_dispatch_whose_database_work_fails_for_a_moment_is_still_sent_once(db: TestDb) {
    use odm_devops::app::EngineMode;

    let executor = crate::fakes::FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.database.pool_size = 1;
    // Long enough for a PostgreSQL connection to be made on a loaded machine at start.
    settings.database.pool_timeout_ms = 500;
    let app = Application::build_with(settings, EngineMode::Stepped)
        .await
        .expect("the service starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store: Db = app.lifecycle().db().clone();
    let engine = app.stepped_engine().expect("a stepped engine");
    let server = app.server_handle();
    let running = actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let lifecycle = json!({"dev": [crate::helpers::fake_task("only", json!({}))]});
    let (stored, _) = send(
        &client,
        "PUT",
        &format!("{base}/api/v1/pp/registry/products/p/versions/1.0.0"),
        Some(descriptor(lifecycle)),
    )
    .await;
    assert!(stored.status == 201 || stored.status == 200, "{stored:?}");
    let (created, _) = send(
        &client,
        "POST",
        &format!("{base}{DEVOPS}/activities?startAfterCreation=true"),
        Some(json!({"dataProductId": "p", "dataProductVersion": "1.0.0", "stage": "dev"})),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");

    // The only pooled connection is busy for 2 s, four times database.pool_timeout_ms.
    let (release, held) = hold(&store, Held::PooledConnection).await;
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(Duration::from_millis(2000)).await;
        release.send(()).unwrap();
    });
    let mut reports = Vec::new();
    for _ in 0..100 {
        // A tick refused by the database is tried again.
        if let Ok(tick) = engine.tick().await {
            reports.extend(tick.finished().await);
        }
        if !reports.is_empty() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    held.await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(
        reports[0].result,
        odm_devops::metrics::StepResult::Done,
        "{reports:?}"
    );
    assert_eq!(executor.received().len(), 1, "the task was sent once");
    server.stop(true).await;
    let _ = running.await;
}

/// PostgreSQL ends every connection of the service (a restart, a failover, a proxy's idle
/// timeout): the next reads on the pooled connections it closed are not answered 500, nor is
/// the service said not ready. Each such connection is dropped and the read runs on another.
#[actix_web::test]
async fn reads_go_on_when_postgres_closes_the_pooled_connections() {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let Some(db) = TestDb::new(crate::helpers::Backend::Postgres) else {
        return;
    };
    let mut settings = test_settings(&db, None);
    settings.database.pool_size = 4;
    let app = crate::helpers::spawn_app(settings).await;
    let activities = format!("{DEVOPS}/activities");
    // Every pooled connection opened: reads at once.
    let reads = (0..8).map(|_| app.get(&activities));
    for answer in futures_util::future::join_all(reads).await {
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let mut admin = PgConnection::establish(&db.url).unwrap();
    let ended = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .unwrap();
    assert!(ended >= 2, "{ended} connections ended");
    for _ in 0..6 {
        let answer = app.get(&activities).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let ready = app.get("/health/ready").await;
        assert_eq!(ready.status, 200, "{ready:?}");
    }
    app.stop().await;
}
