//! What the REST API asks of the lifecycle. Each command is one short transaction: it reads a
//! snapshot, asks the state machine for a plan, applies it, and wakes the engine when work is due.

use std::sync::Arc;

use tokio::sync::Notify;

use super::error::CommandError;
use super::state::{self, CallbackDecision, Plan, Report, Snapshot, Timing};
use crate::clock::now_ms;
use crate::config::LimitSettings;
use crate::db::models::{ActivityRow, NewActivity, NewTask, TaskRow};
use crate::db::{self, Db, DbConnection};
use crate::descriptor::{self, LifecycleInfo, TaskDefinition};
use crate::domain::{ActivityStatus, TaskStatus};
use crate::executor::ExecutorCatalog;
use crate::keys::{ActivitySecrets, Keys};
use crate::metrics::{CallbackAnswer, Metrics, TaskOutcomes};
use crate::registry::Registry;

/// Wakes the engine at once instead of at its next tick. Shared by every thread.
#[derive(Clone, Default)]
pub struct Waker(Arc<Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one()
    }

    pub async fn woken(&self) {
        self.0.notified().await
    }
}

#[derive(Debug, Clone)]
pub struct NewActivityRequest {
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineTimings {
    pub poll_after_ms: i64,
    pub default_timeout_ms: i64,
}

impl EngineTimings {
    pub fn at(&self, now: i64) -> Timing {
        Timing {
            now,
            poll_after_ms: self.poll_after_ms,
            default_timeout_ms: self.default_timeout_ms,
        }
    }
}

#[derive(Clone)]
pub struct Lifecycle {
    pub(crate) db: Db,
    pub(crate) registry: Registry,
    pub(crate) keys: Keys,
    pub(crate) catalog: ExecutorCatalog,
    pub(crate) timings: EngineTimings,
    pub(crate) limits: LimitSettings,
    pub(crate) require_token: bool,
    pub(crate) waker: Waker,
    pub(crate) metrics: Arc<Metrics>,
}

/// A callback's task status after it, and what it changed (`None`: a replay, nothing).
type Recorded = (TaskStatus, Option<Applied>);

/// What applying a plan did: work left due for the engine, tasks ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    scheduled: bool,
    outcomes: TaskOutcomes,
}

impl Applied {
    pub(super) fn of(plan: &Plan) -> Applied {
        Applied {
            scheduled: plan.schedules_work(),
            outcomes: plan.task_outcomes(),
        }
    }

    /// Once committed: count the tasks it ended, wake the engine for the work it left.
    pub(super) fn committed(self, metrics: &Metrics, waker: &Waker) {
        metrics.tasks_ended(self.outcomes);
        if self.scheduled {
            waker.wake();
        }
    }
}

impl Lifecycle {
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates the activity and its tasks from the descriptor (and starts it when asked).
    pub async fn create_activity(
        &self,
        request: NewActivityRequest,
        start: bool,
        secrets: ActivitySecrets,
    ) -> Result<ActivityRow, CommandError> {
        let over = |e: crate::limits::OverLimit| CommandError::OverLimit(e.0);
        for (field, name) in [
            ("dataProductId", &request.data_product_id),
            ("dataProductVersion", &request.data_product_version),
            ("stage", &request.stage),
        ] {
            self.limits.check_name(field, name).map_err(over)?;
        }
        let descriptor = self
            .registry
            .descriptor(&request.data_product_id, &request.data_product_version)
            .await?;
        let info = descriptor::parse(&descriptor).map_err(|e| {
            CommandError::InvalidActivity(format!(
                "the descriptor of version {} of product {} is invalid: {e}",
                request.data_product_version, request.data_product_id
            ))
        })?;
        self.limits.check_lifecycle(&info).map_err(over)?;
        let definitions = stage_tasks(&info, &request)?;
        let definitions =
            super::task_templates::resolve(&self.registry, &request.stage, definitions).await?;
        super::task_placeholders::check_new_activity(
            &request.stage,
            &definitions,
            &info,
            &self.limits,
        )?;
        check_run_settings(&request.stage, &definitions)?;
        let (keys, timings) = (self.keys.clone(), self.timings);
        let activity = self
            .db
            .write(move |conn| -> Result<ActivityRow, CommandError> {
                let now = now_ms();
                let activity = insert_planned(conn, &request, &definitions, now)?;
                // Sealed once the id is known: it binds the secrets to this activity.
                if !secrets.is_empty() {
                    let sealed = keys.seal(activity.id, &secrets);
                    db::set_sealed_secrets(conn, activity.id, Some(&sealed))?;
                }
                if !start {
                    return Ok(activity);
                }
                start_in(conn, activity.id, None, timings.at(now))?;
                Ok(db::find_activity(conn, activity.id)?.expect("just written"))
            })
            .await?;
        if start {
            self.waker.wake();
        }
        Ok(activity)
    }

