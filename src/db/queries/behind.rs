//! PostgreSQL: the plans of a batch's callbacks applied together, in one statement behind them.
//!
//! After the dispatch records and the callbacks' snapshots went ahead of a batch's writes
//! (`on_claim.rs`, `read_ahead.rs`), each callback's plan was still a statement of its own (one
//! statement of CTEs, `combined.rs`): 1 of ~1.8 statements a task, each costing both processes
//! a round trip (issue 15's profile: the writer thread and its PostgreSQL backend, one chain,
//! ~80 % of a core on one replica, a fifth of the backend's time in the socket calls and
//! setting up each statement). A callback whose snapshot its batch read ahead decides on rows
//! that no other callback of the batch touches (one callback an activity) and that nothing
//! else touches before the last of the callbacks has run (they run first, one after another;
//! `writer/batch.rs`). So its plan can wait until then: `apply_plan_or_keep` keeps it here
//! (`defer`; the callback calls it unless a notification listener wants its events, whose
//! outbox rows are built from the rows read back) and answers as if it had applied, and the
//! batch applies every plan kept in one `UPDATE … FROM unnest(…)` a table (`apply_behind`),
//! each with the compare-and-set of the plan's own statement. When one no longer matches (or the statement fails), the batch rolls
//! back to the savepoint the callbacks share and runs them again, each applying its own plan
//! then, and meets the conflict as it would have.
//!
//! Kept only: a plan of the activity its write's snapshot was read ahead for (once per run
//! of the write, `permit`), with a task (a callback's plan finishes its own) and with nothing
//! empty to set (diesel refuses an empty SET, as the plan's own statement would). A plan's
//! lifecycle promotion (the last callback of an activity) goes in the same statement, as
//! `combined.rs` writes it for one plan: 1 of ~6 statements a task was the promotion's own.
//! Two promotions of one product version cannot meet in it (one activity of a version is
//! PROCESSING at a time, `activities_one_processing`); if they did, the unique index on open
//! lifecycle rows would fail the statement, and each callback would apply its own.

use std::cell::{Cell, RefCell};

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use diesel::PgConnection;

use crate::domain::{ActivityChanges, ActivityId, Plan, TaskChanges};

#[cfg(test)]
thread_local! {
    /// Plans kept, and statements that applied them (tests: whether a batch took this path).
    pub(crate) static BEHIND: super::Counts = const { super::Counts::new() };
}

thread_local! {
    /// The activity whose snapshot the write running on this thread took from its batch's
    /// read ahead: its plan may be kept.
    static PERMIT: Cell<Option<ActivityId>> = const { Cell::new(None) };
    /// The plans kept, as the statement's arrays.
    static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
}

/// The write running on this thread decides on a snapshot of `activity` read ahead.
pub(super) fn permit(activity: ActivityId) {
    PERMIT.with(|p| p.set(Some(activity)));
}

/// The write that ran on this thread is over: what it was permitted goes with it.
pub(crate) fn end_of_write() {
    PERMIT.with(|p| p.set(None));
}

/// Keeps `plan` (its promotion at `now`) for its batch to apply behind the callbacks (module
/// doc); false when it is not to be kept: its caller applies it.
pub(super) fn defer(plan: &Plan, now: i64) -> bool {
    let Some(permitted) = PERMIT.with(Cell::take) else {
        return false;
    };
    let Some(activity) = &plan.activity else {
        return false;
    };
    let mut ids: Vec<_> = plan.tasks.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let keep = activity.id == permitted
        && !plan.tasks.is_empty()
        && activity.changes != ActivityChanges::default()
        && plan
            .tasks
            .iter()
            .all(|t| t.changes != TaskChanges::default())
        && ids.len() == plan.tasks.len();
    if keep {
        KEPT.with(|kept| kept.borrow_mut().push(plan, now));
        #[cfg(test)]
        BEHIND.with(|c| c.add(0));
    }
    keep
}

/// Forgets the plans kept on this thread: rolled back, or the batch is over.
pub(super) fn forget_behind() {
    end_of_write();
    KEPT.with(|kept| *kept.borrow_mut() = Kept::default());
}

