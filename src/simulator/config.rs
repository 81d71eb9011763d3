//! What the simulator is told at start (a struct, or a JSON/YAML file for the CLI) and through
//! its control routes: credentials, pipelines with their declared parameters and behaviour, and
//! faults to inject.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulatorConfig {
    /// The directory id in the token route `/{tenant}/oauth2/v2.0/token`.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    #[serde(default = "default_client_secret")]
    pub client_secret: String,
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Lifetime of the bearer tokens it issues.
    #[serde(default = "default_expires_in")]
    pub token_expires_in_secs: u64,
    /// Personal access tokens accepted as `Basic base64(":" + pat)`.
    #[serde(default)]
    pub pats: Vec<String>,
    /// Federated tokens (JWTs) accepted as `client_assertion` for `clientId` (workload identity:
    /// what a federated credential of the app registration would trust).
    #[serde(default)]
    pub federated_tokens: Vec<String>,
    /// How long a run takes when its pipeline's behaviour does not say.
    #[serde(default = "default_delay_ms")]
    pub default_delay_ms: u64,
    /// HTTP worker threads.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Completed runs kept for `/_sim/runs` (the oldest are forgotten first), so a long
    /// benchmark does not grow the simulator without bound. Runs in progress are always kept.
    #[serde(default = "default_retain_runs")]
    pub retain_runs: usize,
    #[serde(default)]
    pub pipelines: Vec<PipelineSpec>,
    /// Web Hooks subscriptions to "Run state changed": each completed run is POSTed to them.
    #[serde(default)]
    pub service_hooks: Vec<super::hooks::HookSubscription>,
}

/// A pipeline as its YAML would declare it, and how its runs behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineSpec {
    pub organization: String,
    pub project: String,
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    /// The YAML's `parameters:`; a run sending any other template parameter is refused.
    #[serde(default)]
    pub parameters: Vec<ParameterSpec>,
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl PipelineSpec {
    /// A pipeline declaring `parameters` plus the required `callbackRef`, as every pipeline
    /// odm-devops runs must.
    pub fn calling_back(
        organization: &str,
        project: &str,
        id: i32,
        name: &str,
        parameters: &[&str],
        behaviour: Behaviour,
    ) -> PipelineSpec {
        PipelineSpec {
            organization: organization.into(),
            project: project.into(),
            id,
            name: Some(name.into()),
            parameters: parameters
                .iter()
                .map(|p| ParameterSpec::Name((*p).into()))
                .chain([ParameterSpec::Full {
                    name: "callbackRef".into(),
                    required: true,
                }])
                .collect(),
            behaviour,
        }
    }
}

/// `"vmName"` (has a default) or `{"name": "vmName", "required": true}` (no default: a run
/// must give it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParameterSpec {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        required: bool,
    },
}

impl ParameterSpec {
    pub fn name(&self) -> &str {
        match self {
            ParameterSpec::Name(name) | ParameterSpec::Full { name, .. } => name,
        }
    }

