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
    let (app, executor, id) = started_activity(&db, lifecycle()).await;
    let first = app.dispatched(&executor, 1).await;
    app.stop().await;

    let app = spawn_stepped_app(test_settings(&db, Some(&executor.address))).await;
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
    let second = app.dispatched(&executor, 2).await;
    app.call_back(&second.callback_ref, None).await;
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}

on_both_backends!(one_activity_per_product_version_runs_at_a_time);
async fn one_activity_per_product_version_runs_at_a_time(db: TestDb) {
    let (app, _executor) = stepped_app_with_stages(&db, lifecycle()).await;
    let dev = app.planned_activity("p1", "1.0.0", "dev").await;
    let test = app.planned_activity("p1", "1.0.0", "test").await;
    let start = |id: i64| {
        let app = &app;
        async move { app.activity_action(id, "START").await }
    };
    let (a, b) = futures_util::future::join(start(dev), start(test)).await;
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let refused = if a.status == 409 { a } else { b };
    assert!(refused.assert_error(409, "40901").contains("PROCESSING"));
    let processing = app
        .get_json(&format!("{DEVOPS}/activities?status=PROCESSING"))
        .await;
    assert_eq!(processing.as_array().unwrap().len(), 1);
    app.stop().await;
}

on_both_backends!(the_lifecycle_records_each_stage_reached_once);
async fn the_lifecycle_records_each_stage_reached_once(db: TestDb) {
    let (app, executor) = stepped_app_with_stages(&db, lifecycle()).await;
    executor.reply_with("PROCESSED", Some(json!({"ok": true})));
    app.put_descriptor("p1", "2.0.0", &descriptor(lifecycle()))
        .await;
    let none = app
        .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await;
    assert_eq!((none.status, none.text.as_str()), (200, ""));
    for stage in ["dev", "test"] {
        let id = app.start_activity("p1", "1.0.0", stage).await;
        app.wait_for_activity(id, "PROCESSED").await;
    }
    let id = app.start_activity("p1", "2.0.0", "dev").await;
    app.wait_for_activity(id, "PROCESSED").await;

    let history = app.get_json(&format!("{DEVOPS}/lifecycles/p1/1.0.0")).await;
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
        .get_json(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
        .await;
    assert_eq!(current["stage"], "test");
    for all_of in ["/lifecycles/p1", "/lifecycles"] {
        let rows = app.get_json(&format!("{DEVOPS}{all_of}")).await;
        assert_eq!(rows.as_array().unwrap().len(), 3, "{all_of}");
    }
    app.stop().await;
}

on_both_backends!(a_run_that_never_calls_back_is_polled);
async fn a_run_that_never_calls_back_is_polled(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.engine.poll_after_secs = 1;
    let app = spawn_app(settings).await;
    let id = app.start_dev(fake_stage(&["silent"])).await;
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
    let id = app.start_dev(lifecycle).await;
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
    let id = app.start_dev(fake_stage(&["flaky"])).await;
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
    let (app, executor, id) = started_activity(&db, fake_stage(&["bad"])).await;
    executor.fail_next(&[400]);
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
    let mut settings = test_settings(&db, Some(&format!("http://127.0.0.1:{}", refused_port())));
    settings.engine.max_dispatch_attempts = 2;
    let app = spawn_app(settings).await;
    let id = app.start_dev(fake_stage(&["gone"])).await;
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
    fake_executor(&mut settings).check_after_callback = true;
    let app = spawn_app(settings).await;
    let id = app.start_dev(fake_stage(&["checked"])).await;
    let task = app.dispatched(&executor, 1).await;
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
    let id = app.start_dev(lifecycle()).await;
    let first = app.dispatched(&executor, 1).await;
    // The executor holds its answer: the service is asked to stop in the middle of the dispatch.
    app.stop().await;

    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let task = app.task(first.id).await;
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
    fake_executor(&mut settings).request_timeout_ms = 200;
    let app = spawn_stepped_app(settings).await;
    let id = app.start_dev(fake_stage(&["slow"])).await;
    let sent = app.dispatched(&executor, 1).await;
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
    use odm_devops::lifecycle::engine::{apply_decision, Decision, EngineError};
    use odm_devops::lifecycle::EngineTimings;
    use odm_devops::notifications::Listeners;

    let (app, _executor) = stepped_app_with_stages(&db, lifecycle()).await;
    let id = ActivityId(app.planned_activity("p1", "1.0.0", "dev").await);
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
            let with = Decision {
                timings,
                listeners: &Listeners::none(),
                handoff: None,
                on_claim: None,
            };
            apply_decision(conn, id, with, |s, _| Plan {
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

on_both_backends!(driving_the_engine_reports_each_step_it_carried_out);
async fn driving_the_engine_reports_each_step_it_carried_out(db: TestDb) {
    use odm_devops::domain::{Step, TaskId};
    use odm_devops::lifecycle::engine::StepReport;
    use odm_devops::metrics::StepResult;

    // An executor-less task finishes in its dispatch step, which makes the next one due.
    let lifecycle =
        json!({"dev": [{"template": {"name": "manual"}}, fake_task("sent", json!({}))]});
    let (app, executor, id) = started_activity(&db, lifecycle).await;
    let tasks: Vec<i64> = app
        .tasks_of(id)
        .await
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    let done = |task: i64| StepReport {
        task: TaskId(task),
        step: Step::Dispatch,
        result: StepResult::Done,
    };
    assert_eq!(
        app.drive_until_idle().await,
        [done(tasks[0]), done(tasks[1])]
    );
    assert_eq!(executor.received().len(), 1);
    assert!(app.drive_until_idle().await.is_empty(), "nothing else due");
    app.stop().await;
}
