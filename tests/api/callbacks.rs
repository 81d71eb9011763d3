//! Tasks run one after another through the pipelines' callbacks (DESIGN §2, §7).

use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

fn two_tasks() -> Value {
    fake_stage(&["first", "second"])
}

on_both_backends!(a_two_task_stage_runs_in_order_through_callbacks);
async fn a_two_task_stage_runs_in_order_through_callbacks(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    assert_eq!(
        executor.received().len(),
        1,
        "the second task waits for the first's callback"
    );

    let answer = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "PROCESSED", "results": {"vm": {"ip": "10.0.0.1"}}})),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "PROCESSED"}));
    let second = app.dispatched(&executor, 2).await;
    assert_ne!(second.id, first.id);
    assert_eq!(app.activity(id).await["status"], "PROCESSING");

    // A callback without body means PROCESSED without results.
    let answer = app.call_back(&second.callback_ref, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let activity = app.wait_for_activity(id, "PROCESSED").await;
    let results: Value = serde_json::from_str(activity["results"].as_str().unwrap()).unwrap();
    assert_eq!(results, json!({"task1": {"vm": {"ip": "10.0.0.1"}}}));
    assert!(activity["finishedAt"].is_string());
    let tasks = app.tasks_of(id).await;
    assert_eq!(
        tasks[0]["results"],
        json!(r#"{"vm":{"ip":"10.0.0.1"}}"#),
        "results are JSON in a string"
    );
    assert!(tasks
        .iter()
        .all(|t| t["status"] == "PROCESSED" && t["finishedAt"].is_string()));

    let current = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await
        .json();
    assert_eq!(current["stage"], "dev");
    assert_eq!(current["finishedAt"], Value::Null);
    // On PostgreSQL the promotion is part of the last callback's one statement, which sees the
    // activity's row as it was before: the results are the plan's, not the row's.
    assert_eq!(current["results"], activity["results"]);
    app.stop().await;
}

on_both_backends!(a_failed_task_fails_the_activity_and_aborts_the_rest);
async fn a_failed_task_fails_the_activity_and_aborts_the_rest(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    let answer = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "FAILED", "errors": "terraform apply failed"})),
        )
        .await;
    assert_eq!(answer.json(), json!({"status": "FAILED"}));
    let activity = app.wait_for_activity(id, "FAILED").await;
    let errors = activity["errors"].as_str().unwrap();
    assert!(
        errors.contains("first") && errors.contains("terraform apply failed"),
        "{errors}"
    );
    let tasks = app.tasks_of(id).await;
    assert_eq!(tasks[0]["status"], "FAILED");
    assert_eq!(tasks[0]["errors"], "terraform apply failed");
    assert_eq!(tasks[1]["status"], "ABORTED");
    app.drive_until_idle().await;
    assert_eq!(
        executor.received().len(),
        1,
        "an aborted task is never dispatched"
    );
    let current = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await;
    assert_eq!(
        (current.status, current.text.as_str()),
        (200, ""),
        "no stage reached"
    );
    app.stop().await;
}

on_both_backends!(tasks_without_executor_succeed_and_unknown_executors_fail);
async fn tasks_without_executor_succeed_and_unknown_executors_fail(db: TestDb) {
    let lifecycle = json!({
        "dev": [{"template": {"name": "manual-check"}}, {"configurations": {"note": "no service either"}}, fake_task("after", json!({}))],
        "prod": [{"service": {"$href": "{gitlab}"}, "template": {"name": "deploy"}}]
    });
    let (app, executor, id) = started_activity(&db, lifecycle).await;
    // Both executor-less tasks complete at once and the activity goes on to the third.
    let third = app.dispatched(&executor, 1).await;
    let tasks = app.tasks_of(id).await;
    assert_eq!(
        (tasks[0]["status"].as_str(), tasks[1]["status"].as_str()),
        (Some("PROCESSED"), Some("PROCESSED"))
    );
    app.call_back(&third.callback_ref, None).await;
    app.wait_for_activity(id, "PROCESSED").await;

    let prod = app
        .create_activity("p1", "1.0.0", "prod", true)
        .await
        .json();
    let prod_id = prod["id"].as_i64().unwrap();
    let activity = app.wait_for_activity(prod_id, "FAILED").await;
    let task = &app.tasks_of(prod_id).await[0];
    assert_eq!(task["status"], "FAILED");
    assert_eq!(task["errors"], "Executor [gitlab] not supported");
    assert!(activity["errors"]
        .as_str()
        .unwrap()
        .contains("Executor [gitlab] not supported"));
    app.stop().await;
}

