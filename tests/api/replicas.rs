//! Scale-out (DESIGN §1, §10): several replicas of the service on one database share the work
//! through leases. No step is done twice, a callback may reach any replica, and the work of a
//! replica that dies is taken over when its leases expire, without sending anything twice.

use std::collections::HashMap;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use futures_util::future::{join, join_all};
use odm_devops::db::schema::{activities, tasks};
use odm_devops::db::{Db, DbError};
use odm_devops::domain::Step;
use odm_devops::lifecycle::engine::claim_due_steps;
use odm_devops::secret::Secret;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::fakes::{FakeExecutor, Received};
use crate::helpers::*;
use crate::on_both_backends;

const PRODUCTS: usize = 20;

pub(crate) fn product(n: usize) -> String {
    format!("p{n}")
}

/// Two tasks in dev, one in test.
pub(crate) fn dev_and_test() -> Value {
    descriptor(json!({
        "dev": [fake_task("build", json!({})), fake_task("deploy", json!({}))],
        "test": [fake_task("smoke", json!({}))]
    }))
}

/// What `spawn_app_process` needs beside its defaults to be the replica `test_settings` makes.
pub(crate) fn process_env(db: &TestDb, executor: &FakeExecutor) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE__URL", db.url.clone()),
        ("EXECUTORS__FAKE__KIND", "odm-http".into()),
        ("EXECUTORS__FAKE__ADDRESS", executor.address.clone()),
    ]
}

/// Submissions the executor received, by task id.
fn submissions_per_task(received: &[Received]) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for task in received {
        *counts.entry(task.id).or_default() += 1;
    }
    counts
}

/// Every task was sent to the executor exactly once.
#[track_caller]
pub(crate) fn assert_each_sent_once(received: &[Received], tasks: usize) {
    let counts = submissions_per_task(received);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks sent more than once: {twice:?}");
    assert_eq!(counts.len(), tasks, "tasks sent: {counts:?}");
}

/// The product version's lifecycle rows are `stages`, in order, and only the last is current.
pub(crate) async fn assert_lifecycle(app: &TestApp, product: &str, stages: &[&str]) {
    let rows = app
        .get(&format!("{DEVOPS}/lifecycles/{product}/1.0.0"))
        .await
        .json();
    let rows = rows.as_array().unwrap();
    let reached: Vec<_> = rows.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(reached, stages, "{product}: {rows:?}");
    let current: Vec<_> = rows.iter().map(|r| r["finishedAt"].is_null()).collect();
    let mut expected = vec![false; stages.len()];
    expected[stages.len() - 1] = true;
    assert_eq!(
        current, expected,
        "{product}: one current row, the last: {rows:?}"
    );
}

/// Replicas started at once on fresh databases. Whether two of them meet while creating the
/// schema or the generated secret is a matter of timing: several databases make it likely.
/// PostgreSQL: fewer, as each replica holds its pool, its writer threads and its LISTEN
/// connection (2 × 3 × 9 connections stay well under the default `max_connections`, 100, with
/// another test running beside).
fn fresh_databases(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 5,
        Backend::Postgres => 2,
    }
}

on_both_backends!(replicas_started_together_on_a_fresh_database_agree);
async fn replicas_started_together_on_a_fresh_database_agree(db: TestDb) {
    let backend = db.backend;
    let mut dbs = vec![db];
    dbs.extend((1..fresh_databases(backend)).map(|_| TestDb::new(backend).unwrap()));
    let one_task = descriptor(fake_stage(&["build"]));
    join_all(dbs.iter().map(|db| {
        let one_task = &one_task;
        async move {
            let executor = FakeExecutor::start().await;
            // Neither the schema nor the generated callback secret may be created twice.
            let replicas =
                join_all((0..3).map(|_| spawn_app(test_settings(db, Some(&executor.address)))))
                    .await;
            replicas[0].put_descriptor("p0", "1.0.0", one_task).await;
            let id = replicas[1].start_activity("p0", "1.0.0", "dev").await;
            let task = executor.wait_for(1).await.remove(0);
            // Every replica accepts the token the dispatching one minted (a replayed callback is
            // harmless; a token signed with another secret would be 401).
            for app in &replicas {
                let answer = app.call_back(&task.callback_ref, None).await;
                assert_eq!(answer.status, 200, "{answer:?}");
            }
            replicas[2].wait_for_activity(id, "PROCESSED").await;
            join_all(replicas.into_iter().map(TestApp::stop)).await;
        }
    }))
    .await;
}

