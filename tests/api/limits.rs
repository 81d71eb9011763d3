//! `limits.*` (DESIGN §14): every bound just under (accepted) and just over (refused with a
//! message naming the limit, its value and its key), where descriptors enter (registry PUT,
//! activity creation), where callbacks enter, and where a task is dispatched. And the hostile
//! inputs of issue 9: a mebibyte of placeholder openers, a result referenced many times.

use odm_devops::config::{LimitSettings, Settings};
use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

const REGISTRY: &str = "/api/v1/pp/registry/products";

fn with_limits(settings: Settings, change: impl FnOnce(&mut LimitSettings)) -> Settings {
    let mut settings = settings;
    change(&mut settings.limits);
    settings
}

/// A task without executor (it succeeds at once) named `name`.
fn plain_task(name: &str, configurations: Value) -> Value {
    json!({"template": {"name": name}, "configurations": configurations})
}

fn stage_of(tasks: usize) -> Value {
    (1..=tasks)
        .map(|i| plain_task(&format!("t{i}"), json!({})))
        .collect()
}

impl TestApp {
    async fn put_raw(&self, product: &str, version: &str, descriptor: &Value) -> Answer {
        let path = format!("{REGISTRY}/{product}/versions/{version}");
        self.call("PUT", &path, Some(descriptor)).await
    }

    async fn activities_listed(&self) -> usize {
        let answer = self.get(&format!("{DEVOPS}/activities")).await;
        answer.json().as_array().unwrap().len()
    }
}

on_both_backends!(tasks_per_stage_is_checked_where_descriptors_enter);
async fn tasks_per_stage_is_checked_where_descriptors_enter(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let hundred = descriptor(json!({"dev": stage_of(100), "test": stage_of(100)}));
    assert_eq!(app.put_raw("p", "1", &hundred).await.status, 201);
    let over = descriptor(json!({"dev": stage_of(101)}));
    let message = app
        .put_raw("p", "2", &over)
        .await
        .assert_error(422, "42213");
    assert_eq!(
        message,
        "stage dev has 101 tasks; at most 100 are allowed (limits.tasks_per_stage)"
    );
    let created = app.create_activity("p", "1", "dev", false).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(
        app.tasks_of(created.json()["id"].as_i64().unwrap())
            .await
            .len(),
        100
    );
    app.stop().await;

    // A descriptor stored under a larger limit (or read from a remote registry) is checked
    // again when an activity is created from it.
    let app = spawn_app(with_limits(test_settings(&db, None), |l| {
        l.tasks_per_stage = 99
    }))
    .await;
    let message = app
        .create_activity("p", "1", "test", false)
        .await
        .assert_error(422, "42213");
    assert_eq!(
        message,
        "stage dev has 100 tasks; at most 99 are allowed (limits.tasks_per_stage)"
    );
    assert_eq!(app.activities_listed().await, 1, "nothing was created");
    app.stop().await;
}

on_both_backends!(a_stage_larger_than_one_insert_statement_is_stored_whole);
/// Tasks are inserted a thousand to a statement (PostgreSQL binds at most 65,535 values in one):
/// a stage of 2,001 tasks takes three, and comes back whole and in order.
async fn a_stage_larger_than_one_insert_statement_is_stored_whole(db: TestDb) {
    let app = spawn_app(with_limits(test_settings(&db, None), |l| {
        l.tasks_per_stage = 2_001
    }))
    .await;
    assert_eq!(
        app.put_raw("p", "1", &descriptor(json!({"dev": stage_of(2_001)})))
            .await
            .status,
        201
    );
    let id = app.planned_activity("p", "1", "dev").await;
    let names: Vec<String> = app
        .tasks_of(id)
        .await
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=2_001).map(|i| format!("t{i}")).collect();
    assert_eq!(names, expected);
    app.stop().await;
}

