//! Requests checked against the official 7.1 descriptions (RunPipelineParameters, Build), and
//! stricter than Azure where Azure would silently ignore a mistake: an unknown key is refused,
//! so a body that puts the branch in the wrong place fails here instead of running on `main`.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use serde_json::{Map, Value};

use super::answer::{azure_error, bad_request, Answer};
use super::config::PipelineSpec;

const RUN_KEYS: &[&str] = &[
    "previewRun",
    "resources",
    "stagesToSkip",
    "templateParameters",
    "variables",
    "yamlOverride",
];
const RESOURCE_KEYS: &[&str] = &[
    "builds",
    "containers",
    "packages",
    "pipelines",
    "repositories",
];
const REPOSITORY_KEYS: &[&str] = &["refName", "token", "tokenType", "version"];
#[rustfmt::skip]
const BUILD_KEYS: &[&str] = &[
    "_links", "agentSpecification", "appendCommitMessageToRunName", "buildNumber",
    "buildNumberRevision", "controller", "definition", "deleted", "deletedBy", "deletedDate",
    "deletedReason", "demands", "finishTime", "id", "lastChangedBy", "lastChangedDate", "logs",
    "orchestrationPlan", "parameters", "plans", "priority", "project", "properties", "quality",
    "queue", "queueOptions", "queuePosition", "queueTime", "reason", "repository", "requestedBy",
    "requestedFor", "result", "retainedByRelease", "sourceBranch", "sourceVersion", "startTime",
    "status", "tags", "templateParameters", "triggerInfo", "triggeredByBuild", "uri", "url",
    "validationResults",
];
#[rustfmt::skip]
const BUILD_STATUSES: &[&str] = &[
    "none", "inProgress", "completed", "cancelling", "postponed", "notStarted", "all",
];

/// The parts of a valid run request the simulator acts on.
pub(crate) struct RunRequest {
    pub template_parameters: BTreeMap<String, String>,
    pub ref_name: Option<String>,
    /// `previewRun: true`: checked like a run, answered with `finalYaml`, no run created.
    pub preview: bool,
}

pub(crate) fn api_version(req: &HttpRequest) -> Result<(), Answer> {
    let version = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("api-version="));
    match version {
        Some("7.1") => Ok(()),
        None => Err(bad_request_typed(
            format!(
                "No api-version was supplied for the \"{}\" request. The version must be \
                 supplied either as part of the Accept header (e.g. \"application/json; \
                 api-version=1.0\") or as a query parameter (e.g. \"?api-version=1.0\").",
                req.method()
            ),
            "VssVersionNotSpecifiedException",
        )),
        Some(other) => Err(bad_request_typed(
            format!(
                "The requested REST API version of {other} is not the one this simulator \
                 implements: use api-version=7.1."
            ),
            "VssVersionOutOfRangeException",
        )),
    }
}

pub(crate) fn int32(name: &str, text: &str) -> Result<i32, Answer> {
    text.parse::<i32>().map_err(|_| {
        bad_request(format!(
            "The {name} in the route must be an int32, got '{text}'."
        ))
    })
}

