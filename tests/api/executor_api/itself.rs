//! The protocol both ways: this binary's engine uses a second instance of itself, serving the
//! executor API in front of the simulator, as its `odm-http` executor. The second instance
//! starts the runs with the first one's callbackRef; the pipelines call the first one back; its
//! `check_after_callback` asks the second one for the status, which asks Azure.

use odm_devops::config::{ExecutorSettings, Settings};
use serde_json::json;

use super::*;
use crate::helpers::{descriptor, fake_executor, spawn_app, test_settings};

fn remote_task(name: &str, pipeline_id: i32, configurations: Value) -> Value {
    json!({
        "service": {"$href": "{fake}"},
        "template": {"name": name, "definition": template(pipeline_id)},
        "configurations": configurations
    })
}

on_both_backends!(an_engine_runs_its_tasks_through_another_instance_as_its_executor);
async fn an_engine_runs_its_tasks_through_another_instance_as_its_executor(db: TestDb) {
    let executor_side = Azure::start(&db).await;
    // The engine's own database: the executor's engine must never see its tasks.
    let engine_db = TestDb::new(db.backend).expect("a second database");
    let mut settings: Settings = test_settings(&engine_db, Some(&executor_side.app.address));
    fake_executor(&mut settings).check_after_callback = true;
    settings.executors.remove("azure-devops");
    assert!(matches!(
        settings.executors["fake"],
        ExecutorSettings::OdmHttp(_)
    ));
    let engine = spawn_app(settings).await;

    let lifecycle = json!({"dev": [
        remote_task("provision", PROVISION_VM, json!({"params": {"vmName": "vm-7", "size": "S"}})),
        remote_task("smoke", crate::azure::SMOKE_TEST,
                    json!({"params": {"endpoint": "http://${dev.results.task1.vm.ip}/"}})),
    ]});
    engine
        .put_descriptor("vm", "1.0.0", &descriptor(lifecycle))
        .await;
    let activity = engine.start_activity("vm", "1.0.0", "dev").await;
    let done = engine.wait_for_activity(activity, "PROCESSED").await;
    let results: Value = serde_json::from_str(done["results"].as_str().unwrap()).unwrap();
    assert_eq!(
        results["task1"]["vm"],
        json!({"name": "vm-7", "ip": "10.1.0.4"})
    );
    assert_eq!(results["task2"]["checked"], "http://10.1.0.4/");

    let tasks = engine.tasks_of(activity).await;
    let runs = executor_side.sim.runs();
    assert_eq!(runs.len(), 2, "one run per task");
    for task in &tasks {
        let id = task["id"].as_i64().unwrap();
        let callback = format!(
            "{}/api/v1/pp/devops/tasks/{id}/status?action=STOP&token=",
            engine.address
        );
        let run = runs
            .iter()
            .find(|r| r.template_parameters["callbackRef"].starts_with(&callback))
            .unwrap_or_else(|| panic!("no run calls task {id} back: {runs:?}"));
        assert_eq!(run.callback.as_ref().unwrap().status, Some(200));
        // The executor side keeps the mapping and reports the run's end.
        let status = task_status(&executor_side.app, id, &[]).await;
        assert_eq!(status.json(), "PROCESSED");
    }
    // The engine confirmed each callback with the executor side (check_after_callback).
    let confirmations = executor_side
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/runs/"))
        .count();
    assert!(confirmations >= 2, "{confirmations}");
    engine.stop().await;
    executor_side.stop().await;
}