on_both_backends!(stages_per_descriptor_just_under_and_just_over);
async fn stages_per_descriptor_just_under_and_just_over(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let stages = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("s{i}"), stage_of(1)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    assert_eq!(
        app.put_raw("p", "1", &descriptor(stages(50))).await.status,
        201
    );
    let message = app
        .put_raw("p", "2", &descriptor(stages(51)))
        .await
        .assert_error(422, "42213");
    assert_eq!(
        message,
        "the descriptor has 51 stages; at most 50 are allowed (limits.stages)"
    );
    let missing = app.get(&format!("{REGISTRY}/p/versions/2")).await;
    assert_eq!(missing.status, 404, "a refused descriptor is not stored");
    app.stop().await;
}

on_both_backends!(names_are_at_most_name_chars_characters);
async fn names_are_at_most_name_chars_characters(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let (at_limit, over) = ("é".repeat(200), "é".repeat(201));
    // In a path they are ASCII, not to depend on how a client encodes them.
    let (path_at_limit, path_over) = ("v".repeat(200), "v".repeat(201));
    let ok = descriptor(json!({ at_limit.clone(): [plain_task(&at_limit, json!({}))] }));
    assert_eq!(app.put_raw("p", &path_at_limit, &ok).await.status, 201);
    let created = app
        .create_activity("p", &path_at_limit, &at_limit, false)
        .await;
    assert_eq!(created.status, 201, "{created:?}");

    let long_stage = descriptor(json!({ over.clone(): [plain_task("t", json!({}))] }));
    let long_task =
        descriptor(json!({"dev": [plain_task("t", json!({})), plain_task(&over, json!({}))]}));
    let long_service = descriptor(json!({"dev": [{"service": {"$href": over.clone()}}]}));
    for (what, body) in [
        ("the stage name", long_stage),
        ("the name of task 2 of stage dev", long_task),
        ("the service of task 1 of stage dev", long_service),
    ] {
        let message = app
            .put_raw("p", "2", &body)
            .await
            .assert_error(422, "42213");
        assert!(message.starts_with(what), "{message}");
        assert!(
            message.ends_with("has 201 characters; at most 200 are allowed (limits.name_chars)"),
            "{message}"
        );
    }
    let answer = app.put_raw(&path_over, "1", &ok).await;
    let message = answer.assert_error(422, "42213");
    assert!(message.starts_with("the product id \"vvv"), "{message}");
    let answer = app.put_raw("p", &path_over, &ok).await;
    let message = answer.assert_error(422, "42213");
    assert!(message.starts_with("the version \"vvv"), "{message}");
    for (field, body) in [
        (
            "dataProductId",
            json!({"dataProductId": over, "dataProductVersion": "1", "stage": "dev"}),
        ),
        (
            "dataProductVersion",
            json!({"dataProductId": "p", "dataProductVersion": over, "stage": "dev"}),
        ),
        (
            "stage",
            json!({"dataProductId": "p", "dataProductVersion": "1", "stage": over}),
        ),
    ] {
        let answer = app
            .call("POST", &format!("{DEVOPS}/activities"), Some(&body))
            .await;
        let message = answer.assert_error(422, "42213");
        assert!(message.starts_with(&format!("{field} \"éé")), "{message}");
        assert!(message.contains("(limits.name_chars)"), "{message}");
        assert!(message.len() < 300, "the name is quoted in part: {message}");
    }
    app.stop().await;
}

on_both_backends!(placeholders_per_task_just_under_and_just_over);
async fn placeholders_per_task_just_under_and_just_over(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let referring = |stage: &str, n: usize| {
        plain_task(
            "t",
            json!({"params": {"all": format!("${{{stage}.status}} ").repeat(n)}}),
        )
    };
    let body =
        descriptor(json!({"dev": [referring("dev", 500)], "test": [referring("test", 501)]}));
    app.put_descriptor("p", "1", &body).await;
    assert_eq!(
        app.create_activity("p", "1", "dev", false).await.status,
        201
    );
    let message = app
        .create_activity("p", "1", "test", false)
        .await
        .assert_error(422, "42213");
    assert_eq!(
        message,
        "task 1 (t) of stage test has 501 placeholders; at most 500 are allowed (limits.placeholders_per_task)"
    );
    app.stop().await;
}

