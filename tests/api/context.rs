//! The Context and placeholders (DESIGN §4): results flow from task to task and stage to stage.

use serde_json::{json, Value};

use crate::fakes::{FakeExecutor, Received};
use crate::helpers::*;
use crate::on_both_backends;

/// The seed's example: a VM's IP from the first dev task goes to the second, an endpoint URL
/// from dev goes to test.
fn seed_lifecycle() -> Value {
    json!({
        "dev": [
            fake_task("provision-vm", json!({"params": {"vmName": "vm-dev"}})),
            fake_task("deploy-app", json!({"params": {"vmIp": "${dev.results.task1.vm.ip}", "note": "deploying on $<dev.results.provision-vm.vm.name>"}}))
        ],
        "test": [
            fake_task("run-tests", json!({"params": {"endpointURL": "${dev.results.task2.url}", "literal": "$${not.a.placeholder}"}}))
        ]
    })
}

const VM: &str = r#"{"vm": {"name": "vm-dev", "ip": "198.168.20.120"}}"#;
const URL: &str = r#"{"url": "localhost:8121/helloWorld"}"#;

fn results(json_text: &str) -> Value {
    json!({"status": "PROCESSED", "results": serde_json::from_str::<Value>(json_text).unwrap()})
}

/// Runs dev then test, restarting the service between steps when `restarts` is set, and checks
/// the exact context and parameters each task received.
async fn seed_flow(db: TestDb, restarts: bool) {
    let (mut app, executor) = stepped_app_with_fake(&db).await;
    app.put_descriptor("vm-product", "1.0.0", &descriptor(seed_lifecycle()))
        .await;
    let restart = |app: TestApp| async {
        if restarts {
            app.stop().await;
            spawn_stepped_app(test_settings(&db, Some(&executor.address))).await
        } else {
            app
        }
    };

    let dev = app.start_activity("vm-product", "1.0.0", "dev").await;
    let provision = app.dispatched(&executor, 1).await;
    assert_eq!(
        provision.configurations["context"],
        json!({"dev": {"status": "RUNNING", "finishedAt": null, "results": null}})
    );
    assert_eq!(
        provision.configurations["params"],
        json!({"vmName": "vm-dev"})
    );
    app = restart(app).await;
    assert_eq!(
        app.call_back(&provision.callback_ref, Some(results(VM)))
            .await
            .status,
        200
    );

    let deploy = app.dispatched(&executor, 2).await;
    assert_eq!(
        deploy.configurations["context"],
        json!({"dev": {"status": "RUNNING", "finishedAt": null, "results": {"task1": serde_json::from_str::<Value>(VM).unwrap()}}})
    );
    assert_eq!(
        deploy.configurations["params"],
        json!({"vmIp": "198.168.20.120", "note": "deploying on vm-dev"}),
        "by position, and by name with the $<…> spelling"
    );
    assert_stored_as_sent(&app, &deploy).await;
    app = restart(app).await;
    assert_eq!(
        app.call_back(&deploy.callback_ref, Some(results(URL)))
            .await
            .status,
        200
    );
    let dev_done = app.wait_for_activity(dev, "PROCESSED").await;
    app = restart(app).await;

    app.start_activity("vm-product", "1.0.0", "test").await;
    let tests = app.dispatched(&executor, 3).await;
    assert_eq!(
        tests.configurations["context"],
        json!({
            "dev": {
                "status": "PROCESSED",
                "finishedAt": dev_done["finishedAt"],
                "results": {"task1": serde_json::from_str::<Value>(VM).unwrap(), "task2": serde_json::from_str::<Value>(URL).unwrap()}
            },
            "test": {"status": "RUNNING", "finishedAt": null, "results": null}
        })
    );
    assert_eq!(
        tests.configurations["params"],
        json!({"endpointURL": "localhost:8121/helloWorld", "literal": "${not.a.placeholder}"})
    );
    app.stop().await;
}

/// The task row keeps the configurations as they were sent: resolved, with the context. The
/// engine records them once the executor accepted the task.
async fn assert_stored_as_sent(app: &TestApp, sent: &Received) {
    app.drive_until_idle().await;
    let task = app.task(sent.id).await;
    let stored: Value = serde_json::from_str(task["configurations"].as_str().unwrap()).unwrap();
    assert_eq!(
        stored, sent.configurations,
        "the sent configurations are stored"
    );
}

