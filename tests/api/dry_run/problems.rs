//! Each problem a dry run lists: per task (placeholders, executors, limits, Azure's refusal or
//! absence) and for the activity (START's gates).

use odm_devops::config::{ExecutorSettings, OdmHttpSettings, OnMissing};
use odm_devops::simulator::{FaultKind, FaultSpec};
use serde_json::{json, Value};

use super::problems;
use crate::azure::{
    azure_task, simulator_config, Azure, DEPLOY_APP, MANUAL, PROVISION_VM, SMOKE_TEST,
};
use crate::helpers::{descriptor, TestDb};
use crate::on_both_backends;

on_both_backends!(each_task_lists_its_problems_and_nothing_is_stored_or_run);
async fn each_task_lists_its_problems_and_nothing_is_stored_or_run(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [
            // `colour` is declared nowhere in the pipeline's YAML: only Azure can tell.
            azure_task("provision", PROVISION_VM, None,
                json!({"params": {"vmName": "vm-dev", "colour": "blue"}})),
            // A stage that does not exist: the create itself would refuse it.
            azure_task("deploy", DEPLOY_APP, None,
                json!({"params": {"vmIp": "${staging.results.task1.ip}", "port": "${test.results.task1.port}"}})),
            {"service": {"$href": "{gitlab}"}, "template": {"name": "elsewhere", "definition": {}}},
            // Stage test exists but never ran: a start now would fail this task before sending it.
            azure_task("smoke", SMOKE_TEST, None,
                json!({"params": {"endpoint": "${test.results.task1.url}"}})),
        ],
        "test": [azure_task("check", SMOKE_TEST, None, json!({"params": {"endpoint": "x"}}))],
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], false);
    assert_eq!(plan["problems"], json!([]), "{plan:#}");
    let tasks = plan["tasks"].as_array().unwrap();

    let first = problems(&tasks[0]);
    assert_eq!(tasks[0]["preview"]["status"], "REFUSED");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("preview: Azure DevOps rejected the preview run request (HTTP 400): Unexpected parameter 'colour'"), "{first:?}");
    assert!(
        first[0].contains("must be declared in the `parameters:` section"),
        "{first:?}"
    );

    let second = problems(&tasks[1]);
    assert_eq!(
        second.len(),
        2,
        "the bad reference once, then the unresolved one: {second:?}"
    );
    assert!(second[0].starts_with("placeholder: placeholder ${staging.results.task1.ip} at task2.configurations.params.vmIp: unknown stage staging"), "{second:?}");
    assert!(
        second[1]
            .starts_with("placeholder: placeholder ${test.results.task1.port} did not resolve"),
        "{second:?}"
    );
    // Still previewed: the parameters are declared, so Azure has nothing against it.
    assert_eq!(tasks[1]["preview"]["status"], "PASSED");

    assert_eq!(
        problems(&tasks[2]),
        ["executor: Executor [gitlab] not supported"]
    );
    assert_eq!(tasks[2]["preview"]["status"], "NOT_CHECKED");

    let fourth = problems(&tasks[3]);
    assert_eq!(fourth.len(), 1, "{fourth:?}");
    assert!(fourth[0].starts_with("placeholder: placeholder ${test.results.task1.url} did not resolve: no PROCESSED or RUNNING activity of stage test"), "{fourth:?}");
    assert!(
        fourth[0].ends_with("the task would fail before it is sent"),
        "{fourth:?}"
    );
    assert_eq!(tasks[3]["atRunTime"], json!([]));

    assert!(azure.sim.runs().is_empty());
    assert_eq!(azure.sim.stats().runs_created, 0);
    app.assert_nothing_stored().await;
    // The create refuses what the plan said it would.
    let created = app.create_activity("p1", "1.0.0", "dev", false).await;
    let message = created.assert_error(422, "42201");
    assert!(message.contains("unknown stage staging"), "{message}");
    azure.stop().await;
}

on_both_backends!(policy_refusals_a_start_would_meet_are_listed);
async fn policy_refusals_a_start_would_meet_are_listed(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.policy.stage_order = vec!["dev".into(), "test".into(), "prod".into()];
    })
    .await;
    let app = &azure.app;
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    // dev's run stays in progress until finished by hand: its activity stays PROCESSING.
    let waits = azure_task("wait", MANUAL, None, json!({}));
    let lifecycle = json!({"dev": [waits], "prod": [task]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let plan = app.dry_run("prod", &[]).await;
    assert_eq!(plan["valid"], false);
    let listed = plan["problems"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{plan:#}");
    assert_eq!(listed[0]["kind"], "policy");
    let message = listed[0]["message"].as_str().unwrap();
    assert!(message.starts_with("START would be refused: "), "{message}");
    assert!(
        message.contains("stage-order") && message.contains("test or later"),
        "{message}"
    );
    assert_eq!(plan["tasks"][0]["problems"], json!([]));
    assert_eq!(plan["tasks"][0]["preview"]["status"], "PASSED");
    // The first stage is always allowed.
    assert_eq!(app.dry_run("dev", &[]).await["valid"], true);
    app.assert_nothing_stored().await;
    // Activities already there: the create would be refused, and so would a start.
    let planned = app.create_activity("p1", "1.0.0", "prod", false).await;
    let planned = planned.json()["id"].as_i64().unwrap();
    let dev = app.create_activity("p1", "1.0.0", "dev", true).await;
    assert_eq!(dev.status, 201, "{dev:?}");
    let plan = app.dry_run("prod", &[]).await;
    let conflicts: Vec<&str> = plan["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "conflict")
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(conflicts.len(), 2, "{plan:#}");
    assert!(
        conflicts[0].starts_with(&format!("activity {planned} is already PLANNED"))
            && conflicts[0].contains("42202"),
        "{conflicts:?}"
    );
    assert!(
        conflicts[1].contains("is PROCESSING") && conflicts[1].contains("40901"),
        "{conflicts:?}"
    );
    azure.stop().await;
}

on_both_backends!(a_policy_service_down_is_a_problem_not_an_error);
async fn a_policy_service_down_is_a_problem_not_an_error(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.policy.active = true;
        settings.policy.address = Some(format!(
            "http://127.0.0.1:{}",
            crate::helpers::refused_port()
        ));
        settings.policy.timeout_ms = 2_000;
    })
    .await;
    let app = &azure.app;
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    app.put_descriptor("p1", "1.0.0", &descriptor(json!({"dev": [task]})))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], false);
    let message = plan["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("policy service is unreachable"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "no internal address: {message}"
    );
    azure.stop().await;
}

