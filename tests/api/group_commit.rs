//! Group commit (DESIGN §10), on both backends: the writes queued while the writer was busy
//! share one transaction, each in its own savepoint. A refused write rolls back alone, nobody
//! hears back before the shared commit, and the batch shows on `/metrics`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::mpsc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use futures_util::future::join_all;
use odm_devops::db::schema::service_meta;
use odm_devops::db::{Db, DbError, POSTGRES_WRITE_THREADS};
use odm_devops::domain::ActivityId;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::metrics::scrape;
use crate::on_both_backends;

/// Keeps the service's writer waiting from another connection: SQLite's write lock
/// (`BEGIN IMMEDIATE`), or on PostgreSQL a lock on `activities` that lets reads through but
/// no write of an activity. Released when the sender is dropped or sent to.
fn block_activity_writes(db: &TestDb) -> mpsc::Sender<()> {
    let (release, released) = mpsc::channel::<()>();
    let (locked, is_locked) = mpsc::channel();
    let (backend, url) = (db.backend, db.url.clone());
    std::thread::spawn(move || {
        let sql = match backend {
            Backend::Sqlite => {
                let path = url.strip_prefix("sqlite://").unwrap().to_owned();
                let mut conn = SqliteConnection::establish(&path).unwrap();
                conn.batch_execute("PRAGMA busy_timeout = 10000; BEGIN IMMEDIATE")
                    .unwrap();
                locked.send(()).unwrap();
                let _ = released.recv();
                conn.batch_execute("ROLLBACK").unwrap();
                return;
            }
            Backend::Postgres => "BEGIN; LOCK TABLE activities IN EXCLUSIVE MODE",
        };
        let mut conn = PgConnection::establish(&url).unwrap();
        conn.batch_execute(sql).unwrap();
        locked.send(()).unwrap();
        let _ = released.recv();
        conn.batch_execute("ROLLBACK").unwrap();
    });
    is_locked.recv().expect("the lock is taken");
    release
}

/// Commits and writes of the service's writer so far.
async fn commits_and_writes(app: &TestApp) -> (f64, f64) {
    let scrape = scrape(app).await;
    (
        scrape.value("odm_devops_database_commits_total"),
        scrape.value("odm_devops_database_writes_total"),
    )
}

const PRODUCTS: usize = 20;