    pub async fn start_activity(
        &self,
        id: i64,
        secrets: ActivitySecrets,
    ) -> Result<ActivityStatus, CommandError> {
        let keys = self.keys.clone();
        let timings = self.timings;
        self.db
            .write(move |conn| {
                let fresh = (!secrets.is_empty()).then_some((keys, secrets));
                start_in(conn, id, fresh, timings.at(now_ms()))
            })
            .await?;
        self.waker.wake();
        Ok(ActivityStatus::Processing)
    }

    pub async fn abort_activity(&self, id: i64) -> Result<ActivityStatus, CommandError> {
        let timings = self.timings;
        let applied = self
            .db
            .write(move |conn| {
                let snapshot = snapshot(conn, id)?;
                let plan = state::abort(&snapshot, &timings.at(now_ms()))?;
                apply(conn, &plan)
            })
            .await?;
        applied.committed(&self.metrics, &self.waker);
        Ok(ActivityStatus::Aborted)
    }

    /// Deletes a PLANNED activity; returns it as it was.
    pub async fn delete_activity(&self, id: i64) -> Result<ActivityRow, CommandError> {
        self.db
            .write(move |conn| {
                let activity =
                    db::find_activity(conn, id)?.ok_or(CommandError::ActivityNotFound(id))?;
                if db::delete_planned_activity(conn, id)? == 0 {
                    return Err(CommandError::InvalidActivity(format!(
                        "activity {id} is {}: only a PLANNED activity can be deleted",
                        activity.status
                    )));
                }
                Ok(activity)
            })
            .await
    }

    /// A pipeline's callback: records the outcome in one transaction and wakes the engine.
    pub async fn callback(
        &self,
        task_id: i64,
        token: Option<String>,
        report: Report,
    ) -> Result<TaskStatus, CommandError> {
        // Measured here, refused after the token is checked: a caller without one learns nothing.
        let too_large = report.results.as_ref().and_then(|results| {
            self.limits
                .check_results("the callback's", results)
                .err()
                .map(|e| CommandError::ResultsTooLarge(e.0))
        });
        let this = self.clone();
        let recorded = self
            .db
            .write(move |conn| -> Result<Recorded, CommandError> {
                let task = db::find_task(conn, task_id)?;
                if this.require_token {
                    this.verify_token(task_id, task.as_ref(), token.as_deref())?;
                }
                if let Some(refusal) = too_large {
                    tracing::warn!(task_id, reason = %refusal, "callback refused");
                    return Err(refusal);
                }
                let task = task.ok_or(CommandError::TaskNotFound(task_id))?;
                let snapshot = snapshot(conn, task.activity_id)?;
                let confirm_first = this
                    .catalog
                    .check_after_callback(task.executor_ref.as_deref());
                let timing = this.timings.at(now_ms());
                match state::callback(&snapshot, task_id, report.clone(), confirm_first, &timing) {
                    Ok(CallbackDecision::AlreadyRecorded(status)) => Ok((status, None)),
                    Ok(CallbackDecision::Apply(plan)) => {
                        let applied = apply(conn, &plan)?;
                        Ok((
                            plan.task_status_after(task_id, TaskStatus::Processing),
                            Some(applied),
                        ))
                    }
                    Err(refusal) => {
                        tracing::warn!(task_id, reason = %refusal, "callback refused");
                        Err(refusal.into())
                    }
                }
            })
            .await;
        self.metrics.callback(callback_answer(&recorded));
        let (status, applied) = recorded?;
        applied
            .unwrap_or_default()
            .committed(&self.metrics, &self.waker);
        Ok(status)
    }