on_both_backends!(results_flow_from_task_to_task_and_stage_to_stage);
async fn results_flow_from_task_to_task_and_stage_to_stage(db: TestDb) {
    seed_flow(db, false).await;
}

on_both_backends!(results_flow_across_restarts);
async fn results_flow_across_restarts(db: TestDb) {
    seed_flow(db, true).await;
}

on_both_backends!(typed_values_and_quotes_survive_substitution);
async fn typed_values_and_quotes_survive_substitution(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    let lifecycle = json!({"dev": [
        fake_task("make", json!({})),
        fake_task("use", json!({
            "port": "${dev.results.task1.port}",
            "flags": "${dev.results.task1.flags}",
            "first": "${dev.results.make.hosts[0]}",
            "quoted": "say ${dev.results.task1.quote}!",
            "object": "${dev.results.task1.nested}"
        }))
    ]});
    app.put_descriptor("p", "1", &descriptor(lifecycle)).await;
    app.start_activity("p", "1", "dev").await;
    let make = app.dispatched(&executor, 1).await;
    let produced = json!({"port": 8080, "flags": [true, false], "hosts": ["a.example", "b.example"],
                          "quote": "he said \"hi\" \\ bye", "nested": {"k": null}});
    app.call_back(
        &make.callback_ref,
        Some(json!({"status": "PROCESSED", "results": produced})),
    )
    .await;
    let used = app.dispatched(&executor, 2).await;
    let c = &used.configurations;
    assert_eq!(
        c["port"],
        json!(8080),
        "a whole-string placeholder keeps the number"
    );
    assert_eq!(c["flags"], json!([true, false]));
    assert_eq!(c["first"], "a.example");
    assert_eq!(
        c["quoted"], "say he said \"hi\" \\ bye!",
        "quotes and backslashes never corrupt the JSON"
    );
    assert_eq!(c["object"], json!({"k": null}));
    app.stop().await;
}

on_both_backends!(an_unresolvable_placeholder_fails_the_task_before_dispatch);
async fn an_unresolvable_placeholder_fails_the_task_before_dispatch(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    let lifecycle = json!({
        "dev": [fake_task("a", json!({}))],
        "test": [fake_task("b", json!({"params": {"ip": "${dev.results.task1.vm.ip}"}})), fake_task("c", json!({}))]
    });
    app.put_descriptor("p", "1", &descriptor(lifecycle)).await;
    let dev = app.start_activity("p", "1", "dev").await;
    let a = app.dispatched(&executor, 1).await;
    app.call_back(
        &a.callback_ref,
        Some(json!({"status": "PROCESSED", "results": {"vm": {"name": "x"}}})),
    )
    .await;
    app.wait_for_activity(dev, "PROCESSED").await;

    let test = app.start_activity("p", "1", "test").await;
    app.wait_for_activity(test, "FAILED").await;
    let tasks = app.tasks_of(test).await;
    let errors = tasks[0]["errors"].as_str().unwrap();
    assert!(
        errors.contains("${dev.results.task1.vm.ip}") && errors.contains("ip"),
        "{errors}"
    );
    assert_eq!(tasks[1]["status"], "ABORTED");
    assert_eq!(executor.received().len(), 1, "nothing reached the executor");
    app.stop().await;
}

on_both_backends!(on_missing_keep_leaves_the_placeholder_as_written);
async fn on_missing_keep_leaves_the_placeholder_as_written(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.placeholders.on_missing = odm_devops::config::OnMissing::Keep;
    let app = spawn_stepped_app(settings).await;
    let lifecycle =
        json!({"dev": [fake_task("a", json!({"later": "${prod.results.task1.url}"}))], "prod": []});
    app.put_descriptor("p", "1", &descriptor(lifecycle)).await;
    app.start_activity("p", "1", "dev").await;
    let a = app.dispatched(&executor, 1).await;
    assert_eq!(a.configurations["later"], "${prod.results.task1.url}");
    app.stop().await;
}

