//! Reading a snapshot and applying the state machine's plan to it.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::activities::find_activity;
use super::tasks::tasks_of;
use super::Conn;
use crate::db::models::ActivityRow;
use crate::db::schema::{activities, lifecycles, tasks};
use crate::db::DbConnection;
use crate::lifecycle::state::{Plan, Snapshot};

/// Reads an activity and its tasks to change them. On PostgreSQL the activity row is locked
/// until the transaction ends, so writers of one activity queue instead of conflicting (SQLite's
/// `BEGIN IMMEDIATE` already serializes every writer).
pub fn load_snapshot(conn: &mut Conn, activity_id: i64) -> QueryResult<Option<Snapshot>> {
    let activity = match conn {
        DbConnection::Pg(pg) => activities::table
            .find(activity_id)
            .for_update()
            .select(ActivityRow::as_select())
            .first(pg)
            .optional()?,
        DbConnection::Sqlite(_) => find_activity(conn, activity_id)?,
    };
    let Some(activity) = activity else {
        return Ok(None);
    };
    let tasks = tasks_of(conn, activity_id)?;
    Ok(Some(Snapshot { activity, tasks }))
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An expectation of the plan no longer holds: someone else changed the rows first.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Query(#[from] DieselError),
}

/// Applies a state-machine plan with compare-and-set updates. Call inside `Db::write`.
pub fn apply_plan(conn: &mut Conn, plan: &Plan, now: i64) -> Result<(), ApplyError> {
    if let Some(update) = &plan.activity {
        let changed = diesel::update(
            activities::table
                .filter(activities::id.eq(update.id))
                .filter(activities::status.eq(update.expected.as_str())),
        )
        .set(&update.changes)
        .execute(conn)?;
        if changed == 0 {
            return Err(ApplyError::Conflict(format!(
                "activity {} is no longer {}",
                update.id, update.expected
            )));
        }
    }
    for update in &plan.tasks {
        let target = tasks::table
            .filter(tasks::id.eq(update.id))
            .filter(tasks::status.eq(update.expected.as_str()));
        let changed = match &update.expected_lease {
            Some(lease) => diesel::update(target.filter(tasks::lease_owner.eq(lease)))
                .set(&update.changes)
                .execute(conn)?,
            None => diesel::update(target).set(&update.changes).execute(conn)?,
        };
        if changed == 0 {
            return Err(ApplyError::Conflict(format!(
                "task {} is no longer {}",
                update.id, update.expected
            )));
        }
    }
    if plan.promote_lifecycle {
        let id = plan
            .activity
            .as_ref()
            .map(|a| a.id)
            .expect("a promotion comes with its activity");
        promote_lifecycle(conn, id, now)?;
    }
    Ok(())
}

/// Closes the current lifecycle row of the product version and opens the activity's stage.
/// The unique index on `activity_id` makes a second promotion of the same activity fail.
fn promote_lifecycle(conn: &mut Conn, activity_id: i64, now: i64) -> QueryResult<()> {
    let activity = find_activity(conn, activity_id)?.ok_or(DieselError::NotFound)?;
    diesel::update(
        lifecycles::table
            .filter(lifecycles::data_product_id.eq(&activity.data_product_id))
            .filter(lifecycles::data_product_version.eq(&activity.data_product_version))
            .filter(lifecycles::finished_at.is_null()),
    )
    .set(lifecycles::finished_at.eq(now))
    .execute(conn)?;
    diesel::insert_into(lifecycles::table)
        .values((
            lifecycles::data_product_id.eq(&activity.data_product_id),
            lifecycles::data_product_version.eq(&activity.data_product_version),
            lifecycles::stage.eq(&activity.stage),
            lifecycles::activity_id.eq(activity.id),
            lifecycles::results.eq(&activity.results),
            lifecycles::started_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}