on_both_backends!(one_answer_lists_at_most_listed_errors_bad_references);
async fn one_answer_lists_at_most_listed_errors_bad_references(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let bad: Vec<String> = (0..25).map(|i| format!("${{nowhere.x{i}}}")).collect();
    let body = descriptor(json!({"dev": [plain_task("t", json!({"refs": bad}))]}));
    app.put_descriptor("p", "1", &body).await;
    let message = app
        .create_activity("p", "1", "dev", false)
        .await
        .assert_error(422, "42201");
    assert!(
        message.starts_with("25 bad placeholder references: "),
        "{message}"
    );
    assert_eq!(
        message.matches("unknown stage nowhere").count(),
        20,
        "{message}"
    );
    assert!(message.contains("${nowhere.x19}") && !message.contains("${nowhere.x20}"));
    assert!(
        message.ends_with("; and 5 more not listed (limits.listed_errors: 20)"),
        "{message}"
    );
    app.stop().await;
}

// Issue 9: a MiB of `${` cost 24 s of CPU and answered 67 MB. Now scanning is linear, the
// count of placeholders refuses it, and the answer is one line. (The test asserts no time:
// it completes, and the scanner's own tests bound the work.)
on_both_backends!(a_mebibyte_of_placeholder_openers_is_refused_briefly);
async fn a_mebibyte_of_placeholder_openers_is_refused_briefly(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    // As much as fits in a request (server.body_limit_bytes, 1 MiB) once JSON-escaped.
    let text = |unit: &str| unit.repeat(900_000 / unit.len());
    for (version, unit) in [("1", "${"), ("2", "$<"), ("3", "${a['$<a[\"")] {
        let body = descriptor(json!({"dev": [plain_task("t", json!({"x": text(unit)}))]}));
        app.put_descriptor("p", version, &body).await;
    }
    let answer = app.create_activity("p", "1", "dev", false).await;
    let message = answer.assert_error(422, "42213");
    assert_eq!(
        message,
        "task 1 (t) of stage dev has 450000 placeholders; at most 500 are allowed (limits.placeholders_per_task)"
    );
    assert!(answer.text.len() < 1000, "{} bytes", answer.text.len());
    // `$<` not followed by a reference is plain text: nothing to refuse.
    assert_eq!(
        app.create_activity("p", "2", "dev", false).await.status,
        201
    );
    let answer = app.create_activity("p", "3", "dev", false).await;
    answer.assert_error(422, "42213");
    app.stop().await;
}

/// The fake executor's task alone in stage dev, started, with `limits.results_bytes` given.
async fn one_task_started(
    db: &TestDb,
    executor: &FakeExecutor,
    results_bytes: usize,
) -> (TestApp, i64) {
    let settings = test_settings(db, Some(&executor.address));
    let app = spawn_app(with_limits(settings, |l| l.results_bytes = results_bytes)).await;
    let lifecycle = json!({"dev": [fake_task("t", json!({}))]});
    app.put_descriptor("p", "1", &descriptor(lifecycle)).await;
    let id = app.start_activity("p", "1", "dev").await;
    (app, id)
}

on_both_backends!(callback_results_over_results_bytes_are_413_and_change_nothing);
async fn callback_results_over_results_bytes_are_413_and_change_nothing(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let (app, id) = one_task_started(&db, &executor, 64).await;
    let task = executor.wait_for(1).await.remove(0);
    // {"k":"…"} is 8 bytes around the text.
    let results = |n: usize| json!({"status": "PROCESSED", "results": {"k": "x".repeat(n)}});

    let forged = task.callback_ref.replace("token=", "token=x");
    let answer = app.call_back(&forged, Some(results(57))).await;
    answer.assert_error(401, "40101");
    let message = app
        .call_back(&task.callback_ref, Some(results(57)))
        .await
        .assert_error(413, "41301");
    assert_eq!(
        message,
        "the callback's results are more than 64 bytes of JSON; at most 64 are allowed (limits.results_bytes)"
    );
    let unchanged = &app.tasks_of(id).await[0];
    assert_eq!(unchanged["status"], "PROCESSING");
    assert_eq!(unchanged["results"], Value::Null);

    let answer = app.call_back(&task.callback_ref, Some(results(56))).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let activity = app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(
        activity["results"],
        json!({"task1": {"k": "x".repeat(56)}}).to_string()
    );
    app.stop().await;
}

