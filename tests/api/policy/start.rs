//! START's gates: the stage order first, then ODM's policy service, before anything changes.

use odm_devops::policy::fake::FakePolicy;
use odm_devops::policy::PolicyEvent;
use serde_json::json;

use super::*;
use crate::on_both_backends;

on_both_backends!(the_stage_order_refuses_prod_until_test_was_reached);
async fn the_stage_order_refuses_prod_until_test_was_reached(db: TestDb) {
    let (app, executor) = gated_app(&db, None, &["dev", "test", "prod"], &["build"]).await;
    let prod = app.planned_activity("p1", "1.0.0", "prod").await;
    let refused = app.start_planned(prod).await;
    let message = refused.assert_error(422, "42204");
    assert!(message.contains("stage-order"), "{message}");
    assert!(message.contains("test or later"), "{message}");
    assert!(message.contains("it is none"), "{message}");
    // Created and started at once: created, refused, and it stays PLANNED.
    let answer = app.create_activity("p1", "1.0.0", "test", true).await;
    let message = answer.assert_error(422, "42204");
    assert!(message.contains("dev or later"), "{message}");
    assert!(
        message.contains("was created and stays PLANNED"),
        "{message}"
    );
    app.drive_until_idle().await;
    assert!(executor.received().is_empty(), "nothing is dispatched");
    assert_eq!(app.activity(prod).await["status"], "PLANNED");

    let dev = app.start_activity("p1", "1.0.0", "dev").await;
    app.run_to_end(&executor, dev).await;
    let message = app.start_planned(prod).await.assert_error(422, "42204");
    assert!(message.contains("it is dev"), "{message}");
    let listed = app
        .get_json(&format!("{DEVOPS}/activities?stage=test"))
        .await;
    let test = listed[0]["id"].as_i64().unwrap();
    assert_eq!(listed[0]["status"], "PLANNED", "the refused one is kept");
    assert_eq!(app.start_planned(test).await.status, 200);
    app.run_to_end(&executor, test).await;
    assert_eq!(app.current_stage().await["stage"], "test");
    let answer = app.start_planned(prod).await;
    assert_eq!(answer.json(), json!({"status": "PROCESSING"}), "{answer:?}");
    app.stop().await;
}

on_both_backends!(a_blocking_policy_refuses_start_and_names_each_blocking_policy);
async fn a_blocking_policy_refuses_start_and_names_each_blocking_policy(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build"]).await;
    let event = PolicyEvent::ActivityStageTransition;
    policy.set_policies(
        event,
        vec![
            FakePolicy::blocking(7, "gdpr"),
            FakePolicy::blocking(8, "owner-set"),
            FakePolicy::advisory(9, "naming"),
            FakePolicy::passing(10, "schema"),
        ],
    );
    let id = app.planned_activity("p1", "1.0.0", "dev").await;
    let message = app.start_planned(id).await.assert_error(422, "42204");
    assert!(
        message.contains("gdpr (id 7), owner-set (id 8)"),
        "{message}"
    );
    assert!(
        !message.contains("naming") && !message.contains("schema"),
        "{message}"
    );
    app.drive_until_idle().await;
    assert!(executor.received().is_empty());
    assert_eq!(app.activity(id).await["status"], "PLANNED");
    let tasks = app.tasks_of(id).await;
    assert!(tasks.iter().all(|t| t["status"] == "PLANNED"));

    let received = policy.received_for(event);
    assert_eq!(received.len(), 1);
    let activity = app.activity(id).await;
    assert_eq!(
        received[0],
        json!({
            "resourceType": "ACTIVITY_STAGE_TRANSITION",
            "event": "ACTIVITY_STAGE_TRANSITION",
            "dataProductId": "p1",
            "dataProductVersion": "1.0.0",
            "currentState": null,
            "afterState": {"lifecycle": null, "activity": activity, "tasks": tasks},
            "verbose": true
        })
    );

    // Advisory failures only: it starts.
    policy.set_policies(event, vec![FakePolicy::advisory(9, "naming")]);
    assert_eq!(app.start_planned(id).await.status, 200);
    app.dispatched(&executor, 1).await;
    assert_eq!(app.policy_checks(event.as_str(), "blocked").await, 1.0);
    assert_eq!(app.policy_checks(event.as_str(), "advisory").await, 1.0);
    app.stop().await;
}

