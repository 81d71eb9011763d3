//! A task may ask for new runs when its run fails: `configurations.retry` (DESIGN §10).

use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

/// A started activity whose first task has these configurations.
async fn running(db: &TestDb, configurations: Value) -> (TestApp, FakeExecutor, i64) {
    let lifecycle =
        json!({"dev": [fake_task("deploy", configurations), fake_task("smoke", json!({}))]});
    started_activity(db, lifecycle).await
}

on_both_backends!(a_failed_run_is_run_again_when_the_task_asks_for_it);
async fn a_failed_run_is_run_again_when_the_task_asks_for_it(db: TestDb) {
    let configurations =
        json!({"retry": {"max": 1, "backoff": 0}, "params": {"literal": "$${kept}"}});
    let (app, executor, id) = running(&db, configurations).await;
    let first = app.dispatched(&executor, 1).await;
    let failed = json!({"status": "FAILED", "errors": "cluster busy"});
    let answer = app
        .call_back(&first.callback_ref, Some(failed.clone()))
        .await;
    assert_eq!(
        answer.json(),
        json!({"status": "PROCESSING"}),
        "the task goes on"
    );

    let second = app.dispatched(&executor, 2).await;
    assert_eq!(second.id, first.id, "the same task, run again");
    assert_ne!(
        second.callback_ref, first.callback_ref,
        "a new run has a new token"
    );
    assert_eq!(
        second.configurations["params"]["literal"], "${kept}",
        "each run resolves the configurations as planned, not the resolved ones"
    );
    let task = app.task(first.id).await;
    assert_eq!(task["status"], "PROCESSING");
    let errors = task["errors"].as_str().unwrap();
    assert!(
        errors.starts_with("run 1 of 2 failed: cluster busy; run 2 starts at "),
        "{errors}"
    );

    // The failed run's callback, replayed, changes nothing.
    app.call_back(&first.callback_ref, Some(failed))
        .await
        .assert_error(409, "40911");

    let done = json!({"status": "PROCESSED", "results": {"ok": true}});
    let answer = app.call_back(&second.callback_ref, Some(done)).await;
    assert_eq!(answer.json(), json!({"status": "PROCESSED"}));
    let third = app.dispatched(&executor, 3).await;
    app.call_back(&third.callback_ref, None).await;
    let activity = app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(activity["results"], json!(r#"{"task1":{"ok":true}}"#));
    assert_eq!(
        executor.received().len(),
        3,
        "one retry, then the next task"
    );
    app.stop().await;
}

on_both_backends!(when_every_run_fails_the_task_fails);
async fn when_every_run_fails_the_task_fails(db: TestDb) {
    let (app, executor, id) = running(&db, json!({"retry": {"max": 1, "backoff": 0}})).await;
    let mut last = None;
    for n in 1..=2 {
        let run = app.dispatched(&executor, n).await;
        let failed = json!({"status": "FAILED", "errors": format!("attempt {n} broke")});
        app.call_back(&run.callback_ref, Some(failed.clone())).await;
        last = Some((run.callback_ref, failed));
    }
    let activity = app.wait_for_activity(id, "FAILED").await;
    // The last callback again (a pipeline's `curl --retry`): the same callback, answered as
    // before though the task's errors now count the runs (DESIGN §7).
    let (callback_ref, failed) = last.unwrap();
    let again = app.call_back(&callback_ref, Some(failed)).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json(), json!({"status": "FAILED"}));
    let other = json!({"status": "FAILED", "errors": "something else"});
    let refused = app.call_back(&callback_ref, Some(other)).await;
    refused.assert_error(409, "40911");
    let errors = activity["errors"].as_str().unwrap();
    assert!(
        errors.contains("attempt 2 broke (all 2 runs failed)"),
        "{errors}"
    );
    let tasks = app.tasks_of(id).await;
    assert_eq!(tasks[0]["status"], "FAILED");
    assert_eq!(tasks[1]["status"], "ABORTED");
    assert_eq!(executor.received().len(), 2);
    app.stop().await;
}

on_both_backends!(a_run_that_fails_at_once_is_retried);
async fn a_run_that_fails_at_once_is_retried(db: TestDb) {
    let (app, executor, id) = running(&db, json!({"retry": {"max": 2, "backoff": 0}})).await;
    // The executor answers the run request with FAILED at once.
    executor.reply_with("FAILED", None);
    let activity = app.wait_for_activity(id, "FAILED").await;
    assert_eq!(executor.received().len(), 3, "the first run and two more");
    assert!(activity["errors"]
        .as_str()
        .unwrap()
        .contains("(all 3 runs failed)"));
    app.stop().await;
}

on_both_backends!(run_settings_are_checked_when_the_activity_is_created);
async fn run_settings_are_checked_when_the_activity_is_created(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let lifecycle = json!({"dev": [
        fake_task("deploy", json!({"retry": {"max": "two"}})),
        fake_task("smoke", json!({"timeout": -1})),
    ]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let body = json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"});
    let message = app
        .call("POST", &format!("{DEVOPS}/activities"), Some(&body))
        .await
        .assert_error(422, "42201");
    assert!(
        message.contains("task 1 (deploy) of stage dev: configurations.retry.max must be a whole number from 0 to 10, found \"two\"")
            && message.contains("task 2 (smoke) of stage dev: configurations.timeout must be a positive number of seconds, found -1"),
        "{message}"
    );
    assert!(app
        .get(&format!("{DEVOPS}/activities"))
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    app.stop().await;
}
