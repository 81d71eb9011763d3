use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::db::schema::service_meta;
use crate::db::{meta_get_or_insert, Db, DbError, DbLimits, Overload};

pub(in crate::db) fn temp_db() -> (Db, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("odm-writer-{}", uuid::Uuid::new_v4().simple()));
    let db = Db::connect(&format!("sqlite://{}", dir.join("w.db").display()), 2).unwrap();
    (db, dir)
}

#[actix_web::test]
async fn writes_queued_together_commit_together_and_a_failure_rolls_back_alone() {
    let (db, dir) = temp_db();
    let writes = (0..40).map(|i| {
        let db = db.clone();
        async move {
            db.write(move |conn| {
                meta_get_or_insert(conn, &format!("k{i}"), "v")?;
                if i % 10 == 3 {
                    // Written, then refused: its savepoint must undo the row.
                    return Err(DbError::Config(format!("refused {i}")));
                }
                Ok(i)
            })
            .await
        }
    });
    let outcomes = futures_util::future::join_all(writes).await;
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 4);
    let stored: Vec<String> = db
        .read(|conn| Ok::<_, DbError>(service_meta::table.select(service_meta::name).load(conn)?))
        .await
        .unwrap();
    assert_eq!(stored.len(), 36);
    assert!(!stored.iter().any(|k| k.ends_with('3')), "{stored:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn a_panicking_write_fails_its_group_and_the_writer_recovers() {
    let (db, dir) = temp_db();
    let panicked = db
        .write(|_conn| -> Result<(), DbError> { panic!("bug in a write") })
        .await;
    assert!(matches!(panicked, Err(DbError::Commit(_))), "{panicked:?}");
    let after = db
        .write(|conn| meta_get_or_insert(conn, "k", "v").map_err(DbError::from))
        .await;
    assert_eq!(after.unwrap(), "v", "the writer still works");
    let _ = std::fs::remove_dir_all(dir);
}

