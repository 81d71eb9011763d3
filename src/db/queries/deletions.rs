//! The deletions an ODM observer event asks for (a product version deleted in ODM): which
//! activities it concerns, and deleting them once they owe the engine nothing.

use diesel::dsl::exists;
use diesel::prelude::*;

use super::Conn;
use crate::db::schema::{activities, activity_deletions};
use crate::domain::ActivityId;

/// Activities of a product (one version, or all when `None`) created so far, by status: what
/// an observer's deletion must abort and delete.
pub fn activities_of(
    conn: &mut Conn,
    product: &str,
    version: Option<&str>,
) -> QueryResult<Vec<(ActivityId, crate::domain::ActivityStatus)>> {
    let mut query = activities::table
        .filter(activities::data_product_id.eq(product))
        .into_boxed();
    if let Some(version) = version {
        query = query.filter(activities::data_product_version.eq(version));
    }
    query
        .order(activities::id)
        .select((activities::id, activities::status))
        .load(conn)
}

pub fn insert_activity_deletion(
    conn: &mut Conn,
    product: &str,
    version: Option<&str>,
    up_to_activity: ActivityId,
    now: i64,
) -> QueryResult<()> {
    diesel::insert_into(activity_deletions::table)
        .values((
            activity_deletions::data_product_id.eq(product),
            activity_deletions::data_product_version.eq(version),
            activity_deletions::up_to_activity.eq(up_to_activity.get()),
            activity_deletions::requested_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

/// Carries out the deletions asked for: deletes each one's activities (tasks go with them) that
/// owe the engine nothing any more, and forgets a deletion with nothing left. How many
/// activities were deleted.
pub fn carry_out_activity_deletions(conn: &mut Conn) -> QueryResult<usize> {
    use crate::db::schema::tasks;
    let asked: Vec<(i64, String, Option<String>, i64)> = activity_deletions::table
        .select((
            activity_deletions::id,
            activity_deletions::data_product_id,
            activity_deletions::data_product_version,
            activity_deletions::up_to_activity,
        ))
        .load(conn)?;
    let mut deleted = 0;
    for (id, product, version, up_to) in asked {
        let mut of_it = activities::table
            .filter(activities::data_product_id.eq(product.clone()))
            .filter(activities::id.le(up_to))
            .into_boxed();
        if let Some(version) = &version {
            of_it = of_it.filter(activities::data_product_version.eq(version.clone()));
        }
        let ids: Vec<ActivityId> = of_it.select(activities::id).load(conn)?;
        if ids.is_empty() {
            diesel::delete(activity_deletions::table.find(id)).execute(conn)?;
            continue;
        }
        let busy: Vec<ActivityId> = tasks::table
            .filter(tasks::activity_id.eq_any(&ids))
            .filter(tasks::step.is_not_null())
            .select(tasks::activity_id)
            .distinct()
            .load(conn)?;
        let done: Vec<ActivityId> = ids.into_iter().filter(|a| !busy.contains(a)).collect();
        if done.is_empty() {
            continue;
        }
        diesel::delete(tasks::table.filter(tasks::activity_id.eq_any(&done))).execute(conn)?;
        deleted +=
            diesel::delete(activities::table.filter(activities::id.eq_any(&done))).execute(conn)?;
        if busy.is_empty() {
            diesel::delete(activity_deletions::table.find(id)).execute(conn)?;
        }
    }
    Ok(deleted)
}

/// Some deletion waits for runs to be cancelled.
pub fn activity_deletions_pending(conn: &mut Conn) -> QueryResult<bool> {
    diesel::select(exists(
        activity_deletions::table.select(activity_deletions::id),
    ))
    .get_result(conn)
}
