//! What is run: one simulated pipeline that answers at once, and one descriptor per activity
//! whose `dev` stage has T tasks on it. Each task tells the pipeline which activity and task it
//! is (so the simulator's records can be paired without asking the service), and every task
//! after the first passes the previous task's result on through a placeholder, as real
//! descriptors do.

use serde_json::{json, Value};

pub(crate) const PRODUCT: &str = "bench";
pub(crate) const STAGE: &str = "dev";
pub(crate) const ORGANIZATION: &str = "bench";
pub(crate) const PROJECT: &str = "bench";
pub(crate) const PIPELINE_ID: i32 = 1;
pub(crate) const TENANT: &str = "bench-tenant";
pub(crate) const CLIENT_ID: &str = "odm-devops-bench";

/// The product version of activity `index` (one version each: at most one activity of a
/// version may be PROCESSING).
pub(crate) fn version(index: u32) -> String {
    format!("1.0.{index}")
}

/// The simulator's configuration: the pipeline, no delay, a small result, and room for every
/// run of the benchmark in `/_sim/runs`.
pub(crate) fn simulator_config(client_secret: &str, runs: u64) -> Value {
    json!({
        "tenant": TENANT,
        "clientId": CLIENT_ID,
        "clientSecret": client_secret,
        "defaultDelayMs": 0,
        "workers": 1,
        "retainRuns": runs + 1000,
        "pipelines": [{
            "organization": ORGANIZATION,
            "project": PROJECT,
            "id": PIPELINE_ID,
            "name": "bench",
            "parameters": ["activity", "task", "previous", {"name": "callbackRef", "required": true}],
            "behaviour": {"delayMs": 0, "results": {"run": "${{ run.id }}"}},
        }],
    })
}

pub(crate) fn descriptor(index: u32, tasks: u32) -> Value {
    let tasks: Vec<Value> = (1..=tasks)
        .map(|position| {
            let mut params = json!({"activity": index.to_string(), "task": position.to_string()});
            if position > 1 {
                params["previous"] =
                    json!(format!("${{{STAGE}.results.task{}.run}}", position - 1));
            }
            json!({
                "service": {"$href": "{azure-devops}"},
                "template": {
                    "name": format!("step{position}"),
                    "definition": {"organization": ORGANIZATION, "project": PROJECT,
                                   "pipelineId": PIPELINE_ID},
                },
                "configurations": {"params": params},
            })
        })
        .collect();
    json!({
        "dataProductDescriptor": "1.0.0",
        "info": {"name": PRODUCT, "version": version(index)},
        "internalComponents": {"lifecycleInfo": {STAGE: tasks}},
    })
}
