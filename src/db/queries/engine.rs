//! What the engine reads and claims: due steps, and the Context's activities.

use diesel::prelude::*;

use super::Conn;
use crate::db::models::*;
use crate::db::schema::{activities, tasks};
use crate::db::DbConnection;
use crate::domain::{ActivityStatus, Step};

/// A step the engine now owns until `lease_until`.
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    pub task: TaskRow,
    pub claim: String,
    /// Another owner held it and let its lease expire (it crashed or stalled mid-step).
    pub abandoned: bool,
}

/// Claims up to `limit` due steps for `claim`. A fresh dispatch starts a new attempt (and with
/// it a new callback token); an abandoned one keeps its attempt, whose callback may still come.
pub fn claim_due_steps(
    conn: &mut Conn,
    claim: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> QueryResult<Vec<ClaimedStep>> {
    let free = || tasks::lease_owner.is_null().or(tasks::lease_until.lt(now));
    let due = tasks::table
        .filter(tasks::step.is_not_null())
        .filter(tasks::due_at.le(now))
        .filter(free())
        .order(tasks::due_at)
        .limit(limit)
        .select((tasks::id, tasks::step, tasks::lease_owner));
    let candidates: Vec<(i64, Option<String>, Option<String>)> = match conn {
        // The rows read stay as read until the claim commits, and rows another replica is
        // changing are passed by: otherwise a task that replica claimed, dispatched and released
        // meanwhile would be claimed again below (no longer due, and taken for a fresh dispatch).
        DbConnection::Pg(pg) => due.for_update().skip_locked().load(pg)?,
        // BEGIN IMMEDIATE: no other writer runs until this claim commits.
        DbConnection::Sqlite(_) => due.load(conn)?,
    };
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = candidates.iter().map(|c| c.0).collect();
    diesel::update(tasks::table.filter(tasks::id.eq_any(&ids)).filter(free()))
        .set((
            tasks::lease_owner.eq(claim),
            tasks::lease_until.eq(lease_until),
        ))
        .execute(conn)?;
    let fresh_dispatches: Vec<i64> = candidates
        .iter()
        .filter(|(_, step, owner)| {
            step.as_deref() == Some(Step::Dispatch.as_str()) && owner.is_none()
        })
        .map(|c| c.0)
        .collect();
    if !fresh_dispatches.is_empty() {
        diesel::update(
            tasks::table
                .filter(tasks::id.eq_any(&fresh_dispatches))
                .filter(tasks::lease_owner.eq(claim)),
        )
        .set(tasks::attempt.eq(tasks::attempt + 1))
        .execute(conn)?;
    }
    let claimed: Vec<TaskRow> = tasks::table
        .filter(tasks::id.eq_any(&ids))
        .filter(tasks::lease_owner.eq(claim))
        .select(TaskRow::as_select())
        .load(conn)?;
    Ok(claimed
        .into_iter()
        .map(|task| {
            let abandoned = candidates
                .iter()
                .any(|(id, _, owner)| *id == task.id && owner.is_some());
            ClaimedStep {
                task,
                claim: claim.to_owned(),
                abandoned,
            }
        })
        .collect())
}

/// The activities the Context is built from: the PROCESSED ones of the product version, and
/// `current`.
#[diesel::dsl::auto_type]
fn in_context<'a>(product: &'a str, version: &'a str, current: i64) -> _ {
    let processed: &'static str = ActivityStatus::Processed.as_str();
    activities::data_product_id
        .eq(product)
        .and(activities::data_product_version.eq(version))
        .and(
            activities::status
                .eq(processed)
                .or(activities::id.eq(current)),
        )
}

/// One entry per stage for the Context (see `in_context`), oldest first.
pub fn context_activities(
    conn: &mut Conn,
    product: &str,
    version: &str,
    current: i64,
) -> QueryResult<Vec<StageActivity>> {
    activities::table
        .filter(in_context(product, version, current))
        .order(activities::id)
        .select((
            activities::id,
            activities::stage,
            activities::status,
            activities::finished_at,
            activities::results,
        ))
        .load(conn)
}

/// `(activity id, position, name)` of the tasks of the activities `context_activities` reads,
/// in one fixed-shape statement (an `IN (…)` list would be compiled again on every dispatch).
pub fn context_task_names(
    conn: &mut Conn,
    product: &str,
    version: &str,
    current: i64,
) -> QueryResult<Vec<(i64, i32, String)>> {
    tasks::table
        .inner_join(activities::table)
        .filter(in_context(product, version, current))
        .select((tasks::activity_id, tasks::position, tasks::name))
        .load(conn)
}
