//! PostgreSQL: the dispatches handed to the engine and their activities' Contexts in one
//! statement (`engine::handed_steps_with_contexts`).
//!
//! Read as three (the tasks, their activities' keys, the Contexts), a hand-off's read was a
//! third of all statement time in the benchmark (`pg_stat_statements`, 644 reads for 3,000
//! tasks: 0.15 + 0.06 + 0.19 ms), and three round trips and three read-only transactions, the
//! whole read when one callback hands one dispatch. Here it is one `UNION ALL` of fixed text,
//! kept prepared: the handed tasks with their activities' keys, then the Context rows of those
//! activities as `contexts_pg` reads them. A row is one or the other: the other's columns are
//! NULL, which diesel reads as `None` for the whole part.
//!
//! The handed tasks are read once, in a CTE (`handed`) whose columns are written by the rows'
//! `Selectable`s (`"tasks"."id"`, …: the task's lookup is named `tasks`, the activities table
//! is not aliased), so they cannot drift from what the rows read; the Context parts take their
//! keys from it.

use diesel::dsl::AsSelect;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::{PgConnection, QueryResult, RunQueryDsl, SelectableHelper};

use super::engine::{ActivityKeysRow, ClaimedTaskRow, ContextRow, ContextSql};
use crate::domain::{ActivityStatus, Step, TaskId};

/// One row: a handed task and its activity's keys, or one Context row.
pub(super) type HandedRow = (
    Option<(ClaimedTaskRow, ActivityKeysRow)>,
    Option<ContextRow>,
);

/// The tasks of `handed` (task, claim) still leased by that claim for a dispatch, with their
/// activities' keys, and the Context rows of those activities.
pub(super) fn handed_rows(
    pg: &mut PgConnection,
    handed: &[(TaskId, String)],
) -> QueryResult<Vec<HandedRow>> {
    HandedWithContexts {
        tasks: handed.iter().map(|(task, _)| task.get()).collect(),
        claims: handed.iter().map(|(_, claim)| claim.as_str()).collect(),
        answer: (ClaimedTaskRow::as_select(), ActivityKeysRow::as_select()),
    }
    .load(pg)
}

/// `WITH handed(c0, …) AS (SELECT <task>, <keys> FROM <the list> …), k AS (<keys of their
/// activities>) (SELECT handed.*, NULL… FROM handed) UNION ALL (SELECT NULL…, <Context activity
/// rows>) UNION ALL (SELECT NULL…, <Context task names>)`.
struct HandedWithContexts<'a> {
    tasks: Vec<i64>,
    claims: Vec<&'a str>,
    /// The columns of the first part (a field: the walk borrows what it writes).
    answer: (AsSelect<ClaimedTaskRow, Pg>, AsSelect<ActivityKeysRow, Pg>),
}

/// Columns of `ClaimedTaskRow`; of it and `ActivityKeysRow` (whose id, product and version come
/// first); of a `ContextRow`.
const TASK_COLUMNS: usize = 15;
const HANDED_COLUMNS: usize = TASK_COLUMNS + 5;
const CONTEXT_COLUMNS: usize = 8;

impl QueryId for HandedWithContexts<'_> {
    type QueryId = ();
    // Cached by its SQL text (which does not vary), as `prepared::Update`.
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// The SQL types of `ClaimedTaskRow`'s columns, in its order (a `Selectable`'s own
/// `SelectBy` type cannot be made `Nullable`).
type ClaimedTaskSql = (
    BigInt,
    BigInt,
    Integer,
    Text,
    Nullable<Text>,
    Nullable<Text>,
    Nullable<Text>,
    Integer,
    Integer,
    Integer,
    Nullable<BigInt>,
    Nullable<BigInt>,
    Nullable<BigInt>,
    Nullable<Text>,
    Nullable<Text>,
);

/// The SQL types of `ActivityKeysRow`'s columns.
type ActivityKeysSql = (BigInt, Text, Text, Text, Nullable<Text>);

impl Query for HandedWithContexts<'_> {
    type SqlType = (
        Nullable<(ClaimedTaskSql, ActivityKeysSql)>,
        Nullable<ContextSql>,
    );
}

/// `NULL, NULL, …`: the columns of the part a row is not (their types come from the other
/// parts of the `UNION ALL`).
fn nulls(n: usize) -> String {
    vec!["NULL"; n].join(", ")
}

impl QueryFragment<Pg> for HandedWithContexts<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The handed tasks still leased by their hand-off's claim, with their activities' keys,
        // read once (`handed`, its columns named by position: the two rows' columns share
        // names). Each task is found by its id from the list (`LATERAL … OFFSET 0`: a lookup
        // per handed task, which the planner may not flatten into a join): as a join, on a
        // young database (tables never analyzed, taken for small) PostgreSQL read every task
        // row for the step's filter instead, 0.9 ms a statement.
        let columns: Vec<String> = (0..HANDED_COLUMNS).map(|i| format!("c{i}")).collect();
        out.push_sql(&format!("WITH handed({}) AS (SELECT ", columns.join(", ")));
        self.answer.walk_ast(out.reborrow())?;
        // The lists are read through subqueries, whose values the planner does not look into:
        // it then estimates the same rows (ten) for any list and keeps one generic plan after
        // five runs. Given the lists themselves, it found a plan for one handed task cheaper
        // than the generic one for ten and planned the statement afresh on every run (0.5 ms,
        // seven times its execution; `pg_stat_statements` with `track_planning`).
        out.push_sql(" FROM unnest((SELECT ");
        out.push_bind_param::<Array<BigInt>, _>(&self.tasks)?;
        out.push_sql("), (SELECT ");
        out.push_bind_param::<Array<Text>, _>(&self.claims)?;
        out.push_sql(&format!(
            ")) AS h(task, claim) CROSS JOIN LATERAL (SELECT * FROM tasks \
             WHERE tasks.id = h.task OFFSET 0) AS tasks \
             JOIN activities ON activities.id = tasks.activity_id \
             WHERE tasks.lease_owner = h.claim AND tasks.step = '{}'), ",
            Step::Dispatch.as_str()
        ));
        // The Context of each handed task's activity, as `contexts_pg` reads it.
        let (cur, p, v) = (TASK_COLUMNS, TASK_COLUMNS + 1, TASK_COLUMNS + 2);
        out.push_sql(&format!(
            "k AS (SELECT DISTINCT c{p} AS p, c{v} AS v, c{cur} AS cur FROM handed) \
             (SELECT handed.*, {} FROM handed)",
            nulls(CONTEXT_COLUMNS)
        ));
        let keyed = " FROM k JOIN activities a ON a.data_product_id = k.p \
                     AND a.data_product_version = k.v";
        let wanted = format!(
            " WHERE (a.status = '{}' OR a.id = k.cur)",
            ActivityStatus::Processed.as_str()
        );
        out.push_sql(&format!(
            " UNION ALL (SELECT {}, a.data_product_id, a.data_product_version, a.id, a.stage, \
             a.status, a.finished_at, a.results, NULL::integer{keyed}{wanted})",
            nulls(HANDED_COLUMNS)
        ));
        out.push_sql(&format!(
            " UNION ALL (SELECT {}, a.data_product_id, a.data_product_version, t.activity_id, \
             t.name, NULL::text, NULL::bigint, NULL::text, t.position{keyed} \
             JOIN tasks t ON t.activity_id = a.id{wanted})",
            nulls(HANDED_COLUMNS)
        ));
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for HandedWithContexts<'_> {}
