//! `POST /activities?dryRun=true` (DESIGN §6): the activity a create would make, each task as
//! a start now would dispatch it, and every problem it would meet — nothing stored, nothing run.
//!
//! It goes the same way as the real thing and reuses its parts: the descriptor's stage
//! (`stage_definitions`, whose refusals stay the create's 4xx), the static placeholder check,
//! the task settings, the context a start now would see (`context::load_for_new`), placeholder
//! resolution (`task_placeholders::plan_task`), the executor lookup and START's gates
//! (`start_check_for`). Each task is then checked by its executor's provider with the run
//! request a dispatch would send (`Executor::preview`; Azure DevOps: `previewRun: true`),
//! authenticated with the request's secret headers, which are used for that and dropped.

use serde::Serialize;
use serde_json::{json, Value};

use super::commands::NewActivityRequest;
use super::context::{self, TaskContext};
use super::dry_run_executors::{DryRunExecutors, PreviewOutcome};
use super::error::CommandError;
use super::policy_gates::WouldStart;
use super::service::LifecycleService;
use super::task_placeholders::{self, PlannedTask};
use crate::db;
use crate::descriptor::TaskDefinition;
use crate::keys::ActivitySecrets;
use crate::placeholders::{OnMissing, Unresolved};

/// The plan: what a create would store, with what would go wrong.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// No problem anywhere: the create would succeed and a start now would pass its gates and
    /// have every task accepted by its executor.
    pub valid: bool,
    /// The activity as it would be created (ODM's `ActivityResource`, `id` null, PLANNED).
    pub activity: Value,
    /// Problems of the activity as a whole (START's gates, a conflicting activity).
    pub problems: Vec<Problem>,
    /// The context the first task would be given if the activity started now.
    pub context: Value,
    pub tasks: Vec<TaskPlan>,
}

/// One task of the plan. `template` and `configurations` are JSON text, as in ODM's
/// `TaskResource`; `configurations` without `context` (given once, at the top).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPlan {
    pub position: usize,
    pub name: String,
    pub description: Option<String>,
    pub executor: Option<String>,
    pub template: Option<String>,
    pub configurations: Option<String>,
    /// Placeholders left as written because they read results of this activity's own tasks.
    pub at_run_time: Vec<String>,
    pub preview: PreviewOutcome,
    pub problems: Vec<Problem>,
    /// The placeholders the static check listed as bad (not repeated as unresolved).
    #[serde(skip)]
    statically_bad: Vec<String>,
}

/// One thing that would go wrong; `kind` says where it comes from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// `executor`, `placeholder`, `limit`, `settings`, `preview`, `policy` or `conflict`.
    pub kind: &'static str,
    pub message: String,
}

impl Problem {
    fn new(kind: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            message: message.into(),
        }
    }
}

impl LifecycleService {
    pub async fn dry_run(
        &self,
        request: NewActivityRequest,
        secrets: ActivitySecrets,
        executors: &DryRunExecutors,
    ) -> Result<DryRun, CommandError> {
        let (info, definitions) = self.stage_definitions(&request).await?;
        let stage = request.stage.clone();
        let mut tasks: Vec<TaskPlan> = definitions.iter().map(TaskPlan::of).collect();
        let mut problems = Vec::new();
        self.static_problems(&request, &definitions, &info, &mut tasks, &mut problems);

        let names: Vec<String> = definitions.iter().map(|d| d.name.clone()).collect();
        let (product, version) = (
            request.data_product_id.clone(),
            request.data_product_version.clone(),
        );
        let (task_context, in_the_way) = self
            .db
            .read(move |conn| -> Result<_, CommandError> {
                let task_context = context::load_for_new(conn, &product, &version, &stage, &names)?;
                let in_the_way = db::activities_in_the_way(conn, &product, &version, &stage)?;
                Ok((task_context, in_the_way))
            })
            .await?;
        if let Some(id) = in_the_way.planned {
            problems.push(Problem::new(
                "conflict",
                format!(
                    "activity {id} is already PLANNED for this product, version and stage: the \
                     create would be refused (42202); start or delete it"
                ),
            ));
        }
        if let Some(id) = in_the_way.processing {
            problems.push(Problem::new(
                "conflict",
                format!(
                    "activity {id} of this product version is PROCESSING: a start now would be \
                     refused (40901)"
                ),
            ));
        }

        let on_missing = executors.on_missing();
        let planned = self.resolve_tasks(
            (&request.stage, on_missing),
            &definitions,
            &task_context,
            &mut tasks,
        );
        executors
            .preview(&definitions, planned, &secrets, &mut tasks)
            .await;

        let activity = would_be_created(&request);
        let would = WouldStart {
            data_product_id: request.data_product_id.clone(),
            data_product_version: request.data_product_version.clone(),
            stage: request.stage.clone(),
            activity: activity.clone(),
            tasks: tasks.iter().map(TaskPlan::resource).collect(),
        };
        match self.start_check_for(would).await {
            Ok(check) => problems.extend(
                check
                    .refusals
                    .into_iter()
                    .map(|r| Problem::new("policy", format!("START would be refused: {r}"))),
            ),
            // The policy service down or failing is what START would meet: a problem. Anything
            // else (the database) is this request's own failure.
            Err(CommandError::Policy(e)) => {
                tracing::warn!(error = ?e, "dry run: START's gates could not be asked");
                problems.push(Problem::new(
                    "policy",
                    format!(
                        "START's policy check could not be made, so a start now would be \
                         refused: {e}"
                    ),
                ));
            }
            Err(other) => return Err(other),
        }
        let valid = problems.is_empty() && tasks.iter().all(|t| t.problems.is_empty());
        Ok(DryRun {
            valid,
            activity,
            problems,
            context: task_context.context,
            tasks,
        })
    }

