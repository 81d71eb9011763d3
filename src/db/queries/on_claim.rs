//! An engine step's update decided on its claim (`UpdateOnClaim`: a dispatch's record of the
//! run it started), applied alone, or on PostgreSQL ahead of its batch's writes together with
//! the other such updates the batch carries.
//!
//! Every task's dispatch ends with this update, a statement and so a round trip of its own: 1
//! of ~4 a task in the benchmark (`pg_stat_statements`), where each round trip costs the CPU
//! both processes share (issue 15). The writer (`writer/batch.rs`) applies a batch's updates
//! first, in one `UPDATE … FROM unnest(…)` with each one's compare-and-set (`Records`), and
//! keeps whether each applied; the write that carries one then takes that outcome here
//! instead of running it. Whatever rolls back past those updates forgets the outcomes (`forget_ahead`):
//! a write run again then applies its own.

use std::cell::RefCell;

use diesel::backend::Backend;
use diesel::expression::Expression;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, BigInt, Bool, HasSqlType, Integer, Nullable, Text};
use diesel::PgConnection;

use super::plans::TaskChangeset;
use super::prepared::Update;
use super::Conn;
use crate::db::schema::tasks;
use crate::domain::{Step, TaskChanges, TaskId, UpdateOnClaim};

#[cfg(test)]
thread_local! {
    /// Statements that applied updates ahead, and outcomes taken from them (tests: whether a
    /// batch took this path).
    pub(crate) static AHEAD: super::Counts = const { super::Counts::new() };
}

thread_local! {
    /// The updates this thread's batch applied ahead and whether each applied (its row still
    /// showed the claim), until the write carrying it takes its outcome.
    static APPLIED_AHEAD: RefCell<Vec<(UpdateOnClaim, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Applies an engine step's update decided on its claim (`UpdateOnClaim`) in one statement, kept
/// prepared, unless its batch applied it ahead (then its outcome as it was); false, and nothing
/// written, when the task's row no longer shows that claim: the step then decides on a
/// snapshot. Call inside `Db::write`.
pub fn apply_on_claim(conn: &mut Conn, on_claim: &UpdateOnClaim, now: i64) -> QueryResult<bool> {
    let changed = match take_applied_ahead(on_claim) {
        Some(applied) => applied,
        None => {
            let update = &on_claim.update;
            let lease = update
                .expected_lease
                .as_deref()
                .expect("an update on a claim expects the claim's lease");
            let changed = Update {
                table: tasks::table,
                set: TaskChangeset::of(&update.changes).as_changeset(),
                filter: tasks::id
                    .eq(update.id)
                    .and(tasks::status.eq(update.expected))
                    .and(tasks::lease_owner.eq(lease))
                    .and(StepIs(on_claim.step))
                    .and(tasks::attempt.eq(on_claim.attempt))
                    .and(tasks::reported_outcome.is_null()),
            }
            .execute(conn)?;
            changed == 1
        }
    };
    if changed && on_claim.update.makes_work_due(now) {
        // As `apply_plan`: other replicas are woken when this transaction commits.
        crate::db::listen::mark_work_due();
    }
    Ok(changed)
}

/// `tasks.step IS NOT DISTINCT FROM <step>`: the same as `=` here (a claimed step is never
/// NULL) but, unlike `=`, it does not tell the planner that the row has a step. From that,
/// PostgreSQL may read every task listed in `tasks_due` (a partial index on the tasks with a
/// step, all those in flight) and keep those the statement names, instead of looking them up
/// by id: made when few tasks were in flight, such a plan stays for the connection's life
/// (`writer/plan_tests.rs`). Its SQL is one text, so the statement stays prepared (diesel's
/// `sql` literal would mark it unsafe to keep).
#[derive(Debug, Clone, Copy)]
struct StepIs(Step);

impl Expression for StepIs {
    type SqlType = Bool;
}

impl<DB> QueryFragment<DB> for StepIs
where
    DB: Backend + HasSqlType<Text>,
    str: ToSql<Text, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("tasks.step IS NOT DISTINCT FROM ");
        out.push_bind_param::<Text, str>(self.0.as_str())
    }
}

