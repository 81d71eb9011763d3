//! The engine model (DESIGN §10): durable steps, restarts, polling, timeouts, retries, and the
//! lifecycle that records which stage each version reached.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

fn lifecycle() -> Value {
    json!({
        "dev": [fake_task("first", json!({})), fake_task("second", json!({}))],
        "test": [fake_task("smoke", json!({}))]
    })
}

on_both_backends!(a_restart_between_dispatch_and_callback_loses_nothing);
async fn a_restart_between_dispatch_and_callback_loses_nothing(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle()))
        .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let first = executor.wait_for(1).await.remove(0);
    app.stop().await;

    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let answer = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "PROCESSED", "results": {"a": 1}})),
        )
        .await;
    assert_eq!(
        answer.status, 200,
        "the token survives the restart: {answer:?}"
    );
    let second = executor.wait_for(2).await.remove(1);
    app.call_back(&second.callback_ref, None).await;
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}

on_both_backends!(one_activity_per_product_version_runs_at_a_time);
async fn one_activity_per_product_version_runs_at_a_time(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle()))
        .await;
    let dev = app
        .create_activity("p1", "1.0.0", "dev", false)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let test = app
        .create_activity("p1", "1.0.0", "test", false)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let start = |id: i64| {
        let app = &app;
        async move {
            app.call(
                "PATCH",
                &format!("{DEVOPS}/activities/{id}/status?action=START"),
                None,
            )
            .await
        }
    };
    let (a, b) = futures_util::future::join(start(dev), start(test)).await;
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let refused = if a.status == 409 { a } else { b };
    assert!(refused.assert_error(409, "40901").contains("PROCESSING"));
    let processing = app
        .get(&format!("{DEVOPS}/activities?status=PROCESSING"))
        .await
        .json();
    assert_eq!(processing.as_array().unwrap().len(), 1);
    app.stop().await;
}

on_both_backends!(the_lifecycle_records_each_stage_reached_once);
async fn the_lifecycle_records_each_stage_reached_once(db: TestDb) {
    let executor = FakeExecutor::start().await;
    executor.reply_with("PROCESSED", Some(json!({"ok": true})));
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle()))
        .await;
    app.put_descriptor("p1", "2.0.0", &descriptor(lifecycle()))
        .await;
    let none = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await;
    assert_eq!((none.status, none.text.as_str()), (200, ""));
    for stage in ["dev", "test"] {
        let id = app.create_activity("p1", "1.0.0", stage, true).await.json()["id"]
            .as_i64()
            .unwrap();
        app.wait_for_activity(id, "PROCESSED").await;
    }
    let id = app.start_activity("p1", "2.0.0", "dev").await;
    app.wait_for_activity(id, "PROCESSED").await;

    let history = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0"))
        .await
        .json();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["stage"], "dev");
    assert!(
        history[0]["finishedAt"].is_string(),
        "closed when test was reached"
    );
    assert_eq!(history[1]["stage"], "test");
    assert_eq!(history[1]["finishedAt"], Value::Null);
    let results: Value = serde_json::from_str(history[1]["results"].as_str().unwrap()).unwrap();
    assert_eq!(results, json!({"task1": {"ok": true}}));
    let current = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await
        .json();
    assert_eq!(current["stage"], "test");
    assert_eq!(
        app.get(&format!("{DEVOPS}/lifecycles/p1"))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        app.get(&format!("{DEVOPS}/lifecycles"))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    app.stop().await;
}

on_both_backends!(a_run_that_never_calls_back_is_polled);
async fn a_run_that_never_calls_back_is_polled(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.engine.poll_after_secs = 1;
    let app = spawn_app(settings).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("silent", json!({}))]})),
    )
    .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    executor.wait_for(1).await;
    eventually("a status poll", || async {
        (executor.status_requests() > 0).then_some(())
    })
    .await;
    assert_eq!(
        app.activity(id).await["status"],
        "PROCESSING",
        "still running at the provider"
    );
    executor.set_run_status("PROCESSED");
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}

