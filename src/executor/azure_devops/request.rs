//! The task's template and configurations turned into Azure DevOps requests. Everything here is
//! checked before any request leaves, so a badly written task fails with a message naming the
//! field instead of a provider error (or, worse, a run started with half its parameters).

use crate::http_client::path_segment as encode_segment;
use serde_json::{json, Map, Value};

use crate::executor::ExecutorError;

/// Which pipeline a task runs, from its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipelineTarget {
    pub organization: String,
    pub project: String,
    pub pipeline_id: i32,
    pub branch: Option<String>,
}

/// What the executor persists for a run: enough to ask about it or cancel it after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunLocation {
    pub organization: String,
    pub project: String,
    pub pipeline_id: i32,
    pub run_id: i32,
}

impl PipelineTarget {
    pub fn from_template(template: &Value) -> Result<PipelineTarget, ExecutorError> {
        let Value::Object(fields) = template else {
            return Err(invalid(format!(
                "the task template must be a JSON object with organization, project and \
                 pipelineId, got {}",
                describe(template)
            )));
        };
        let organization = required_text(fields, "organization", "the Azure DevOps organization")?;
        let project = required_text(fields, "project", "the project name or id")?;
        let pipeline_id =
            match fields.get("pipelineId") {
                None | Some(Value::Null) => return Err(invalid(
                    "template.pipelineId is missing: expected the pipeline id, an int32 given as \
                     a number or a numeric string"
                        .into(),
                )),
                Some(value) => int32(value).ok_or_else(|| {
                    invalid(format!(
                    "template.pipelineId must be an int32 (a number or a numeric string), got {}",
                    describe(value)
                ))
                })?,
            };
        // Optional: null and blank mean "the pipeline's default branch", as they did in ODM.
        let branch = match fields.get("branch") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim().to_owned()),
            Some(other) => {
                return Err(invalid(format!(
                "template.branch must be a string (a branch name or a full refs/... name), got {}",
                describe(other)
            )))
            }
        };
        Ok(PipelineTarget {
            organization,
            project,
            pipeline_id,
            branch,
        })
    }

    pub fn runs_url(&self, base_url: &str) -> String {
        format!(
            "{}/_apis/pipelines/{}/runs?api-version=7.1",
            project_url(base_url, &self.organization, &self.project),
            self.pipeline_id
        )
    }

    pub fn describe(&self) -> String {
        format!(
            "{}/{}/pipelines/{}",
            self.organization, self.project, self.pipeline_id
        )
    }
}

impl RunLocation {
    pub fn to_json(&self) -> Value {
        json!({
            "organization": self.organization,
            "project": self.project,
            "pipelineId": self.pipeline_id,
            "runId": self.run_id,
        })
    }

    pub fn from_json(value: &Value) -> Result<RunLocation, ExecutorError> {
        let bad = || {
            invalid(format!(
                "not an Azure DevOps run reference (expected organization, project, pipelineId \
                 and runId): {value}"
            ))
        };
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        };
        let number = |key: &str| value.get(key).and_then(int32);
        Ok(RunLocation {
            organization: text("organization").ok_or_else(bad)?,
            project: text("project").ok_or_else(bad)?,
            pipeline_id: number("pipelineId").ok_or_else(bad)?,
            run_id: number("runId").ok_or_else(bad)?,
        })
    }

    pub fn run_url(&self, base_url: &str) -> String {
        format!(
            "{}/_apis/pipelines/{}/runs/{}?api-version=7.1",
            project_url(base_url, &self.organization, &self.project),
            self.pipeline_id,
            self.run_id
        )
    }

    /// Logs – List (`log_id` None) or Logs – Get, each with a signed URL of the log's text.
    pub fn logs_url(&self, base_url: &str, log_id: Option<i32>) -> String {
        format!(
            "{}/_apis/pipelines/{}/runs/{}/logs{}?$expand=signedContent&api-version=7.1",
            project_url(base_url, &self.organization, &self.project),
            self.pipeline_id,
            self.run_id,
            log_id.map(|id| format!("/{id}")).unwrap_or_default()
        )
    }

    /// Runs have no cancel route; a run is a build, and builds are cancelled by updating them.
    pub fn build_url(&self, base_url: &str) -> String {
        format!(
            "{}/_apis/build/builds/{}?api-version=7.1",
            project_url(base_url, &self.organization, &self.project),
            self.run_id
        )
    }
}

/// The RunPipelineParameters body. `stage_to_skip_used` tells the caller to warn about the
/// misspelling (kept for ODM descriptors that have it).
pub(crate) struct RunBody {
    pub body: Value,
    pub stage_to_skip_used: bool,
    pub callback_ref_overridden: bool,
}

