//! Hand-offs (`src/lifecycle/handoff.rs`): a write that makes a dispatch due now leases it to
//! its own replica's engine in the same update, instead of leaving it for a claim.

use diesel::prelude::*;
use serde_json::{json, Value};

use odm_devops::db::schema::tasks;
use odm_devops::db::DbError;
use odm_devops::lifecycle::engine::claim_due_steps;

use crate::helpers::*;
use crate::on_both_backends;

fn two_tasks() -> Value {
    json!({"dev": [fake_task("first", json!({})), fake_task("second", json!({}))]})
}

/// `(step, lease_owner, attempt)` of the task at `position` of activity `id`, as stored.
async fn stored_task(db: &TestDb, id: i64, position: i32) -> (Option<String>, Option<String>, i32) {
    db.open()
        .await
        .read(move |conn| {
            tasks::table
                .filter(tasks::activity_id.eq(id))
                .filter(tasks::position.eq(position))
                .select((tasks::step, tasks::lease_owner, tasks::attempt))
                .first::<(Option<String>, Option<String>, i32)>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

/// What another replica's claim would take now.
async fn claimable(db: &TestDb) -> usize {
    db.open()
        .await
        .write(|conn| {
            let now = odm_devops::clock::now_ms();
            claim_due_steps(conn, "another-replica-1", now, now + 60_000, 10).map_err(DbError::from)
        })
        .await
        .unwrap()
        .len()
}

on_both_backends!(a_start_and_a_callback_hand_their_dispatch_to_their_own_engine);
async fn a_start_and_a_callback_hand_their_dispatch_to_their_own_engine(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    app.accept_handoffs();
    let id = app.start_dev(two_tasks()).await;
    // Leased by the start itself, with the new attempt a claim would start: nobody else's.
    let (step, owner, attempt) = stored_task(&db, id, 1).await;
    assert_eq!((step.as_deref(), attempt), (Some("dispatch"), 1));
    assert!(owner.is_some(), "the first task is leased by the start");
    assert_eq!(
        claimable(&db).await,
        0,
        "another replica found the first task"
    );

    let first = app.dispatched(&executor, 1).await;
    let answer = app.call_back(&first.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let (step, next_owner, attempt) = stored_task(&db, id, 2).await;
    assert_eq!((step.as_deref(), attempt), (Some("dispatch"), 1));
    assert!(
        next_owner.is_some(),
        "the second task is leased by the callback"
    );
    assert_ne!(next_owner, owner, "each hand-off is a lease of its own");
    assert_eq!(
        claimable(&db).await,
        0,
        "another replica found the second task"
    );

    // The attempt's callback token is the one the engine sends with it.
    let second = app.dispatched(&executor, 2).await;
    let answer = app.call_back(&second.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(executor.received().len(), 2, "each task sent once");
    app.stop().await;
}

on_both_backends!(a_handed_dispatch_aborted_before_the_engine_took_it_is_not_sent);
/// On PostgreSQL the start's batch (one write) read the dispatch before its commit
/// (`handoff.rs`); the abort since makes the engine read it again and let it go.
async fn a_handed_dispatch_aborted_before_the_engine_took_it_is_not_sent(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    app.accept_handoffs();
    let id = app.start_dev(two_tasks()).await;
    let answer = app.activity_action(id, "ABORT").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    app.drive_until_idle().await;
    assert_eq!(executor.received().len(), 0, "an aborted task was sent");
    let activity = app.activity(id).await;
    assert_eq!(activity["status"], "ABORTED", "{activity}");
    app.stop().await;
}

on_both_backends!(a_handed_dispatch_of_a_product_forgotten_before_the_engine_took_it_is_not_sent);
/// As an abort: a product deleted in ODM (the observer route) aborts its running activity, and
/// a dispatch its start read before then is read again and let go, not sent.
async fn a_handed_dispatch_of_a_product_forgotten_before_the_engine_took_it_is_not_sent(
    db: TestDb,
) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    app.accept_handoffs();
    app.start_dev(two_tasks()).await;
    let deleted = json!({
        "id": 1,
        "event": {"id": 1, "type": "DATA_PRODUCT_DELETED", "entityId": "p1",
                  "beforeState": null, "afterState": null, "time": 1714558530000i64},
    });
    let answer = app
        .call(
            "POST",
            "/api/v1/pp/devops/api/v1/up/observer/notifications",
            Some(&deleted),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["abortedActivities"], 1, "{answer:?}");
    app.drive_until_idle().await;
    assert_eq!(
        executor.received().len(),
        0,
        "a forgotten product's task was sent"
    );
    app.stop().await;
}

on_both_backends!(handed_dispatches_are_read_with_their_contexts_as_claims_and_contexts_read_them);
/// The engine reads the dispatches handed to it and their Contexts together (on PostgreSQL one
/// statement, `db::handed_steps_with_contexts`): each step must be what a claim of the task
/// gives, each Context what `contexts_of` gives, and a task whose lease moved on to another
/// claim (or that is gone) is left out, its Context with it.
async fn handed_dispatches_are_read_with_their_contexts_as_claims_and_contexts_read_them(
    db: TestDb,
) {
    use odm_devops::db as store;
    use odm_devops::domain::{ActivityId, ClaimedStep, TaskId};

    let (app, executor) = stepped_app_with_fake(&db).await;
    let stages = json!({"dev": [fake_task("d", json!({}))], "test": [fake_task("t", json!({}))]});
    for product in ["p1", "p2"] {
        app.put_descriptor(product, "1.0.0", &descriptor(stages.clone()))
            .await;
    }
    let dev = app.start_activity("p1", "1.0.0", "dev").await;
    let sent = app.dispatched(&executor, 1).await;
    let answer = app.call_back(&sent.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    app.wait_for_activity(dev, "PROCESSED").await;
    // Due, and not handed (this engine takes no hand-offs): claimed below, as a hand-off leases.
    let test = app.start_activity("p1", "1.0.0", "test").await;
    let other = app.start_activity("p2", "1.0.0", "dev").await;
    app.stop().await;

    let debug = |steps: &[ClaimedStep]| {
        let mut steps: Vec<String> = steps.iter().map(|s| format!("{s:?}")).collect();
        steps.sort();
        steps
    };
    // Claimed as a hand-off leases, then read as the engine reads what was handed to it.
    let (claimed, (steps, contexts), alone, (moved_steps, moved_contexts)) = db
        .open()
        .await
        .write(move |conn| {
            let now = odm_devops::clock::now_ms();
            let claimed = claim_due_steps(conn, "c-1", now, now + 60_000, 10)?;
            let task_of = |activity: i64| {
                let step = claimed.iter().find(|s| s.activity.id.get() == activity);
                step.map_or(TaskId(0), |s| s.task.id)
            };
            let (test_task, other_task) = (task_of(test), task_of(other));
            let all = [(test_task, "c-1".into()), (other_task, "c-1".into())];
            let together = store::handed_steps_with_contexts(conn, &all)?;
            let keys: Vec<_> = claimed.iter().map(|s| s.activity.clone()).collect();
            let alone = store::contexts_of(conn, &keys)?;
            let moved_on = [
                (test_task, "c-1".into()),
                (other_task, "a-claim-since-replaced".into()),
                (TaskId(i64::MAX), "c-1".into()),
            ];
            let moved = store::handed_steps_with_contexts(conn, &moved_on)?;
            Ok::<_, DbError>((claimed, together, alone, moved))
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_eq!(debug(&steps), debug(&claimed), "as a claim reads them");
    assert_eq!(contexts.len(), 2);
    for (activity, rows) in &alone {
        assert_eq!(format!("{:?}", contexts[activity]), format!("{rows:?}"));
    }
    let test_id = ActivityId(test);
    assert_eq!(
        contexts[&test_id].activities.len(),
        2,
        "dev PROCESSED and test itself"
    );
    let only_test: Vec<ClaimedStep> = claimed
        .into_iter()
        .filter(|s| s.activity.id == test_id)
        .collect();
    assert_eq!(debug(&moved_steps), debug(&only_test), "moved on: left out");
    assert_eq!(
        moved_contexts.keys().collect::<Vec<_>>(),
        vec![&test_id],
        "only the test activity's Context"
    );
}