/// Whether `on_claim` may be applied ahead (`apply_ahead`): a dispatch's record of its run, the
/// update `state::submitted_on_claim` makes, which sets the columns `RecordColumns` has.
pub fn can_apply_ahead(on_claim: &UpdateOnClaim) -> bool {
    RecordColumns::of(&on_claim.update.changes).is_some()
        && on_claim.update.expected_lease.is_some()
}

/// Applies `updates` (each `can_apply_ahead`, no task twice) in one statement, each with the
/// compare-and-set of `apply_on_claim`, and keeps their outcomes for the writes that carry
/// them. On an error the caller rolls back what this applied and calls `forget_ahead`.
pub(crate) fn apply_ahead(pg: &mut PgConnection, updates: &[&UpdateOnClaim]) -> QueryResult<()> {
    // One that cannot be applied ahead is left to its write (the writer sends none).
    let updates: Vec<(&UpdateOnClaim, RecordColumns<'_>, &str)> = updates
        .iter()
        .filter_map(|on_claim| {
            let columns = RecordColumns::of(&on_claim.update.changes)?;
            Some((
                *on_claim,
                columns,
                on_claim.update.expected_lease.as_deref()?,
            ))
        })
        .collect();
    let mut records = Records::default();
    for (on_claim, columns, lease) in &updates {
        let update = &on_claim.update;
        records.ids.push(update.id.get());
        records.statuses.push(update.expected.as_str());
        records.leases.push(lease);
        records.claimed_steps.push(on_claim.step.as_str());
        records.attempts.push(on_claim.attempt);
        records.push(columns);
    }
    let applied: Vec<TaskId> = records.get_results(pg)?;
    #[cfg(test)]
    AHEAD.with(|c| c.add(0));
    APPLIED_AHEAD.with(|ahead| {
        let mut ahead = ahead.borrow_mut();
        for (on_claim, _, _) in &updates {
            let applied = applied.contains(&on_claim.update.id);
            ahead.push(((*on_claim).clone(), applied));
        }
    });
    Ok(())
}

/// What a dispatch's record sets (`state::submitted_on_claim`), as it sets it: matched field by
/// field, so that a change of what it sets fails to compile here rather than set half of it.
struct RecordColumns<'a> {
    configurations: Option<&'a str>,
    run_ref: Option<&'a str>,
    run_url: Option<&'a str>,
    step: Option<&'static str>,
    due_at: Option<i64>,
    lease_owner: Option<&'a str>,
    lease_until: Option<i64>,
    step_attempts: i32,
}

impl<'a> RecordColumns<'a> {
    fn of(changes: &'a TaskChanges) -> Option<RecordColumns<'a>> {
        match changes {
            TaskChanges {
                status: None,
                results: None,
                errors: None,
                configurations: Some(configurations),
                started_at: None,
                finished_at: None,
                run_ref: Some(run_ref),
                run_url: Some(run_url),
                step: Some(step),
                due_at: Some(due_at),
                lease_owner: Some(lease_owner),
                lease_until: Some(lease_until),
                deadline_at: None,
                step_attempts: Some(step_attempts),
                reported_outcome: None,
                attempt: None,
                runs_failed: None,
            } => Some(RecordColumns {
                configurations: configurations.as_deref(),
                run_ref: run_ref.as_deref(),
                run_url: run_url.as_deref(),
                step: step.map(|s| s.as_str()),
                due_at: *due_at,
                lease_owner: lease_owner.as_deref(),
                lease_until: *lease_until,
                step_attempts: *step_attempts,
            }),
            _ => None,
        }
    }
}

/// `UPDATE tasks SET <a record's columns> FROM unnest(<one array a column>) AS v(…) WHERE
/// <the compare-and-set of each> RETURNING tasks.id`: one text whatever the number of
/// records.
#[derive(Default)]
struct Records<'a> {
    ids: Vec<i64>,
    statuses: Vec<&'static str>,
    leases: Vec<&'a str>,
    claimed_steps: Vec<&'static str>,
    attempts: Vec<i32>,
    configurations: Vec<Option<&'a str>>,
    run_refs: Vec<Option<&'a str>>,
    run_urls: Vec<Option<&'a str>>,
    steps: Vec<Option<&'static str>>,
    due_ats: Vec<Option<i64>>,
    lease_owners: Vec<Option<&'a str>>,
    lease_untils: Vec<Option<i64>>,
    step_attempts: Vec<i32>,
}

