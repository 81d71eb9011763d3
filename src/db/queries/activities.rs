//! Activities: insert, find, list, delete.

use diesel::prelude::*;

use super::insert_pg::insert_activity_with_tasks;
use super::plans::run_settings;
use super::plans::TaskStateRow;
use super::{Conn, Page};
use crate::db::models::*;
use crate::db::schema::{activities, tasks};
use crate::db::DbConnection;
use crate::domain::{
    ActivityId, ActivityState, ActivityStatus, Plan, Snapshot, TaskChanges, TaskId, TaskState,
};

#[derive(Debug, Default, Clone)]
pub struct ActivityFilter {
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
    pub stage: Option<String>,
    pub status: Option<ActivityStatus>,
    pub page: Page,
}

/// Tasks inserted per statement where each binds its own values (13; PostgreSQL takes at most
/// 65,535 in one, and `limits.tasks_per_stage` may be raised past what one statement holds).
const TASKS_PER_INSERT: usize = 1_000;

/// Inserts the activity and its tasks. The activity's row and its tasks' light state
/// (`TaskState`, by position) come back with them, as the database filled them in: what a start
/// decides on, with nothing read. On PostgreSQL one statement (`insert_pg.rs`); on SQLite, where
/// a statement costs no round trip, one for the activity and one per `TASKS_PER_INSERT` tasks.
pub fn insert_activity(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    new_tasks: Vec<NewTask<'_>>,
) -> QueryResult<(ActivityRow, Vec<TaskState>)> {
    let inserted = match conn {
        DbConnection::Pg(pg) if !new_tasks.is_empty() => {
            insert_activity_with_tasks(pg, &activity, &new_tasks, false)?
        }
        _ => return insert_one_by_one(conn, activity, new_tasks).map(by_position),
    };
    inserted_rows(inserted).ok_or(diesel::result::Error::NotFound)
}

/// As `insert_activity`, unless the version has a PROCESSING activity or the stage a PLANNED
/// one (`activities_in_the_way`, what stops a started activity): then `None`, nothing written.
/// On PostgreSQL the INSERT checks it itself (a statement less than reading first).
fn insert_activity_unless_in_the_way(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    new_tasks: Vec<NewTask<'_>>,
) -> QueryResult<Option<(ActivityRow, Vec<TaskState>)>> {
    match conn {
        DbConnection::Pg(pg) if !new_tasks.is_empty() => {
            let inserted = insert_activity_with_tasks(pg, &activity, &new_tasks, true)?;
            Ok(inserted_rows(inserted))
        }
        _ => {
            let (product, version) = (activity.data_product_id, activity.data_product_version);
            let in_the_way = activities_in_the_way(conn, product, version, activity.stage)?;
            if in_the_way.planned.is_some() || in_the_way.processing.is_some() {
                return Ok(None);
            }
            insert_activity(conn, activity, new_tasks).map(Some)
        }
    }
}

/// The rows `insert_activity_with_tasks` answered (one per task, each with the activity's).
fn inserted_rows(rows: Vec<(ActivityRow, TaskStateRow)>) -> Option<(ActivityRow, Vec<TaskState>)> {
    let activity = rows.first().map(|(a, _)| a.clone())?;
    Some(by_position((
        activity,
        rows.into_iter().map(|(_, t)| t).collect(),
    )))
}

/// The tasks' state in position order.
fn by_position(
    (activity, tasks): (ActivityRow, Vec<TaskStateRow>),
) -> (ActivityRow, Vec<TaskState>) {
    let mut tasks: Vec<TaskState> = tasks.into_iter().map(TaskStateRow::into_state).collect();
    tasks.sort_by_key(|t| t.position);
    (activity, tasks)
}