on_both_backends!(replayed_callbacks_are_idempotent_and_others_refused);
async fn replayed_callbacks_are_idempotent_and_others_refused(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    let body = json!({"status": "PROCESSED", "results": {"n": 1}});
    assert_eq!(
        app.call_back(&first.callback_ref, Some(body.clone()))
            .await
            .status,
        200
    );
    app.dispatched(&executor, 2).await;
    let replay = app.call_back(&first.callback_ref, Some(body)).await;
    assert_eq!(
        (replay.status, replay.json()),
        (200, json!({"status": "PROCESSED"}))
    );
    let other = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "PROCESSED", "results": {"n": 2}})),
        )
        .await;
    assert!(other.assert_error(409, "40911").contains("another outcome"));
    let failed = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "FAILED", "errors": "late"})),
        )
        .await;
    failed.assert_error(409, "40911");
    let task = app.task(first.id).await;
    assert_eq!(
        (task["status"].as_str(), task["results"].as_str()),
        (Some("PROCESSED"), Some(r#"{"n":1}"#)),
        "nothing changed"
    );
    assert_eq!(app.activity(id).await["status"], "PROCESSING");
    app.stop().await;
}

on_both_backends!(callbacks_need_their_token_and_a_valid_body);
async fn callbacks_need_their_token_and_a_valid_body(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    let path = format!("{DEVOPS}/tasks/{}/status?action=STOP", first.id);
    let ok = json!({"status": "PROCESSED"});
    app.call("PATCH", &path, Some(&ok))
        .await
        .assert_error(401, "40101");
    app.call("PATCH", &format!("{path}&token=forged"), Some(&ok))
        .await
        .assert_error(401, "40101");
    let other_task = format!(
        "{DEVOPS}/tasks/{}/status?action=STOP&{}",
        first.id + 1,
        first.callback_ref.split_once('&').unwrap().1
    );
    app.call("PATCH", &other_task, Some(&ok))
        .await
        .assert_error(401, "40101");
    for (body, expected) in [
        (json!({"results": {}}), "status is missing"),
        (
            json!({"status": "DONE"}),
            "status must be PROCESSED or FAILED",
        ),
        (
            json!({"status": "PROCESSED", "results": "x"}),
            "results must be a JSON object",
        ),
        (
            json!({"status": "FAILED", "errors": 42}),
            "errors must be a string",
        ),
    ] {
        let answer = app.call_back(&first.callback_ref, Some(body)).await;
        assert!(
            answer.assert_error(422, "42203").contains(expected),
            "{answer:?}"
        );
    }
    let malformed = app
        .send(
            "PATCH",
            &first.callback_ref,
            Some(("application/json", "{nope".into())),
            &[],
        )
        .await;
    malformed.assert_error(400, "40000");
    assert_eq!(
        app.tasks_of(id).await[0]["status"],
        "PROCESSING",
        "refused callbacks change nothing"
    );
    // POST is accepted as well as PATCH, and a bare `curl -d` content type too, and a body
    // file written with a byte order mark (was a 400: the task waited for its timeout).
    let answer = app
        .send(
            "POST",
            &first.callback_ref,
            Some((
                "application/x-www-form-urlencoded",
                "\u{FEFF}{\"status\":\"PROCESSED\"}".into(),
            )),
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    app.stop().await;
}

on_both_backends!(a_nul_in_the_callback_errors_is_stored_as_a_replacement_character);
async fn a_nul_in_the_callback_errors_is_stored_as_a_replacement_character(db: TestDb) {
    // PostgreSQL cannot store NUL in text: the callback was a 500 there and the task hung.
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    let body = json!({"status": "FAILED", "errors": "exit\u{0}1"});
    let answer = app.call_back(&first.callback_ref, Some(body.clone())).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let again = app.call_back(&first.callback_ref, Some(body)).await;
    assert_eq!(
        again.status, 200,
        "a replay is still the same callback: {again:?}"
    );
    app.wait_for_activity(id, "FAILED").await;
    assert_eq!(app.tasks_of(id).await[0]["errors"], "exit\u{FFFD}1");
    app.stop().await;
}

on_both_backends!(the_deepest_results_a_callback_may_carry_reach_the_lifecycle);
async fn the_deepest_results_a_callback_may_carry_reach_the_lifecycle(db: TestDb) {
    // serde_json refuses a body nested 128 deep (400), so results may be 126 deep. The service
    // wraps them (`{"task1": …}`, the Context) and reads some of that back: nothing may break.
    let lifecycle = json!({"dev": [
        fake_task("first", json!({})),
        {"template": {"name": "second"}}
    ]});
    let (app, executor, id) = started_activity(&db, lifecycle).await;
    let first = app.dispatched(&executor, 1).await;
    let deepest = |depth: usize| {
        format!(
            "{}{{}}{}",
            "{\"a\":".repeat(depth - 1),
            "}".repeat(depth - 1)
        )
    };
    let path = first.callback_ref.split_once("/api/").unwrap().1;
    let too_deep = format!(r#"{{"status":"PROCESSED","results":{}}}"#, deepest(127));
    app.send(
        "PATCH",
        &format!("/api/{path}"),
        Some(("application/json", too_deep)),
        &[],
    )
    .await
    .assert_error(400, "40000");
    let body = format!(r#"{{"status":"PROCESSED","results":{}}}"#, deepest(126));
    let answer = app
        .send(
            "PATCH",
            &format!("/api/{path}"),
            Some(("application/json", body.clone())),
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let replay = app
        .send(
            "PATCH",
            &format!("/api/{path}"),
            Some(("application/json", body)),
            &[],
        )
        .await;
    assert_eq!(replay.status, 200, "a replay is recognised: {replay:?}");
    let activity = app.wait_for_activity(id, "PROCESSED").await;
    assert!(activity["results"]
        .as_str()
        .unwrap()
        .starts_with(r#"{"task1":{"a":{"a":"#));
    let current = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await
        .json();
    assert_eq!(current["stage"], "dev");
    assert_eq!(current["results"], activity["results"]);
    app.stop().await;
}

on_both_backends!(callbacks_without_token_are_accepted_when_tokens_are_off);
async fn callbacks_without_token_are_accepted_when_tokens_are_off(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.callbacks.require_token = false;
    let app = spawn_stepped_app(settings).await;
    let id = app.start_dev(fake_stage(&["only"])).await;
    let task = app.dispatched(&executor, 1).await;
    let answer = app.task_action(task.id, "STOP").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}

on_both_backends!(abort_stops_the_activity_and_refuses_its_late_callback);
async fn abort_stops_the_activity_and_refuses_its_late_callback(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    let answer = app.activity_action(id, "ABORT").await;
    assert_eq!(answer.json(), json!({"status": "ABORTED"}));
    let tasks = app.tasks_of(id).await;
    assert!(tasks.iter().all(|t| t["status"] == "ABORTED"), "{tasks:?}");
    let late = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "FAILED", "errors": "x"})),
        )
        .await;
    late.assert_error(409, "40911");
    assert_eq!(
        app.tasks_of(id).await[0]["status"],
        "ABORTED",
        "a late callback never flips ABORTED"
    );
    let again = app.activity_action(id, "ABORT").await;
    again.assert_error(409, "40901");
    let start = app.activity_action(id, "START").await;
    start.assert_error(422, "42201");
    app.stop().await;
}

on_both_backends!(aborting_a_task_aborts_its_activity);
async fn aborting_a_task_aborts_its_activity(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    let first = app.dispatched(&executor, 1).await;
    let answer = app.task_action(first.id, "ABORT").await;
    assert_eq!(answer.json(), json!({"status": "ABORTED"}));
    let activity = app.activity(id).await;
    assert_eq!(activity["status"], "ABORTED");
    assert!(activity["errors"].as_str().unwrap().contains("aborted"));
    let again = app.task_action(first.id, "ABORT").await;
    again.assert_error(409, "40911");
    app.stop().await;
}

on_both_backends!(executor_answers_with_an_outcome_at_once);
async fn executor_answers_with_an_outcome_at_once(db: TestDb) {
    let (app, executor, id) = started_activity(&db, two_tasks()).await;
    executor.reply_with("PROCESSED", Some(json!({"done": true})));
    let activity = app.wait_for_activity(id, "PROCESSED").await;
    let results: Value = serde_json::from_str(activity["results"].as_str().unwrap()).unwrap();
    assert_eq!(
        results,
        json!({"task1": {"done": true}, "task2": {"done": true}})
    );
    assert_eq!(executor.received().len(), 2);
    app.stop().await;
}

on_both_backends!(secrets_reach_the_executor_and_are_never_shown_or_stored_in_clear);
async fn secrets_reach_the_executor_and_are_never_shown_or_stored_in_clear(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(two_tasks()))
        .await;
    let body = json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"});
    let created = app
        .send(
            "POST",
            &format!("{DEVOPS}/activities?startAfterCreation=true"),
            Some(("application/json", body.to_string())),
            &[
                ("x-odm-fake-executor-secret-token", "s3cr3t-value"),
                ("x-odm-other-executor-secret-pat", "not-for-fake"),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let received = app.dispatched(&executor, 1).await;
    assert_eq!(
        received.headers.get("x-odm-token").map(String::as_str),
        Some("s3cr3t-value")
    );
    assert!(
        !received.headers.contains_key("x-odm-pat"),
        "another executor's secret stays with it"
    );
    let id = created.json()["id"].as_i64().unwrap();
    let shown = app.get(&format!("{DEVOPS}/activities/{id}")).await.text
        + &app
            .get(&format!("{DEVOPS}/tasks?activityId={id}"))
            .await
            .text;
    assert!(!shown.contains("s3cr3t"), "{shown}");
    let stored = odm_devops::db::Db::connect(&db.url, 1).unwrap();
    let row = stored
        .read(move |conn| {
            Ok::<_, odm_devops::db::DbError>(odm_devops::db::find_activity(
                conn,
                odm_devops::domain::ActivityId(id),
            )?)
        })
        .await
        .unwrap()
        .unwrap();
    let sealed = row
        .sealed_secrets
        .expect("kept for the activity's later tasks");
    assert!(!sealed.contains("s3cr3t"));
    // The second task gets them too, from the sealed copy.
    app.call_back(&received.callback_ref, None).await;
    let second = app.dispatched(&executor, 2).await;
    assert_eq!(
        second.headers.get("x-odm-token").map(String::as_str),
        Some("s3cr3t-value")
    );
    app.stop().await;
}