on_both_backends!(two_replicas_share_the_work_and_do_every_step_once);
async fn two_replicas_share_the_work_and_do_every_step_once(db: TestDb) {
    let executor = FakeExecutor::start().await;
    // One replica here, one in a process of its own (on SQLite: two processes on one file),
    // started together on a fresh database, without callbacks.secret: they agree on the one
    // generated in the database, or callbacks sent to the other replica would be refused.
    let (a, b) = join(
        spawn_app(test_settings(&db, Some(&executor.address))),
        spawn_app_process(&process_env(&db, &executor)),
    )
    .await;
    let replicas = [&a, &b];
    let mut rng = StdRng::seed_from_u64(20);
    let mut pick = move || replicas[rng.gen_range(0..replicas.len())];

    for n in 0..PRODUCTS {
        pick()
            .put_descriptor(&product(n), "1.0.0", &dev_and_test())
            .await;
    }
    // Every product through dev (2 tasks), then test (1 task), each activity started through
    // either replica, each submission called back once, through either replica, as it arrives.
    let mut answered = 0;
    for (stage, sent) in [("dev", 2 * PRODUCTS), ("test", 3 * PRODUCTS)] {
        let ids = join_all((0..PRODUCTS).map(|n| {
            let app = pick();
            async move { app.start_activity(&product(n), "1.0.0", stage).await }
        }))
        .await;
        while answered < sent {
            let received = executor.wait_for(answered + 1).await;
            let callbacks = received[answered..].iter().map(|task| {
                let app = pick();
                let body = json!({"status": "PROCESSED", "results": {"task": task.id}});
                async move { app.call_back(&task.callback_ref, Some(body)).await }
            });
            for answer in join_all(callbacks).await {
                assert_eq!(answer.status, 200, "{answer:?}");
            }
            answered = received.len();
        }
        for id in ids {
            pick().wait_for_activity(id, "PROCESSED").await;
        }
    }
    for n in 0..PRODUCTS {
        assert_lifecycle(pick(), &product(n), &["dev", "test"]).await;
    }

    // Stopping lets each engine finish the steps it had under way: a second dispatch of any task
    // would have reached the executor by now.
    let addresses = [a.address.clone(), b.address.clone()];
    join(a.stop(), b.stop()).await;
    let received = executor.received();
    assert_each_sent_once(&received, 3 * PRODUCTS);
    // The callbackRef names the replica that dispatched: both engines did their share.
    for address in addresses {
        let dispatched = received
            .iter()
            .filter(|t| t.callback_ref.starts_with(&address))
            .count();
        assert!(dispatched > 0, "{address} dispatched nothing");
    }
}