on_both_backends!(limits_a_provider_down_and_executors_that_cannot_preview);
async fn limits_a_provider_down_and_executors_that_cannot_preview(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, executor| {
        settings.limits.configurations_bytes = 400;
        settings.limits.placeholders_per_task = 2;
        // Quick retries: the unavailable provider is given up on soon.
        executor.max_retries = 1;
        let odm = OdmHttpSettings {
            active: true,
            // Never contacted: an odm-http executor cannot preview a run.
            address: format!("http://127.0.0.1:{}", crate::helpers::refused_port()),
            check_after_callback: false,
            connect_timeout_ms: 1000,
            request_timeout_ms: 1000,
        };
        let retired = OdmHttpSettings {
            active: false,
            ..odm.clone()
        };
        settings
            .executors
            .insert("gitlab".into(), ExecutorSettings::OdmHttp(odm));
        settings
            .executors
            .insert("retired".into(), ExecutorSettings::OdmHttp(retired));
    })
    .await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [
            azure_task("big", SMOKE_TEST, None, json!({"params": {"endpoint": "e".repeat(500)}})),
            azure_task("many", SMOKE_TEST, None,
                json!({"params": {"endpoint": "${dev.status} ${dev.status} ${dev.status}"}})),
            {"service": {"$href": "{gitlab}"}, "template": {"name": "elsewhere", "definition": {}}},
            {"template": {"name": "no-executor"}},
            azure_task("down", SMOKE_TEST, None, json!({"params": {"endpoint": "x"}})),
            {"service": {"$href": "{retired}"}, "template": {"name": "inactive", "definition": {}}},
        ],
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    // Azure DevOps answers 503 to the run route for a while: the checks of `many` and `down`.
    azure.sim.add_fault(FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::Unavailable,
        count: 100,
        retry_after_secs: None,
        delay_ms: None,
    });
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], false);
    let tasks = plan["tasks"].as_array().unwrap();

    let big = problems(&tasks[0]);
    assert_eq!(big.len(), 1, "{big:?}");
    assert!(
        big[0].starts_with(
            "limit: the task's resolved configurations (context included) are more than 400 bytes"
        ),
        "{big:?}"
    );
    assert!(big[0].contains("limits.configurations_bytes"), "{big:?}");
    assert_eq!(
        tasks[0]["preview"]["status"], "NOT_CHECKED",
        "not sendable: not sent"
    );

    let many = problems(&tasks[1]);
    assert!(
        many.iter().any(
            |p| p.starts_with("limit: task 2 (many) of stage dev has 3 placeholders")
                && p.contains("limits.placeholders_per_task")
        ),
        "{many:?}"
    );
    assert_eq!(tasks[1]["preview"]["status"], "UNAVAILABLE");
    assert!(many.iter().any(|p| p.starts_with("preview: the run request could not be checked: Azure DevOps failed the preview run request with HTTP 503")), "{many:?}");

    assert_eq!(tasks[2]["executor"], "gitlab");
    assert_eq!(
        tasks[2]["preview"],
        json!({"status": "NOT_CHECKED", "finalYaml": null})
    );
    assert_eq!(tasks[2]["problems"], json!([]));
    assert_eq!(tasks[3]["executor"], Value::Null);
    assert_eq!(tasks[3]["preview"]["status"], "NOT_CHECKED");
    assert_eq!(tasks[3]["problems"], json!([]));
    assert_eq!(tasks[4]["preview"]["status"], "UNAVAILABLE");
    // An executor configured but not active is unknown, as at dispatch.
    assert_eq!(
        problems(&tasks[5]),
        ["executor: Executor [retired] not supported"]
    );
    assert!(azure.sim.runs().is_empty());
    app.assert_nothing_stored().await;
    azure.stop().await;
}

on_both_backends!(with_on_missing_keep_an_unresolved_placeholder_is_sent_as_written);
async fn with_on_missing_keep_an_unresolved_placeholder_is_sent_as_written(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.placeholders.on_missing = OnMissing::Keep;
    })
    .await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [azure_task("smoke", SMOKE_TEST, None,
            json!({"params": {"endpoint": "${test.results.task1.url}"}}))],
        "test": [azure_task("check", SMOKE_TEST, None, json!({"params": {"endpoint": "x"}}))],
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], true, "{plan:#}");
    let task = &plan["tasks"][0];
    assert_eq!(task["problems"], json!([]));
    assert_eq!(task["atRunTime"], json!([]));
    let previews = azure.sim.previews();
    assert_eq!(
        previews[0].template_parameters["endpoint"],
        "${test.results.task1.url}"
    );
    azure.stop().await;
}
