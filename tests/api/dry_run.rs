//! `POST /activities?dryRun=true` (DESIGN §6): the plan of a create, each Azure task checked by
//! the simulator with the run request plus `previewRun: true`, every problem a create and a
//! start would meet, and nothing stored or run. Every test runs on SQLite and on PostgreSQL.
//!
//! * here: a clean plan, nothing stored, the preview's request the same as the run's;
//! * `problems`: each kind of problem, per task and for the activity;
//! * `access`: the API token, the secret headers, what stays an error.

mod access;
mod problems;

use odm_devops::config::{ListenerKind, ListenerSettings};
use serde_json::{json, Value};

use crate::azure::{
    azure_task, json_field, simulator_config, Azure, DEPLOY_APP, PROVISION_VM, SMOKE_TEST,
};
use crate::helpers::{descriptor, Answer, TestApp, TestDb, DEVOPS};
use crate::on_both_backends;

pub const BODY: &str = r#"{"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"}"#;

/// `dev`: provision a VM, then deploy on its IP (known once task 1 ran), then a smoke test.
fn clean_lifecycle() -> Value {
    json!({
        "dev": [
            azure_task("provision", PROVISION_VM, Some("main"),
                json!({"params": {"vmName": "vm-dev", "size": 2}})),
            azure_task("deploy", DEPLOY_APP, None,
                json!({"params": {"vmIp": "${dev.results.task1.vm.ip}", "port": "8080"}})),
            azure_task("smoke", SMOKE_TEST, None,
                json!({"params": {"endpoint": "http://$<dev.results.deploy.url>/health (${dev.status})"}})),
        ],
        "test": [azure_task("smoke", SMOKE_TEST, None, json!({"params": {"endpoint": "${dev.results.task2.url}"}}))],
    })
}

impl TestApp {
    pub async fn dry_run(&self, stage: &str, headers: &[(&str, &str)]) -> Value {
        let answer = self.dry_run_answer(stage, headers).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    async fn dry_run_answer(&self, stage: &str, headers: &[(&str, &str)]) -> Answer {
        let body = BODY.replace("\"dev\"", &format!("\"{stage}\""));
        self.send(
            "POST",
            &format!("{DEVOPS}/activities?dryRun=true"),
            Some(("application/json", body)),
            headers,
        )
        .await
    }

    /// Nothing of an activity is stored: no activity, no task, no outbox row.
    pub async fn assert_nothing_stored(&self) {
        assert_eq!(
            self.get_json(&format!("{DEVOPS}/activities")).await,
            json!([])
        );
        assert_eq!(self.get_json(&format!("{DEVOPS}/tasks")).await, json!([]));
        assert_eq!(
            self.get_json(&format!("{DEVOPS}/notifications")).await,
            json!([])
        );
    }
}

pub fn problems(task: &Value) -> Vec<String> {
    task["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["kind"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect()
}

on_both_backends!(a_clean_plan_is_checked_by_azure_and_nothing_is_stored_or_run);
async fn a_clean_plan_is_checked_by_azure_and_nothing_is_stored_or_run(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, executor| {
        settings.notifications.listeners = vec![listener_on(&executor.base_url)];
    })
    .await;
    let app = &azure.app;
    app.put_descriptor("p1", "1.0.0", &descriptor(clean_lifecycle()))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], true, "{plan:#}");
    assert_eq!(plan["problems"], json!([]));
    assert_eq!(
        plan["activity"],
        json!({"id": null, "dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev",
               "status": "PLANNED", "results": null, "errors": null, "createdAt": null,
               "startedAt": null, "finishedAt": null})
    );
    assert_eq!(
        plan["context"],
        json!({"dev": {"status": "RUNNING", "finishedAt": null, "results": null}})
    );
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    for (i, (task, name)) in tasks
        .iter()
        .zip(["provision", "deploy", "smoke"])
        .enumerate()
    {
        assert_eq!(task["position"], i + 1);
        assert_eq!(task["name"], name);
        assert_eq!(task["executor"], "azure-devops");
        assert_eq!(task["problems"], json!([]), "{task:#}");
        assert_eq!(task["preview"]["status"], "PASSED", "{task:#}");
        assert!(task["template"].is_string() && task["configurations"].is_string());
    }
    // Non-string params go as their JSON text, as a run sends them.
    let yaml = tasks[0]["preview"]["finalYaml"].as_str().unwrap();
    assert!(
        yaml.contains("default: \"vm-dev\"") && yaml.contains("default: \"2\""),
        "{yaml}"
    );
    assert_eq!(json_field(&tasks[0], "template")["branch"], "main");
    // Task 2 reads task 1's results: left as written, marked as resolving at run time.
    assert_eq!(tasks[1]["atRunTime"], json!(["${dev.results.task1.vm.ip}"]));
    assert_eq!(
        json_field(&tasks[1], "configurations"),
        json!({"params": {"vmIp": "${dev.results.task1.vm.ip}", "port": "8080"}})
    );
    // The stage's own status resolves (RUNNING); its results by name at run time.
    assert_eq!(tasks[2]["atRunTime"], json!(["$<dev.results.deploy.url>"]));
    assert_eq!(
        json_field(&tasks[2], "configurations")["params"]["endpoint"],
        "http://$<dev.results.deploy.url>/health (RUNNING)"
    );

    // Checked by Azure, run by nobody, stored nowhere.
    assert!(azure.sim.runs().is_empty());
    assert_eq!(azure.sim.stats().runs_created, 0);
    let previews = azure.sim.previews();
    assert_eq!(previews.len(), 3);
    app.assert_nothing_stored().await;
    assert!(azure.sim.listeners().received("events").is_empty());

    // The preview sent exactly the run request the real start sends, plus previewRun.
    let created = app.create_activity("p1", "1.0.0", "dev", true).await;
    assert_eq!(created.status, 201, "{created:?}");
    let task_id = app.tasks_of(created.json()["id"].as_i64().unwrap()).await[0]["id"]
        .as_i64()
        .unwrap();
    let run = azure.wait_for_run_of_task(task_id).await;
    let preview = previews
        .iter()
        .find(|p| p.pipeline_id == PROVISION_VM)
        .unwrap();
    let without_callback = |body: &Value| {
        let mut body = body.clone();
        body["templateParameters"]
            .as_object_mut()
            .unwrap()
            .remove("callbackRef");
        body
    };
    let mut expected = without_callback(&run.request_body);
    expected["previewRun"] = json!(true);
    assert_eq!(without_callback(&preview.request_body), expected);
    // The preview's callbackRef names no task and carries no valid token.
    assert_eq!(
        preview.template_parameters["callbackRef"],
        format!(
            "{}/api/v1/pp/devops/tasks/0/status?action=STOP&token=dry-run",
            app.address
        )
    );
    // The check above can fail: a real create does store rows and events.
    assert_ne!(
        app.get_json(&format!("{DEVOPS}/notifications")).await,
        json!([])
    );
    azure.stop().await;
}

/// An ODM listener on the simulator, so that a dry run recording events would show.
fn listener_on(simulator_base_url: &str) -> ListenerSettings {
    ListenerSettings {
        name: "events".into(),
        address: format!("{simulator_base_url}/_sim/listeners/events"),
        kind: ListenerKind::Odm,
        events: Vec::new(),
        template: None,
        headers: Default::default(),
    }
}