/// Applies the plans kept on this thread in one statement; false when one of them no longer
/// matched its rows (the caller then rolls back what this applied and runs their writes
/// again). On an error the caller rolls back too. Nothing kept: true, no statement.
pub(crate) fn apply_behind(pg: &mut PgConnection) -> QueryResult<bool> {
    let kept = KEPT.with(|kept| std::mem::take(&mut *kept.borrow_mut()));
    if kept.updates == 0 {
        return Ok(true);
    }
    let updates = kept.updates;
    let changed: i64 = kept.get_result(pg)?;
    #[cfg(test)]
    BEHIND.with(|c| c.add(1));
    Ok(usize::try_from(changed).is_ok_and(|changed| changed == updates))
}

/// One column a plan may set: whether each row sets it, and to what.
struct Set<T> {
    set: Vec<bool>,
    to: Vec<Option<T>>,
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Set {
            set: Vec::new(),
            to: Vec::new(),
        }
    }
}

impl<T> Set<T> {
    fn push(&mut self, change: Option<Option<T>>) {
        self.set.push(change.is_some());
        self.to.push(change.flatten());
    }
}

/// The activities' updates, an array a column.
#[derive(Default)]
struct ActivityRows {
    id: Vec<i64>,
    expected: Vec<&'static str>,
    status: Set<&'static str>,
    results: Set<String>,
    errors: Set<String>,
    sealed_secrets: Set<String>,
    started_at: Set<i64>,
    finished_at: Set<i64>,
}

/// The tasks' updates, an array a column; `lease`: the claim the update expects (`None`: any).
#[derive(Default)]
struct TaskRows {
    id: Vec<i64>,
    expected: Vec<&'static str>,
    lease: Vec<Option<String>>,
    status: Set<&'static str>,
    results: Set<String>,
    errors: Set<String>,
    configurations: Set<String>,
    started_at: Set<i64>,
    finished_at: Set<i64>,
    run_ref: Set<String>,
    run_url: Set<String>,
    step: Set<&'static str>,
    due_at: Set<i64>,
    lease_owner: Set<String>,
    lease_until: Set<i64>,
    deadline_at: Set<i64>,
    step_attempts: Set<i32>,
    reported_outcome: Set<String>,
    attempt: Set<i32>,
    runs_failed: Set<i32>,
}

/// The promotions of the plans kept (`plans::promote_lifecycle`): the activity, when, and its
/// results as the plan sets them (else as its row has them).
#[derive(Default)]
struct PromotionRows {
    activity: Vec<i64>,
    now: Vec<i64>,
    results: Set<String>,
}

/// The plans kept: `WITH a AS (UPDATE activities …), t AS (UPDATE tasks …)`, with promotions
/// `closed AS (UPDATE lifecycles …), opened AS (INSERT INTO lifecycles …)`, `SELECT` how many
/// rows `a`, `t` and `opened` changed, which is `updates` when every compare-and-set matched
/// (no row twice) and every promotion opened its row.
#[derive(Default)]
struct Kept {
    activities: ActivityRows,
    tasks: TaskRows,
    promotions: PromotionRows,
    updates: usize,
}

impl Kept {
    fn push(&mut self, plan: &Plan, now: i64) {
        if let (true, Some(update)) = (plan.promote_lifecycle, &plan.activity) {
            let p = &mut self.promotions;
            p.activity.push(update.id.get());
            p.now.push(now);
            p.results.push(update.changes.results.clone());
            self.updates += 1;
        }
        if let Some(update) = &plan.activity {
            let (a, c) = (&mut self.activities, &update.changes);
            a.id.push(update.id.get());
            a.expected.push(update.expected.as_str());
            a.status.push(c.status.map(|s| Some(s.as_str())));
            a.results.push(c.results.clone());
            a.errors.push(c.errors.clone());
            a.sealed_secrets.push(c.drop_secrets.then_some(None));
            a.started_at.push(c.started_at);
            a.finished_at.push(c.finished_at);
            self.updates += 1;
        }
        for update in &plan.tasks {
            let (t, c) = (&mut self.tasks, &update.changes);
            t.id.push(update.id.get());
            t.expected.push(update.expected.as_str());
            t.lease.push(update.expected_lease.clone());
            t.status.push(c.status.map(|s| Some(s.as_str())));
            t.results.push(c.results.clone());
            t.errors.push(c.errors.clone());
            t.configurations.push(c.configurations.clone());
            t.started_at.push(c.started_at);
            t.finished_at.push(c.finished_at);
            t.run_ref.push(c.run_ref.clone());
            t.run_url.push(c.run_url.clone());
            t.step.push(c.step.map(|s| s.map(|s| s.as_str())));
            t.due_at.push(c.due_at);
            t.lease_owner.push(c.lease_owner.clone());
            t.lease_until.push(c.lease_until);
            t.deadline_at.push(c.deadline_at);
            t.step_attempts.push(c.step_attempts.map(Some));
            t.reported_outcome
                .push(c.reported_outcome.as_ref().map(|held| {
                    held.as_ref()
                        .map(|r| serde_json::to_string(r).expect("a report serializes"))
                }));
            t.attempt.push(c.attempt.map(Some));
            t.runs_failed.push(c.runs_failed.map(Some));
            self.updates += 1;
        }
    }
}

