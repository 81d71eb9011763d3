//! PostgreSQL's writer threads (DESIGN §10, `src/db/writer/queue.rs`): the first takes every
//! write; when it is held up (here: a write that waits until released, as one waiting for
//! another replica's lock), the next one takes the writes of other activities, and the held
//! activity's later writes wait for it.

use std::time::Duration;

use odm_devops::db::{meta_get_or_insert, Db, DbError};
use odm_devops::domain::{ActivityId, TaskId};

use crate::helpers::*;

type Stored = actix_web::rt::task::JoinHandle<Result<String, DbError>>;

/// A write of `activity` (storing `name`) that holds its writer thread once running, until
/// the sender is sent to.
async fn held_write(
    store: &Db,
    activity: i64,
    name: &'static str,
) -> (Stored, std::sync::mpsc::Sender<()>) {
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let store = store.clone();
    let held = actix_web::rt::spawn(async move {
        store
            .write_for(ActivityId(activity), move |conn| {
                let _ = started.send(());
                released.recv().expect("released");
                meta_get_or_insert(conn, name, "1").map_err(DbError::from)
            })
            .await
    });
    running.await.unwrap();
    (held, release)
}

/// A write of `activity` storing `name`, spawned.
fn spawned_write(store: &Db, activity: i64, name: &'static str) -> Stored {
    let store = store.clone();
    actix_web::rt::spawn(async move {
        store
            .write_for(ActivityId(activity), move |conn| {
                meta_get_or_insert(conn, name, "1").map_err(DbError::from)
            })
            .await
    })
}

#[actix_web::test]
async fn a_waiting_write_holds_up_its_own_activity_s_writes_only() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let store = Db::connect(&db.url, 2).unwrap();
    let (held, release) = held_write(&store, 1, "held").await;
    let same_activity = spawned_write(&store, 1, "same");
    // Another activity's write and writes of no activity (a creation, a claim) commit while
    // activity 1's write is held, on another thread.
    let other = store.write_for(ActivityId(2), |conn| {
        meta_get_or_insert(conn, "other", "1").map_err(DbError::from)
    });
    let general =
        store.write(|conn| meta_get_or_insert(conn, "general", "1").map_err(DbError::from));
    let (other, general) = actix_web::rt::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join(other, general),
    )
    .await
    .expect("committed while activity 1's write is held");
    assert_eq!((other.unwrap(), general.unwrap()), ("1".into(), "1".into()));
    assert!(
        !same_activity.is_finished(),
        "a later write of the held activity waits for it"
    );

    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "1");
    assert_eq!(same_activity.await.unwrap().unwrap(), "1");
}

/// A write that waited for its activity's batch on the second thread is taken once that batch
/// ends, though it is the first thread's turn, and the first thread, idle, had looked at it
/// before and left it (it was not its to take then).
#[actix_web::test]
async fn a_write_left_for_another_thread_s_batch_is_taken_when_that_batch_ends() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let store = Db::connect(&db.url, 2).unwrap();
    // Activity 1's write holds the first thread, then activity 2's the second.
    let (first, release_first) = held_write(&store, 1, "first").await;
    let (second, release_second) = held_write(&store, 2, "second").await;
    let waiting = spawned_write(&store, 2, "after second");
    eventually("the write to queue", || async {
        (store.write_counts().queued == 1).then_some(())
    })
    .await;
    release_first.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "1");
    // The first thread is idle again and has looked at the queue: activity 2's write was the
    // second thread's batch's.
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    release_second.send(()).unwrap();
    assert_eq!(second.await.unwrap().unwrap(), "1");
    let after = actix_web::rt::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("taken once the second thread's batch ended");
    assert_eq!(after.unwrap().unwrap(), "1");
}

/// A write of a task (an abort of one task) is a write of its activity: it waits for that
/// activity's write under way instead of running beside it on another thread.
#[actix_web::test]
async fn a_write_of_a_task_waits_for_its_activity_s_write_under_way() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let store = Db::connect(&db.url, 2).unwrap();
    store.remember_activities([(TaskId(10), ActivityId(1))]);
    let (held, release) = held_write(&store, 1, "held").await;
    let of_task = actix_web::rt::spawn({
        let store = store.clone();
        async move {
            store
                .write_for_task(TaskId(10), |conn| {
                    meta_get_or_insert(conn, "of task", "1").map_err(DbError::from)
                })
                .await
        }
    });
    // Long past the time another thread would have taken a write of no activity.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert!(!of_task.is_finished(), "it waits for activity 1's write");
    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "1");
    assert_eq!(of_task.await.unwrap().unwrap(), "1");
}

/// Two batches that each hold what the other wants (here: another connection, as another
/// replica's batch would be): PostgreSQL fails one write, which is told apart from other failures
/// so that its caller may try it again (`DbError::is_lock_conflict`; callbacks do).
#[actix_web::test]
async fn a_write_failed_by_a_deadlock_is_known_as_a_lock_conflict() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};

    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let store = Db::connect(&db.url, 2).unwrap();
    let (other_holds_2, holds_2) = std::sync::mpsc::channel();
    let (write_waits, waits) = std::sync::mpsc::channel::<()>();
    let url = db.url.clone();
    let other = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        conn.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(2)")
            .unwrap();
        other_holds_2.send(()).unwrap();
        waits.recv().unwrap();
        // The write waits for lock 2 by now (it checks for a deadlock first, after
        // deadlock_timeout, and is the one failed).
        std::thread::sleep(Duration::from_millis(300));
        let taken = conn.batch_execute("SELECT pg_advisory_xact_lock(1)");
        conn.batch_execute("ROLLBACK").unwrap();
        taken
    });
    holds_2.recv().unwrap();
    let failed = store
        .write_for(ActivityId(1), move |conn| {
            conn.batch_execute("SELECT pg_advisory_xact_lock(1)")?;
            write_waits.send(()).unwrap();
            conn.batch_execute("SELECT pg_advisory_xact_lock(2)")?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap_err();
    assert!(failed.is_lock_conflict(), "{failed:?}");
    assert!(other.join().unwrap().is_ok(), "the other side went on");
    let refused = DbError::Config("not a conflict".into());
    assert!(!refused.is_lock_conflict());
}