/// `(step, lease owner)` of each task, read straight from the database.
pub(crate) async fn engine_hold(store: &Db, ids: &[i64]) -> Vec<(Option<String>, Option<String>)> {
    let ids = ids.to_vec();
    store
        .read(move |conn| {
            tasks::table
                .filter(tasks::id.eq_any(ids))
                .order(tasks::id)
                .select((tasks::step, tasks::lease_owner))
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

on_both_backends!(a_killed_replicas_work_is_taken_over_without_sending_anything_twice);
async fn a_killed_replicas_work_is_taken_over_without_sending_anything_twice(db: TestDb) {
    const SECRET: &str = "one secret for every replica";
    let executor = FakeExecutor::start().await;
    // A: the real binary, in a process of its own, so that it can crash for real.
    let mut env = process_env(&db, &executor);
    env.push(("CALLBACKS__SECRET", SECRET.into()));
    env.push(("ENGINE__LEASE_SECS", "1".into()));
    let a = spawn_app_process(&env).await;
    let url = db.url.clone();
    let store = actix_web::web::block(move || Db::connect(&url, 1))
        .await
        .unwrap()
        .unwrap();
    for n in 0..3 {
        a.put_descriptor(&product(n), "1.0.0", &dev_and_test())
            .await;
    }
    // p0's first task is dispatched and recorded: it waits for its callback, held by no one.
    let mut ids = vec![a.start_activity(&product(0), "1.0.0", "dev").await];
    let recorded = executor.wait_for(1).await[0].id;
    eventually("the dispatch recorded", || async {
        let hold = engine_hold(&store, &[recorded]).await;
        (hold == [(Some("await".to_owned()), None)]).then_some(())
    })
    .await;
    // p1's and p2's first tasks are under way when A dies: the executor got them, A never hears
    // back.
    executor.delay_replies(30_000);
    for n in 1..3 {
        ids.push(a.start_activity(&product(n), "1.0.0", "dev").await);
    }
    let firsts = executor.wait_for(3).await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.callbacks.secret = Some(Secret::new(SECRET));
    settings.engine.lease_secs = 1;
    let b = spawn_app(settings).await;
    a.kill().await;

    // Once A's leases expire, B takes the cut dispatches over: their outcome is unknown, so they
    // wait for their callbacks instead of being sent again.
    let first_ids: Vec<i64> = firsts.iter().map(|t| t.id).collect();
    eventually("B to take the cut dispatches over", || async {
        let hold = engine_hold(&store, &first_ids).await;
        hold.iter()
            .all(|h| *h == (Some("await".to_owned()), None))
            .then_some(())
    })
    .await;
    assert_eq!(executor.received().len(), 3, "nothing was sent again");
    for id in &ids {
        assert_eq!(b.activity(*id).await["status"], "PROCESSING");
    }

    // The runs' callbacks, sent to B, complete them; B runs the second tasks.
    executor.delay_replies(0);
    for task in &firsts {
        let answer = b.call_back(&task.callback_ref, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for task in &executor.wait_for(6).await[3..] {
        let answer = b.call_back(&task.callback_ref, None).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for id in &ids {
        b.wait_for_activity(*id, "PROCESSED").await;
    }
    for n in 0..3 {
        assert_lifecycle(&b, &product(n), &["dev"]).await;
    }
    b.stop().await;
    assert_each_sent_once(&executor.received(), 6);
}

on_both_backends!(a_replica_stopped_mid_dispatch_hands_over_at_once);
async fn a_replica_stopped_mid_dispatch_hands_over_at_once(db: TestDb) {
    let executor = FakeExecutor::start().await;
    // The default lease (minutes): the test only passes if A's stop leaves nothing held.
    let a = spawn_app(test_settings(&db, Some(&executor.address))).await;
    a.put_descriptor("p0", "1.0.0", &dev_and_test()).await;
    executor.delay_replies(500);
    let id = a.start_activity("p0", "1.0.0", "dev").await;
    let first = executor.wait_for(1).await.remove(0);
    let b = spawn_app(test_settings(&db, Some(&executor.address))).await;
    // A finishes the dispatch under way (it records the run) before its engine stops.
    a.stop().await;
    executor.delay_replies(0);

    let answer = b.call_back(&first.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let second = executor.wait_for(2).await.remove(1);
    let answer = b.call_back(&second.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    b.wait_for_activity(id, "PROCESSED").await;
    assert_lifecycle(&b, "p0", &["dev"]).await;
    b.stop().await;
    assert_each_sent_once(&executor.received(), 2);
}

// The interleaving behind a double claim, forced with the database layer itself (the service
// gives no hook to pause a replica between its statements): while replica A claims the due
// steps, replica X — which claimed the task first and sent it — records the run and releases
// the task. A must not take the task then: it is no longer due, and counting it as a fresh
// dispatch would start a new attempt and void the token of the run X started.
on_both_backends!(a_claim_skips_a_step_another_replica_is_changing);
async fn a_claim_skips_a_step_another_replica_is_changing(db: TestDb) {
    let url = db.url.clone();
    let store = actix_web::web::block(move || Db::connect(&url, 3))
        .await
        .unwrap()
        .unwrap();
    let now = odm_devops::clock::now_ms();
    store
        .write(move |conn| {
            diesel::insert_into(activities::table)
                .values((
                    activities::data_product_id.eq("p0"),
                    activities::data_product_version.eq("1.0.0"),
                    activities::stage.eq("dev"),
                    activities::status.eq("PROCESSING"),
                    activities::created_at.eq(now),
                ))
                .execute(conn)?;
            diesel::insert_into(tasks::table)
                .values((
                    tasks::activity_id.eq(1),
                    tasks::position.eq(1),
                    tasks::name.eq("build"),
                    tasks::executor_ref.eq("fake"),
                    tasks::status.eq("PROCESSING"),
                    tasks::created_at.eq(now),
                    tasks::step.eq(Step::Dispatch.as_str()),
                    tasks::due_at.eq(now),
                ))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();

    // X's claim and dispatch in one transaction, not yet committed: attempt 1, then the task
    // released to wait for the callback of the run X started.
    let (locked, x_holds) = tokio::sync::oneshot::channel();
    let (commit, x_may_commit) = std::sync::mpsc::channel::<()>();
    let sqlite = db.backend == Backend::Sqlite;
    // Shared, since a read may run again (on a connection the server closed).
    let locked = std::sync::Arc::new(std::sync::Mutex::new(Some(locked)));
    let x_may_commit = std::sync::Arc::new(std::sync::Mutex::new(x_may_commit));
    let x = {
        let store = store.clone();
        actix_web::rt::spawn(async move {
            store
                .read(move |conn| {
                    conn.batch_execute(if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" })?;
                    diesel::update(tasks::table.find(1))
                        .set((
                            tasks::attempt.eq(1),
                            tasks::step.eq(Step::Await.as_str()),
                            tasks::due_at.eq(now + 300_000),
                            tasks::lease_owner.eq(None::<String>),
                            tasks::lease_until.eq(None::<i64>),
                        ))
                        .execute(conn)?;
                    if let Some(locked) = locked.lock().unwrap().take() {
                        let _ = locked.send(());
                    }
                    let _ = x_may_commit.lock().unwrap().recv();
                    conn.batch_execute("COMMIT").map_err(DbError::from)
                })
                .await
        })
    };
    x_holds.await.unwrap();
    let claim = {
        let store = store.clone();
        actix_web::rt::spawn(async move {
            store
                .write(move |conn| {
                    claim_due_steps(conn, "replica-a-1", now, now + 60_000, 10)
                        .map_err(DbError::from)
                })
                .await
        })
    };
    if !sqlite {
        // SQLite's claim cannot even start before X commits (BEGIN IMMEDIATE). PostgreSQL's
        // reads the task as it was before X (due, free), then either waits for X's row or
        // passes it by: X commits only once it has done one or the other.
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        eventually("the claim to meet X's row", || async {
            let waits: i64 = store
                .read(move |conn| {
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
                        "({waiting})"
                    )))
                    .get_result(conn)
                    .map_err(DbError::from)
                })
                .await
                .unwrap();
            (waits > 0 || claim.is_finished()).then_some(())
        })
        .await;
    }
    commit.send(()).unwrap();
    x.await.unwrap().unwrap();
    let claimed = claim.await.unwrap().unwrap();
    assert!(
        claimed.is_empty(),
        "claimed a step that is no longer due: {claimed:?}"
    );
    let (attempt, owner): (i32, Option<String>) = store
        .read(|conn| {
            tasks::table
                .find(1)
                .select((tasks::attempt, tasks::lease_owner))
                .first(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(
        (attempt, owner),
        (1, None),
        "the token of X's run (attempt 1) stays valid"
    );
}
