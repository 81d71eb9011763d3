//! The executors a dry run asks (`Executor::preview`), built on each worker thread that serves
//! one (awc clients are `!Send`), from the same settings and Azure identities (token caches) as
//! the engine's: a preview authenticates exactly as the run would.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::dry_run::TaskPlan;
use super::task_placeholders::PlannedTask;
use crate::config::{ExecutorSettings, Settings};
use crate::descriptor::TaskDefinition;
use crate::executor::{AzureIdentities, Executor, ExecutorError, Executors, Preview, Submission};
use crate::keys::ActivitySecrets;
use crate::metrics::Metrics;
use crate::placeholders::OnMissing;

/// Previews of one dry run in flight at the same time: a stage of many tasks does not send
/// them all to the provider at once.
const MAX_PREVIEWS_AT_ONCE: usize = 8;

/// How a task's provider judged its run request (`preview` of a plan's task).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewOutcome {
    /// `PASSED` (the provider would run it), `REFUSED` (it would not: see the task's problems),
    /// `UNAVAILABLE` (the provider could not be asked) or `NOT_CHECKED` (no executor, one
    /// that cannot preview, or a task that cannot be sent).
    pub status: &'static str,
    /// Azure DevOps' `finalYaml` when it passed.
    pub final_yaml: Option<String>,
}

impl PreviewOutcome {
    pub fn not_checked() -> PreviewOutcome {
        PreviewOutcome {
            status: "NOT_CHECKED",
            final_yaml: None,
        }
    }
}

/// What dry runs need from the settings; `Send`, cloned to every worker.
#[derive(Clone)]
pub struct DryRunParts {
    executors: BTreeMap<String, ExecutorSettings>,
    identities: AzureIdentities,
    metrics: Arc<Metrics>,
    on_missing: OnMissing,
    /// The callback URL a preview sends: the service's, naming no task, with no valid token.
    callback_ref: String,
}

impl DryRunParts {
    pub fn new(
        settings: &Settings,
        identities: &AzureIdentities,
        metrics: &Arc<Metrics>,
        public_url: &str,
    ) -> DryRunParts {
        DryRunParts {
            executors: settings.executors.clone(),
            identities: identities.clone(),
            metrics: metrics.clone(),
            on_missing: settings.placeholders.on_missing,
            callback_ref: format!(
                "{}/api/v1/pp/devops/tasks/0/status?action=STOP&token=dry-run",
                public_url.trim_end_matches('/')
            ),
        }
    }

    /// The executors of the calling worker thread, built when its first dry run needs them.
    pub fn on_this_thread(&self) -> DryRunExecutors {
        DryRunExecutors {
            parts: self.clone(),
            built: OnceCell::new(),
        }
    }
}

pub struct DryRunExecutors {
    parts: DryRunParts,
    built: OnceCell<Executors>,
}

impl DryRunExecutors {
    fn executors(&self) -> &Executors {
        self.built.get_or_init(|| {
            let parts = &self.parts;
            Executors::build(&parts.executors, &parts.metrics, &parts.identities)
        })
    }

    pub(super) fn on_missing(&self) -> OnMissing {
        self.parts.on_missing
    }

    /// Asks each task's executor about the run request a dispatch would send (a few at a time),
    /// with the request's secrets for that executor; records the outcome and any problem.
    pub(super) async fn preview(
        &self,
        definitions: &[TaskDefinition],
        planned: Vec<Option<PlannedTask>>,
        secrets: &ActivitySecrets,
        tasks: &mut [TaskPlan],
    ) {
        let mut asked: Vec<(usize, Rc<dyn Executor>, Submission)> = Vec::new();
        for (index, (definition, planned)) in definitions.iter().zip(planned).enumerate() {
            let Some(name) = definition.executor_ref.as_deref() else {
                continue;
            };
            let executor = match self.executors().lookup(name) {
                Ok(executor) => executor,
                Err(why) => {
                    tasks[index].problem("executor", why);
                    continue;
                }
            };
            let Some(planned) = planned else { continue };
            let submission = Submission {
                task_id: 0,
                activity_id: 0,
                task_name: definition.name.clone(),
                started_at: None,
                callback_ref: self.parts.callback_ref.clone(),
                template: planned.template,
                configurations: planned.configurations,
                secrets: secrets.get(name).cloned().unwrap_or_default(),
            };
            asked.push((index, executor, submission));
        }
        let previews = asked
            .iter()
            .map(|(index, executor, submission)| async move {
                (*index, executor.preview(submission).await)
            });
        let answers: Vec<_> = stream::iter(previews)
            .buffer_unordered(MAX_PREVIEWS_AT_ONCE)
            .collect()
            .await;
        for (index, answer) in answers {
            let task = &mut tasks[index];
            task.preview = match answer {
                Ok(Preview::Accepted { final_yaml }) => PreviewOutcome {
                    status: "PASSED",
                    final_yaml,
                },
                Ok(Preview::NotChecked) => PreviewOutcome::not_checked(),
                Err(e @ (ExecutorError::InvalidTask(_) | ExecutorError::Unauthorized(_))) => {
                    task.problem("preview", e.to_string());
                    PreviewOutcome {
                        status: "REFUSED",
                        final_yaml: None,
                    }
                }
                Err(e) => {
                    task.problem(
                        "preview",
                        format!("the run request could not be checked: {e}"),
                    );
                    PreviewOutcome {
                        status: "UNAVAILABLE",
                        final_yaml: None,
                    }
                }
            };
        }
    }
}
