//! What the engine claims and reads: due steps, and the Context's activities.

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::Integer;

use super::plans::stored_report;
use super::Conn;
use crate::db::models::*;
use crate::db::schema::{activities, tasks};
use crate::db::DbConnection;
use crate::domain::{
    ActivityId, ActivityKeys, ActivityStatus, ClaimCandidate, ClaimDecision, ClaimedStep,
    ClaimedTask, Step, TaskId,
};

/// Up to `limit` due steps nobody holds (or whose lease ran out), oldest due first. On
/// PostgreSQL the rows stay as read until the claim commits, and rows another replica is
/// changing are passed by: otherwise a task that replica claimed, dispatched and released
/// meanwhile would be claimed again (no longer due, and taken for a fresh dispatch). On SQLite
/// the writer's `BEGIN IMMEDIATE` lets no other writer run until the claim commits.
pub fn due_steps(conn: &mut Conn, now: i64, limit: i64) -> QueryResult<Vec<ClaimCandidate>> {
    let due = tasks::table
        .filter(tasks::step.is_not_null())
        .filter(tasks::due_at.le(now))
        .filter(tasks::lease_owner.is_null().or(tasks::lease_until.lt(now)))
        .order(tasks::due_at)
        .limit(limit)
        .select((tasks::id, tasks::step, tasks::lease_owner));
    let rows: Vec<(TaskId, Option<Step>, Option<String>)> = match conn {
        DbConnection::Pg(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(_) => due.load(conn)?,
    };
    Ok(rows
        .into_iter()
        .filter_map(|(task, step, held_by)| {
            step.map(|step| ClaimCandidate {
                task,
                step,
                held_by,
            })
        })
        .collect())
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = tasks)]
struct ClaimedTaskRow {
    id: TaskId,
    activity_id: ActivityId,
    position: i32,
    name: String,
    executor_ref: Option<String>,
    template: Option<String>,
    planned_configurations: Option<String>,
    attempt: i32,
    step_attempts: i32,
    runs_failed: i32,
    due_at: Option<i64>,
    started_at: Option<i64>,
    deadline_at: Option<i64>,
    run_ref: Option<String>,
    reported_outcome: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = activities)]
struct ActivityKeysRow {
    id: ActivityId,
    data_product_id: String,
    data_product_version: String,
    stage: String,
    sealed_secrets: Option<String>,
}

/// Applies the state machine's `decision` for `claim` (one statement: the leases and the new
/// attempts together), then reads what carrying the steps out needs: each task with its
/// activity's keys and sealed secrets.
pub fn take_claimed(
    conn: &mut Conn,
    claim: &str,
    candidates: &[ClaimCandidate],
    decision: &ClaimDecision,
    now: i64,
    lease_until: i64,
) -> QueryResult<Vec<ClaimedStep>> {
    if decision.leased.is_empty() {
        return Ok(Vec::new());
    }
    let new_attempt = case_when(
        tasks::id.eq_any(&decision.new_attempts),
        1.into_sql::<Integer>(),
    )
    .otherwise(0.into_sql::<Integer>());
    diesel::update(
        tasks::table
            .filter(tasks::id.eq_any(&decision.leased))
            .filter(tasks::lease_owner.is_null().or(tasks::lease_until.lt(now))),
    )
    .set((
        tasks::lease_owner.eq(claim),
        tasks::lease_until.eq(lease_until),
        tasks::attempt.eq(tasks::attempt + new_attempt),
    ))
    .execute(conn)?;
    let rows: Vec<(ClaimedTaskRow, ActivityKeysRow)> = tasks::table
        .inner_join(activities::table)
        .filter(tasks::id.eq_any(&decision.leased))
        .filter(tasks::lease_owner.eq(claim))
        .select((ClaimedTaskRow::as_select(), ActivityKeysRow::as_select()))
        .load(conn)?;
    rows.into_iter()
        .filter_map(|(task, activity)| {
            let step = candidates.iter().find(|c| c.task == task.id)?.step;
            Some(claimed_step(claim, step, decision, task, activity))
        })
        .collect()
}

fn claimed_step(
    claim: &str,
    step: Step,
    decision: &ClaimDecision,
    t: ClaimedTaskRow,
    a: ActivityKeysRow,
) -> QueryResult<ClaimedStep> {
    Ok(ClaimedStep {
        claim: claim.to_owned(),
        step,
        abandoned: decision.abandoned.contains(&t.id),
        task: ClaimedTask {
            id: t.id,
            activity_id: t.activity_id,
            position: t.position,
            name: t.name,
            executor: t.executor_ref,
            template: t.template,
            planned_configurations: t.planned_configurations,
            attempt: t.attempt,
            step_attempts: t.step_attempts,
            runs_failed: t.runs_failed,
            due_at: t.due_at,
            started_at: t.started_at,
            deadline_at: t.deadline_at,
            run_ref: t.run_ref,
            held: t
                .reported_outcome
                .as_deref()
                .map(stored_report)
                .transpose()?,
        },
        activity: ActivityKeys {
            id: a.id,
            data_product_id: a.data_product_id,
            data_product_version: a.data_product_version,
            stage: a.stage,
            sealed_secrets: a.sealed_secrets,
        },
    })
}

/// The activities the Context is built from: the PROCESSED ones of the product version, and
/// `current`.
#[diesel::dsl::auto_type]
fn in_context<'a>(product: &'a str, version: &'a str, current: ActivityId) -> _ {
    let processed: ActivityStatus = ActivityStatus::Processed;
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
    current: ActivityId,
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
    current: ActivityId,
) -> QueryResult<Vec<(ActivityId, i32, String)>> {
    tasks::table
        .inner_join(activities::table)
        .filter(in_context(product, version, current))
        .select((tasks::activity_id, tasks::position, tasks::name))
        .load(conn)
}