pub(crate) fn run_body(
    target: &PipelineTarget,
    configurations: &Value,
    callback_ref: &str,
) -> Result<RunBody, ExecutorError> {
    let empty = Map::new();
    let config = match configurations {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(invalid(format!(
                "the task configurations must be a JSON object, got {}",
                describe(other)
            )))
        }
    };

    let mut parameters = Map::new();
    match config.get("params") {
        None | Some(Value::Null) => {}
        Some(Value::Object(params)) => {
            for (name, value) in params {
                parameters.insert(name.clone(), Value::String(as_text(value)));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "configurations.params must be an object of pipeline parameters, got {}",
                describe(other)
            )))
        }
    }
    // Ours must win: a run that calls back somewhere else never completes its task.
    let callback_ref_overridden = parameters
        .insert("callbackRef".into(), Value::String(callback_ref.into()))
        .is_some();

    let (stages, stage_to_skip_used) = match (config.get("stagesToSkip"), config.get("stageToSkip"))
    {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "configurations has both stagesToSkip and its misspelling stageToSkip: keep \
                     only stagesToSkip"
                    .into(),
            ))
        }
        (Some(value), None) => (stage_list("stagesToSkip", value)?, false),
        (None, Some(value)) => (stage_list("stageToSkip", value)?, true),
        (None, None) => (Vec::new(), false),
    };

    let mut body = Map::new();
    if let Some(branch) = &target.branch {
        let ref_name = if branch.starts_with("refs/") {
            branch.clone()
        } else {
            format!("refs/heads/{branch}")
        };
        body.insert(
            "resources".into(),
            json!({"repositories": {"self": {"refName": ref_name}}}),
        );
    }
    body.insert("templateParameters".into(), Value::Object(parameters));
    body.insert(
        "stagesToSkip".into(),
        Value::Array(stages.into_iter().map(Value::String).collect()),
    );
    if let Some(variables) = variables(config.get("variables"))? {
        body.insert("variables".into(), variables);
    }
    Ok(RunBody {
        body: Value::Object(body),
        stage_to_skip_used,
        callback_ref_overridden,
    })
}

fn stage_list(key: &str, value: &Value) -> Result<Vec<String>, ExecutorError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                other => Err(invalid(format!(
                    "configurations.{key}[{i}] must be a stage name (a non-blank string), got {}",
                    describe(other)
                ))),
            })
            .collect(),
        other => Err(invalid(format!(
            "configurations.{key} must be a list of stage names, got {}",
            describe(other)
        ))),
    }
}

/// Azure wants `{"name": {"value": "text", "isSecret": bool}}`; a task may write the plain
/// value or that shape already.
fn variables(value: Option<&Value>) -> Result<Option<Value>, ExecutorError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(invalid(format!(
                "configurations.variables must be an object of pipeline variables, got {}",
                describe(other)
            )))
        }
    };
    let mut out = Map::new();
    for (name, value) in map {
        let variable = match value {
            Value::Object(shape)
                if shape.get("value").is_some_and(Value::is_string)
                    && shape.keys().all(|k| k == "value" || k == "isSecret") =>
            {
                if shape.get("isSecret").is_some_and(|s| !s.is_boolean()) {
                    return Err(invalid(format!(
                        "configurations.variables.{name}.isSecret must be true or false"
                    )));
                }
                value.clone()
            }
            other => json!({"value": as_text(other)}),
        };
        out.insert(name.clone(), variable);
    }
    Ok(Some(Value::Object(out)))
}

fn required_text(
    fields: &Map<String, Value>,
    key: &str,
    meaning: &str,
) -> Result<String, ExecutorError> {
    match fields.get(key) {
        None | Some(Value::Null) => Err(invalid(format!(
            "template.{key} is missing: expected {meaning} (a non-blank string)"
        ))),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(other) => Err(invalid(format!(
            "template.{key} must be {meaning} (a non-blank string), got {}",
            describe(other)
        ))),
    }
}

fn int32(value: &Value) -> Option<i32> {
    match value {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<i32>().ok(),
        _ => None,
    }
}

