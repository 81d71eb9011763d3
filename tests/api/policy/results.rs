//! The gates on results, asked by the engine: the callback only records the report.

use std::time::Duration;

use odm_devops::policy::fake::FakePolicy;
use odm_devops::policy::PolicyEvent;
use serde_json::{json, Value};

use super::*;
use crate::on_both_backends;

const TASK: PolicyEvent = PolicyEvent::TaskExecutionResult;
const ACTIVITY: PolicyEvent = PolicyEvent::ActivityExecutionResult;

on_both_backends!(a_blocked_task_result_fails_the_task_and_the_rest_never_runs);
async fn a_blocked_task_result_fails_the_task_and_the_rest_never_runs(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build", "ship"]).await;
    policy.set_policies(
        TASK,
        vec![
            FakePolicy::blocking(3, "no-secrets-in-results"),
            FakePolicy::advisory(4, "naming"),
        ],
    );
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let first = app.dispatched(&executor, 1).await;
    let body = json!({"status": "PROCESSED", "results": {"password": "hunter2"}});
    let answer = app.call_back(&first.callback_ref, Some(body)).await;
    assert_eq!(
        answer.json(),
        json!({"status": "PROCESSING"}),
        "recorded, not decided"
    );
    assert!(
        policy.received_for(TASK).is_empty(),
        "not asked inside the request"
    );

    let activity = app.wait_for_activity(id, "FAILED").await;
    let tasks = app.tasks_of(id).await;
    assert_eq!(tasks[0]["status"], "FAILED");
    let errors = tasks[0]["errors"].as_str().unwrap();
    assert!(errors.contains("TASK_EXECUTION_RESULT"), "{errors}");
    assert!(errors.contains("no-secrets-in-results (id 3)"), "{errors}");
    assert!(!errors.contains("naming"), "{errors}");
    assert_eq!(tasks[1]["status"], "ABORTED");
    assert_eq!(executor.received().len(), 1, "the second task never ran");
    assert!(activity["errors"]
        .as_str()
        .unwrap()
        .contains("no-secrets-in-results"));
    assert_eq!(app.current_stage().await, Value::Null, "no lifecycle");

    let asked = policy.received_for(TASK);
    assert_eq!(asked.len(), 1);
    let request = &asked[0];
    assert_eq!(request["resourceType"], "TASK_EXECUTION_RESULT");
    assert_eq!(request["dataProductId"], Value::Null);
    assert_eq!(request["dataProductVersion"], Value::Null);
    assert_eq!(request["afterState"], Value::Null);
    assert_eq!(request["verbose"], true);
    let task = &request["currentState"]["task"];
    assert_eq!(task["id"], first.id);
    assert_eq!(task["activityId"], id.to_string());
    assert_eq!(task["status"], "PROCESSED");
    assert_eq!(task["results"], json!(r#"{"password":"hunter2"}"#));
    assert_eq!(task["errors"], Value::Null);
    assert!(task["finishedAt"].is_string());
    app.stop().await;
}

on_both_backends!(advisory_failures_never_block_and_leave_errors_clean);
async fn advisory_failures_never_block_and_leave_errors_clean(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build"]).await;
    policy.set_policies(TASK, vec![FakePolicy::advisory(4, "naming")]);
    policy.set_policies(ACTIVITY, vec![FakePolicy::advisory(5, "docs")]);
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let sent = app.dispatched(&executor, 1).await;
    let body = json!({"status": "PROCESSED", "results": {"ok": true}});
    app.call_back(&sent.callback_ref, Some(body)).await;
    let activity = app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(activity["errors"], Value::Null);
    assert_eq!(app.tasks_of(id).await[0]["errors"], Value::Null);
    assert_eq!(app.current_stage().await["stage"], "dev");
    assert_eq!(app.policy_checks(TASK.as_str(), "advisory").await, 1.0);
    assert_eq!(app.policy_checks(ACTIVITY.as_str(), "advisory").await, 1.0);
    app.stop().await;
}

on_both_backends!(a_blocked_activity_result_fails_it_and_leaves_the_lifecycle_exactly_as_it_was);
async fn a_blocked_activity_result_fails_it_and_leaves_the_lifecycle_exactly_as_it_was(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build", "package"]).await;
    let dev = app.start_activity("p1", "1.0.0", "dev").await;
    app.run_to_end(&executor, dev).await;
    let before = app.current_stage().await;
    let history = app.get_json(&format!("{DEVOPS}/lifecycles/p1/1.0.0")).await;
    assert_eq!(before["stage"], "dev");

    policy.set_policies(ACTIVITY, vec![FakePolicy::blocking(11, "tests-passed")]);
    let test = app.start_activity("p1", "1.0.0", "test").await;
    let sent = app.dispatched(&executor, 3).await;
    let body = json!({"status": "PROCESSED", "results": {"coverage": 41}});
    app.call_back(&sent.callback_ref, Some(body)).await;
    let activity = app.wait_for_activity(test, "FAILED").await;
    let errors = activity["errors"].as_str().unwrap();
    assert!(errors.contains("ACTIVITY_EXECUTION_RESULT"), "{errors}");
    assert!(errors.contains("tests-passed (id 11)"), "{errors}");
    assert_eq!(activity["results"], json!(r#"{"task1":{"coverage":41}}"#));
    let task = &app.tasks_of(test).await[0];
    assert_eq!(task["status"], "PROCESSED", "the task itself succeeded");
    assert_eq!(task["errors"], Value::Null);
    assert_eq!(
        app.current_stage().await,
        before,
        "the lifecycle did not move"
    );
    assert_eq!(
        app.get_json(&format!("{DEVOPS}/lifecycles/p1/1.0.0")).await,
        history
    );

    let asked = policy.received_for(ACTIVITY);
    let request = asked.last().unwrap();
    assert_eq!(request["resourceType"], "ACTIVITY_EXECUTION_RESULT");
    assert_eq!(request["dataProductId"], "p1");
    assert_eq!(request["dataProductVersion"], "1.0.0");
    assert_eq!(request["afterState"], Value::Null);
    let state = &request["currentState"];
    assert_eq!(state["activity"]["id"], test);
    assert_eq!(state["activity"]["status"], "PROCESSED");
    assert_eq!(
        state["activity"]["results"],
        json!(r#"{"task1":{"coverage":41}}"#)
    );
    assert_eq!(state["dataProductVersion"]["info"]["name"], "test-product");
    assert_eq!(policy.received_for(TASK).len(), 1, "one result with a body");
    app.stop().await;
}

on_both_backends!(a_policy_service_down_makes_the_result_wait_visibly_then_it_goes_on);
async fn a_policy_service_down_makes_the_result_wait_visibly_then_it_goes_on(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build"]).await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let sent = app.dispatched(&executor, 1).await;
    policy.down().await;
    let body = json!({"status": "PROCESSED", "results": {"ok": 1}});
    let answer = app.call_back(&sent.callback_ref, Some(body.clone())).await;
    assert_eq!(
        answer.status, 200,
        "the callback is answered at once: {answer:?}"
    );
    app.drive_until_idle().await;
    let task = app.task(sent.id).await;
    assert_eq!(task["status"], "PROCESSING");
    let errors = task["errors"].as_str().unwrap();
    assert!(
        errors.starts_with("waiting for ODM's policy service"),
        "{errors}"
    );
    assert!(errors.contains("TASK_EXECUTION_RESULT"), "{errors}");
    assert_eq!(app.policy_checks(TASK.as_str(), "unreachable").await, 1.0);
    // The same callback again is a replay, not a second report.
    let again = app.call_back(&sent.callback_ref, Some(body)).await;
    assert_eq!(again.json(), json!({"status": "PROCESSING"}));

    policy.up().unwrap();
    policy.answer_with(Some(503));
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    app.drive_until_idle().await;
    let errors = app.task(sent.id).await["errors"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(errors.contains("answered 503"), "{errors}");
    assert_eq!(app.policy_checks(TASK.as_str(), "failed").await, 1.0);

    policy.answer_with(None);
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    app.drive_until_idle().await;
    let activity = app.activity(id).await;
    assert_eq!(activity["status"], "PROCESSED", "{activity}");
    assert_eq!(
        app.task(sent.id).await["errors"],
        Value::Null,
        "the note is gone"
    );
    assert_eq!(app.current_stage().await["stage"], "dev");
    app.stop().await;
}

on_both_backends!(a_result_waiting_past_the_tasks_timeout_fails_the_task);
async fn a_result_waiting_past_the_tasks_timeout_fails_the_task(db: TestDb) {
    let policy = fake_policy().await;
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.policy.active = true;
    settings.policy.address = Some(policy.address());
    let app = spawn_stepped_app(settings).await;
    // A deadline far away, moved into the past below: a wall-clock deadline of a second was
    // missed on a stalled CI machine before the callback came, and the test then saw the
    // run's own time-out rather than the policy wait's.
    let id = app
        .start_dev(json!({"dev": [fake_task("slow", json!({"timeout": 3600}))]}))
        .await;
    let sent = app.dispatched(&executor, 1).await;
    policy.down().await;
    app.call_back(&sent.callback_ref, None).await;
    app.drive_until_idle().await;
    let task = app.task(sent.id).await;
    assert_eq!(task["status"], "PROCESSING", "{task}");
    let errors = task["errors"].as_str().unwrap();
    assert!(
        errors.starts_with("waiting for ODM's policy service"),
        "{errors}"
    );
    assert!(errors.contains("ACTIVITY_EXECUTION_RESULT"), "{errors}");

    let past = chrono::Utc::now().timestamp_millis() - 1;
    let moved = format!(
        "UPDATE tasks SET deadline_at = {past}, due_at = {past} WHERE id = {}",
        sent.id
    );
    db.execute(moved).await;
    app.drive_until_idle().await;
    let task = app.task(sent.id).await;
    assert_eq!(task["status"], "FAILED");
    let errors = task["errors"].as_str().unwrap();
    assert!(
        errors.starts_with("timed out waiting for ODM's policy service"),
        "{errors}"
    );
    assert_eq!(app.activity(id).await["status"], "FAILED");
    assert_eq!(app.current_stage().await, Value::Null);
    app.stop().await;
}

on_both_backends!(an_executors_immediate_success_waits_for_the_gates_too);
async fn an_executors_immediate_success_waits_for_the_gates_too(db: TestDb) {
    let policy = fake_policy().await;
    let (app, executor) = gated_app(&db, Some(&policy), &[], &["build"]).await;
    executor.reply_with("PROCESSED", Some(json!({"artifact": "a.jar"})));
    policy.set_policies(ACTIVITY, vec![FakePolicy::blocking(12, "signed-artifacts")]);
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let activity = app.wait_for_activity(id, "FAILED").await;
    assert!(activity["errors"]
        .as_str()
        .unwrap()
        .contains("signed-artifacts (id 12)"));
    assert_eq!(app.tasks_of(id).await[0]["status"], "PROCESSED");
    assert_eq!(app.current_stage().await, Value::Null);
    let asked = policy.received_for(TASK);
    assert_eq!(asked.len(), 1, "its results are a reported result");
    assert_eq!(
        asked[0]["currentState"]["task"]["results"],
        json!(r#"{"artifact":"a.jar"}"#)
    );
    app.stop().await;
}

on_both_backends!(with_check_after_callback_the_provider_confirms_then_the_policy_decides);
async fn with_check_after_callback_the_provider_confirms_then_the_policy_decides(db: TestDb) {
    let policy = fake_policy().await;
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    fake_executor(&mut settings).check_after_callback = true;
    settings.policy.active = true;
    settings.policy.address = Some(policy.address());
    let app = spawn_stepped_app(settings).await;
    policy.set_policies(TASK, vec![FakePolicy::blocking(2, "results-schema")]);
    let id = app.start_dev(fake_stage(&["build"])).await;
    let sent = app.dispatched(&executor, 1).await;
    executor.set_run_status("PROCESSED");
    let body = json!({"status": "PROCESSED", "results": {"x": 1}});
    app.call_back(&sent.callback_ref, Some(body)).await;
    app.wait_for_activity(id, "FAILED").await;
    assert!(
        executor.status_requests() >= 1,
        "the provider was asked first"
    );
    let errors = app.task(sent.id).await["errors"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(errors.contains("results-schema (id 2)"), "{errors}");
    app.stop().await;
}
