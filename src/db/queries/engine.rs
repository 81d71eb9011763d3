//! What the engine claims and reads: due steps, and the Context's activities.

use std::collections::HashMap;

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

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
pub(super) struct ClaimedTaskRow {
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

#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = activities)]
// `handed_pg` reads the id, product and version by their positions: keep them first.
pub(super) struct ActivityKeysRow {
    id: ActivityId,
    data_product_id: String,
    data_product_version: String,
    stage: String,
    sealed_secrets: Option<String>,
}

/// Applies the state machine's `decision` for `claim` (one statement: the leases and the new
/// attempts together, returning the tasks as they now are), then reads their activities' keys
/// and sealed secrets: what carrying the steps out needs.
///
/// Not a join of tasks and activities by the tasks' ids: on a young PostgreSQL database (a
/// fresh one, or the benchmark's) the planner takes the tables for small, scans every task row
/// (dead versions included, a task's row is rewritten several times) and the claim, which every
/// dispatch waits for, took 1.7 ms (issue 15's profile); the activities are fewer and narrower.
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
    let new_attempt = || {
        case_when(
            tasks::id.eq_any(&decision.new_attempts),
            1.into_sql::<Integer>(),
        )
        .otherwise(0.into_sql::<Integer>())
    };
    // MultiConnection has no RETURNING of a whole row: the same statement, built for the
    // connection's backend.
    macro_rules! lease {
        ($conn:expr) => {
            diesel::update(
                tasks::table
                    .filter(tasks::id.eq_any(&decision.leased))
                    .filter(tasks::lease_owner.is_null().or(tasks::lease_until.lt(now))),
            )
            .set((
                tasks::lease_owner.eq(claim),
                tasks::lease_until.eq(lease_until),
                tasks::attempt.eq(tasks::attempt + new_attempt()),
            ))
            .returning(ClaimedTaskRow::as_returning())
            .get_results($conn)
        };
    }
    let leased: Vec<ClaimedTaskRow> = match conn {
        DbConnection::Pg(pg) => lease!(pg)?,
        DbConnection::Sqlite(sqlite) => lease!(sqlite)?,
    };
    let keys = activity_keys(conn, &leased)?;
    leased
        .into_iter()
        .filter_map(|task| {
            let step = candidates.iter().find(|c| c.task == task.id)?.step;
            // Steps of one activity claimed together each take a copy of its keys.
            let activity = keys.get(&task.activity_id)?.clone();
            let abandoned = decision.abandoned.contains(&task.id);
            Some(claimed_step(claim, step, abandoned, task, activity))
        })
        .collect()
}

/// The dispatches writes handed to this engine (`lifecycle::handoff`: task, claim), read as a
/// claim reads its steps. A task whose lease moved on since it was handed (aborted, or its
/// lease expired and another replica took it over) is left out.
fn handed_steps(conn: &mut Conn, handed: &[(TaskId, String)]) -> QueryResult<Vec<ClaimedStep>> {
    let ids: Vec<TaskId> = handed.iter().map(|(task, _)| *task).collect();
    let rows: Vec<(ClaimedTaskRow, Option<String>, Option<Step>)> = tasks::table
        .filter(tasks::id.eq_any(&ids))
        .select((ClaimedTaskRow::as_select(), tasks::lease_owner, tasks::step))
        .load(conn)?;
    let still_handed: Vec<(ClaimedTaskRow, &str)> = rows
        .into_iter()
        .filter(|(_, _, step)| *step == Some(Step::Dispatch))
        .filter_map(|(task, owner, _)| {
            let (_, claim) = handed.iter().find(|(id, _)| *id == task.id)?;
            (owner.as_deref() == Some(claim.as_str())).then_some((task, claim.as_str()))
        })
        .collect();
    let tasks: Vec<&ClaimedTaskRow> = still_handed.iter().map(|(task, _)| task).collect();
    let keys = activity_keys(conn, tasks)?;
    still_handed
        .into_iter()
        .filter_map(|(task, claim)| {
            let activity = keys.get(&task.activity_id)?.clone();
            Some(claimed_step(claim, Step::Dispatch, false, task, activity))
        })
        .collect()
}