on_both_backends!(writes_queued_together_share_one_commit_and_a_refused_one_rolls_back_alone);
async fn writes_queued_together_share_one_commit_and_a_refused_one_rolls_back_alone(db: TestDb) {
    let (app, _executor) = stepped_app_with_fake(&db).await;
    let product = |n: usize| format!("gc{n}");
    for n in 0..PRODUCTS {
        app.put_descriptor(&product(n), "1.0.0", &descriptor(fake_stage(&["build"])))
            .await;
    }
    // The even products have an activity PROCESSING: another one of them is created, then
    // refused when it is started, in the same write (409).
    for n in (0..PRODUCTS).step_by(2) {
        app.start_activity(&product(n), "1.0.0", "dev").await;
    }
    // On PostgreSQL every writer thread is first held up by a write of its own (the next
    // thread joins only once the earlier ones are held up: `src/db/writer/queue.rs`), so
    // that the whole burst queues; on SQLite the one thread is held up by the burst's first.
    let fillers = match db.backend {
        Backend::Sqlite => 0,
        Backend::Postgres => POSTGRES_WRITE_THREADS,
    };
    for n in 0..fillers {
        app.put_descriptor(&filler(n), "1.0.0", &descriptor(fake_stage(&["build"])))
            .await;
    }
    let (commits, writes) = commits_and_writes(&app).await;

    let release = block_activity_writes(&db);
    let app = &app;
    let url = &db.url;
    let held_threads = join_all((0..fillers).map(|n| async move {
        eventually(
            "the previous writer thread to wait for the lock",
            || async { (writers_waiting_for_a_lock(url) == n as i64).then_some(()) },
        )
        .await;
        app.create_activity(&filler(n), "1.0.0", "dev", true).await
    }));
    let burst =
        async {
            if fillers > 0 {
                eventually("every writer thread to wait for the lock", || async {
                    (writers_waiting_for_a_lock(url) == fillers as i64).then_some(())
                })
                .await;
            }
            join_all((0..PRODUCTS).map(|n| async move {
                app.create_activity(&product(n), "1.0.0", "dev", true).await
            }))
            .await
        };
    // Under a loaded machine a request may reach the service only after the wait: it then
    // commits on its own, which the count below allows for.
    let expected_queued = if fillers > 0 { PRODUCTS } else { PRODUCTS - 1 };
    let queued = async {
        let started = std::time::Instant::now();
        loop {
            let queued = scrape(app).await.value("odm_devops_database_write_queue");
            if queued == expected_queued as f64
                || started.elapsed() > std::time::Duration::from_secs(10)
            {
                release.send(()).unwrap();
                return queued as u64;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (held, answers, queued) = futures_util::future::join3(held_threads, burst, queued).await;
    assert!(queued >= 10, "{queued} writes queued behind the first one");
    for answer in held {
        assert_eq!(answer.status, 201, "{answer:?}");
    }

    for (n, answer) in answers.iter().enumerate() {
        if n % 2 == 0 {
            let message = answer.assert_error(409, "40901");
            assert!(message.contains("only one activity"), "{message}");
        } else {
            assert_eq!(answer.status, 201, "{answer:?}");
            assert_eq!(answer.json()["status"], "PROCESSING", "{answer:?}");
        }
    }
    // The refused ones were inserted before their start was refused: nothing of them stays.
    for n in 0..PRODUCTS {
        let listed = app
            .get_json(&format!("{DEVOPS}/activities?dataProductId={}", product(n)))
            .await;
        let statuses: Vec<_> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(statuses, ["PROCESSING"], "{}: {listed}", product(n));
    }
    // The writes that held the threads up, each alone, then those queued behind them in one
    // transaction (and any late one on its own).
    let (commits_after, writes_after) = commits_and_writes(app).await;
    let late = expected_queued as u64 - queued;
    let holding = fillers.max(1);
    assert_eq!(
        writes_after - writes,
        (PRODUCTS + fillers) as f64,
        "writes of the burst and of the threads held up"
    );
    assert!(
        commits_after - commits <= (holding as u64 + 1 + late) as f64,
        "{} commits for {} writes, {queued} of them queued together",
        commits_after - commits,
        PRODUCTS + fillers
    );
}

/// A product that only holds up a writer thread.
fn filler(n: usize) -> String {
    format!("gc-filler{n}")
}

/// PostgreSQL: the service's writer threads waiting for a lock (here `block_activity_writes`').
fn writers_waiting_for_a_lock(url: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        waiting: i64,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(
        "SELECT count(*) AS waiting FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .get_result::<Waiting>(&mut conn)
    .unwrap()
    .waiting
}

on_both_backends!(a_statement_refused_by_the_database_rolls_back_only_its_own_write);
/// A write whose statement the database refuses (a duplicate key) inside a batch: on
/// PostgreSQL the failed statement aborts the transaction unless its savepoint is rolled back,
/// so this checks the others still commit and the writer goes on. The writes are of one
/// activity, so that they queue behind the held one on every backend (on PostgreSQL another
/// writer thread would take writes of other activities).
async fn a_statement_refused_by_the_database_rolls_back_only_its_own_write(db: TestDb) {
    let url = db.url.clone();
    let store = actix_web::web::block(move || Db::connect(&url, 2))
        .await
        .unwrap()
        .unwrap();
    let (release, held) = {
        let (started, running) = tokio::sync::oneshot::channel();
        let (release, released) = mpsc::channel::<()>();
        let store = store.clone();
        let held = actix_web::rt::spawn(async move {
            store
                .write_for(ActivityId(1), move |_| {
                    let _ = started.send(());
                    released.recv().expect("released");
                    Ok::<_, DbError>(())
                })
                .await
        });
        running.await.unwrap();
        (release, held)
    };
    let insert = |conn: &mut odm_devops::db::DbConnection, name: String| {
        diesel::insert_into(service_meta::table)
            .values((service_meta::name.eq(name), service_meta::value.eq("v")))
            .execute(conn)
            .map_err(DbError::from)
    };
    let writes: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            actix_web::rt::spawn(async move {
                store
                    .write_for(ActivityId(1), move |conn| {
                        insert(conn, format!("k{i}"))?;
                        if i % 4 == 1 {
                            // Written, then a statement the database refuses.
                            insert(conn, "taken".into())?;
                            insert(conn, "taken".into())?;
                        }
                        Ok(i)
                    })
                    .await
            })
        })
        .collect();
    eventually("the writes to queue", || async {
        (store.write_counts().queued == 12).then_some(())
    })
    .await;
    let before = store.write_counts();
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for (i, write) in writes.into_iter().enumerate() {
        let outcome = write.await.unwrap();
        if i % 4 == 1 {
            assert!(
                outcome.as_ref().is_err_and(DbError::is_unique_violation),
                "{i}: {outcome:?}"
            );
        } else {
            assert_eq!(outcome.unwrap(), i);
        }
    }
    let after = store.write_counts();
    assert_eq!(
        (after.commits - before.commits, after.writes - before.writes),
        (2, 13),
        "the held write's commit, then one for the twelve"
    );
    let mut stored: Vec<String> = store
        .read(|conn| {
            service_meta::table
                .select(service_meta::name)
                .filter(service_meta::name.like("k%"))
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    stored.sort_by_key(|k| k[1..].parse::<usize>().unwrap());
    let expected: Vec<String> = (0..12)
        .filter(|i| i % 4 != 1)
        .map(|i| format!("k{i}"))
        .collect();
    assert_eq!(stored, expected);
}

on_both_backends!(what_was_answered_survives_a_kill_in_the_middle_of_batches);
/// The real binary killed (SIGKILL) while creations are under way: every creation it
/// answered 201 is in the database, so none was answered before its batch committed.
async fn what_was_answered_survives_a_kill_in_the_middle_of_batches(db: TestDb) {
    let executor = crate::fakes::FakeExecutor::start().await;
    let app = spawn_app_process(&[
        ("DATABASE__URL", db.url.clone()),
        ("EXECUTORS__FAKE__KIND", "odm-http".into()),
        ("EXECUTORS__FAKE__ADDRESS", executor.address.clone()),
    ])
    .await;
    let base = app.address.clone();
    let answered = Rc::new(RefCell::new(Vec::<i64>::new()));
    // Sixteen clients storing a descriptor and creating its activity without pause (one PLANNED
    // activity per product version: a version each), until the service is gone.
    let clients: Vec<_> = (0..16)
        .map(|client_no| {
            let (client, base) = (app.client.clone(), base.clone());
            let answered = answered.clone();
            actix_web::rt::spawn(async move {
                for n in 0.. {
                    let version = format!("{client_no}.{n}.0");
                    let registry =
                        format!("{base}/api/v1/pp/registry/products/p0/versions/{version}");
                    let stored = descriptor(fake_stage(&["build"]));
                    let Ok(response) = client.put(registry).send_json(&stored).await else {
                        return;
                    };
                    assert!(response.status().is_success(), "{:?}", response.status());
                    let body = json!({"dataProductId": "p0", "dataProductVersion": version, "stage": "dev"});
                    let url = format!("{base}{DEVOPS}/activities");
                    let Ok(mut response) = client.post(url).send_json(&body).await else {
                        return;
                    };
                    assert_eq!(response.status().as_u16(), 201);
                    let Ok(created) = response.json::<serde_json::Value>().await else {
                        return;
                    };
                    answered.borrow_mut().push(created["id"].as_i64().unwrap());
                }
            })
        })
        .collect();
    eventually("a hundred creations answered", || async {
        (answered.borrow().len() >= 100).then_some(())
    })
    .await;
    app.kill().await;
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.take();

    let after = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let listed = after
        .get_json(&format!("{DEVOPS}/activities?dataProductId=p0"))
        .await;
    let stored: HashSet<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    let lost: Vec<_> = answered.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "answered 201 but not stored: {lost:?}");
    after.stop().await;
}

on_both_backends!(callbacks_queued_together_announce_their_tasks_as_their_callbacks_left_them);
/// Callbacks of several activities queued together: on PostgreSQL their batch reads their
/// snapshots ahead, and could keep their plans to apply them in one statement once they have
/// all run (`src/db/queries/behind.rs`). A listener wants their TASK_COMPLETED events, whose
/// outbox rows are built from the rows read back in the callback's write: so each applies its
/// own plan at once, and each event shows its task as its callback left it.
async fn callbacks_queued_together_announce_their_tasks_as_their_callbacks_left_them(db: TestDb) {
    use crate::notifications::{odm_listener, settings_with, simulator, start_two_tasks};
    const CALLBACKS: usize = 6;
    let sim = simulator().await;
    let executor = crate::fakes::FakeExecutor::start().await;
    let mut completed = odm_listener(&sim, "completed");
    completed.events = vec!["DATA_PRODUCT_TASK_COMPLETED".into()];
    let app = spawn_stepped_app(settings_with(&db, &executor, vec![completed])).await;
    for n in 0..CALLBACKS {
        start_two_tasks(&app, &format!("gcb{n}")).await;
    }
    app.dispatched(&executor, CALLBACKS).await;
    let firsts = executor.received();
    // On PostgreSQL, as in the test above: every writer thread held up first, so that the
    // callbacks queue. (SQLite keeps no plan; there the callbacks are only sent at once: a
    // callback may need a new pool connection, whose pragmas would wait for the lock.)
    let postgres = db.backend == Backend::Postgres;
    let fillers = if postgres { POSTGRES_WRITE_THREADS } else { 0 };
    for n in 0..fillers {
        app.put_descriptor(&filler(n), "1.0.0", &descriptor(fake_stage(&["build"])))
            .await;
    }
    let release = postgres.then(|| block_activity_writes(&db));
    let (app_ref, url) = (&app, &db.url);
    let held_threads = join_all((0..fillers).map(|n| async move {
        eventually(
            "the previous writer thread to wait for the lock",
            || async { (writers_waiting_for_a_lock(url) == n as i64).then_some(()) },
        )
        .await;
        app_ref
            .create_activity(&filler(n), "1.0.0", "dev", true)
            .await
    }));
    let callbacks = async {
        if fillers > 0 {
            eventually("every writer thread to wait for the lock", || async {
                (writers_waiting_for_a_lock(url) == fillers as i64).then_some(())
            })
            .await;
        }
        join_all(firsts.iter().map(|task| {
            let results = json!({"status": "PROCESSED", "results": {"task": task.id}});
            app_ref.call_back(&task.callback_ref, Some(results))
        }))
        .await
    };
    let queued = async {
        let release = release?;
        let started = std::time::Instant::now();
        loop {
            let queued = scrape(app_ref)
                .await
                .value("odm_devops_database_write_queue");
            if queued == CALLBACKS as f64 || started.elapsed() > std::time::Duration::from_secs(10)
            {
                release.send(()).unwrap();
                return Some(queued as u64);
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let (_, answers, queued) = futures_util::future::join3(held_threads, callbacks, queued).await;
    if let Some(queued) = queued {
        assert!(queued >= 2, "{queued} callbacks queued together");
    }
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    // The stepped engine delivers the outbox (and dispatches the second tasks).
    app.drive_until_idle().await;
    let events = eventually("every task's completion to reach the listener", || async {
        let events = crate::notifications::events_of(&sim, "completed");
        (events.len() >= CALLBACKS).then_some(events)
    })
    .await;
    let mut announced: Vec<(i64, String, Value)> = events
        .iter()
        .map(|e| {
            let task = &e["afterState"]["task"];
            let results = task["results"].as_str().map(serde_json::from_str);
            (
                task["id"].as_i64().unwrap(),
                task["status"].as_str().unwrap().to_owned(),
                results.unwrap_or(Ok(Value::Null)).unwrap(),
            )
        })
        .collect();
    announced.sort_by_key(|(id, _, _)| *id);
    let mut expected: Vec<(i64, String, Value)> = firsts
        .iter()
        .map(|t| (t.id, "PROCESSED".to_owned(), json!({"task": t.id})))
        .collect();
    expected.sort_by_key(|(id, _, _)| *id);
    assert_eq!(announced, expected, "{events:?}");
    app.stop().await;
}