    /// An unknown task is refused like a wrong token: a callback cannot probe which ids exist.
    fn verify_token(
        &self,
        task_id: i64,
        task: Option<&TaskRow>,
        token: Option<&str>,
    ) -> Result<(), CommandError> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            CommandError::Unauthorized(
                "the callback has no token: use the callbackRef exactly as it was given".into(),
            )
        })?;
        let invalid = || {
            CommandError::Unauthorized(format!(
                "the callback token is not valid for task {task_id} (wrong or from an earlier attempt)"
            ))
        };
        let Some(task) = task else {
            tracing::warn!(task_id, "callback for an unknown task refused");
            return Err(invalid());
        };
        if self
            .keys
            .verify_callback_token(task.id, task.attempt, token)
        {
            Ok(())
        } else if (1..task.attempt)
            .any(|earlier| self.keys.verify_callback_token(task.id, earlier, token))
        {
            tracing::warn!(task_id = task.id, "callback of an earlier run refused");
            Err(CommandError::TaskConflict(format!(
                "this callback belongs to an earlier run of task {}, which was dispatched again since: it changes nothing",
                task.id
            )))
        } else {
            tracing::warn!(
                task_id = task.id,
                "callback with an invalid or outdated token refused"
            );
            Err(invalid())
        }
    }

    pub async fn abort_task(&self, task_id: i64) -> Result<TaskStatus, CommandError> {
        let timings = self.timings;
        let applied = self
            .db
            .write(move |conn| {
                let task =
                    db::find_task(conn, task_id)?.ok_or(CommandError::TaskNotFound(task_id))?;
                let snapshot = snapshot(conn, task.activity_id)?;
                let plan = state::abort_task(&snapshot, task_id, &timings.at(now_ms()))?;
                apply(conn, &plan)
            })
            .await?;
        applied.committed(&self.metrics, &self.waker);
        Ok(TaskStatus::Aborted)
    }
}

fn callback_answer(recorded: &Result<Recorded, CommandError>) -> CallbackAnswer {
    match recorded {
        Ok((_, Some(_))) => CallbackAnswer::Accepted,
        Ok((_, None)) => CallbackAnswer::Replay,
        Err(CommandError::Unauthorized(_)) => CallbackAnswer::Unauthorized,
        Err(CommandError::TaskConflict(_) | CommandError::ActivityConflict(_)) => {
            CallbackAnswer::Refused
        }
        Err(
            CommandError::TaskNotFound(_)
            | CommandError::InvalidCallback(_)
            | CommandError::ResultsTooLarge(_),
        ) => CallbackAnswer::Invalid,
        Err(_) => CallbackAnswer::Error,
    }
}

fn stage_tasks(
    info: &LifecycleInfo,
    request: &NewActivityRequest,
) -> Result<Vec<TaskDefinition>, CommandError> {
    let tasks = info.stages.get(&request.stage).ok_or_else(|| {
        CommandError::InvalidActivity(format!(
            "stage {} is not defined in the descriptor of version {} of product {} (its stages: {})",
            request.stage,
            request.data_product_version,
            request.data_product_id,
            info.stage_list()
        ))
    })?;
    if tasks.is_empty() {
        return Err(CommandError::InvalidActivity(format!(
            "stage {} of version {} of product {} has no tasks: an activity needs at least one",
            request.stage, request.data_product_version, request.data_product_id
        )));
    }
    Ok(tasks.clone())
}