/// The dispatches handed to this engine (as `handed_steps` reads them) and the Context rows of
/// their activities (as `contexts_of` reads them), by activity. PostgreSQL: one statement
/// (`handed_pg.rs`); SQLite: those reads in turn (in process, a statement is no round trip).
pub fn handed_steps_with_contexts(
    conn: &mut Conn,
    handed: &[(TaskId, String)],
) -> QueryResult<(Vec<ClaimedStep>, HashMap<ActivityId, ContextRows>)> {
    let pg = match conn {
        DbConnection::Pg(pg) if !handed.is_empty() => pg,
        _ => {
            let steps = handed_steps(conn, handed)?;
            let contexts = contexts_of(conn, &distinct_activities(&steps))?;
            return Ok((steps, contexts));
        }
    };
    let mut steps = Vec::new();
    let mut context_rows = Vec::new();
    for row in super::handed_pg::handed_rows(pg, handed)? {
        match row {
            (Some((task, activity)), _) => {
                let Some((_, claim)) = handed.iter().find(|(id, _)| *id == task.id) else {
                    continue;
                };
                steps.push(claimed_step(claim, Step::Dispatch, false, task, activity)?);
            }
            (None, Some(context_row)) => context_rows.push(context_row),
            (None, None) => {}
        }
    }
    let contexts = distinct_activities(&steps)
        .into_iter()
        .map(|a| {
            let (product, version) = (&a.data_product_id, &a.data_product_version);
            (a.id, context_of(&context_rows, product, version, a.id))
        })
        .collect();
    Ok((steps, contexts))
}

/// The activities of `steps`, each once.
fn distinct_activities(steps: &[ClaimedStep]) -> Vec<ActivityKeys> {
    let mut activities: Vec<ActivityKeys> = steps.iter().map(|s| s.activity.clone()).collect();
    activities.sort_by_key(|a| a.id);
    activities.dedup_by_key(|a| a.id);
    activities
}

/// The keys and sealed secrets of the activities of `tasks`.
fn activity_keys<'a>(
    conn: &mut Conn,
    tasks: impl IntoIterator<Item = &'a ClaimedTaskRow>,
) -> QueryResult<HashMap<ActivityId, ActivityKeysRow>> {
    let mut activity_ids: Vec<ActivityId> = tasks.into_iter().map(|t| t.activity_id).collect();
    if activity_ids.is_empty() {
        return Ok(HashMap::new());
    }
    activity_ids.sort_unstable();
    activity_ids.dedup();
    let keys: Vec<ActivityKeysRow> = activities::table
        .filter(activities::id.eq_any(&activity_ids))
        .select(ActivityKeysRow::as_select())
        .load(conn)?;
    Ok(keys.into_iter().map(|k| (k.id, k)).collect())
}

