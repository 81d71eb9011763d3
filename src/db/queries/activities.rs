//! Activities: insert, find, list, delete.

use diesel::prelude::*;

use super::plans::TaskStateRow;
use super::{Conn, Page};
use crate::db::models::*;
use crate::db::schema::{activities, tasks};
use crate::db::DbConnection;
use crate::domain::{ActivityId, ActivityStatus, TaskState};

#[derive(Debug, Default, Clone)]
pub struct ActivityFilter {
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
    pub stage: Option<String>,
    pub status: Option<ActivityStatus>,
    pub page: Page,
}

/// Tasks inserted per statement: PostgreSQL takes at most 65,535 bound values in one, and a
/// task binds 13 (`limits.tasks_per_stage` may be raised past what one statement holds).
const TASKS_PER_INSERT: usize = 1_000;

/// Inserts the activity and its tasks: one statement for the activity and one per
/// `TASKS_PER_INSERT` tasks (on PostgreSQL each statement is a round trip). The activity's row
/// and its tasks' light state (`TaskState`, by position) come back with them, as the database
/// filled them in: what a start decides on, with nothing read.
pub fn insert_activity(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    new_tasks: Vec<NewTask<'_>>,
) -> QueryResult<(ActivityRow, Vec<TaskState>)> {
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
    let mut tasks: Vec<TaskState> = inserted.into_iter().map(TaskStateRow::into_state).collect();
    tasks.sort_by_key(|t| t.position);
    Ok((row, tasks))
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