on_both_backends!(an_executors_results_over_results_bytes_fail_the_task);
async fn an_executors_results_over_results_bytes_fail_the_task(db: TestDb) {
    let executor = FakeExecutor::start().await;
    executor.reply_with("PROCESSED", Some(json!({"k": "x".repeat(100)})));
    let (app, id) = one_task_started(&db, &executor, 64).await;
    app.wait_for_activity(id, "FAILED").await;
    let errors = app.tasks_of(id).await[0]["errors"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        errors.contains("the executor's results are more than 64 bytes of JSON; at most 64 are allowed (limits.results_bytes)"),
        "{errors}"
    );
    app.stop().await;
}

// Issue 9: a result referenced many times multiplied into a huge row and request. Now the task
// fails before dispatch, naming the limit; one that fits is sent.
on_both_backends!(a_result_referenced_many_times_fails_the_task_before_dispatch);
async fn a_result_referenced_many_times_fails_the_task_before_dispatch(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let settings = test_settings(&db, Some(&executor.address));
    let app = spawn_app(with_limits(settings, |l| {
        l.results_bytes = 4096;
        l.configurations_bytes = 16384;
    }))
    .await;
    let refs = |n: usize| json!({"blob": "${dev.results.task1.blob}".repeat(n)});
    let body = descriptor(json!({
        "dev": [fake_task("make", json!({})), fake_task("amplify", refs(10))],
    }));
    app.put_descriptor("p", "1", &body).await;
    let dev = app.start_activity("p", "1", "dev").await;
    let first = executor.wait_for(1).await.remove(0);
    let blob = json!({"status": "PROCESSED", "results": {"blob": "b".repeat(4000)}});
    assert_eq!(
        app.call_back(&first.callback_ref, Some(blob)).await.status,
        200
    );
    app.wait_for_activity(dev, "FAILED").await;
    let amplify = &app.tasks_of(dev).await[1];
    assert_eq!(amplify["status"], "FAILED");
    let errors = amplify["errors"].as_str().unwrap();
    assert!(errors.contains("(limits.configurations_bytes)"), "{errors}");
    assert!(errors.contains("at most 16384 are allowed"), "{errors}");
    assert!(
        amplify["configurations"].as_str().unwrap().len() < 1000,
        "the amplified configurations were never stored"
    );
    assert_eq!(executor.received().len(), 1, "nothing was sent for it");

    let fits = descriptor(json!({
        "dev": [fake_task("make", json!({})), fake_task("fits", refs(2))],
    }));
    app.put_descriptor("p", "2", &fits).await;
    let dev = app.start_activity("p", "2", "dev").await;
    let first = executor.wait_for(2).await.remove(1);
    let blob = json!({"status": "PROCESSED", "results": {"blob": "b".repeat(4000)}});
    assert_eq!(
        app.call_back(&first.callback_ref, Some(blob)).await.status,
        200
    );
    let sent = executor.wait_for(3).await.remove(2);
    assert_eq!(sent.configurations["blob"], "b".repeat(8000));
    assert_eq!(app.tasks_of(dev).await[1]["status"], "PROCESSING");
    app.stop().await;
}

on_both_backends!(a_timeout_beyond_thirty_days_is_refused_at_creation);
async fn a_timeout_beyond_thirty_days_is_refused_at_creation(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let body = descriptor(json!({
        "dev": [plain_task("t", json!({"timeout": 1e300}))],
        "test": [plain_task("t", json!({"timeout": 2_592_001}))],
        "prod": [plain_task("t", json!({"timeout": 2_592_000}))],
    }));
    app.put_descriptor("p", "1", &body).await;
    for (stage, found) in [("dev", "1e+300"), ("test", "2592001")] {
        let message = app
            .create_activity("p", "1", stage, false)
            .await
            .assert_error(422, "42201");
        assert_eq!(
            message,
            format!("task 1 (t) of stage {stage}: configurations.timeout must be at most 2592000 seconds (30 days), found {found}")
        );
    }
    assert_eq!(
        app.create_activity("p", "1", "prod", false).await.status,
        201
    );
    app.stop().await;
}
