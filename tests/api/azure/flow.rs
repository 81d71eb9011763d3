//! Pipelines calling back complete tasks and stages; results flow into later tasks and stages;
//! the run requests carry exactly what the tasks say; one Entra token serves many tasks.

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::*;
use crate::helpers::{descriptor, TestDb, DEVOPS};
use crate::on_both_backends;

on_both_backends!(callbacks_complete_a_stage_and_results_flow_to_later_tasks_and_stages);
async fn callbacks_complete_a_stage_and_results_flow_to_later_tasks_and_stages(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [
            azure_task("provision", PROVISION_VM, Some("main"),
                       json!({"params": {"vmName": "vm-dev", "size": "Standard_B2s"}})),
            azure_task("deploy", DEPLOY_APP, Some("main"),
                       json!({"params": {"vmIp": "${dev.results.task1.vm.ip}", "port": 8121}})),
        ],
        "test": [
            azure_task("smoke", SMOKE_TEST, None,
                       json!({"params": {"endpoint": "${dev.results.deploy.url}"}})),
        ]
    });
    app.put_descriptor("vm", "1.0.0", &descriptor(lifecycle))
        .await;

    let dev = app.start_activity("vm", "1.0.0", "dev").await;
    let activity = app.wait_for_activity(dev, "PROCESSED").await;
    let vm = json!({"name": "vm-dev", "ip": "10.1.0.4"});
    let url = "http://10.1.0.4:8121/hello";
    assert_eq!(
        json_field(&activity, "results"),
        json!({"task1": {"vm": vm}, "task2": {"url": url}})
    );
    let tasks = app.tasks_of(dev).await;
    let expected_results = [json!({"vm": vm}), json!({"url": url})];
    for (task, results) in tasks.iter().zip(&expected_results) {
        assert_eq!(task["status"], "PROCESSED", "{task}");
        assert_eq!(&json_field(task, "results"), results);
        let id = task["id"].as_i64().unwrap();
        let run = azure.completed_run_of_task(id).await;
        assert_eq!(run.result.as_deref(), Some("succeeded"));
        assert!(
            task["runUrl"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/_build/results?buildId={}", run.id)),
            "{task}"
        );
        let callback = run.callback.clone().expect("the pipeline called back");
        assert_eq!(callback.status, Some(200), "{callback:?}");
        assert_eq!(
            callback.body,
            Some(json!({"status": "PROCESSED", "results": results}))
        );
        assert_eq!(callback.url, azure.assert_callback_ref(&run, id));
    }

    // The second task got the first one's IP, resolved before the run request left.
    let deploy_run = azure.run_of_task(tasks[1]["id"].as_i64().unwrap()).unwrap();
    assert_eq!(deploy_run.template_parameters["vmIp"], "10.1.0.4");
    assert_eq!(deploy_run.template_parameters["port"], "8121");
    let stored = json_field(&tasks[1], "configurations");
    assert_eq!(stored["params"]["vmIp"], "10.1.0.4");
    assert_eq!(stored["context"]["dev"]["status"], "RUNNING");
    assert_eq!(stored["context"]["dev"]["results"]["task1"]["vm"], vm);

    // The next stage references the previous stage's task by name.
    let test = app.start_activity("vm", "1.0.0", "test").await;
    app.wait_for_activity(test, "PROCESSED").await;
    let smoke = app.tasks_of(test).await.remove(0);
    let smoke_run = azure.run_of_task(smoke["id"].as_i64().unwrap()).unwrap();
    assert_eq!(smoke_run.template_parameters["endpoint"], url);
    assert_eq!(
        smoke_run.ref_name, None,
        "no branch: the pipeline's default"
    );
    assert_eq!(azure.sim.runs().len(), 3, "one run per task");

    let current = app
        .get(&format!("{DEVOPS}/lifecycles/vm/1.0.0/current"))
        .await
        .json();
    assert_eq!(current["stage"], "test");
    assert_eq!(
        json_field(&current, "results"),
        json!({"task1": {"checked": url, "passed": true}})
    );
    let history = app
        .get(&format!("{DEVOPS}/lifecycles/vm/1.0.0"))
        .await
        .json();
    let stages: Vec<&Value> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["stage"])
        .collect();
    assert_eq!(stages, [&json!("dev"), &json!("test")]);
    azure.stop().await;
}

