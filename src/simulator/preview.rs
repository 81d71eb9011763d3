//! `previewRun: true` (RunPipelineParameters): Azure DevOps checks the request as it would check
//! a run, creates none, and answers the final YAML. The simulator has no YAML of its pipelines,
//! only their declared parameters, so its `finalYaml` is a plausible document built from those:
//! the parameters with the values given as their defaults, and one job that would call back.

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use super::answer::Answer;
use super::config::PipelineSpec;
use super::state::{Inner, PreviewRecord};
use super::validate::RunRequest;

/// The answer to a valid preview (the request was already checked like a run).
pub(crate) fn answer(
    inner: &mut Inner,
    pipeline: &PipelineSpec,
    request: &RunRequest,
    request_body: Value,
    auth: &'static str,
) -> Answer {
    let final_yaml = final_yaml(pipeline, request);
    inner.log_preview(PreviewRecord {
        pipeline_id: pipeline.id,
        request_body,
        template_parameters: request.template_parameters.clone(),
        authenticated_with: auth.into(),
    });
    Answer::Json(StatusCode::OK, json!({"finalYaml": final_yaml}))
}

/// The pipeline's YAML as Azure would expand it for this request.
fn final_yaml(pipeline: &PipelineSpec, request: &RunRequest) -> String {
    // JSON strings are YAML double-quoted scalars: any value is quoted safely.
    let quoted = |text: &str| Value::String(text.to_owned()).to_string();
    let name = pipeline
        .name
        .clone()
        .unwrap_or_else(|| format!("pipeline-{}", pipeline.id));
    let mut yaml = format!("name: {}\ntrigger: none\n", quoted(&name));
    if let Some(branch) = &request.ref_name {
        yaml.push_str(&format!(
            "resources:\n  repositories:\n  - repository: self\n    ref: {}\n",
            quoted(branch)
        ));
    }
    if !pipeline.parameters.is_empty() {
        yaml.push_str("parameters:\n");
    }
    for parameter in &pipeline.parameters {
        let name = parameter.name();
        yaml.push_str(&format!("- name: {name}\n  type: string\n"));
        if let Some(value) = request.template_parameters.get(name) {
            yaml.push_str(&format!("  default: {}\n", quoted(value)));
        }
    }
    yaml.push_str("stages:\n- stage: __default\n  jobs:\n  - job: Job\n    steps:\n");
    // The callback URL is left out of the echoes: a real run's carries its token.
    for parameter in pipeline
        .parameters
        .iter()
        .filter(|p| p.name() != "callbackRef")
    {
        let name = parameter.name();
        if let Some(value) = request.template_parameters.get(name) {
            let line = format!("{name}={value}");
            yaml.push_str(&format!("    - script: echo {}\n", quoted(&line)));
        }
    }
    if request.template_parameters.contains_key("callbackRef") {
        yaml.push_str(
            "    - script: curl -sf -X PATCH \"$CALLBACK\" -H 'Content-Type: application/json' \
             -d '{\"status\":\"PROCESSED\"}'\n      env:\n        CALLBACK: ${{ parameters.callbackRef }}\n",
        );
    }
    yaml
}
