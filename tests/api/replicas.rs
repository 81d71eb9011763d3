//! Scale-out (DESIGN §1, §10): several replicas of the service on one database share the work
//! through leases. No step is done twice, a callback may reach any replica, and the work of a
//! replica that dies is taken over when its leases expire, without sending anything twice.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use futures_util::future::join_all;
use odm_devops::db::schema::{activities, tasks};
use odm_devops::db::{self, Db, DbError};
use odm_devops::domain::Step;
use serde_json::json;

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

/// Replicas started at once on fresh databases. Whether two of them meet while creating the
/// schema or the generated secret is a matter of timing: several databases make it likely.
const FRESH_DATABASES: usize = 5;

on_both_backends!(replicas_started_together_on_a_fresh_database_agree);
async fn replicas_started_together_on_a_fresh_database_agree(db: TestDb) {
    let backend = db.backend;
    let mut dbs = vec![db];
    dbs.extend((1..FRESH_DATABASES).map(|_| TestDb::new(backend).unwrap()));
    let one_task = descriptor(json!({"dev": [fake_task("build", json!({}))]}));
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
                    let _ = locked.send(());
                    let _ = x_may_commit.recv();
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
                    db::claim_due_steps(conn, "replica-a-1", now, now + 60_000, 10)
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