/// Strings as they are; anything else as compact JSON (Azure template parameters are strings,
/// and an `object` parameter in the YAML parses the JSON back).
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as a user would recognise it in an error: its JSON type and (short) content.
pub(crate) fn describe(value: &Value) -> String {
    let mut text = match value {
        Value::Null => return "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.trim().is_empty() => return "a blank string".into(),
        Value::String(_) => format!("string {value}"),
        Value::Array(_) => format!("array {value}"),
        Value::Object(_) => format!("object {value}"),
    };
    if text.len() > 80 {
        let cut = (0..=77)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn invalid(message: String) -> ExecutorError {
    ExecutorError::InvalidTask(message)
}

fn project_url(base_url: &str, organization: &str, project: &str) -> String {
    format!(
        "{}/{}/{}",
        base_url.trim_end_matches('/'),
        encode_segment(organization),
        encode_segment(project)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(template: Value) -> Result<PipelineTarget, String> {
        PipelineTarget::from_template(&template).map_err(|e| e.to_string())
    }

    #[test]
    fn template_accepts_numbers_numeric_strings_and_refs() {
        let t = target(json!({"organization": "org", "project": "Data Platform",
                              "pipelineId": "42", "branch": "main"}))
        .unwrap();
        assert_eq!(t.pipeline_id, 42);
        assert_eq!(t.branch.as_deref(), Some("main"));
        assert_eq!(
            t.runs_url("https://dev.azure.com/"),
            "https://dev.azure.com/org/Data%20Platform/_apis/pipelines/42/runs?api-version=7.1"
        );
        let t = target(json!({"organization": "o", "project": "p", "pipelineId": 7, "branch": ""}))
            .unwrap();
        assert_eq!((t.pipeline_id, t.branch), (7, None));
    }

    #[test]
    fn template_errors_name_the_field_the_expectation_and_the_value() {
        let cases = [
            (
                json!([1]),
                "the task template must be a JSON object",
                "array [1]",
            ),
            (
                json!({"project": "p", "pipelineId": 1}),
                "template.organization is missing",
                "non-blank string",
            ),
            (
                json!({"organization": " ", "project": "p", "pipelineId": 1}),
                "template.organization must be",
                "got a blank string",
            ),
            (
                json!({"organization": "o", "project": 3, "pipelineId": 1}),
                "template.project must be",
                "got number 3",
            ),
            (
                json!({"organization": "o", "project": "p"}),
                "template.pipelineId is missing",
                "int32",
            ),
            (
                json!({"organization": "o", "project": "p", "pipelineId": "abc"}),
                "template.pipelineId must be an int32",
                "got string \"abc\"",
            ),
            (
                json!({"organization": "o", "project": "p", "pipelineId": 3000000000u64}),
                "template.pipelineId must be an int32",
                "got number 3000000000",
            ),
            (
                json!({"organization": "o", "project": "p", "pipelineId": 1.5}),
                "template.pipelineId must be an int32",
                "got number 1.5",
            ),
            (
                json!({"organization": "o", "project": "p", "pipelineId": 1, "branch": true}),
                "template.branch must be a string",
                "got boolean true",
            ),
        ];
        for (template, first, second) in cases {
            let err = target(template.clone()).unwrap_err();
            assert!(
                err.contains(first) && err.contains(second),
                "{template}: {err}"
            );
        }
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let t = target(json!({"organization": "o", "project": "p", "pipelineId": 1})).unwrap();
        let cases = [
            (
                json!({"params": [1]}),
                "configurations.params must be an object",
            ),
            (
                json!({"stagesToSkip": "a"}),
                "configurations.stagesToSkip must be a list",
            ),
            (
                json!({"stageToSkip": [1]}),
                "configurations.stageToSkip[0] must be a stage name",
            ),
            (
                json!({"stagesToSkip": [], "stageToSkip": []}),
                "both stagesToSkip and its misspelling",
            ),
            (
                json!({"variables": "x"}),
                "configurations.variables must be an object",
            ),
            (
                json!({"variables": {"v": {"value": "1", "isSecret": "yes"}}}),
                "configurations.variables.v.isSecret",
            ),
            (
                json!("text"),
                "the task configurations must be a JSON object",
            ),
        ];
        for (config, expected) in cases {
            let err = match run_body(&t, &config, "cb") {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{config} accepted"),
            };
            assert!(err.contains(expected), "{config}: {err}");
        }
    }

    #[test]
    fn run_location_round_trips_and_builds_urls() {
        let run = RunLocation {
            organization: "org".into(),
            project: "R&D x".into(),
            pipeline_id: 3,
            run_id: 99,
        };
        assert_eq!(RunLocation::from_json(&run.to_json()).unwrap(), run);
        assert_eq!(
            run.build_url("http://h"),
            "http://h/org/R%26D%20x/_apis/build/builds/99?api-version=7.1"
        );
        assert_eq!(
            run.run_url("http://h"),
            "http://h/org/R%26D%20x/_apis/pipelines/3/runs/99?api-version=7.1"
        );
        assert!(RunLocation::from_json(&json!({"runId": 1})).is_err());
    }
}
