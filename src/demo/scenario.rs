//! What the demo plays: a data product whose descriptor provisions a VM and deploys an app on
//! it in dev, smoke-tests the dev endpoint in test, and does it again in prod with the version
//! that passed; the three Azure DevOps pipelines it runs, as the simulator declares them; and
//! the service's settings.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{ExecutorSettings, ListenerKind, ListenerSettings, Settings};
use crate::secret::Secret;
use crate::simulator::{Behaviour, CallbackMode, PipelineSpec, SimulatorConfig, SimulatorHandle};

pub const PRODUCT: &str = "trip-execution";
pub const VERSION: &str = "1.0.0";
pub const STAGES: [&str; 3] = ["dev", "test", "prod"];
pub const ORGANIZATION: &str = "odm-demo";
pub const PROJECT: &str = "Data Products";

/// The ODM observer the demo's events go to (a listener of the simulator).
pub const LISTENER: &str = "demo-observer";
/// The smoke test has no callback step: Azure DevOps' service hook (a simulator subscription
/// with this password) tells the service its run completed.
pub const HOOK_SECRET: &str = "demo-service-hook-secret";

const PROVISION_VM: i32 = 1;
const DEPLOY_APP: i32 = 2;
const SMOKE_TEST: i32 = 3;

/// The descriptor: three stages, placeholders between tasks of a stage (the VM's IP) and
/// between stages (the dev endpoint tested in test, the version that passed deployed in prod).
pub fn descriptor() -> Value {
    json!({
        "dataProductDescriptor": "1.0.0",
        "info": {
            "fullyQualifiedName": "urn:org.opendatamesh:dataproducts:tripExecution",
            "name": PRODUCT, "version": VERSION, "domain": "transport",
            "description": "Trip events served by a small API on a VM"
        },
        "internalComponents": {"lifecycleInfo": {
            "dev": [
                task("provision-vm", PROVISION_VM, json!({
                    "params": {"vmName": "vm-trips-dev", "size": "Standard_B2s", "subnet": "10.1.0"}
                })),
                task("deploy-app", DEPLOY_APP, json!({
                    "params": {"vmIp": "${dev.results.task1.vm.ip}", "port": 8080, "appVersion": "1.4.2"},
                    "variables": {"ENVIRONMENT": "dev"}
                })),
            ],
            "test": [
                task("smoke-test", SMOKE_TEST, json!({
                    "params": {"endpoint": "${dev.results.deploy-app.url}", "suite": "regression"},
                    "stagesToSkip": ["load"]
                })),
            ],
            "prod": [
                task("provision-vm", PROVISION_VM, json!({
                    "params": {"vmName": "vm-trips-prod", "size": "Standard_D4s_v5", "subnet": "10.3.0"}
                })),
                task("deploy-app", DEPLOY_APP, json!({
                    "params": {"vmIp": "${prod.results.task1.vm.ip}", "port": 8080,
                               "appVersion": "${dev.results.deploy-app.version}"},
                    "variables": {"ENVIRONMENT": "prod"},
                    "stagesToSkip": ["seed_test_data"]
                })),
            ]
        }}
    })
}

fn task(name: &str, pipeline_id: i32, configurations: Value) -> Value {
    json!({
        "service": {"$href": "{azure-devops}"},
        "template": {
            "name": name,
            "definition": {"organization": ORGANIZATION, "project": PROJECT,
                           "pipelineId": pipeline_id, "branch": "main"}
        },
        "configurations": configurations
    })
}

/// The `params` of the task at `position` (1-based) of `stage`, as written in the descriptor.
pub fn written_params(stage: &str, position: usize) -> Value {
    descriptor()["internalComponents"]["lifecycleInfo"][stage][position - 1]["configurations"]
        ["params"]
        .clone()
}

/// The pipelines the descriptor runs, as their YAML would declare them; each run works for
/// `run_delay`, then calls back with results built from its parameters.
pub fn simulator_config(run_delay: Duration) -> SimulatorConfig {
    let pipeline = |id: i32, name: &str, parameters: &[&str], results: Value| {
        let behaviour = Behaviour {
            results,
            ..Behaviour::default()
        };
        PipelineSpec::calling_back(ORGANIZATION, PROJECT, id, name, parameters, behaviour)
    };
    SimulatorConfig {
        default_delay_ms: run_delay.as_millis() as u64,
        pipelines: vec![
            pipeline(
                PROVISION_VM,
                "provision-vm",
                &["vmName", "size", "subnet"],
                // Azure gives the first VM of a subnet its .4 address.
                json!({"vm": {"name": "${{ parameters.vmName }}", "size": "${{ parameters.size }}",
                              "ip": "${{ parameters.subnet }}.4"}}),
            ),
            pipeline(
                DEPLOY_APP,
                "deploy-app",
                &["vmIp", "port", "appVersion"],
                json!({"url": "http://${{ parameters.vmIp }}:${{ parameters.port }}/trips",
                       "version": "${{ parameters.appVersion }}"}),
            ),
            PipelineSpec::calling_back(
                ORGANIZATION,
                PROJECT,
                SMOKE_TEST,
                "smoke-test",
                &["endpoint", "suite"],
                Behaviour {
                    callback: CallbackMode::None,
                    // Real runs take minutes; this one at least long enough for the service
                    // to have recorded it before its hook arrives.
                    delay_ms: Some(run_delay.max(Duration::from_millis(1_500)).as_millis() as u64),
                    ..Behaviour::default()
                },
            ),
        ],
        ..SimulatorConfig::default()
    }
}

/// The built-in defaults (neither a config file nor the environment: the demo must run the
/// same everywhere), on a SQLite file in `dir`, with the `azure-devops` executor on the
/// simulator.
pub fn settings(dir: &Path, sim: &SimulatorHandle) -> anyhow::Result<Settings> {
    let mut settings = Settings::load_with_env(None, Vec::<(String, String)>::new())?;
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.public_url = String::new();
    settings.server.workers = 1;
    settings.database.url =
        Secret::new(format!("sqlite://{}", dir.join("odm-devops.db").display()));
    settings.database.pool_size = 4;
    settings.engine.tick_ms = 200;
    // The built-in policy gate: a stage starts only once the one before it was reached.
    settings.policy.stage_order = STAGES.iter().map(|s| s.to_string()).collect();
    settings.executors.clear();
    let mut azure = sim.executor_settings();
    azure.service_hook_secret = Some(Secret::new(HOOK_SECRET));
    settings
        .executors
        .insert("azure-devops".into(), ExecutorSettings::AzureDevops(azure));
    settings.notifications.listeners = vec![ListenerSettings {
        name: LISTENER.into(),
        address: sim.listener_address(LISTENER),
        kind: ListenerKind::Odm,
        events: Vec::new(),
        template: None,
        headers: Default::default(),
    }];
    Ok(settings)
}
