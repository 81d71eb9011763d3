//! A dry run's check (DESIGN §6): the same run request `submit` sends, plus `previewRun: true`.
//! Azure DevOps then creates no run: it expands the pipeline's templates with the parameters
//! and answers the final YAML (200 with `finalYaml`), or refuses the request as it would refuse
//! the run (`Unexpected parameter 'x'`, a missing required parameter, YAML errors: 400).

use actix_web::http::Method;
use serde_json::Value;
use tracing::Instrument;

use super::errors::Purpose;
use super::http::{Payload, Replay};
use super::request::{run_body, PipelineTarget};
use super::AzureDevOpsExecutor;
use crate::executor::{ExecutorError, Preview, Submission};

impl AzureDevOpsExecutor {
    pub(super) async fn preview_run(&self, task: &Submission) -> Result<Preview, ExecutorError> {
        let target = PipelineTarget::from_template(&task.template)?;
        let mut run = run_body(&target, &task.configurations, &task.callback_ref)?;
        if let Value::Object(body) = &mut run.body {
            body.insert("previewRun".into(), Value::Bool(true));
        }
        let span = tracing::info_span!(
            "azure_devops_preview",
            executor = %self.name,
            pipeline = %target.describe(),
        );
        // Nothing is created by a preview: repeating it after a timeout is safe.
        let answer = self
            .call(
                Method::POST,
                &target.runs_url(&self.base_url),
                Payload::Json(&run.body),
                Replay::Safe,
                &task.secrets,
                Purpose::Preview,
            )
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &answer {
            Ok(_) => tracing::info!("preview run accepted"),
            Err(error) => tracing::info!(%error, "preview run refused"),
        });
        let final_yaml = answer?
            .get("finalYaml")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Preview::Accepted { final_yaml })
    }
}