on_both_backends!(the_run_requests_carry_exactly_what_the_tasks_say);
async fn the_run_requests_carry_exactly_what_the_tasks_say(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let mut pipeline_id_as_text = azure_task(
        "spelled",
        DEPLOY_APP,
        Some("refs/tags/v1.2.0"),
        json!({"params": {"vmIp": "10.0.0.9", "port": "80"}, "stageToSkip": ["canary"]}),
    );
    pipeline_id_as_text["template"]["definition"]["pipelineId"] = json!("2");
    let lifecycle = json!({"dev": [
        azure_task("shaped", PROVISION_VM, Some("develop"), json!({
            "params": {"vmName": "vm-a", "size": {"cpu": 2, "disks": ["os", "data"]}},
            "stagesToSkip": ["lint", "docs"],
            "variables": {"ENV": "dev", "REPLICAS": 3, "TOKEN": {"value": "t0k", "isSecret": true}}
        })),
        azure_task("bare", SMOKE_TEST, None, json!({})),
        pipeline_id_as_text,
    ]});
    app.put_descriptor("shapes", "1.0.0", &descriptor(lifecycle))
        .await;
    let id = app.start_activity("shapes", "1.0.0", "dev").await;
    app.wait_for_activity(id, "PROCESSED").await;

    let tasks = app.tasks_of(id).await;
    let body_of = |position: usize| {
        let task_id = tasks[position]["id"].as_i64().unwrap();
        let run = azure.run_of_task(task_id).unwrap();
        assert_eq!(run.authenticated_with, "bearer");
        let callback_ref = azure.assert_callback_ref(&run, task_id);
        let mut body = run.request_body;
        assert_eq!(body["templateParameters"]["callbackRef"], callback_ref);
        body["templateParameters"]["callbackRef"] = json!("<callbackRef>");
        body
    };
    assert_eq!(
        body_of(0),
        json!({
            "resources": {"repositories": {"self": {"refName": "refs/heads/develop"}}},
            "templateParameters": {"vmName": "vm-a", "size": r#"{"cpu":2,"disks":["os","data"]}"#,
                                   "callbackRef": "<callbackRef>"},
            "stagesToSkip": ["lint", "docs"],
            "variables": {"ENV": {"value": "dev"}, "REPLICAS": {"value": "3"},
                          "TOKEN": {"value": "t0k", "isSecret": true}}
        })
    );
    assert_eq!(
        body_of(1),
        json!({"templateParameters": {"callbackRef": "<callbackRef>"}, "stagesToSkip": []})
    );
    assert_eq!(
        body_of(2),
        json!({
            "resources": {"repositories": {"self": {"refName": "refs/tags/v1.2.0"}}},
            "templateParameters": {"vmIp": "10.0.0.9", "port": "80", "callbackRef": "<callbackRef>"},
            "stagesToSkip": ["canary"]
        })
    );
    let runs: Vec<String> = azure
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/runs"))
        .map(|r| format!("{}?{}", r.path, r.query))
        .collect();
    assert_eq!(
        runs,
        [1, 3, 2].map(|p| format!("/{ORG}/{PROJECT}/_apis/pipelines/{p}/runs?api-version=7.1"))
    );
    azure.stop().await;
}

on_both_backends!(one_entra_token_serves_concurrent_activities_and_is_renewed_after_expiry);
async fn one_entra_token_serves_concurrent_activities_and_is_renewed_after_expiry(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [
            azure_task("provision", PROVISION_VM, None, json!({"params": {"vmName": "vm"}})),
            azure_task("deploy", DEPLOY_APP, None, json!({"params": {"vmIp": "${dev.results.task1.vm.ip}"}})),
        ],
        "test": [azure_task("smoke", SMOKE_TEST, None, json!({}))]
    });
    let products = ["orders", "payments", "shipping", "billing"];
    for product in products {
        app.put_descriptor(product, "1.0.0", &descriptor(lifecycle.clone()))
            .await;
    }
    let ids = join_all(products.map(|p| app.start_activity(p, "1.0.0", "dev"))).await;
    for id in &ids {
        app.wait_for_activity(*id, "PROCESSED").await;
    }
    assert_eq!(azure.sim.runs().len(), 8);
    assert!(azure
        .sim
        .runs()
        .iter()
        .all(|r| r.authenticated_with == "bearer"));
    assert_eq!(
        (azure.sim.token_requests(), azure.sim.tokens_issued()),
        (1, 1),
        "eight runs, four activities at once, one token"
    );

    // The simulator stops accepting the cached token: one refusal, one new token, one run.
    azure.sim.expire_tokens();
    let test = app.start_activity("orders", "1.0.0", "test").await;
    app.wait_for_activity(test, "PROCESSED").await;
    assert_eq!(azure.sim.tokens_issued(), 2);
    assert_eq!(azure.sim.runs().len(), 9);
    let statuses = azure.requests_to("POST", "/pipelines/3/runs");
    assert_eq!(
        statuses,
        [401, 200],
        "refused with the stale token, then run"
    );
    azure.stop().await;
}

on_both_backends!(a_short_lived_token_is_renewed_before_azure_refuses_it);
async fn a_short_lived_token_is_renewed_before_azure_refuses_it(db: TestDb) {
    let config = SimulatorConfig {
        token_expires_in_secs: 2,
        ..simulator_config()
    };
    let azure = Azure::start_with(&db, config, |_, _| {}).await;
    let app = &azure.app;
    app.put_descriptor(
        "p",
        "1.0.0",
        &descriptor(
            json!({"dev": [azure_task("smoke", SMOKE_TEST, None, json!({}))],
                           "test": [azure_task("smoke", SMOKE_TEST, None, json!({}))]}),
        ),
    )
    .await;
    let dev = app.start_activity("p", "1.0.0", "dev").await;
    app.wait_for_activity(dev, "PROCESSED").await;
    assert_eq!(azure.sim.token_requests(), 1);
    pause(Duration::from_millis(2_100)).await;
    let test = app.start_activity("p", "1.0.0", "test").await;
    app.wait_for_activity(test, "PROCESSED").await;
    assert_eq!(
        azure.sim.token_requests(),
        2,
        "a new token for the next run"
    );
    assert!(
        !azure.requests_to("POST", "/runs").contains(&401),
        "never sent an expired token"
    );
    azure.stop().await;
}