on_both_backends!(a_task_past_its_timeout_fails);
async fn a_task_past_its_timeout_fails(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let lifecycle =
        json!({"dev": [fake_task("slow", json!({"timeout": 1})), fake_task("never", json!({}))]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let activity = app.wait_for_activity(id, "FAILED").await;
    let tasks = app.tasks_of(id).await;
    assert!(
        tasks[0]["errors"].as_str().unwrap().contains("timed out"),
        "{tasks:?}"
    );
    assert_eq!(tasks[1]["status"], "ABORTED");
    assert!(activity["errors"].as_str().unwrap().contains("timed out"));
    app.stop().await;
}

on_both_backends!(a_transient_executor_failure_is_retried);
async fn a_transient_executor_failure_is_retried(db: TestDb) {
    let executor = FakeExecutor::start().await;
    executor.fail_next(&[503]);
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("flaky", json!({}))]})),
    )
    .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let received = executor.wait_for(1).await;
    assert_eq!(app.tasks_of(id).await[0]["status"], "PROCESSING");
    let answer = app.call_back(&received[0].callback_ref, None).await;
    assert_eq!(
        answer.status, 200,
        "the retry's token is the valid one: {answer:?}"
    );
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}

on_both_backends!(a_rejected_task_fails_with_the_executors_message);
async fn a_rejected_task_fails_with_the_executors_message(db: TestDb) {
    let executor = FakeExecutor::start().await;
    executor.fail_next(&[400]);
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("bad", json!({}))]})),
    )
    .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    app.wait_for_activity(id, "FAILED").await;
    let errors = app.tasks_of(id).await[0]["errors"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(errors.contains("fake failure 400"), "{errors}");
    app.stop().await;
}

on_both_backends!(an_unreachable_executor_is_retried_then_fails);
async fn an_unreachable_executor_is_retried_then_fails(db: TestDb) {
    let mut settings = test_settings(&db, Some(&format!("http://127.0.0.1:{}", unused_port())));
    settings.engine.max_dispatch_attempts = 2;
    let app = spawn_app(settings).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("gone", json!({}))]})),
    )
    .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    app.wait_for_activity(id, "FAILED").await;
    let errors = app.tasks_of(id).await[0]["errors"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        errors.contains("gave up after 2 attempts") && errors.contains("unreachable"),
        "{errors}"
    );
    app.stop().await;
}

on_both_backends!(the_activity_waits_while_a_callback_is_being_confirmed);
async fn the_activity_waits_while_a_callback_is_being_confirmed(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    if let Some(odm_devops::config::ExecutorSettings::OdmHttp(fake)) =
        settings.executors.get_mut("fake")
    {
        fake.check_after_callback = true;
    }
    let app = spawn_app(settings).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("checked", json!({}))]})),
    )
    .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let task = executor.wait_for(1).await.remove(0);
    let answer = app
        .call_back(
            &task.callback_ref,
            Some(json!({"status": "PROCESSED", "results": {"a": 1}})),
        )
        .await;
    assert_eq!(
        answer.json(),
        json!({"status": "PROCESSING"}),
        "held until the provider confirms"
    );
    eventually("a confirmation request", || async {
        (executor.status_requests() > 0).then_some(())
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.activity(id).await["status"], "PROCESSING");
    executor.set_run_status("FAILED");
    app.wait_for_activity(id, "FAILED").await;
    let errors = app.tasks_of(id).await[0]["errors"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        errors.contains("called back but the provider reports the run failed"),
        "{errors}"
    );
    app.stop().await;
}