impl QueryId for Kept {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Kept {
    type SqlType = BigInt;
}

/// Which rows of the statement set a column: the statement's text names only the columns some
/// row sets, and a flag array only for those that not every row sets (a smaller statement to
/// parse and plan, which it is at each run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rows {
    None,
    Some,
    All,
}

impl<T> Set<T> {
    fn rows(&self) -> Rows {
        match (self.set.iter().any(|s| *s), self.set.iter().all(|s| *s)) {
            (false, _) => Rows::None,
            (true, false) => Rows::Some,
            (true, true) => Rows::All,
        }
    }
}

/// `c = v.c` (every row sets it) or `c = CASE WHEN v.set_c THEN v.c ELSE table.c END` for the
/// `columns` some row sets, and the unnest's column names after the compare-and-set's `keys`.
fn sets_and_names(table: &str, keys: &str, columns: &[(&str, Rows)]) -> (String, String) {
    let (mut sets, mut names) = (Vec::new(), vec![keys.to_owned()]);
    for (c, rows) in columns {
        match rows {
            Rows::None => {}
            Rows::All => {
                sets.push(format!("{c} = v.{c}"));
                names.push(c.to_string());
            }
            Rows::Some => {
                sets.push(format!(
                    "{c} = CASE WHEN v.set_{c} THEN v.{c} ELSE {table}.{c} END"
                ));
                names.push(format!("set_{c}, {c}"));
            }
        }
    }
    (sets.join(", "), names.join(", "))
}

