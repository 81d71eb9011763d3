//! Scale-out on PostgreSQL (DESIGN §10, README "Running several replicas"): a replica that
//! commits work wakes the others at once through NOTIFY, each listening on a connection of its
//! own; `database.listen: false` (PgBouncer in transaction mode) leaves only the tick; a lost
//! LISTEN connection comes back; a replica killed with a batch in flight loses nothing and
//! sends nothing twice. LISTEN/NOTIFY is PostgreSQL's: these tests run on PostgreSQL only and
//! say so when `ODM_TEST_POSTGRES_URL` is not set (the SQLite replicas are in `replicas.rs`).

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgNotification;
use diesel::sql_types::{Integer, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use futures_util::future::join_all;
use odm_devops::config::Settings;
use odm_devops::db::listen::{APPLICATION_NAME, CHANNEL};
use odm_devops::db::Db;
use odm_devops::secret::Secret;
use serde_json::json;

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::metrics::scrape;
use crate::replicas::{
    assert_each_sent_once, assert_lifecycle, dev_and_test, engine_hold, process_env, product,
};

/// Far beyond any wait below: a step seen within the bound was not found by the tick.
const SLOW_TICK_MS: u64 = 60_000;
/// How long a wake-up through NOTIFY may take here, on a loaded 2-core machine (the listener
/// reads every 5 ms; the rest is HTTP and commits).
const AT_ONCE: Duration = Duration::from_secs(5);

const LISTENING: &str = "odm_devops_database_listening";
const WAKEUPS: &str = "odm_devops_database_notify_wakeups_total";
const LOST: &str = "odm_devops_database_listen_lost_total";
const PEERS: &str = "odm_devops_database_listen_peers";

/// A fresh PostgreSQL database, or `None` (with the suite's notice) when none is configured.
fn postgres() -> Option<TestDb> {
    TestDb::new(Backend::Postgres)
}

fn settings(db: &TestDb, executor: &FakeExecutor, tick_ms: u64, listen: bool) -> Settings {
    let mut s = test_settings(db, Some(&executor.address));
    s.engine.tick_ms = tick_ms;
    s.database.listen = listen;
    s
}

async fn metric(app: &TestApp, sample: &str) -> f64 {
    scrape(app).await.value(sample)
}

/// Until `app` listens and has counted `peers` other replicas listening (it sends NOTIFY only
/// when there is someone to hear it).
async fn wait_listening(app: &TestApp, peers: u32) {
    eventually(
        &format!("the replica to listen, with {peers} other(s)"),
        || async {
            let scrape = scrape(app).await;
            let ready = scrape.value(LISTENING) == 1.0 && scrape.value(PEERS) == f64::from(peers);
            ready.then_some(())
        },
    )
    .await;
}

/// The test's own connection LISTENing on the service's channel: which NOTIFYs were sent.
struct Eavesdropper {
    conn: PgConnection,
    pid: i32,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

impl Eavesdropper {
    fn start(db: &TestDb) -> Eavesdropper {
        let mut conn = PgConnection::establish(&db.url).unwrap();
        conn.batch_execute(&format!("LISTEN {CHANNEL}")).unwrap();
        let pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result::<Pid>(&mut conn)
            .unwrap()
            .pid;
        Eavesdropper { conn, pid }
    }

    fn heard(&mut self) -> Vec<PgNotification> {
        self.conn.notifications_iter().map(Result::unwrap).collect()
    }

    /// The database's LISTEN connections besides this one: by name, or by what they ran.
    fn listeners(&mut self) -> Vec<i32> {
        diesel::sql_query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> $1 \
             AND (application_name = $2 OR query ILIKE 'LISTEN%')",
        )
        .bind::<Integer, _>(self.pid)
        .bind::<Text, _>(APPLICATION_NAME)
        .load::<Pid>(&mut self.conn)
        .unwrap()
        .into_iter()
        .map(|p| p.pid)
        .collect()
    }
}

#[actix_web::test]
async fn a_callback_on_one_replica_is_dispatched_by_another_without_waiting_for_the_tick() {
    let Some(db) = postgres() else { return };
    let executor = FakeExecutor::start().await;
    let mut eavesdropper = Eavesdropper::start(&db);
    // A takes the requests and the callbacks; its engine runs only when the test ticks it, which
    // it never does. B's engine runs, but looks for work on its own only once a minute.
    let a = spawn_stepped_app(settings(&db, &executor, SLOW_TICK_MS, true)).await;
    let b = spawn_app(settings(&db, &executor, SLOW_TICK_MS, true)).await;
    wait_listening(&a, 1).await;
    wait_listening(&b, 1).await;
    a.put_descriptor("p0", "1.0.0", &dev_and_test()).await;
    let id = a.start_activity("p0", "1.0.0", "dev").await;
    let first = executor.wait_for(1).await.remove(0);
    assert!(first.callback_ref.starts_with(&b.address), "{first:?}");

    let called_back = Instant::now();
    let answer = a.call_back(&first.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let second = executor.wait_for(2).await.remove(1);
    let took = called_back.elapsed();
    assert!(
        took < AT_ONCE,
        "the next task reached the executor {took:?} after the callback to A"
    );
    assert!(second.callback_ref.starts_with(&b.address), "{second:?}");
    assert!(metric(&b, WAKEUPS).await >= 1.0);

    let answer = a.call_back(&second.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    a.wait_for_activity(id, "PROCESSED").await;
    // One NOTIFY per transaction that left work due now, naming the replica that sent it (a
    // replica skips its own): A's start and A's first callback. None for B's claims and its
    // recorded runs (nothing due now), none for the last callback (nothing left to do).
    let heard = eavesdropper.heard();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert!(
        heard.iter().all(|n| n.channel == CHANNEL
            && !n.payload.is_empty()
            && n.payload == heard[0].payload),
        "{heard:?}"
    );
    join_all([a.stop(), b.stop()]).await;
    assert_each_sent_once(&executor.received(), 2);
}

/// A replica alone sends no NOTIFY (a round trip and a commit-time lock for nobody); once a
/// second one listens, the first notifies it of work it leaves due, and of no dispatch it hands
/// to its own engine (`handoff.rs`).
#[actix_web::test]
async fn a_lone_replica_sends_no_notify_until_another_listens() {
    let Some(db) = postgres() else { return };
    let executor = FakeExecutor::start().await;
    let mut eavesdropper = Eavesdropper::start(&db);
    let a = spawn_app(settings(&db, &executor, 100, true)).await;
    wait_listening(&a, 0).await;
    a.put_descriptor("p0", "1.0.0", &dev_and_test()).await;
    a.put_descriptor("p1", "1.0.0", &dev_and_test()).await;
    let alone = a.start_activity("p0", "1.0.0", "dev").await;
    for n in 1..=2 {
        let task = executor.wait_for(n).await.remove(n - 1);
        let answer = a.call_back(&task.callback_ref, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    a.wait_for_activity(alone, "PROCESSED").await;
    assert_eq!(
        eavesdropper.heard().len(),
        0,
        "NOTIFY sent by a lone replica"
    );

    // B listens, but its engine never runs: it takes no hand-offs, and leaves what its writes
    // make due to a claim.
    let b = spawn_stepped_app(settings(&db, &executor, SLOW_TICK_MS, true)).await;
    wait_listening(&a, 1).await;
    let together = a.start_activity("p1", "1.0.0", "dev").await;
    let task = executor.wait_for(3).await.remove(2);
    assert!(task.callback_ref.starts_with(&a.address), "{task:?}");
    assert_eq!(
        eavesdropper.heard().len(),
        0,
        "NOTIFY for a dispatch A handed to its own engine"
    );
    let answer = b.call_back(&task.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let task = executor.wait_for(4).await.remove(3);
    assert!(task.callback_ref.starts_with(&a.address), "{task:?}");
    let answer = b.call_back(&task.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    a.wait_for_activity(together, "PROCESSED").await;
    let heard = eavesdropper.heard();
    assert_eq!(
        heard.len(),
        1,
        "B's first callback, which left the second task due: {heard:?}"
    );
    join_all([a.stop(), b.stop()]).await;
}

/// PgBouncer in transaction mode cannot carry LISTEN: `database.listen: false` sends no NOTIFY,
/// opens no LISTEN connection, and the replicas still share the work through the tick.
#[actix_web::test]
async fn without_listen_replicas_share_the_work_through_the_tick_alone() {
    let Some(db) = postgres() else { return };
    let executor = FakeExecutor::start().await;
    let mut eavesdropper = Eavesdropper::start(&db);
    let a = spawn_stepped_app(settings(&db, &executor, 200, false)).await;
    let b = spawn_app(settings(&db, &executor, 200, false)).await;
    a.put_descriptor("p0", "1.0.0", &dev_and_test()).await;
    let id = a.start_activity("p0", "1.0.0", "dev").await;
    for n in 1..=2 {
        let task = executor.wait_for(n).await.remove(n - 1);
        assert!(task.callback_ref.starts_with(&b.address), "{task:?}");
        let answer = a.call_back(&task.callback_ref, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    a.wait_for_activity(id, "PROCESSED").await;

    assert_eq!(
        eavesdropper.listeners(),
        Vec::<i32>::new(),
        "LISTEN connections"
    );
    assert_eq!(eavesdropper.heard().len(), 0, "NOTIFY sent");
    for app in [&a, &b] {
        assert_eq!(metric(app, LISTENING).await, 0.0);
        assert_eq!(metric(app, PEERS).await, 0.0);
        assert_eq!(metric(app, WAKEUPS).await, 0.0);
    }
    join_all([a.stop(), b.stop()]).await;
    assert_each_sent_once(&executor.received(), 2);
}

#[actix_web::test]
async fn a_lost_listen_connection_comes_back_and_wakes_the_engine_again() {
    let Some(db) = postgres() else { return };
    let executor = FakeExecutor::start().await;
    let mut eavesdropper = Eavesdropper::start(&db);
    let a = spawn_stepped_app(settings(&db, &executor, SLOW_TICK_MS, true)).await;
    let b = spawn_app(settings(&db, &executor, SLOW_TICK_MS, true)).await;
    wait_listening(&a, 1).await;
    wait_listening(&b, 1).await;
    let before = eavesdropper.listeners();
    assert_eq!(
        before.len(),
        2,
        "one LISTEN connection per replica: {before:?}"
    );

    // Both replicas' LISTEN connections ended by the server, as a restart or an operator would.
    for pid in &before {
        diesel::sql_query("SELECT pg_terminate_backend($1)")
            .bind::<Integer, _>(pid)
            .execute(&mut eavesdropper.conn)
            .unwrap();
    }
    eventually("B to notice the loss and listen again", || async {
        let back = metric(&b, LOST).await >= 1.0 && metric(&b, LISTENING).await == 1.0;
        back.then_some(())
    })
    .await;
    let after = eventually("both to listen on new connections", || {
        let now = eavesdropper.listeners();
        let renewed = now.len() == 2 && now.iter().all(|pid| !before.contains(pid));
        async move { renewed.then_some(now) }
    })
    .await;
    assert_eq!(after.len(), 2);
    wait_listening(&a, 1).await;

    a.put_descriptor("p0", "1.0.0", &dev_and_test()).await;
    let created = Instant::now();
    let id = a.start_activity("p0", "1.0.0", "dev").await;
    let first = executor.wait_for(1).await.remove(0);
    let took = created.elapsed();
    assert!(took < AT_ONCE, "B dispatched {took:?} after the start");
    assert!(first.callback_ref.starts_with(&b.address), "{first:?}");
    let answer = a.call_back(&first.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let second = executor.wait_for(2).await.remove(1);
    let answer = a.call_back(&second.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    a.wait_for_activity(id, "PROCESSED").await;
    join_all([a.stop(), b.stop()]).await;
}

/// Two replicas listening, a batch of dispatches in flight on both, one of them killed (SIGKILL):
/// the survivor takes the killed one's cut dispatches over once their leases expire (waiting for
/// their callbacks, never sending them again), every activity ends, and no task reached the
/// executor twice.
#[actix_web::test]
async fn a_replica_killed_with_a_batch_in_flight_loses_nothing_and_sends_nothing_twice() {
    const SECRET: &str = "one secret for every replica";
    const PRODUCTS: usize = 10;
    let Some(db) = postgres() else { return };
    let executor = FakeExecutor::start().await;
    // A: the real binary in a process of its own (listening, the default), so it can crash.
    let mut env = process_env(&db, &executor);
    env.push(("CALLBACKS__SECRET", SECRET.into()));
    env.push(("ENGINE__LEASE_SECS", "2".into()));
    let a = spawn_app_process(&env).await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.callbacks.secret = Some(Secret::new(SECRET));
    settings.engine.lease_secs = 2;
    let b = spawn_app(settings).await;
    wait_listening(&a, 1).await;
    wait_listening(&b, 1).await;
    let url = db.url.clone();
    let store = actix_web::web::block(move || Db::connect(&url, 1))
        .await
        .unwrap()
        .unwrap();
    for n in 0..PRODUCTS {
        a.put_descriptor(&product(n), "1.0.0", &dev_and_test())
            .await;
    }

    // Every first task sent and left unanswered for a while: a batch in flight on each engine.
    executor.delay_replies(1_500);
    let mut ids = Vec::new();
    for n in 0..PRODUCTS {
        let app = if n % 2 == 0 { &a } else { &b };
        ids.push(app.start_activity(&product(n), "1.0.0", "dev").await);
    }
    let firsts = executor.wait_for(PRODUCTS).await;
    let a_address = a.address.clone();
    a.kill().await;
    let cut = firsts
        .iter()
        .filter(|t| t.callback_ref.starts_with(&a_address))
        .count();
    assert!(cut > 0, "A had no dispatch in flight: {firsts:?}");

    // B's own dispatches are answered; A's expire under their leases and wait for callbacks.
    let first_ids: Vec<i64> = firsts.iter().map(|t| t.id).collect();
    eventually("B to hold every first task as sent", || async {
        let hold = engine_hold(&store, &first_ids).await;
        hold.iter()
            .all(|h| *h == (Some("await".to_owned()), None))
            .then_some(())
    })
    .await;
    assert_eq!(
        executor.received().len(),
        PRODUCTS,
        "nothing was sent again"
    );

    executor.delay_replies(0);
    for task in &firsts {
        let body = json!({"status": "PROCESSED", "results": {"task": task.id}});
        let answer = b.call_back(&task.callback_ref, Some(body)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for task in &executor.wait_for(2 * PRODUCTS).await[PRODUCTS..] {
        let answer = b.call_back(&task.callback_ref, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for id in &ids {
        b.wait_for_activity(*id, "PROCESSED").await;
    }
    for n in 0..PRODUCTS {
        assert_lifecycle(&b, &product(n), &["dev"]).await;
    }
    b.stop().await;
    assert_each_sent_once(&executor.received(), 2 * PRODUCTS);
}