on_both_backends!(stopping_lets_a_dispatch_under_way_finish);
async fn stopping_lets_a_dispatch_under_way_finish(db: TestDb) {
    let executor = FakeExecutor::start().await;
    executor.delay_replies(700);
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle()))
        .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let first = executor.wait_for(1).await.remove(0);
    // The executor holds its answer: the service is asked to stop in the middle of the dispatch.
    app.stop().await;

    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let task = app
        .get(&format!("{DEVOPS}/tasks/{}", first.id))
        .await
        .json();
    let stored: Value = serde_json::from_str(task["configurations"].as_str().unwrap()).unwrap();
    assert_eq!(
        stored, first.configurations,
        "the dispatch was recorded before the engine stopped"
    );
    executor.delay_replies(0);
    assert_eq!(app.call_back(&first.callback_ref, None).await.status, 200);
    executor.wait_for(2).await;
    assert_eq!(app.activity(id).await["status"], "PROCESSING");
    app.stop().await;
}

on_both_backends!(a_dispatch_that_times_out_is_not_sent_again);
async fn a_dispatch_that_times_out_is_not_sent_again(db: TestDb) {
    let executor = FakeExecutor::start().await;
    executor.delay_replies(1_500);
    let mut settings = test_settings(&db, Some(&executor.address));
    if let Some(odm_devops::config::ExecutorSettings::OdmHttp(fake)) =
        settings.executors.get_mut("fake")
    {
        fake.request_timeout_ms = 200;
    }
    let app = spawn_app(settings).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("slow", json!({}))]})),
    )
    .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    let sent = executor.wait_for(1).await.remove(0);
    actix_web::rt::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        executor.received().len(),
        1,
        "it may have started: never sent twice"
    );
    assert_eq!(
        app.activity(id).await["status"],
        "PROCESSING",
        "waiting for its callback"
    );
    assert_eq!(
        app.call_back(&sent.callback_ref, None).await.status,
        200,
        "its token stays valid"
    );
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}

// A plan that conflicts half-way (its activity update applied, a task update refused) must
// leave nothing behind: the engine once committed the first half and reported "superseded".
on_both_backends!(a_superseded_engine_decision_changes_nothing);
async fn a_superseded_engine_decision_changes_nothing(db: TestDb) {
    use odm_devops::db::{self as store, Db};
    use odm_devops::domain::{
        ActivityChanges, ActivityId, ActivityStatus, ActivityUpdate, Plan, TaskChanges, TaskStatus,
        TaskUpdate,
    };
    use odm_devops::lifecycle::engine::{apply_decision, EngineError};
    use odm_devops::lifecycle::EngineTimings;

    let app = spawn_app(test_settings(&db, None)).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle()))
        .await;
    let created = app.create_activity("p1", "1.0.0", "dev", false).await;
    let id = ActivityId(created.json()["id"].as_i64().unwrap());
    app.stop().await;

    let url = db.url.clone();
    let db = actix_web::web::block(move || Db::connect(&url, 2))
        .await
        .unwrap()
        .unwrap();
    let timings = EngineTimings {
        poll_after_ms: 300_000,
        default_timeout_ms: 3_600_000,
    };
    let decided = db
        .write(move |conn| {
            apply_decision(conn, id, timings, |s, _| Plan {
                activity: Some(ActivityUpdate {
                    id: s.activity.id,
                    expected: ActivityStatus::Planned,
                    changes: ActivityChanges {
                        status: Some(ActivityStatus::Aborted),
                        ..ActivityChanges::default()
                    },
                }),
                // The task is PLANNED: this expectation fails after the activity was updated.
                tasks: vec![TaskUpdate {
                    id: s.tasks[0].id,
                    expected: TaskStatus::Processing,
                    expected_lease: None,
                    changes: TaskChanges {
                        status: Some(TaskStatus::Aborted),
                        ..TaskChanges::default()
                    },
                }],
                promote_lifecycle: false,
            })
        })
        .await;
    assert!(
        matches!(decided, Err(EngineError::Superseded(_))),
        "{decided:?}"
    );
    let status = db
        .read(move |conn| {
            Ok::<_, odm_devops::db::DbError>(
                store::find_activity(conn, id)?.unwrap().status.as_str(),
            )
        })
        .await
        .unwrap();
    assert_eq!(
        status, "PLANNED",
        "the half applied before the conflict is rolled back"
    );
}