/// Every task's `timeout` and `retry`, so a mistake is a 422 now rather than a surprise later.
fn check_run_settings(stage: &str, definitions: &[TaskDefinition]) -> Result<(), CommandError> {
    let problems: Vec<String> = definitions
        .iter()
        .filter_map(|d| {
            let configurations = d.configurations.as_ref()?;
            let problem = super::run_settings::check(configurations).err()?;
            Some(format!(
                "task {} ({}) of stage {stage}: {problem}",
                d.position, d.name
            ))
        })
        .collect();
    match problems.is_empty() {
        true => Ok(()),
        false => Err(CommandError::InvalidActivity(problems.join("; "))),
    }
}

fn insert_planned(
    conn: &mut DbConnection,
    request: &NewActivityRequest,
    definitions: &[TaskDefinition],
    now: i64,
) -> Result<ActivityRow, CommandError> {
    let (product, version, stage) = (
        &request.data_product_id,
        &request.data_product_version,
        &request.stage,
    );
    let duplicate = || {
        CommandError::DuplicatePlanned(format!(
            "a PLANNED activity for product {product}, version {version}, stage {stage} already exists"
        ))
    };
    if let Some(existing) = db::planned_activity(conn, product, version, stage)? {
        return Err(CommandError::DuplicatePlanned(format!(
            "activity {existing} is already PLANNED for product {product}, version {version}, stage {stage}: start or delete it"
        )));
    }
    let tasks = definitions
        .iter()
        .map(|d| NewTask {
            activity_id: 0,
            position: d.position as i32,
            name: &d.name,
            description: d.description.as_deref(),
            executor_ref: d.executor_ref.as_deref(),
            template: d.template.as_ref().map(|v| v.to_string()),
            configurations: d.configurations.as_ref().map(|v| v.to_string()),
            status: TaskStatus::Planned.as_str(),
            created_at: now,
        })
        .collect();
    let activity = NewActivity {
        data_product_id: product,
        data_product_version: version,
        stage,
        status: ActivityStatus::Planned.as_str(),
        sealed_secrets: None,
        created_at: now,
    };
    db::insert_activity(conn, activity, tasks).map_err(|e| {
        let e = crate::db::DbError::from(e);
        if e.is_unique_violation() {
            duplicate()
        } else {
            e.into()
        }
    })
}

/// Starts an activity inside the caller's transaction, adding freshly given secrets.
fn start_in(
    conn: &mut DbConnection,
    id: i64,
    fresh_secrets: Option<(Keys, ActivitySecrets)>,
    timing: Timing,
) -> Result<(), CommandError> {
    let snapshot = snapshot(conn, id)?;
    let plan = state::start(&snapshot, &timing)?;
    let a = &snapshot.activity;
    if let Some(other) = db::processing_activity(conn, &a.data_product_id, &a.data_product_version)?
    {
        return Err(CommandError::ActivityConflict(format!(
            "activity {other} of product {}, version {} is PROCESSING: only one activity of a product version runs at a time",
            a.data_product_id, a.data_product_version
        )));
    }
    apply(conn, &plan).map_err(|e| match e {
        CommandError::Db(db) if db.is_unique_violation() => {
            CommandError::ActivityConflict(format!(
                "another activity of product {}, version {} became PROCESSING at the same time: \
                 only one activity of a product version runs at a time",
                a.data_product_id, a.data_product_version
            ))
        }
        other => other,
    })?;
    if let Some((keys, fresh)) = fresh_secrets {
        let mut secrets = match &a.sealed_secrets {
            Some(sealed) => keys
                .unseal(id, sealed)
                .map_err(CommandError::InvalidActivity)?,
            None => ActivitySecrets::new(),
        };
        for (executor, given) in fresh {
            secrets.entry(executor).or_default().extend(given);
        }
        db::set_sealed_secrets(conn, id, Some(&keys.seal(id, &secrets)))?;
    }
    Ok(())
}

fn snapshot(conn: &mut DbConnection, activity_id: i64) -> Result<Snapshot, CommandError> {
    db::load_snapshot(conn, activity_id)?.ok_or(CommandError::ActivityNotFound(activity_id))
}

fn apply(conn: &mut DbConnection, plan: &Plan) -> Result<Applied, CommandError> {
    db::apply_plan(conn, plan, now_ms())?;
    Ok(Applied::of(plan))
}
