//! The whole service talking to the Azure DevOps + Entra simulator over loopback HTTP: the
//! `azure-devops` executor authenticates, starts pipeline runs, and the simulated pipelines call
//! the service back. Every test runs on SQLite and on PostgreSQL.
//!
//! * `flow`: callbacks completing tasks and stages, results and placeholders, exact run
//!   requests, the Entra token shared by many tasks.
//! * `faults`: throttling, unavailability, a gateway error after the run was created, runs
//!   refused by Azure or Entra.
//! * `control`: abort → cancel, per-activity credentials, `check_after_callback`, polling.

mod control;
mod faults;
mod flow;

use std::time::Duration;

use odm_devops::config::{AzureDevOpsSettings, ExecutorSettings, Settings};
use odm_devops::simulator::{
    Behaviour, CallbackMode, PipelineSpec, RunRecord, SimResult, Simulator, SimulatorConfig,
    SimulatorHandle,
};
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app, test_settings, TestApp, TestDb};

pub const ORG: &str = "odm-it";
pub const PROJECT: &str = "Data Platform";

/// The pipelines every test may use, as their YAML would declare them.
pub const PROVISION_VM: i32 = 1;
pub const DEPLOY_APP: i32 = 2;
pub const SMOKE_TEST: i32 = 3;
/// Stays in progress until the test finishes it (or it is cancelled).
pub const MANUAL: i32 = 4;
/// Succeeds without ever calling back.
pub const SILENT: i32 = 5;
/// Fails without ever calling back.
pub const SILENT_FAILING: i32 = 6;

fn pipeline(id: i32, name: &str, parameters: &[&str], behaviour: Behaviour) -> PipelineSpec {
    PipelineSpec::calling_back(ORG, PROJECT, id, name, parameters, behaviour)
}

pub fn simulator_config() -> SimulatorConfig {
    let reports = |results: Value| Behaviour {
        results,
        ..Behaviour::default()
    };
    let silent = |result: SimResult| Behaviour {
        callback: CallbackMode::None,
        result,
        delay_ms: Some(100),
        ..Behaviour::default()
    };
    SimulatorConfig {
        default_delay_ms: 50,
        pipelines: vec![
            pipeline(
                PROVISION_VM,
                "provision-vm",
                &["vmName", "size"],
                reports(json!({"vm": {"name": "${{ parameters.vmName }}", "ip": "10.1.0.4"}})),
            ),
            pipeline(
                DEPLOY_APP,
                "deploy-app",
                &["vmIp", "port"],
                reports(
                    json!({"url": "http://${{ parameters.vmIp }}:${{ parameters.port }}/hello"}),
                ),
            ),
            pipeline(
                SMOKE_TEST,
                "smoke-test",
                &["endpoint"],
                reports(json!({"checked": "${{ parameters.endpoint }}", "passed": true})),
            ),
            pipeline(
                MANUAL,
                "manual",
                &[],
                Behaviour {
                    manual: true,
                    results: json!({"approved": true}),
                    ..Behaviour::default()
                },
            ),
            pipeline(SILENT, "silent", &[], silent(SimResult::Succeeded)),
            pipeline(
                SILENT_FAILING,
                "silent-failing",
                &[],
                silent(SimResult::Failed),
            ),
        ],
        ..SimulatorConfig::default()
    }
}

/// A task of the descriptor running `pipeline_id` on the `azure-devops` executor.
pub fn azure_task(
    name: &str,
    pipeline_id: i32,
    branch: Option<&str>,
    configurations: Value,
) -> Value {
    let mut definition =
        json!({"organization": ORG, "project": PROJECT, "pipelineId": pipeline_id});
    if let Some(branch) = branch {
        definition["branch"] = json!(branch);
    }
    json!({
        "service": {"$href": "{azure-devops}"},
        "template": {"name": name, "definition": definition},
        "configurations": configurations
    })
}

/// The service, configured with an `azure-devops` executor pointing at a simulator.
pub struct Azure {
    pub sim: SimulatorHandle,
    pub app: TestApp,
}

impl Azure {
    pub async fn start(db: &TestDb) -> Azure {
        Self::start_with(db, simulator_config(), |_, _| {}).await
    }

    /// `tweak` may change the service's settings and the executor's before the service starts.
    pub async fn start_with(
        db: &TestDb,
        config: SimulatorConfig,
        tweak: impl FnOnce(&mut Settings, &mut AzureDevOpsSettings),
    ) -> Azure {
        let sim = Simulator::start(config)
            .await
            .expect("the simulator starts");
        let mut settings = test_settings(db, None);
        let mut executor = sim.executor_settings();
        tweak(&mut settings, &mut executor);
        settings.executors.insert(
            "azure-devops".into(),
            ExecutorSettings::AzureDevops(executor),
        );
        let app = spawn_app(settings).await;
        Azure { sim, app }
    }

    pub async fn stop(self) {
        self.app.stop().await;
        self.sim.stop().await;
    }

    /// The run the simulator created for a task, found through the task id in its callbackRef.
    pub fn run_of_task(&self, task_id: i64) -> Option<RunRecord> {
        let marker = format!("/api/v1/pp/devops/tasks/{task_id}/status?");
        self.sim.runs().into_iter().find(|run| {
            run.template_parameters
                .get("callbackRef")
                .is_some_and(|c| c.contains(&marker))
        })
    }

    pub async fn wait_for_run_of_task(&self, task_id: i64) -> RunRecord {
        eventually(&format!("a run for task {task_id}"), || async move {
            self.run_of_task(task_id)
        })
        .await
    }

    /// The task's run once the simulator completed it (after its callback, if any).
    pub async fn completed_run_of_task(&self, task_id: i64) -> RunRecord {
        let run = self.wait_for_run_of_task(task_id).await;
        self.sim
            .wait_for_completion(run.id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("run {} of task {task_id} never completed", run.id))
    }

    /// The callbackRef the service gives a task: its own address, the task, a token.
    #[track_caller]
    pub fn assert_callback_ref(&self, run: &RunRecord, task_id: i64) -> String {
        let callback_ref = run.template_parameters["callbackRef"].clone();
        let prefix = format!(
            "{}/api/v1/pp/devops/tasks/{task_id}/status?action=STOP&token=",
            self.app.address
        );
        assert!(
            callback_ref.starts_with(&prefix) && callback_ref.len() > prefix.len(),
            "{callback_ref} should start with {prefix} and carry a token"
        );
        callback_ref
    }

    /// Requests the simulator received, as `METHOD path → status`, for one path suffix.
    pub fn requests_to(&self, method: &str, path_suffix: &str) -> Vec<u16> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(path_suffix))
            .map(|r| r.status)
            .collect()
    }
}

/// A task's `results` (or `configurations`, `errors`, …) parsed from the ODM JSON string.
pub fn json_field(resource: &Value, key: &str) -> Value {
    resource[key]
        .as_str()
        .map(|text| serde_json::from_str(text).unwrap_or_else(|_| json!(text)))
        .unwrap_or(Value::Null)
}

/// The task's `errors` text.
pub fn errors_of(task: &Value) -> String {
    task["errors"].as_str().unwrap_or_default().to_owned()
}

/// Waits `duration` on the test's runtime.
pub async fn pause(duration: Duration) {
    actix_web::rt::time::sleep(duration).await;
}
