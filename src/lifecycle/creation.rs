//! A new activity's rows: checked against the descriptor's stage, refused when one is in the
//! way, and inserted PLANNED, or already started (its start decided on the rows about to be
//! written, one statement less than an INSERT and then the start's UPDATE).

use super::commands::NewActivityRequest;
use super::error::CommandError;
use super::handoff::HandoffLease;
use super::plumbing::Applied;
use super::state::{self, Timing};
use crate::db::models::{ActivityRow, NewActivity, NewTask};
use crate::db::{self, DbConnection};
use crate::descriptor::{LifecycleInfo, TaskDefinition};
use crate::domain::{ActivityId, ActivityStatus, RunSettings, TaskState, TaskStatus};

pub(super) fn stage_tasks(
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
pub(super) fn run_settings(
    stage: &str,
    definitions: &[TaskDefinition],
) -> Result<Vec<RunSettings>, CommandError> {
    let mut settings = Vec::with_capacity(definitions.len());
    let mut problems = Vec::new();
    for d in definitions {
        let checked = match &d.configurations {
            Some(configurations) => super::run_settings::check(configurations),
            None => Ok(RunSettings::default()),
        };
        match checked {
            Ok(s) => settings.push(s),
            Err(problem) => problems.push(format!(
                "task {} ({}) of stage {stage}: {problem}",
                d.position, d.name
            )),
        }
    }
    match problems.is_empty() {
        true => Ok(settings),
        false => Err(CommandError::InvalidActivity(problems.join("; "))),
    }
}

/// A new activity, as checked.
pub(super) struct Planned<'a> {
    pub request: &'a NewActivityRequest,
    pub definitions: &'a [TaskDefinition],
    /// One per definition.
    pub settings: &'a [RunSettings],
}

/// The activities in the way of a new one of the request's stage that do not stop it (the
/// version's PROCESSING one only stops a start); refused when the stage has a PLANNED one.
pub(super) fn refuse_duplicate(
    conn: &mut DbConnection,
    request: &NewActivityRequest,
) -> Result<db::ActivitiesInTheWay, CommandError> {
    let (product, version, stage) = (
        &request.data_product_id,
        &request.data_product_version,
        &request.stage,
    );
    let in_the_way = db::activities_in_the_way(conn, product, version, stage)?;
    if let Some(existing) = in_the_way.planned {
        return Err(CommandError::DuplicatePlanned(format!(
            "activity {existing} is already PLANNED for product {product}, version {version}, stage {stage}: start or delete it"
        )));
    }
    Ok(in_the_way)
}

/// The rows of a new PLANNED activity and its tasks (the tasks' `activity_id` is filled in by
/// the INSERT).
pub(super) fn new_rows<'a>(new: &'a Planned<'a>, now: i64) -> (NewActivity<'a>, Vec<NewTask<'a>>) {
    let request = new.request;
    let tasks = new
        .definitions
        .iter()
        .zip(new.settings)
        .map(|(d, settings)| {
            let configurations = d.configurations.as_ref().map(|v| v.to_string());
            NewTask {
                activity_id: ActivityId(0),
                position: d.position as i32,
                name: &d.name,
                description: d.description.as_deref(),
                executor_ref: d.executor_ref.as_deref(),
                template: d.template.as_ref().map(|v| v.to_string()),
                planned_configurations: configurations.clone(),
                configurations,
                status: TaskStatus::Planned,
                created_at: now,
                timeout_ms: settings.timeout_ms,
                retry_max: settings.retry.map(|r| r.max as i32),
                retry_backoff_ms: settings.retry.map(|r| r.backoff_ms),
                begun: Default::default(),
            }
        })
        .collect();
    let activity = NewActivity {
        data_product_id: &request.data_product_id,
        data_product_version: &request.data_product_version,
        stage: &request.stage,
        status: ActivityStatus::Planned,
        sealed_secrets: None,
        created_at: now,
        started_at: None,
    };
    (activity, tasks)
}

/// Inserts the PLANNED activity and its tasks (`refuse_duplicate` checked first): it, and its
/// tasks' state by position.
pub(super) fn insert_planned(
    conn: &mut DbConnection,
    new: &Planned<'_>,
    now: i64,
) -> Result<(ActivityRow, Vec<TaskState>), CommandError> {
    let (activity, tasks) = new_rows(new, now);
    db::insert_activity(conn, activity, tasks).map_err(|e| {
        let e = crate::db::DbError::from(e);
        if e.is_unique_violation() {
            let r = new.request;
            CommandError::DuplicatePlanned(format!(
                "a PLANNED activity for product {}, version {}, stage {} already exists",
                r.data_product_id, r.data_product_version, r.stage
            ))
        } else {
            e.into()
        }
    })
}

/// Inserts the activity already started, its start decided on the rows about to be written
/// (`state::start` on `db::new_rows_snapshot`, as `start_in` decides on what the INSERT
/// answered) and its first dispatch handed to the engine when room was reserved. `None`, and
/// nothing written, when the start's changes do not fit the new rows or another activity is in
/// the way (the INSERT checks, `db::insert_started_activity`): the caller takes the long way
/// (`refuse_duplicate`, insert, then start), which refuses naming what is in the way.
pub(super) fn insert_started(
    conn: &mut DbConnection,
    new: &Planned<'_>,
    handoff: Option<&HandoffLease>,
    timing: Timing,
) -> Result<Option<(ActivityRow, Applied)>, CommandError> {
    let request = new.request;
    let (activity, tasks) = new_rows(new, timing.now);
    let snapshot = db::new_rows_snapshot(&activity, &tasks);
    let mut plan = state::start(&snapshot, &timing)?;
    let handed = handoff.and_then(|lease| lease.take_unstored(&mut plan, &snapshot, timing.now));
    let inserted =
        db::insert_started_activity(conn, activity, tasks, &plan, timing.now).map_err(|e| {
            match crate::db::DbError::from(e) {
                // The PROCESSING one of the version (the PLANNED index is not this row's).
                e if e.is_unique_violation() => CommandError::ActivityConflict(format!(
                "another activity of product {}, version {} became PROCESSING at the same time: \
                 only one activity of a product version runs at a time",
                request.data_product_id, request.data_product_version
            )),
                e => e.into(),
            }
        })?;
    let Some((activity, tasks)) = inserted else {
        return Ok(None);
    };
    let handed = handed.and_then(|id| db::stored_id(id, &snapshot, &tasks));
    if let (Some(lease), Some(task)) = (handoff, handed) {
        lease.read_before_commit(task);
    }
    let applied = Applied::of(&plan, timing.now).handing(handed);
    Ok(Some((activity, applied)))
}

pub(super) fn processing_conflict(other: ActivityId, product: &str, version: &str) -> CommandError {
    CommandError::ActivityConflict(format!(
        "activity {other} of product {product}, version {version} is PROCESSING: only one activity of a product version runs at a time"
    ))
}
