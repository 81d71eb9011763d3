//! PostgreSQL's writer threads (DESIGN §10, `src/db/writer/`): an activity's writes always take
//! the same thread, so two batches never wait for each other's locks of one activity, and
//! writes of other activities go on side by side while one thread waits.

use std::time::Duration;

use odm_devops::db::{meta_get_or_insert, Db, DbError, POSTGRES_WRITE_LANES};
use odm_devops::domain::ActivityId;

use crate::helpers::*;

/// Activities 1 and 1 + keyed lanes share a thread; activity 2 has another.
const KEYED: i64 = POSTGRES_WRITE_LANES as i64 - 2;
const _: () = assert!(KEYED >= 2, "the tests need two keyed writer threads");

#[actix_web::test]
async fn a_waiting_write_holds_up_its_activity_s_thread_only() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let store = Db::connect(&db.url, 2).unwrap();
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let held = actix_web::rt::spawn({
        let store = store.clone();
        async move {
            store
                .write_for(ActivityId(1), move |conn| {
                    let _ = started.send(());
                    released.recv().expect("released");
                    meta_get_or_insert(conn, "held", "1").map_err(DbError::from)
                })
                .await
        }
    });
    running.await.unwrap();

    let same_thread = actix_web::rt::spawn({
        let store = store.clone();
        async move {
            store
                .write_for(ActivityId(1 + KEYED), |conn| {
                    meta_get_or_insert(conn, "same", "1").map_err(DbError::from)
                })
                .await
        }
    });
    // Another activity's write, a write of no activity and a claim commit while activity 1's
    // thread is held.
    let other = store.write_for(ActivityId(2), |conn| {
        meta_get_or_insert(conn, "other", "1").map_err(DbError::from)
    });
    let general =
        store.write(|conn| meta_get_or_insert(conn, "general", "1").map_err(DbError::from));
    let claim =
        store.write_claim(|conn| meta_get_or_insert(conn, "claim", "1").map_err(DbError::from));
    let within = Duration::from_secs(10);
    assert_eq!(
        actix_web::rt::time::timeout(within, other)
            .await
            .unwrap()
            .unwrap(),
        "1"
    );
    assert_eq!(
        actix_web::rt::time::timeout(within, general)
            .await
            .unwrap()
            .unwrap(),
        "1"
    );
    assert_eq!(
        actix_web::rt::time::timeout(within, claim)
            .await
            .unwrap()
            .unwrap(),
        "1"
    );
    assert!(
        !same_thread.is_finished(),
        "a write of the held thread's activities waited"
    );

    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), "1");
    assert_eq!(same_thread.await.unwrap().unwrap(), "1");
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