pub(crate) fn json_body(bytes: &[u8], what: &str) -> Result<Value, Answer> {
    if bytes.is_empty() {
        return Err(azure_error(
            StatusCode::BAD_REQUEST,
            format!("Value cannot be null.\r\nParameter name: {what}"),
            "ArgumentNullException",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| bad_request(format!("The request body is not valid JSON: {e}")))
}

pub(crate) fn run_request(body: &Value, pipeline: &PipelineSpec) -> Result<RunRequest, Answer> {
    let fields = object(body, "RunPipelineParameters")?;
    known_keys(fields, RUN_KEYS, "RunPipelineParameters")?;
    let preview = match fields.get("previewRun") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(other) => return Err(wrong_type("previewRun", "a boolean", other)),
    };
    if fields.contains_key("yamlOverride") {
        return Err(bad_request(if preview {
            "yamlOverride is not simulated: the simulator previews the declared pipeline only."
        } else {
            "yamlOverride is only allowed with previewRun."
        }));
    }
    let ref_name = match fields.get("resources") {
        None | Some(Value::Null) => None,
        Some(resources) => repository_ref(resources)?,
    };
    if let Some(stages) = fields.get("stagesToSkip") {
        let Value::Array(items) = stages else {
            return Err(wrong_type("stagesToSkip", "an array of strings", stages));
        };
        for (i, item) in items.iter().enumerate() {
            if !item.is_string() {
                return Err(wrong_type(&format!("stagesToSkip[{i}]"), "a string", item));
            }
        }
    }
    let mut template_parameters = BTreeMap::new();
    if let Some(params) = fields.get("templateParameters") {
        for (name, value) in object(params, "templateParameters")? {
            let Value::String(text) = value else {
                return Err(wrong_type(
                    &format!("templateParameters.{name}"),
                    "a string",
                    value,
                ));
            };
            template_parameters.insert(name.clone(), text.clone());
        }
    }
    if let Some(variables) = fields.get("variables") {
        for (name, variable) in object(variables, "variables")? {
            let shape = object(variable, &format!("variables.{name}"))?;
            known_keys(shape, &["value", "isSecret"], &format!("variables.{name}"))?;
            if let Some(v) = shape.get("value").filter(|v| !v.is_string()) {
                return Err(wrong_type(
                    &format!("variables.{name}.value"),
                    "a string",
                    v,
                ));
            }
            if let Some(v) = shape.get("isSecret").filter(|v| !v.is_boolean()) {
                return Err(wrong_type(
                    &format!("variables.{name}.isSecret"),
                    "a boolean",
                    v,
                ));
            }
        }
    }
    for name in template_parameters.keys() {
        if !pipeline.parameters.iter().any(|p| p.name() == name) {
            // Azure DevOps' own wording (PipelineValidationException).
            return Err(azure_error(
                StatusCode::BAD_REQUEST,
                format!("Unexpected parameter '{name}'"),
                "PipelineValidationException",
            ));
        }
    }
    for parameter in pipeline.parameters.iter().filter(|p| p.required()) {
        if !template_parameters.contains_key(parameter.name()) {
            return Err(azure_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "A value for the '{}' parameter must be provided.",
                    parameter.name()
                ),
                "PipelineValidationException",
            ));
        }
    }
    Ok(RunRequest {
        template_parameters,
        ref_name,
        preview,
    })
}

/// The `status` a Builds – Update Build body asks for.
pub(crate) fn build_update(body: &Value) -> Result<String, Answer> {
    let fields = object(body, "Build")?;
    known_keys(fields, BUILD_KEYS, "Build")?;
    match fields.get("status") {
        Some(Value::String(status)) if BUILD_STATUSES.contains(&status.as_str()) => {
            Ok(status.clone())
        }
        Some(other) => Err(wrong_type(
            "status",
            &format!("one of {}", BUILD_STATUSES.join(", ")),
            other,
        )),
        None => Err(bad_request(
            "The simulator only updates a build's status (cancel: {\"status\": \"cancelling\"}).",
        )),
    }
}

fn repository_ref(resources: &Value) -> Result<Option<String>, Answer> {
    let resources = object(resources, "resources")?;
    known_keys(resources, RESOURCE_KEYS, "resources")?;
    let Some(repositories) = resources.get("repositories") else {
        return Ok(None);
    };
    let mut ref_name = None;
    for (alias, repository) in object(repositories, "resources.repositories")? {
        let at = format!("resources.repositories.{alias}");
        if alias != "self" {
            return Err(bad_request(format!(
                "{at}: the simulated pipeline declares no repository resource '{alias}' (only \
                 'self'; a branch goes at resources.repositories.self.refName)."
            )));
        }
        let fields = object(repository, &at)?;
        known_keys(fields, REPOSITORY_KEYS, &at)?;
        for (key, value) in fields {
            if !value.is_string() {
                return Err(wrong_type(&format!("{at}.{key}"), "a string", value));
            }
        }
        ref_name = fields
            .get("refName")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    Ok(ref_name)
}

fn object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Answer> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(at, "an object", value))
}

fn known_keys(fields: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), Answer> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(bad_request(format!(
            "{at} has no property '{key}' (known: {}).",
            known.join(", ")
        ))),
    }
}

fn wrong_type(at: &str, expected: &str, got: &Value) -> Answer {
    let got = match got {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    };
    bad_request(format!("{at} must be {expected}, got {got}."))
}

fn bad_request_typed(message: String, type_key: &str) -> Answer {
    azure_error(StatusCode::BAD_REQUEST, message, type_key)
}