/// The activity's INSERT, then its tasks'.
fn insert_one_by_one(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    new_tasks: Vec<NewTask<'_>>,
) -> QueryResult<(ActivityRow, Vec<TaskStateRow>)> {
    // MultiConnection supports neither `as_returning` nor batch inserts: the same statements,
    // built for the connection's backend.
    let row: ActivityRow = match conn {
        DbConnection::Pg(pg) => diesel::insert_into(activities::table)
            .values(&activity)
            .returning(ActivityRow::as_returning())
            .get_result(pg)?,
        DbConnection::Sqlite(sqlite) => diesel::insert_into(activities::table)
            .values(&activity)
            .returning(ActivityRow::as_returning())
            .get_result(sqlite)?,
    };
    let new_tasks: Vec<NewTask<'_>> = new_tasks
        .into_iter()
        .map(|task| NewTask {
            activity_id: row.id,
            ..task
        })
        .collect();
    let mut inserted: Vec<TaskStateRow> = Vec::with_capacity(new_tasks.len());
    for chunk in new_tasks.chunks(TASKS_PER_INSERT) {
        inserted.extend(match conn {
            DbConnection::Pg(pg) => diesel::insert_into(tasks::table)
                .values(chunk)
                .returning(TaskStateRow::as_returning())
                .get_results(pg)?,
            DbConnection::Sqlite(sqlite) => diesel::insert_into(tasks::table)
                .values(chunk)
                .returning(TaskStateRow::as_returning())
                .get_results(sqlite)?,
        });
    }
    Ok((row, inserted))
}

/// The snapshot of an activity about to be inserted with `tasks`, as `insert_activity` would
/// write them: what its start decides on before the INSERT (`insert_started_activity`). Its ids
/// are stand-ins, never a stored row's: the activity's 0, task `i`'s `-(i + 1)`.
pub fn new_rows_snapshot(activity: &NewActivity<'_>, tasks: &[NewTask<'_>]) -> Snapshot {
    Snapshot {
        activity: ActivityState {
            id: ActivityId(0),
            status: activity.status,
            results: None,
            holds_secrets: activity.sealed_secrets.is_some(),
        },
        tasks: tasks
            .iter()
            .enumerate()
            .map(|(i, t)| TaskState {
                id: stand_in(i),
                position: t.position,
                name: t.name.to_owned(),
                executor: t.executor_ref.map(str::to_owned),
                status: t.status,
                attempt: t.begun.attempt,
                step: t.begun.step,
                lease_owner: t.begun.lease_owner.clone(),
                deadline_at: t.begun.deadline_at,
                step_attempts: t.begun.step_attempts,
                runs_failed: 0,
                has_run: false,
                holds_callback: false,
                settings: run_settings(t.timeout_ms, t.retry_max, t.retry_backoff_ms),
            })
            .collect(),
        recorded: None,
    }
}

fn stand_in(index: usize) -> TaskId {
    TaskId(-1 - index as i64)
}

/// Inserts an activity already started: `start`, decided on `new_rows_snapshot`, made in the
/// rows themselves (one statement less than an INSERT and then the start's UPDATE). `None`,
/// and nothing written, when `start` changes what a new row cannot hold or another activity is
/// in the way (`insert_activity_unless_in_the_way`): the caller takes the long way, which says
/// which. Else the activity's row and its tasks' state by position (`stored_id` finds a
/// stand-in's among them).
pub fn insert_started_activity(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    tasks: Vec<NewTask<'_>>,
    start: &Plan,
    now: i64,
) -> QueryResult<Option<(ActivityRow, Vec<TaskState>)>> {
    let activity = match &start.activity {
        Some(update) => match activity.changed_by(&update.changes) {
            Some(started) => started,
            None => return Ok(None),
        },
        None => activity,
    };
    let mut changes: Vec<Option<&TaskChanges>> = vec![None; tasks.len()];
    for update in &start.tasks {
        match stand_in_index(update.id).and_then(|i| changes.get_mut(i)) {
            Some(slot @ None) => *slot = Some(&update.changes),
            _ => return Ok(None),
        }
    }
    let tasks = tasks
        .into_iter()
        .zip(changes)
        .map(|(task, changes)| match changes {
            Some(changes) => task.changed_by(changes),
            None => Some(task),
        });
    let Some(tasks) = tasks.collect::<Option<Vec<NewTask<'_>>>>() else {
        return Ok(None);
    };
    let Some(inserted) = insert_activity_unless_in_the_way(conn, activity, tasks)? else {
        return Ok(None);
    };
    if start.makes_work_due(now) {
        // As `apply_plan`: other replicas are woken when this transaction commits.
        crate::db::listen::mark_work_due();
    }
    Ok(Some(inserted))
}