    pub fn required(&self) -> bool {
        matches!(self, ParameterSpec::Full { required: true, .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SimResult {
    #[default]
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallbackMode {
    /// PATCH callbackRef with `{"status": "PROCESSED", "results": …}` or `{"status": "FAILED",
    /// "errors": …}`.
    #[default]
    Body,
    /// PATCH callbackRef without a body (the contract reads it as PROCESSED).
    Empty,
    /// Finish without calling back, like a pipeline whose last step never ran.
    None,
}

/// How runs of a pipeline end. Strings in `results` and `errors` may use
/// `${{ parameters.<name> }}` and `${{ run.id }}`, replaced by the run's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behaviour {
    /// Run length; `null` = the simulator's default delay.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub result: SimResult,
    #[serde(default)]
    pub callback: CallbackMode,
    /// The callback's `results` when the run succeeds (`null` = none sent).
    #[serde(default)]
    pub results: Value,
    /// The callback's `errors` when the run fails.
    #[serde(default = "default_errors")]
    pub errors: String,
    /// Stay in progress until `POST /_sim/runs/{id}/finish`.
    #[serde(default)]
    pub manual: bool,
    /// Lines of output the pipeline's step writes to its log, beyond its parameters.
    #[serde(default)]
    pub log_lines: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            delay_ms: None,
            result: SimResult::Succeeded,
            callback: CallbackMode::Body,
            results: Value::Null,
            errors: default_errors(),
            manual: false,
            log_lines: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// 429 with `Retry-After: retryAfterSecs` (default 1) and X-RateLimit headers.
    RateLimit,
    /// 503 Service Unavailable (nothing done).
    Unavailable,
    /// 500 with an Azure-shaped error (nothing done).
    ServerError,
    /// 502 from a "gateway" after the request WAS processed (a run is created).
    BadGatewayAfterProcessing,
    /// Answer normally, `delayMs` late (a run request is processed before the wait).
    Slow,
    /// 203 with an HTML sign-in page.
    SignInPage,
    /// Answer normally with a UTF-8 byte order mark before the JSON.
    Bom,
}

/// The next `count` requests matching `method` and `path` get `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Glob on the decoded request path; `*` matches any run of characters.
    #[serde(default = "any_path")]
    pub path: String,
    /// GET, POST, PATCH, …; absent = any.
    #[serde(default)]
    pub method: Option<String>,
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        serde_json::from_value(json!({})).expect("every field has a default")
    }
}

impl SimulatorConfig {
    /// The two pipelines of `examples/azure-pipelines/` in organization `odm-demo`, project
    /// `Data Products`: 1 syncs a Databricks repo and reports the commit, 2 updates a Flink
    /// deployment and reports its state.
    pub fn demo() -> SimulatorConfig {
        let pipeline = |id: i32, name: &str, parameters: &[&str], results: Value| {
            let behaviour = Behaviour {
                results,
                ..Behaviour::default()
            };
            PipelineSpec::calling_back("odm-demo", "Data Products", id, name, parameters, behaviour)
        };
        SimulatorConfig {
            pipelines: vec![
                pipeline(
                    1,
                    "databricks-repo-sync",
                    &["databricksHost", "repoId", "branch"],
                    json!({"repoId": "${{ parameters.repoId }}", "branch": "${{ parameters.branch }}",
                           "commit": "3f9c2ab7d41e5c0b8a6f1e2d9c7b4a5e6f8d0c1b"}),
                ),
                pipeline(
                    2,
                    "flink-deployment-update",
                    &["vvpUrl", "namespace", "deploymentId", "jarUri", "commit"],
                    json!({"deploymentId": "${{ parameters.deploymentId }}", "state": "RUNNING",
                           "jarUri": "${{ parameters.jarUri }}"}),
                ),
            ],
            ..SimulatorConfig::default()
        }
    }
}

fn default_tenant() -> String {
    "sim-tenant".into()
}
fn default_client_id() -> String {
    "odm-devops-sim".into()
}
fn default_client_secret() -> String {
    "sim-secret".into()
}
fn default_scope() -> String {
    AZURE_DEVOPS_SCOPE.into()
}
fn default_expires_in() -> u64 {
    3599
}
fn default_delay_ms() -> u64 {
    200
}
fn default_workers() -> usize {
    1
}
fn default_retain_runs() -> usize {
    10_000
}
fn default_errors() -> String {
    "the pipeline failed".into()
}
fn any_path() -> String {
    "*".into()
}
fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn example(path: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(path),
        )
        .unwrap()
    }

    /// The names under the YAML's top-level `parameters:`.
    fn declared(yaml: &str) -> BTreeSet<String> {
        yaml.lines()
            .skip_while(|l| *l != "parameters:")
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.is_empty())
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_demo_pipelines_are_the_examples_and_fit_the_descriptor() {
        let demo = SimulatorConfig::demo();
        let names = |id: i32| -> BTreeSet<String> {
            demo.pipelines[(id - 1) as usize]
                .parameters
                .iter()
                .map(|p| p.name().to_owned())
                .collect()
        };
        let files = ["databricks-repo-sync.yml", "flink-deployment-update.yml"];
        for (id, file) in (1..).zip(files) {
            assert_eq!(
                declared(&example(&format!("azure-pipelines/{file}"))),
                names(id),
                "{file}"
            );
        }
        let descriptor: Value =
            serde_json::from_str(&example("descriptor-databricks-flink.json")).unwrap();
        let stages = descriptor["internalComponents"]["lifecycleInfo"]
            .as_object()
            .unwrap();
        for tasks in stages.values() {
            for task in tasks.as_array().unwrap() {
                let definition = &task["template"]["definition"];
                assert_eq!(definition["organization"], "odm-demo");
                assert_eq!(definition["project"], "Data Products");
                let id = definition["pipelineId"].as_i64().unwrap() as i32;
                let params = task["configurations"]["params"].as_object().unwrap();
                assert!(params.keys().all(|k| names(id).contains(k)), "{params:?}");
            }
        }
    }
}