on_both_backends!(the_lifecycle_row_goes_with_the_stage_transition);
async fn the_lifecycle_row_goes_with_the_stage_transition(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build"]).await;
    let dev = app.start_activity("p1", "1.0.0", "dev").await;
    app.run_to_end(&executor, dev).await;
    let lifecycle = app.current_stage().await;
    assert_eq!(lifecycle["stage"], "dev");
    let answer = app.create_activity("p1", "1.0.0", "test", true).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let started = answer.json();
    assert_eq!(started["status"], "PROCESSING");
    let id = started["id"].as_i64().unwrap();
    assert_eq!(
        app.activity(id).await,
        started,
        "a gated start answers the activity as stored"
    );
    let asked = policy.received_for(PolicyEvent::ActivityStageTransition);
    let last = asked.last().unwrap();
    assert_eq!(last["currentState"], json!({"lifecycle": lifecycle}));
    assert_eq!(last["afterState"]["lifecycle"], lifecycle);
    assert_eq!(last["afterState"]["activity"]["stage"], "test");
    assert_eq!(last["afterState"]["activity"]["status"], "PLANNED");
    app.stop().await;
}

on_both_backends!(a_policy_service_down_or_failing_refuses_start_and_changes_nothing);
async fn a_policy_service_down_or_failing_refuses_start_and_changes_nothing(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build"]).await;
    let id = app.planned_activity("p1", "1.0.0", "dev").await;
    policy.down().await;
    let message = app.start_planned(id).await.assert_error(503, "50071");
    assert!(
        message.contains("policy service is unreachable"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "no address to callers: {message}"
    );
    // `startAfterCreation`: the activity is created before the gates are asked, so the refusal
    // says which one is left PLANNED (the same POST again would be 42202, not a start).
    let answer = app.create_activity("p1", "1.0.0", "test", true).await;
    let message = answer.assert_error(503, "50071");
    let created: i64 = message
        .split("activity ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no activity id in {message:?}"));
    assert!(
        message.ends_with(&format!(
            "activity {created} was created and stays PLANNED; start it again later"
        )),
        "{message}"
    );
    assert_eq!(app.activity(created).await["stage"], "test");
    policy.up().unwrap();
    policy.answer_with(Some(500));
    let message = app.start_planned(id).await.assert_error(502, "50271");
    assert!(message.contains("answered 500"), "{message}");
    assert!(
        !message.contains("fake policy service failure"),
        "no body: {message}"
    );
    app.drive_until_idle().await;
    assert!(executor.received().is_empty());
    assert_eq!(app.activity(id).await["status"], "PLANNED");
    let event = PolicyEvent::ActivityStageTransition.as_str();
    assert_eq!(app.policy_checks(event, "unreachable").await, 2.0);
    assert_eq!(app.policy_checks(event, "failed").await, 1.0);
    assert_eq!(app.activity(created).await["status"], "PLANNED");
    policy.answer_with(None);
    assert_eq!(app.start_planned(id).await.status, 200);
    app.stop().await;
}

on_both_backends!(the_stage_order_is_checked_before_the_policy_service);
async fn the_stage_order_is_checked_before_the_policy_service(db: TestDb) {
    let policy = fake_policy().await;
    let (app, _executor) = gated_app(&db, Some(&policy), &["dev", "test", "prod"], &["b"]).await;
    let prod = app.planned_activity("p1", "1.0.0", "prod").await;
    policy.down().await;
    let message = app.start_planned(prod).await.assert_error(422, "42204");
    assert!(message.contains("stage-order"), "{message}");
    assert!(policy.received().is_empty(), "no remote call");
    app.stop().await;
}