/// The stored id of the stand-in `id` of `snapshot` (`new_rows_snapshot`) among the inserted
/// `tasks`: the one at its position.
pub fn stored_id(id: TaskId, snapshot: &Snapshot, tasks: &[TaskState]) -> Option<TaskId> {
    let position = snapshot.task(id)?.position;
    tasks.iter().find(|t| t.position == position).map(|t| t.id)
}

fn stand_in_index(id: TaskId) -> Option<usize> {
    usize::try_from(-1 - id.get()).ok()
}

pub fn find_activity(conn: &mut Conn, id: ActivityId) -> QueryResult<Option<ActivityRow>> {
    activities::table
        .find(id)
        .select(ActivityRow::as_select())
        .first(conn)
        .optional()
}

pub fn list_activities(conn: &mut Conn, filter: &ActivityFilter) -> QueryResult<Vec<ActivityRow>> {
    let mut query = activities::table.into_boxed();
    if let Some(v) = &filter.data_product_id {
        query = query.filter(activities::data_product_id.eq(v.clone()));
    }
    if let Some(v) = &filter.data_product_version {
        query = query.filter(activities::data_product_version.eq(v.clone()));
    }
    if let Some(v) = &filter.stage {
        query = query.filter(activities::stage.eq(v.clone()));
    }
    if let Some(v) = filter.status {
        query = query.filter(activities::status.eq(v));
    }
    if let Some(after) = filter.page.after {
        query = query.filter(activities::id.gt(after));
    }
    if let Some(limit) = filter.page.limit {
        query = query.limit(limit);
    }
    query
        .order(activities::id)
        .select(ActivityRow::as_select())
        .load(conn)
}

/// Deletes a PLANNED activity (its tasks go with it); `None` when it is not PLANNED anymore.
pub fn delete_planned_activity(conn: &mut Conn, id: ActivityId) -> QueryResult<usize> {
    diesel::delete(
        activities::table
            .filter(activities::id.eq(id))
            .filter(activities::status.eq(ActivityStatus::Planned)),
    )
    .execute(conn)
}

pub fn set_sealed_secrets(
    conn: &mut Conn,
    id: ActivityId,
    sealed: Option<&str>,
) -> QueryResult<usize> {
    diesel::update(activities::table.find(id))
        .set(activities::sealed_secrets.eq(sealed))
        .execute(conn)
}

/// The activities a new one of a product version's stage may meet: the PLANNED one of the
/// stage and the PROCESSING one of the version (unique indexes allow one of each).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ActivitiesInTheWay {
    pub planned: Option<ActivityId>,
    pub processing: Option<ActivityId>,
}

/// `ActivitiesInTheWay` of a product version's stage, in one statement (creating an activity
/// asked two, a round trip each on PostgreSQL).
pub fn activities_in_the_way(
    conn: &mut Conn,
    product: &str,
    version: &str,
    stage: &str,
) -> QueryResult<ActivitiesInTheWay> {
    let planned_here = activities::stage
        .eq(stage)
        .and(activities::status.eq(ActivityStatus::Planned));
    let found: Vec<(ActivityId, ActivityStatus)> = activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .filter(
            activities::status
                .eq(ActivityStatus::Processing)
                .or(planned_here),
        )
        .select((activities::id, activities::status))
        .limit(2)
        .load(conn)?;
    let of = |status| found.iter().find(|(_, s)| *s == status).map(|(id, _)| *id);
    Ok(ActivitiesInTheWay {
        planned: of(ActivityStatus::Planned),
        processing: of(ActivityStatus::Processing),
    })
}