impl QueryFragment<Pg> for Kept {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Kept prepared, by its text (a few: which columns are set), as `on_claim::Records`.
        macro_rules! array {
            ($sql:ty, $values:expr) => {
                out.push_bind_param::<Array<$sql>, _>($values)?;
            };
        }
        // `UPDATE table SET … FROM unnest(<keys>, <sets>) AS v(…) WHERE <condition>`, each
        // column a plan may set named once: its `SET`, its unnest names and its arrays follow
        // this one list, in its order (`sets_and_names`; a column no row sets is left out,
        // a column every row sets needs no flag array).
        macro_rules! update {
            ($table:literal, $rows:expr, keys $keys:literal ($first:expr => $first_sql:ty
             $(, $key:expr => $key_sql:ty)*), where $condition:literal,
             sets ($($column:ident: $sql:ty),*)) => {{
                let columns = [$((stringify!($column), $rows.$column.rows())),*];
                let (sets, names) = sets_and_names($table, $keys, &columns);
                out.push_sql(&format!("UPDATE {} SET {sets} FROM unnest(", $table));
                array!($first_sql, $first);
                $(
                    out.push_sql(", ");
                    array!($key_sql, $key);
                )*
                $(
                    if $rows.$column.rows() == Rows::Some {
                        out.push_sql(", ");
                        array!(Bool, &$rows.$column.set);
                    }
                    if $rows.$column.rows() != Rows::None {
                        out.push_sql(", ");
                        array!(Nullable<$sql>, &$rows.$column.to);
                    }
                )*
                out.push_sql(&format!(") AS v({names}) WHERE {}", $condition));
            }};
        }
        let (a, t) = (&self.activities, &self.tasks);
        out.push_sql("WITH a AS (");
        update!(
            "activities", a,
            keys "id, expected" (&a.id => BigInt, &a.expected => Text),
            where "activities.id = v.id AND activities.status = v.expected RETURNING 1",
            sets (status: Text, results: Text, errors: Text, sealed_secrets: Text,
                  started_at: BigInt, finished_at: BigInt)
        );
        out.push_sql("), t AS (");
        update!(
            "tasks", t,
            keys "id, expected, lease"
                (&t.id => BigInt, &t.expected => Text, &t.lease => Nullable<Text>),
            where "tasks.id = v.id AND tasks.status = v.expected \
                   AND (v.lease IS NULL OR tasks.lease_owner = v.lease) RETURNING 1",
            sets (status: Text, results: Text, errors: Text, configurations: Text,
                  started_at: BigInt, finished_at: BigInt, run_ref: Text, run_url: Text,
                  step: Text, due_at: BigInt, lease_owner: Text, lease_until: BigInt,
                  deadline_at: BigInt, step_attempts: Integer, reported_outcome: Text,
                  attempt: Integer, runs_failed: Integer)
        );
        out.push_sql(")");
        let promotions = !self.promotions.activity.is_empty();
        if promotions {
            self.promotions.walk_ast(out.reborrow())?;
        }
        out.push_sql(" SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM t)");
        if promotions {
            out.push_sql(" + (SELECT count(*) FROM opened)");
        }
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for Kept {}

impl PromotionRows {
    /// `, promoted AS (…), closed AS (…), opened AS (…)`: as `combined.rs` promotes one
    /// activity, each promotion's product version (read from its activity's row) has its open
    /// lifecycle row closed at its `now`, then a row opened for its activity's stage; `opened`
    /// waits for `closed` (a CTE nothing reads would run in no set order), as the unique index
    /// on open rows requires.
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (results, names) = match self.results.rows() {
            Rows::None => ("activities.results", ""),
            Rows::All => ("p.results", ", results"),
            Rows::Some => (
                "CASE WHEN p.set_results THEN p.results ELSE activities.results END",
                ", set_results, results",
            ),
        };
        out.push_sql(", promoted AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.activity)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.now)?;
        if self.results.rows() == Rows::Some {
            out.push_sql(", ");
            out.push_bind_param::<Array<Bool>, _>(&self.results.set)?;
        }
        if self.results.rows() != Rows::None {
            out.push_sql(", ");
            out.push_bind_param::<Array<Nullable<Text>>, _>(&self.results.to)?;
        }
        // Each open row is found from its promotion, through the index on open rows, in a
        // subquery the planner cannot merge (`OFFSET 0`), and updated where that found it (its
        // `ctid`, a TID scan): given a join, it would rather read every open row (one a product
        // version) and keep the promotions' (as the records did, `on_claim.rs`;
        // `writer/plan_tests.rs`). No other statement changes these rows meanwhile: they are
        // the versions of this batch's activities, whose rows it has locked.
        out.push_sql(&format!(
            ") AS p(id, now{names})), closed AS (UPDATE lifecycles SET finished_at = o.now \
             FROM (SELECT open.tid, p.now FROM promoted AS p \
             JOIN activities ON activities.id = p.id \
             CROSS JOIN LATERAL (SELECT lifecycles.ctid AS tid FROM lifecycles \
             WHERE lifecycles.finished_at IS NULL \
             AND lifecycles.data_product_id = activities.data_product_id \
             AND lifecycles.data_product_version = activities.data_product_version OFFSET 0) \
             AS open OFFSET 0) AS o WHERE lifecycles.ctid = o.tid RETURNING 1), \
             opened AS (INSERT INTO lifecycles (data_product_id, data_product_version, stage, \
             activity_id, results, started_at) SELECT activities.data_product_id, \
             activities.data_product_version, activities.stage, activities.id, {results}, \
             p.now FROM promoted AS p JOIN activities ON activities.id = p.id \
             WHERE (SELECT count(*) FROM closed) >= 0 RETURNING 1)"
        ));
        Ok(())
    }
}