on_both_backends!(failed_activities_stay_out_of_the_context);
async fn failed_activities_stay_out_of_the_context(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    let lifecycle =
        json!({"dev": [fake_task("a", json!({}))], "test": [fake_task("b", json!({}))]});
    app.put_descriptor("p", "1", &descriptor(lifecycle)).await;
    for (n, (stage, outcome)) in [
        ("dev", json!({"status": "PROCESSED", "results": {"v": 1}})),
        ("dev", json!({"status": "PROCESSED", "results": {"v": 2}})),
        ("test", json!({"status": "FAILED", "errors": "red"})),
    ]
    .into_iter()
    .enumerate()
    {
        let id = app.start_activity("p", "1", stage).await;
        let task = app.dispatched(&executor, n + 1).await;
        app.call_back(&task.callback_ref, Some(outcome)).await;
        app.drive_until_idle().await;
        assert!(app.activity(id).await["finishedAt"].is_string(), "ended");
    }
    app.start_activity("p", "1", "test").await;
    let last = app.dispatched(&executor, 4).await;
    let context = &last.configurations["context"];
    assert_eq!(
        context["dev"]["results"],
        json!({"task1": {"v": 2}}),
        "the latest PROCESSED dev"
    );
    assert_eq!(
        context["test"],
        json!({"status": "RUNNING", "finishedAt": null, "results": null}),
        "the failed test run is left out"
    );
    app.stop().await;
}

on_both_backends!(contexts_read_together_are_each_what_reading_it_alone_gives);
/// Dispatches handed over together read their Contexts together (on PostgreSQL one statement,
/// `db::contexts_of`): each must be exactly what its own read gives, its version's PROCESSED
/// stages and itself, never another version's or another product's.
async fn contexts_read_together_are_each_what_reading_it_alone_gives(db: TestDb) {
    use odm_devops::db::{self as store, DbError};
    use odm_devops::domain::{ActivityId, ActivityKeys};

    let (app, executor) = stepped_app_with_fake(&db).await;
    let stages = json!({"dev": [fake_task("d", json!({}))], "test": [fake_task("t", json!({}))]});
    for (product, version) in [("p1", "1.0.0"), ("p1", "2.0.0"), ("p2", "1.0.0")] {
        app.put_descriptor(product, version, &descriptor(stages.clone()))
            .await;
    }
    // p1 1.0.0: dev PROCESSED, then test running; p2 1.0.0: dev PROCESSED; p1 2.0.0: dev running.
    for (n, product) in [(1, "p1"), (2, "p2")] {
        let dev = app.start_activity(product, "1.0.0", "dev").await;
        let sent = app.dispatched(&executor, n).await;
        let answer = app.call_back(&sent.callback_ref, Some(results(URL))).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        app.wait_for_activity(dev, "PROCESSED").await;
    }
    let test = app.start_activity("p1", "1.0.0", "test").await;
    let newer = app.start_activity("p1", "2.0.0", "dev").await;
    app.drive_until_idle().await;
    app.stop().await;

    let keys = |id: i64, version: &str, stage: &str| ActivityKeys {
        id: ActivityId(id),
        data_product_id: "p1".into(),
        data_product_version: version.into(),
        stage: stage.into(),
        sealed_secrets: None,
    };
    let currents = vec![keys(test, "1.0.0", "test"), keys(newer, "2.0.0", "dev")];
    let (together, alone) = db
        .open()
        .await
        .read(move |conn| {
            let together = store::contexts_of(conn, &currents)?;
            let mut alone = Vec::new();
            for c in &currents {
                let (product, version) = (&c.data_product_id, &c.data_product_version);
                alone.push(store::context_rows(conn, product, version, c.id)?);
            }
            Ok::<_, DbError>((together, alone))
        })
        .await
        .unwrap();
    for (current, alone) in [test, newer].into_iter().zip(alone) {
        let read_together = &together[&ActivityId(current)];
        assert_eq!(format!("{read_together:?}"), format!("{alone:?}"));
    }
    let stages_of = |id: i64| together[&ActivityId(id)].activities.len();
    assert_eq!(stages_of(test), 2, "dev PROCESSED and test itself");
    assert_eq!(
        stages_of(newer),
        1,
        "only itself: 1.0.0's dev is another version's"
    );
}