impl<'a> Records<'a> {
    fn push(&mut self, columns: &RecordColumns<'a>) {
        self.configurations.push(columns.configurations);
        self.run_refs.push(columns.run_ref);
        self.run_urls.push(columns.run_url);
        self.steps.push(columns.step);
        self.due_ats.push(columns.due_at);
        self.lease_owners.push(columns.lease_owner);
        self.lease_untils.push(columns.lease_until);
        self.step_attempts.push(columns.step_attempts);
    }
}

impl QueryId for Records<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Records<'_> {
    type SqlType = BigInt;
}

/// The columns set, in the order of `Records`' arrays after the compare-and-set's five.
const SET: [&str; 8] = [
    "configurations",
    "run_ref",
    "run_url",
    "step",
    "due_at",
    "lease_owner",
    "lease_until",
    "step_attempts",
];

impl QueryFragment<Pg> for Records<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Kept prepared, by its text: its generic plan, made in a batch's transaction, looks
        // each task up by its id however small the table was then (`writer/batch.rs`,
        // `BEGIN_PLAN_BY_INDEX`). The claimed step is compared as `StepIs` compares it, for
        // its reason: with `=`, the plan read every task in flight for each batch and kept the
        // batch's by a join filter, 0.9 ms for 8 records on two replicas (issue 15).
        let set: Vec<String> = SET.iter().map(|c| format!("{c} = v.{c}")).collect();
        out.push_sql(&format!("UPDATE tasks SET {} FROM unnest(", set.join(", ")));
        macro_rules! array {
            ($sql:ty, $values:expr) => {
                out.push_bind_param::<Array<$sql>, _>($values)?;
                out.push_sql(", ");
            };
        }
        array!(BigInt, &self.ids);
        array!(Text, &self.statuses);
        array!(Text, &self.leases);
        array!(Text, &self.claimed_steps);
        array!(Integer, &self.attempts);
        array!(Nullable<Text>, &self.configurations);
        array!(Nullable<Text>, &self.run_refs);
        array!(Nullable<Text>, &self.run_urls);
        array!(Nullable<Text>, &self.steps);
        array!(Nullable<BigInt>, &self.due_ats);
        array!(Nullable<Text>, &self.lease_owners);
        array!(Nullable<BigInt>, &self.lease_untils);
        out.push_bind_param::<Array<Integer>, _>(&self.step_attempts)?;
        out.push_sql(&format!(
            ") AS v(id, expected, lease, claimed_step, attempt, {}) WHERE tasks.id = v.id \
             AND tasks.status = v.expected AND tasks.lease_owner = v.lease \
             AND tasks.step IS NOT DISTINCT FROM v.claimed_step AND tasks.attempt = v.attempt \
             AND tasks.reported_outcome IS NULL RETURNING tasks.id",
            SET.join(", ")
        ));
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for Records<'_> {}

/// Forgets every outcome applied ahead on this thread: what they applied was rolled back (or
/// the batch is over).
pub(super) fn forget_applied_ahead() {
    APPLIED_AHEAD.with(|ahead| ahead.borrow_mut().clear());
}

/// The outcome of `on_claim` if this thread's batch applied it ahead, taken (a write run
/// again after a rollback finds none and applies its own).
fn take_applied_ahead(on_claim: &UpdateOnClaim) -> Option<bool> {
    APPLIED_AHEAD.with(|ahead| {
        let mut ahead = ahead.borrow_mut();
        let at = ahead.iter().position(|(applied, _)| applied == on_claim)?;
        #[cfg(test)]
        AHEAD.with(|c| c.add(1));
        Some(ahead.swap_remove(at).1)
    })
}