    /// What a create would refuse per task: bad placeholder references, too many of them, and
    /// a bad `timeout`/`retry`.
    fn static_problems(
        &self,
        request: &NewActivityRequest,
        definitions: &[TaskDefinition],
        info: &crate::descriptor::LifecycleInfo,
        tasks: &mut [TaskPlan],
        problems: &mut Vec<Problem>,
    ) {
        let stage = &request.stage;
        let limits = &self.limits;
        let checked =
            task_placeholders::check_placeholders(stage, definitions, info, limits.listed_errors);
        for bad in &checked.listed {
            let task = &mut tasks[bad.position - 1];
            task.problem("placeholder", bad.to_string());
            task.statically_bad.push(bad.placeholder.clone());
        }
        if checked.bad > checked.listed.len() {
            problems.push(Problem::new(
                "placeholder",
                format!(
                    "and {} more bad placeholder references not listed (limits.listed_errors: {})",
                    checked.bad - checked.listed.len(),
                    limits.listed_errors
                ),
            ));
        }
        let max = limits.placeholders_per_task;
        for &(position, count) in checked.placeholders.iter().filter(|(_, n)| *n > max) {
            let name = &definitions[position - 1].name;
            let message =
                task_placeholders::too_many_placeholders(stage, position, name, count, max);
            tasks[position - 1].problem("limit", message);
        }
        for (task, definition) in tasks.iter_mut().zip(definitions) {
            if let Some(Err(problem)) = definition
                .configurations
                .as_ref()
                .map(super::run_settings::check)
            {
                task.problem("settings", problem);
            }
        }
    }

    /// Each task's template and configurations as a dispatch now would send them; `None` for a
    /// task whose resolution cannot give that (over `limits.configurations_bytes`).
    fn resolve_tasks(
        &self,
        (stage, on_missing): (&str, OnMissing),
        definitions: &[TaskDefinition],
        task_context: &TaskContext,
        tasks: &mut [TaskPlan],
    ) -> Vec<Option<PlannedTask>> {
        let empty = || Value::Object(Default::default());
        let max_bytes = self.limits.configurations_bytes;
        definitions
            .iter()
            .zip(tasks.iter_mut())
            .map(|(d, task)| {
                let template = d.template.clone().unwrap_or_else(empty);
                let configurations = d.configurations.clone().unwrap_or_else(empty);
                let planned = task_placeholders::plan_task(
                    &template,
                    &configurations,
                    task_context,
                    stage,
                    max_bytes,
                );
                let planned = match planned {
                    Ok(planned) => planned,
                    Err(over) => {
                        task.problem("limit", over);
                        return None;
                    }
                };
                if on_missing == OnMissing::Fail {
                    // A bad reference already listed would be listed twice.
                    let new = |u: &&Unresolved| !task.statically_bad.contains(&u.placeholder);
                    let unresolved: Vec<&Unresolved> =
                        planned.unresolved.iter().filter(new).collect();
                    for unresolved in unresolved {
                        task.problem(
                            "placeholder",
                            format!("{unresolved}: the task would fail before it is sent"),
                        );
                    }
                }
                task.template = d.template.as_ref().map(|_| planned.template.to_string());
                let mut shown = planned.configurations.clone();
                if let Value::Object(map) = &mut shown {
                    map.remove("context");
                }
                task.configurations = d.configurations.as_ref().map(|_| shown.to_string());
                task.at_run_time = planned.at_run_time.clone();
                Some(planned)
            })
            .collect()
    }
}

impl TaskPlan {
    fn of(d: &TaskDefinition) -> TaskPlan {
        TaskPlan {
            position: d.position,
            name: d.name.clone(),
            description: d.description.clone(),
            executor: d.executor_ref.clone(),
            template: d.template.as_ref().map(Value::to_string),
            configurations: d.configurations.as_ref().map(Value::to_string),
            at_run_time: Vec::new(),
            preview: PreviewOutcome::not_checked(),
            problems: Vec::new(),
            statically_bad: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, kind: &'static str, message: impl Into<String>) {
        self.problems.push(Problem::new(kind, message));
    }

    /// The task as ODM's `TaskResource` (PLANNED, no id), for the policy service.
    fn resource(&self) -> Value {
        json!({
            "id": null, "activityId": null, "position": self.position, "name": self.name,
            "description": self.description, "executorRef": self.executor, "callbackRef": null,
            "template": self.template, "configurations": self.configurations,
            "status": "PLANNED", "results": null, "errors": null, "runUrl": null,
            "createdAt": null, "startedAt": null, "finishedAt": null,
        })
    }
}

/// ODM's `ActivityResource` of the activity a create would store: no id, PLANNED, not created.
fn would_be_created(request: &NewActivityRequest) -> Value {
    json!({
        "id": null,
        "dataProductId": request.data_product_id,
        "dataProductVersion": request.data_product_version,
        "stage": request.stage,
        "status": "PLANNED",
        "results": null,
        "errors": null,
        "createdAt": null,
        "startedAt": null,
        "finishedAt": null,
    })
}