fn claimed_step(
    claim: &str,
    step: Step,
    abandoned: bool,
    t: ClaimedTaskRow,
    a: ActivityKeysRow,
) -> QueryResult<ClaimedStep> {
    Ok(ClaimedStep {
        claim: claim.to_owned(),
        step,
        abandoned,
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

/// What the Context is built from (see `in_context`), in one statement: a dispatch reads it
/// each time, and on PostgreSQL a statement is a round trip to a process sharing the CPU.
#[derive(Debug, Default, Clone)]
pub struct ContextRows {
    /// One per activity, oldest first.
    pub activities: Vec<StageActivity>,
    /// `(activity id, position, name)` of their tasks.
    pub task_names: Vec<(ActivityId, i32, String)>,
}

/// One row of the Context's `UNION ALL`: `(product, version, activity id, stage or task name,
/// status, finished_at, results, position)`. A row with a position is a task's (its name in the
/// text column), a row without is an activity's.
pub(super) type ContextRow = (
    String,
    String,
    ActivityId,
    String,
    Option<ActivityStatus>,
    Option<i64>,
    Option<String>,
    Option<i32>,
);

/// The SQL types of a `ContextRow`, for the statements written out (`contexts_pg`, `handed_pg`).
pub(super) type ContextSql = (
    Text,
    Text,
    BigInt,
    Text,
    Nullable<Text>,
    Nullable<BigInt>,
    Nullable<Text>,
    Nullable<Integer>,
);

/// The activities `$filter` picks and their tasks' names, as one `UNION ALL` of fixed shape (an
/// `IN (…)` list per activity would be compiled again on every dispatch). MultiConnection has
/// no UNION: the same statement, built for the connection's backend.
macro_rules! context_union {
    ($conn:expr, $filter:expr) => {
        activities::table
            .filter($filter)
            .select((
                activities::data_product_id,
                activities::data_product_version,
                activities::id,
                activities::stage,
                activities::status.nullable(),
                activities::finished_at,
                activities::results,
                None::<i32>.into_sql::<Nullable<Integer>>(),
            ))
            .union_all(
                tasks::table
                    .inner_join(activities::table)
                    .filter($filter)
                    .select((
                        activities::data_product_id,
                        activities::data_product_version,
                        tasks::activity_id,
                        tasks::name,
                        None::<String>.into_sql::<Nullable<Text>>(),
                        None::<i64>.into_sql::<Nullable<BigInt>>(),
                        None::<String>.into_sql::<Nullable<Text>>(),
                        tasks::position.nullable(),
                    )),
            )
            .load::<ContextRow>($conn)
    };
}

/// Reads `ContextRows` (see `in_context`) in one statement.
pub fn context_rows(
    conn: &mut Conn,
    product: &str,
    version: &str,
    current: ActivityId,
) -> QueryResult<ContextRows> {
    let rows = match conn {
        DbConnection::Sqlite(c) => context_union!(c, in_context(product, version, current))?,
        DbConnection::Pg(c) => context_union!(c, in_context(product, version, current))?,
    };
    Ok(context_of(&rows, product, version, current))
}

/// The Context rows of several activities (`ContextRows` of each, by activity), for dispatches
/// carried out together. PostgreSQL: one statement for all (on a connection to another
/// process, each statement is a round trip; issue 15; `contexts_pg.rs`), each one's rows
/// picked here. SQLite: one
/// statement each, kept prepared (in process a statement is no round trip, and a list of
/// variable length would be compiled again each time).
pub fn contexts_of(
    conn: &mut Conn,
    currents: &[ActivityKeys],
) -> QueryResult<HashMap<ActivityId, ContextRows>> {
    let mut contexts = HashMap::new();
    let pg = match conn {
        DbConnection::Pg(pg) if !currents.is_empty() => pg,
        _ => {
            for c in currents {
                let (product, version) = (&c.data_product_id, &c.data_product_version);
                contexts.insert(c.id, context_rows(conn, product, version, c.id)?);
            }
            return Ok(contexts);
        }
    };
    let rows = super::contexts_pg::context_rows_of(pg, currents)?;
    for c in currents {
        let (product, version) = (&c.data_product_id, &c.data_product_version);
        contexts.insert(c.id, context_of(&rows, product, version, c.id));
    }
    Ok(contexts)
}

/// The rows of `rows` in the Context of `current` (see `in_context`).
fn context_of(
    rows: &[ContextRow],
    product: &str,
    version: &str,
    current: ActivityId,
) -> ContextRows {
    let of_version = |r: &&ContextRow| r.0 == product && r.1 == version;
    let mut context = ContextRows::default();
    for (_, _, id, stage, status, finished_at, results, _) in rows.iter().filter(of_version) {
        match status {
            Some(status) if *status == ActivityStatus::Processed || *id == current => {
                context.activities.push(StageActivity {
                    id: *id,
                    stage: stage.clone(),
                    status: *status,
                    finished_at: *finished_at,
                    results: results.clone(),
                })
            }
            _ => {}
        }
    }
    let taken: Vec<ActivityId> = context.activities.iter().map(|a| a.id).collect();
    for (_, _, id, name, _, _, _, position) in rows.iter().filter(of_version) {
        if let (Some(position), true) = (position, taken.contains(id)) {
            context.task_names.push((*id, *position, name.clone()));
        }
    }
    context.activities.sort_by_key(|a| a.id);
    context
}