/// Another process holding the SQLite file's write lock (a `sqlite3` shell in a transaction)
/// for longer than the writer waits for it: the batch's writes are refused as overloaded (503
/// with `Retry-After` at the API, the engine tries at its next tick), not failed as an internal
/// error, nothing of them is stored, and once the lock is let go the writer takes writes again.
/// SQLite only: PostgreSQL has no lock on a whole database.
#[actix_web::test]
async fn a_write_lock_held_by_another_process_refuses_the_writes_as_overloaded() {
    let dir = std::env::temp_dir().join(format!("odm-writer-{}", uuid::Uuid::new_v4().simple()));
    let path = dir.join("w.db");
    let limits = DbLimits {
        sqlite_lock_wait: std::time::Duration::from_millis(200),
        ..DbLimits::with_pool_size(2)
    };
    let db = Db::connect_with(&format!("sqlite://{}", path.display()), limits).unwrap();
    let mut other_process = SqliteConnection::establish(&path.display().to_string()).unwrap();
    other_process.batch_execute("BEGIN IMMEDIATE").unwrap();

    let during = db
        .write(|conn| meta_get_or_insert(conn, "during", "v").map_err(DbError::from))
        .await;
    match during {
        Err(DbError::Overloaded(overload @ Overload::SqliteLocked { .. })) => {
            let message = overload.to_string();
            assert!(message.contains("200 ms"), "{message}");
            assert!(message.contains("retry later"), "{message}");
            assert_eq!(overload.retry_after(), std::time::Duration::from_secs(1));
        }
        other => panic!("expected an overload naming the lock wait, got {other:?}"),
    }

    other_process.batch_execute("ROLLBACK").unwrap();
    let after = db
        .write(|conn| meta_get_or_insert(conn, "after", "v").map_err(DbError::from))
        .await;
    assert_eq!(
        after.unwrap(),
        "v",
        "the writer takes writes once the lock is let go"
    );
    assert_eq!(stored_of(&db, &["during", "after"]).await, ["after"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A batch whose transaction failed tells each of its writes why, cause included: the write's
/// own log line (`request failed`) then names the database's message, not only that the
/// commit failed.
#[test]
fn each_write_of_a_failed_batch_is_told_the_whole_cause() {
    let failed = DbError::Query(diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::Unknown,
        Box::new("disk I/O error".to_owned()),
    ));
    let told = super::answer_to_each_write(&failed);
    assert!(
        matches!(&told, DbError::Commit(why) if why.contains("disk I/O error")),
        "{told:?}"
    );
    let locked = DbError::Overloaded(Overload::SqliteLocked {
        waited: std::time::Duration::from_secs(10),
    });
    assert!(super::answer_to_each_write(&locked).is_transient());
}

/// The writer thread busy with a write (storing "blocker") until `release` is sent.
async fn busy_writer(
    db: &Db,
) -> (
    actix_web::rt::task::JoinHandle<Result<String, DbError>>,
    std::sync::mpsc::Sender<()>,
) {
    let (started, writer_busy) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let blocker = actix_web::rt::spawn({
        let db = db.clone();
        async move {
            db.write(move |conn| {
                let _ = started.send(());
                released.recv().expect("released");
                meta_get_or_insert(conn, "blocker", "v").map_err(DbError::from)
            })
            .await
        }
    });
    writer_busy.await.unwrap();
    (blocker, release)
}

/// Which of `names` are stored in `service_meta`, sorted.
async fn stored_of(db: &Db, names: &[&'static str]) -> Vec<&'static str> {
    let stored: Vec<String> = db
        .read(|conn| Ok::<_, DbError>(service_meta::table.select(service_meta::name).load(conn)?))
        .await
        .unwrap();
    let mut ours: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| stored.iter().any(|s| s == name))
        .collect();
    ours.sort_unstable();
    ours
}

/// Polls a future once: enough for a write to be queued (or refused).
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) {
    std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut *future).poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
}

#[actix_web::test]
async fn a_full_queue_refuses_a_write_before_it_runs_and_loses_none_queued() {
    let dir = std::env::temp_dir().join(format!("odm-writer-{}", uuid::Uuid::new_v4().simple()));
    let limits = DbLimits {
        write_queue: 2,
        ..DbLimits::with_pool_size(2)
    };
    let db = Db::connect_with(&format!("sqlite://{}", dir.join("w.db").display()), limits).unwrap();

    let (blocker, release) = busy_writer(&db).await;

    // Two writes fill the queue.
    let mut queued: Vec<_> = (0..2)
        .map(|i| {
            Box::pin(db.write(move |conn| {
                meta_get_or_insert(conn, &format!("queued{i}"), "v").map_err(DbError::from)
            }))
        })
        .collect();
    for write in &mut queued {
        poll_once(write).await;
    }

    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = db
        .write({
            let ran = ran.clone();
            move |conn| {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                meta_get_or_insert(conn, "refused", "v").map_err(DbError::from)
            }
        })
        .await;
    match &refused {
        Err(DbError::Overloaded(overload @ Overload::WriteQueueFull { limit: 2 })) => {
            assert!(
                overload.to_string().contains("database.write_queue"),
                "{overload}"
            );
            assert_eq!(overload.retry_after(), std::time::Duration::from_secs(1));
        }
        other => panic!("expected a full queue, got {other:?}"),
    }

    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    for write in queued {
        write.await.unwrap();
    }
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "the refused write ran"
    );
    assert_eq!(
        stored_of(&db, &["blocker", "queued0", "queued1", "refused"]).await,
        ["blocker", "queued0", "queued1"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `.cargo/config.toml` builds SQLite with the query-planner stability guarantee; without
/// it every engine write re-prepares its statement (a third of the throughput).
#[actix_web::test]
async fn sqlite_is_built_with_stable_query_plans() {
    #[derive(diesel::QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = diesel::sql_types::Text)]
        compile_options: String,
    }
    let (db, dir) = temp_db();
    let options: Vec<String> = db
        .read(|conn| {
            let rows: Vec<CompileOption> =
                diesel::sql_query("PRAGMA compile_options").load(conn)?;
            Ok::<_, DbError>(rows.into_iter().map(|r| r.compile_options).collect())
        })
        .await
        .unwrap();
    assert!(options.iter().any(|o| o == "ENABLE_QPSG"), "{options:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A write that inserts `name` (a second insert of it would break the primary key: it shows
/// that a run was rolled back before the next), counting its runs, and fails when `fails`.
fn insert_named(
    name: &'static str,
    fails: bool,
    runs: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl FnOnce(&mut crate::db::DbConnection) -> Result<(), DbError> + Clone + Send + 'static {
    let runs = runs.clone();
    move |conn| {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        diesel::insert_into(service_meta::table)
            .values((service_meta::name.eq(name), service_meta::value.eq("v")))
            .execute(conn)?;
        match fails {
            true => Err(DbError::Config(format!("{name} refused after writing"))),
            false => Ok(()),
        }
    }
}

/// Rerunnable writes share a savepoint: when one fails, the batch rolls back to it and runs the
/// others again. What stays is exactly what would have stayed with a savepoint per write, and
/// a write that runs once (`Db::write`) is never run twice.
#[actix_web::test]
async fn a_failed_rerunnable_write_undoes_only_itself_and_its_batch_mates_run_again() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    let (db, dir) = temp_db();
    let activity = crate::domain::ActivityId(1);
    // The writes below queue up behind the blocker and run as one batch.
    let (blocker, release) = busy_writer(&db).await;

    let runs: Vec<Arc<AtomicUsize>> = (0..5).map(|_| Arc::default()).collect();
    let mut writes = vec![
        Box::pin(db.write_for_rerunnable(activity, insert_named("r0", false, &runs[0])))
            as std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DbError>>>>,
        Box::pin(db.write_for_rerunnable(activity, insert_named("r1", true, &runs[1]))),
        Box::pin(db.write_for_rerunnable(activity, insert_named("r2", false, &runs[2]))),
        Box::pin(db.write(insert_named("n3", false, &runs[3]))),
        Box::pin(db.write_for_rerunnable(activity, insert_named("r4", true, &runs[4]))),
    ];
    for write in &mut writes {
        poll_once(write).await;
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let mut outcomes = Vec::new();
    for write in writes {
        outcomes.push(write.await.is_ok());
    }

    assert_eq!(outcomes, [true, false, true, true, false]);
    assert_eq!(
        stored_of(&db, &["r0", "r1", "r2", "n3", "r4"]).await,
        ["n3", "r0", "r2"]
    );
    // r0 ran again after r1 failed (they shared a savepoint); n3 had its own, so r4's failure
    // undid nothing else.
    let counted: Vec<usize> = runs.iter().map(|r| r.load(SeqCst)).collect();
    assert_eq!(counted, [2, 1, 1, 1, 1]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A fresh PostgreSQL database for a writer test, and its admin URL to drop it; `None` (said on
/// stderr) when `ODM_TEST_POSTGRES_URL` is unset.
fn postgres_db() -> Option<(Db, String, String)> {
    postgres_db_at().map(|(db, admin, name, _)| (db, admin, name))
}

/// `postgres_db`, and the database's own URL.
pub(in crate::db) fn postgres_db_at() -> Option<(Db, String, String, String)> {
    let Ok(admin) = std::env::var("ODM_TEST_POSTGRES_URL") else {
        eprintln!("skipped on PostgreSQL: ODM_TEST_POSTGRES_URL is not set");
        return None;
    };
    let name = format!("odm_unit_{}", uuid::Uuid::new_v4().simple());
    let mut conn = diesel::PgConnection::establish(&admin).expect("PostgreSQL is reachable");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .unwrap();
    let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let url = match query {
        "" => format!("{base}/{name}"),
        query => format!("{base}/{name}?{query}"),
    };
    Some((Db::connect(&url, 2).unwrap(), admin, name, url))
}

/// What the hand-offs' reads of a batch gave: (task, its activity's id, the activity ids of
/// its Context rows).
type Delivered = std::sync::Arc<std::sync::Mutex<Vec<(i64, i64, Vec<i64>)>>>;

/// A write that hands task `task` to the engine under `claim` (leasing it so first when
/// `lease`) and offers its read; it fails after that when `fails`.
fn handing_write(
    task: i64,
    claim: &'static str,
    lease: bool,
    fails: bool,
    delivered: &Delivered,
) -> Queued<()> {
    let delivered = delivered.clone();
    let work = move |conn: &mut crate::db::DbConnection| -> Result<(), DbError> {
        if lease {
            diesel::sql_query(format!(
                "UPDATE tasks SET lease_owner = '{claim}' WHERE id = {task}"
            ))
            .execute(conn)?;
        }
        let delivered = delivered.clone();
        super::offer_handed_read(
            crate::domain::TaskId(task),
            claim.into(),
            move |step, rows| {
                let mut context: Vec<i64> = rows
                    .map(|rows| rows.activities.iter().map(|a| a.id.get()).collect())
                    .unwrap_or_default();
                context.sort_unstable();
                let read = (step.task.id.get(), step.activity.id.get(), context);
                delivered.lock().unwrap().push(read);
            },
        );
        match fails {
            true => Err(DbError::Config(format!("write of task {task} refused"))),
            false => Ok(()),
        }
    };
    queued(super::Rerun(work))
}

/// One batch of six hand-offs (tasks 1-5, each of an activity of its own, and task 6 of task
/// 5's activity, all claimed by "claim" for a dispatch): task 2's write leases it anew first,
/// task 3's write fails, task 4 was leased by another claim meanwhile; what was delivered,
/// sorted, and how many reads ran.
pub(super) fn batch_of_hand_offs(
    conn: &mut crate::db::DbConnection,
) -> (Vec<(i64, i64, Vec<i64>)>, u32) {
    claimed_for_dispatch(conn, 5);
    diesel::sql_query(
        "INSERT INTO tasks (id, activity_id, position, name, status, created_at, attempt, step, \
         due_at, lease_owner, lease_until) SELECT 6, activity_id, 1, 't', status, 0, 1, step, \
         due_at, lease_owner, lease_until FROM tasks WHERE id = 5",
    )
    .execute(conn)
    .unwrap();
    diesel::sql_query("UPDATE tasks SET lease_owner = 'another claim' WHERE id = 4")
        .execute(conn)
        .unwrap();
    let delivered = Delivered::default();
    let mut batch: Vec<_> = [
        (1, "claim", false, false),
        (2, "claim 2", true, false),
        (3, "claim", false, true),
        (4, "claim", false, false),
        (5, "claim", false, false),
        (6, "claim", false, false),
    ]
    .into_iter()
    .map(|(task, claim, lease, fails)| handing_write(task, claim, lease, fails, &delivered).0)
    .collect();
    let reads_before = super::batch::HANDED_READS.with(|n| n.get());
    super::run_batch(conn, &mut batch, None, || {}).unwrap();
    let reads = super::batch::HANDED_READS.with(|n| n.get()) - reads_before;
    for write in batch {
        write.finish(Ok(()));
    }
    let mut delivered = std::mem::take(&mut *delivered.lock().unwrap());
    delivered.sort();
    (delivered, reads)
}

/// On PostgreSQL a batch reads the dispatches its writes handed to the engine in one statement
/// after the writes (it sees them: task 2 leased anew), in their transaction, and each arrives
/// with its task and its activity's Context (two of one activity each with it); a rolled-back
/// write's (task 3) and one whose lease moved on (task 4) are not delivered. On SQLite (no round trips to save) the offers are dropped: the engine reads.
#[test]
fn a_batchs_hand_offs_are_read_in_one_statement_before_its_commit_on_postgres() {
    let (mut sqlite, _db, dir) = sqlite_connection();
    assert_eq!(
        batch_of_hand_offs(&mut sqlite),
        (vec![], 0),
        "SQLite read its hand-offs"
    );
    let _ = std::fs::remove_dir_all(dir);

    let Some((mut pg, db, admin, name)) = postgres_connection() else {
        return;
    };
    let (delivered, reads) = batch_of_hand_offs(&mut pg);
    assert_eq!(
        delivered,
        [
            (1, 1, vec![1]),
            (2, 2, vec![2]),
            (5, 5, vec![5]),
            (6, 5, vec![5])
        ],
        "each task with its activity's Context rows (two of one activity both)"
    );
    assert_eq!(reads, 1, "one statement read them all");
    drop((pg, db));
    drop_database(&admin, &name);
}

/// A writer whose later threads cannot open their connection fails to start, and the threads
/// it had started stop and close theirs (they used to wait forever on the queue, each holding
/// a connection).
#[test]
fn a_writer_that_cannot_open_every_connection_leaves_no_thread_behind() {
    use crate::db::connection::{Manager, Target};

    let Some((db, admin, name)) = postgres_db() else {
        return;
    };
    drop(db);
    // A role allowed one connection (the limit does not bind superusers).
    let role = format!("{name}_writer");
    let mut conn = diesel::PgConnection::establish(&admin).unwrap();
    diesel::sql_query(format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 1"))
        .execute(&mut conn)
        .unwrap();
    let (base, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let host = server.rsplit_once('@').map_or(server, |(_, host)| host);
    let separator = if query.is_empty() { "" } else { "?" };
    let url = format!("postgres://{role}@{host}/{name}{separator}{query}");
    let manager = Manager::new(Target::Postgres(url));

    let started = super::Writer::start(manager, 16, 4);
    assert!(started.is_err(), "the second connection is refused");
    let connections_of_role = |conn: &mut diesel::PgConnection| -> i64 {
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
            "(SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}')"
        )))
        .get_result(conn)
        .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while connections_of_role(&mut conn) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first writer thread still holds its connection"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query(format!("DROP ROLE {role}"))
        .execute(&mut conn)
        .unwrap();
}

/// A write as its writer queues it, and the answer its caller would wait for.
pub(super) type Queued<T> = (
    Box<dyn super::QueuedWrite>,
    tokio::sync::oneshot::Receiver<Result<T, DbError>>,
);

/// `work` as its writer queues it, and the answer its caller would wait for.
pub(super) fn queued<T: Send + 'static, W: super::Work<T, DbError>>(work: W) -> Queued<T> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let write = super::Write {
        caller: crate::telemetry::CallerSpan::capture(),
        work,
        outcome: None,
        reply: Some(reply),
    };
    (Box::new(write), answer)
}

/// Runs `writes` as one batch on `conn`, as a writer thread would, and answers each write's
/// outcome once the batch is over.
pub(super) fn run_as_one_batch<T>(
    conn: &mut crate::db::DbConnection,
    writes: Vec<Queued<T>>,
) -> Vec<Result<T, DbError>> {
    let (mut batch, answers): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
    super::run_batch(conn, &mut batch, None, || {}).unwrap();
    for write in batch {
        write.finish(Ok(()));
    }
    answers
        .into_iter()
        .map(|a| a.blocking_recv().unwrap())
        .collect()
}

/// A writer thread's connection to a fresh SQLite database (kept with its `Db` and folder).
pub(super) fn sqlite_connection() -> (crate::db::DbConnection, Db, std::path::PathBuf) {
    use diesel::r2d2::ManageConnection;
    let (db, dir) = temp_db();
    let target =
        super::super::connection::Target::SqliteFile(dir.join("w.db").display().to_string());
    let conn = super::Manager::new(target).connect().unwrap();
    (conn, db, dir)
}

/// A writer thread's connection to a fresh PostgreSQL database, with its `Db`, and the admin
/// URL and name to drop it (`drop_database`); `None` as `postgres_db`.
pub(super) fn postgres_connection() -> Option<(crate::db::DbConnection, Db, String, String)> {
    let (db, admin, name, url) = postgres_db_at()?;
    let target = super::super::connection::Target::Postgres(url);
    use diesel::r2d2::ManageConnection;
    let conn = super::Manager::new(target).connect().unwrap();
    Some((conn, db, admin, name))
}

/// Drops the database `postgres_db` made.
pub(in crate::db) fn drop_database(admin: &str, name: &str) {
    let mut conn = diesel::PgConnection::establish(admin).unwrap();
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .unwrap();
}

/// Tasks 1..=n, each of an activity of its own, claimed by "claim" for a dispatch (attempt 1).
pub(super) fn claimed_for_dispatch(conn: &mut crate::db::DbConnection, n: i64) {
    for i in 1..=n {
        diesel::sql_query(format!(
            "INSERT INTO activities (id, data_product_id, data_product_version, stage, status, \
             created_at) VALUES ({i}, 'p{i}', '1.0.0', 'dev', 'PROCESSING', 0)"
        ))
        .execute(conn)
        .unwrap();
        diesel::sql_query(format!(
            "INSERT INTO tasks (id, activity_id, position, name, status, created_at, attempt, \
             step, due_at, lease_owner, lease_until) VALUES ({i}, {i}, 0, 't', 'PROCESSING', 0, \
             1, 'dispatch', 0, 'claim', 9000000000000)"
        ))
        .execute(conn)
        .unwrap();
    }
}

/// The record of task `id`'s run on its claim, as a dispatch makes it (`submitted_on_claim`).
fn record(id: i64) -> crate::domain::UpdateOnClaim {
    use crate::domain::{Step, TaskChanges, TaskId, TaskStatus, TaskUpdate};
    crate::domain::UpdateOnClaim {
        update: TaskUpdate {
            id: TaskId(id),
            expected: TaskStatus::Processing,
            expected_lease: Some("claim".into()),
            changes: TaskChanges {
                configurations: Some(Some("{}".into())),
                run_ref: Some(Some(format!("run-{id}"))),
                run_url: Some(Some(format!("https://runs.example/{id}"))),
                step: Some(Some(Step::Await)),
                due_at: Some(Some(5_000)),
                lease_owner: Some(None),
                lease_until: Some(None),
                step_attempts: Some(0),
                ..TaskChanges::default()
            },
        },
        step: Step::Dispatch,
        attempt: 1,
    }
}

/// A write of the engine's kind that records task `id`'s run (`apply_on_claim`), counted in
/// `runs`, and fails after it when `fails`; its outcome: whether the record applied.
fn recording_write(
    id: i64,
    fails: bool,
    runs: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Queued<bool> {
    let runs = runs.clone();
    let work = move |conn: &mut crate::db::DbConnection| -> Result<bool, DbError> {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let applied = crate::db::apply_on_claim(conn, &record(id), 0)?;
        match fails {
            true => Err(DbError::Config(format!("write of task {id} refused"))),
            false => Ok(applied),
        }
    };
    queued(super::RerunAhead {
        ahead: super::Ahead::Record(Box::new(record(id))),
        work,
    })
}

/// The run each of tasks 1..=n has recorded (`None`: none).
fn recorded_runs(conn: &mut crate::db::DbConnection, n: i64) -> Vec<Option<String>> {
    use crate::db::schema::tasks;
    tasks::table
        .filter(tasks::id.le(n))
        .order(tasks::id)
        .select(tasks::run_ref)
        .load(conn)
        .unwrap()
}

/// What `batch_of_records` saw: each record's write's outcome (whether its record applied),
/// how many times each ran, and the run each task recorded.
pub(super) type BatchOfRecords = (Vec<Result<bool, String>>, Vec<usize>, Vec<Option<String>>);

/// Runs one batch, as a writer thread would: a plain write first, then the records of tasks
/// 1–4, of which task 2's claim has moved on and task 3's write fails after recording. Answers
/// the writes' outcomes, how often each ran, and the runs recorded.
pub(super) fn batch_of_records(conn: &mut crate::db::DbConnection) -> BatchOfRecords {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    claimed_for_dispatch(conn, 4);
    diesel::sql_query("UPDATE tasks SET lease_owner = 'another claim' WHERE id = 2")
        .execute(conn)
        .unwrap();
    let runs: Vec<std::sync::Arc<AtomicUsize>> = (0..4).map(|_| Default::default()).collect();
    let (plain, plain_answer) = queued(super::Once::new(|conn: &mut crate::db::DbConnection| {
        meta_get_or_insert(conn, "plain", "v").map_err(DbError::from)
    }));
    let mut batch = vec![plain];
    let mut answers = Vec::new();
    for (i, runs) in runs.iter().enumerate() {
        let (write, answer) = recording_write(i as i64 + 1, i == 2, runs);
        batch.push(write);
        answers.push(answer);
    }
    super::run_batch(conn, &mut batch, None, || {}).unwrap();
    for write in batch {
        write.finish(Ok(()));
    }
    assert_eq!(plain_answer.blocking_recv().unwrap().unwrap(), "v");
    let outcomes = answers
        .into_iter()
        .map(|a| a.blocking_recv().unwrap().map_err(|e| e.to_string()))
        .collect();
    let counted = runs.iter().map(|r| r.load(SeqCst)).collect();
    (outcomes, counted, recorded_runs(conn, 4))
}

/// On PostgreSQL a batch's dispatch records (engine steps' updates on their claims) go as one
/// statement ahead of its writes, which take their outcomes from it; a record whose claim has
/// moved on is not applied; a write that fails undoes its own record, and the writes that
/// shared its savepoint run again and apply theirs. On SQLite each applies in its write, with
/// the same outcomes and rows.
#[test]
fn a_batchs_dispatch_records_go_ahead_in_one_statement_and_a_failing_write_undoes_its_own() {
    let ahead = || crate::db::queries::AHEAD.with(crate::db::queries::Counts::get);
    // Task 2's claim has moved on: its record is not applied. Task 3's write failed.
    let expected_outcomes = [
        Ok(true),
        Ok(false),
        Err("database configuration: write of task 3 refused".to_owned()),
        Ok(true),
    ];
    let expected_runs = [Some("run-1".to_owned()), None, None, Some("run-4".into())];

    let (mut sqlite, _db, dir) = sqlite_connection();
    let before = ahead();
    let (outcomes, runs, recorded) = batch_of_records(&mut sqlite);
    assert_eq!(outcomes, expected_outcomes);
    assert_eq!(recorded, expected_runs);
    // Task 3's failure rolled back to the savepoint the writes before it shared (they may run
    // again): those ran again.
    assert_eq!(runs, [2, 2, 1, 1]);
    assert_eq!(ahead()[0], before[0], "SQLite applied records ahead");
    let _ = std::fs::remove_dir_all(dir);

    let Some((mut pg, db, admin, name)) = postgres_connection() else {
        return;
    };
    let before = ahead();
    let (outcomes, runs, recorded) = batch_of_records(&mut pg);
    assert_eq!(outcomes, expected_outcomes);
    assert_eq!(recorded, expected_runs);
    // Task 3's failure rolled back the records too (they shared the savepoint): the writes
    // before it ran again, and task 4's ran after it, each applying its own record.
    assert_eq!(runs, [2, 2, 1, 1]);
    let after = ahead();
    assert_eq!(
        after[0] - before[0],
        1,
        "one statement applied the records ahead"
    );
    assert_eq!(
        after[1] - before[1],
        3,
        "the first runs of tasks 1-3 took their outcomes, none after the rollback"
    );

    drop((pg, db));
    drop_database(&admin, &name);
}

/// What a callback's write saw in its snapshot: its activity's results, the tasks' ids, and
/// what its own task recorded.
type SeenInSnapshot = (Option<String>, Vec<i64>, Option<String>);

/// A write of a callback's kind for `task`: it reads its snapshot (`load_snapshot`), counted in
/// `runs`, marks its activity's results with `after <task>`, and fails then when `fails`.
fn callback_write(
    task: i64,
    fails: bool,
    runs: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Queued<SeenInSnapshot> {
    use crate::db::schema::activities;
    let runs = runs.clone();
    let work = move |conn: &mut crate::db::DbConnection| -> Result<SeenInSnapshot, DbError> {
        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let of = crate::db::SnapshotOf::CallbackTask(crate::domain::TaskId(task));
        let snapshot = crate::db::load_snapshot(conn, of)?.expect("the callback's activity");
        diesel::update(activities::table.find(snapshot.activity.id))
            .set(activities::results.eq(format!("after {task}")))
            .execute(conn)?;
        if fails {
            return Err(DbError::Config(format!("callback of task {task} refused")));
        }
        let tasks = snapshot.tasks.iter().map(|t| t.id.get()).collect();
        let recorded = snapshot.recorded.and_then(|r| r.results);
        Ok((snapshot.activity.results, tasks, recorded))
    };
    queued(super::RerunAhead {
        ahead: super::Ahead::Snapshot(crate::domain::TaskId(task)),
        work,
    })
}

/// One batch of callbacks, as a writer thread would run it: tasks 1, 2, 3 and 4 (both of
/// activity 3), then 5, each task having recorded `{"r":<task>}`; the callback of `failing`
/// fails. Answers each callback's outcome and how often it ran.
fn batch_of_callbacks(
    conn: &mut crate::db::DbConnection,
    failing: Option<i64>,
) -> (Vec<Result<SeenInSnapshot, String>>, Vec<usize>) {
    use diesel::connection::SimpleConnection;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    conn.batch_execute("DELETE FROM tasks; DELETE FROM activities")
        .unwrap();
    claimed_for_dispatch(conn, 5);
    conn.batch_execute(
        "UPDATE tasks SET activity_id = 3, position = 1 WHERE id = 4; \
         UPDATE tasks SET results = '{\"r\":' || id || '}', step = 'await'",
    )
    .unwrap();
    let runs: Vec<std::sync::Arc<AtomicUsize>> = (0..5).map(|_| Default::default()).collect();
    let writes = (1..).zip(&runs);
    let writes = writes.map(|(task, runs)| callback_write(task, failing == Some(task), runs));
    let outcomes = run_as_one_batch(conn, writes.collect())
        .into_iter()
        .map(|outcome| outcome.map_err(|e| e.to_string()))
        .collect();
    (outcomes, runs.iter().map(|r| r.load(SeqCst)).collect())
}

/// On PostgreSQL the snapshots a batch's callbacks start by reading are read in one statement
/// ahead of them, each taken by its callback; two callbacks of one activity read theirs at
/// their turn (the second sees what the first wrote); a failing callback undoes what went
/// ahead and the others read again. On SQLite each reads in its write: the same snapshots.
#[test]
fn a_batchs_callbacks_read_their_snapshots_ahead_in_one_statement_each_as_at_its_turn() {
    let read_ahead = || crate::db::queries::READ_AHEAD.with(crate::db::queries::Counts::get);
    let seen =
        |results: Option<&str>, tasks: &[i64], task: i64| -> Result<SeenInSnapshot, String> {
            Ok((
                results.map(str::to_owned),
                tasks.to_vec(),
                Some(format!("{{\"r\":{task}}}")),
            ))
        };
    let all_pass = [
        seen(None, &[1], 1),
        seen(None, &[2], 2),
        seen(None, &[3, 4], 3),
        // Task 3's callback marked the activity they share: task 4's saw it.
        seen(Some("after 3"), &[3, 4], 4),
        seen(None, &[5], 5),
    ];
    let mut second_fails = all_pass.clone();
    second_fails[1] = Err("database configuration: callback of task 2 refused".to_owned());
    // Task 2's failure rolled back to the savepoint the callbacks before it shared: task 1's
    // ran again.
    let runs_when_second_fails = [2, 1, 1, 1, 1];

    let (mut sqlite, _db, dir) = sqlite_connection();
    let before = read_ahead();
    assert_eq!(
        batch_of_callbacks(&mut sqlite, None),
        (all_pass.to_vec(), vec![1; 5])
    );
    assert_eq!(
        batch_of_callbacks(&mut sqlite, Some(2)),
        (second_fails.to_vec(), runs_when_second_fails.to_vec())
    );
    assert_eq!(read_ahead()[0], before[0], "SQLite read snapshots ahead");
    let _ = std::fs::remove_dir_all(dir);

    let Some((mut pg, db, admin, name)) = postgres_connection() else {
        return;
    };
    let before = read_ahead();
    assert_eq!(
        batch_of_callbacks(&mut pg, None),
        (all_pass.to_vec(), vec![1; 5])
    );
    let after = read_ahead();
    assert_eq!(
        after[0] - before[0],
        1,
        "one statement read the snapshots ahead"
    );
    // Tasks 3 and 4 share an activity: each read its own at its turn.
    assert_eq!(
        after[1] - before[1],
        3,
        "snapshots taken from the read ahead"
    );

    let before = after;
    assert_eq!(
        batch_of_callbacks(&mut pg, Some(2)),
        (second_fails.to_vec(), runs_when_second_fails.to_vec())
    );
    let after = read_ahead();
    // Tasks 1 and 2 took theirs; task 5's was forgotten with the rollback (its rows' locks
    // went with it): it read its own.
    assert_eq!(
        after[1] - before[1],
        2,
        "snapshots taken from the read ahead"
    );

    drop((pg, db));
    drop_database(&admin, &name);
}
