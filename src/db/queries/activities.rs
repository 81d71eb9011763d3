//! Activities: insert, find, list, delete.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::{Conn, Page};
use crate::db::models::*;
use crate::db::schema::{activities, tasks};
use crate::domain::{ActivityId, ActivityStatus};

#[derive(Debug, Default, Clone)]
pub struct ActivityFilter {
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
    pub stage: Option<String>,
    pub status: Option<ActivityStatus>,
    pub page: Page,
}

pub fn insert_activity(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    new_tasks: Vec<NewTask<'_>>,
) -> QueryResult<ActivityRow> {
    // MultiConnection supports neither `as_returning` nor batch inserts: one row at a time.
    let id: ActivityId = diesel::insert_into(activities::table)
        .values(&activity)
        .returning(activities::id)
        .get_result(conn)?;
    for task in new_tasks {
        diesel::insert_into(tasks::table)
            .values(&NewTask {
                activity_id: id,
                ..task
            })
            .execute(conn)?;
    }
    find_activity(conn, id)?.ok_or(DieselError::NotFound)
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

/// The PROCESSING activity of a product version, if any.
pub fn processing_activity(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Option<ActivityId>> {
    activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .filter(activities::status.eq(ActivityStatus::Processing))
        .select(activities::id)
        .first(conn)
        .optional()
}

/// The PLANNED activity of a product version's stage, if any.
pub fn planned_activity(
    conn: &mut Conn,
    product: &str,
    version: &str,
    stage: &str,
) -> QueryResult<Option<ActivityId>> {
    activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .filter(activities::stage.eq(stage))
        .filter(activities::status.eq(ActivityStatus::Planned))
        .select(activities::id)
        .first(conn)
        .optional()
}
