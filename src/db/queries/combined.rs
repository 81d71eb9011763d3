//! PostgreSQL: a plan's compare-and-set updates in one statement.
//!
//! A callback that finishes a task changes the task, makes the next one due and merges the
//! results into the activity: three UPDATEs, three round trips, each waking the server's
//! backend and the writer thread (issue 15's profile: a task cost ~35 context switches, the
//! server and PostgreSQL CPU-bound on round trips, not on the statements' work). Here they go
//! as one statement of data-modifying CTEs that answers how many rows each changed, so the
//! compare-and-set still names the row that moved. SQLite has no such CTEs, and needs none:
//! its statements cost no round trip.
//!
//! The CTEs run on one snapshot and in no set order, so a plan is combined only when no row is
//! updated twice (`combinable`). A lifecycle promotion (the callback that ends an activity
//! PROCESSED) goes in the same statement (`PromotionCtes`): its INSERT takes the activity's new
//! results from the plan, since the activity's row as the statement sees it is the one before
//! the plan's update (its product, version and stage, which no plan changes, are read there).
//! A plan that promotes without being combinable promotes in a statement of its own
//! (`Promotion`, after its updates: it reads the results they left).

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::PgConnection;
use diesel::QueryResult;

use super::plans::{conflict_of_activity, conflict_of_task, ActivityChangeset, TaskChangeset};
use super::prepared::Update;
use super::ApplyError;
use crate::db::schema::{activities, tasks};
use crate::domain::{ActivityChanges, ActivityId, Plan, TaskChanges};

/// Whether `plan`'s updates may go as one statement: several, none empty (diesel refuses an
/// empty SET), no task twice.
pub(super) fn combinable(plan: &Plan) -> bool {
    let updates = plan.tasks.len() + usize::from(plan.activity.is_some());
    let empty_activity = plan
        .activity
        .as_ref()
        .is_some_and(|a| a.changes == ActivityChanges::default());
    let empty_task = plan
        .tasks
        .iter()
        .any(|t| t.changes == TaskChanges::default());
    let mut ids: Vec<_> = plan.tasks.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.dedup();
    updates >= 2 && !empty_activity && !empty_task && ids.len() == plan.tasks.len()
}

/// Applies `plan`'s updates and its promotion in one statement; a `Conflict` names the first
/// row that no longer matched, as the one-by-one path does, and a promotion that opened no row
/// (the activity gone) is `NotFound`, as `promote_in_one` answers.
pub(super) fn apply_combined(
    pg: &mut PgConnection,
    plan: &Plan,
    now: i64,
) -> Result<(), ApplyError> {
    let activity_set = plan
        .activity
        .as_ref()
        .map(|a| ActivityChangeset::of(&a.changes));
    let task_sets: Vec<TaskChangeset<'_>> = plan
        .tasks
        .iter()
        .map(|t| TaskChangeset::of(&t.changes))
        .collect();
    let mut parts: Vec<Box<dyn QueryFragment<Pg> + '_>> = Vec::new();
    if let (Some(update), Some(set)) = (&plan.activity, &activity_set) {
        parts.push(Box::new(Update {
            table: activities::table,
            set: set.as_changeset(),
            filter: activities::id
                .eq(update.id)
                .and(activities::status.eq(update.expected)),
        }));
    }
    for (update, set) in plan.tasks.iter().zip(&task_sets) {
        let expected = tasks::id
            .eq(update.id)
            .and(tasks::status.eq(update.expected));
        // The two shapes of the one-by-one path: with the claim's lease, and without.
        match &update.expected_lease {
            Some(lease) => parts.push(Box::new(Update {
                table: tasks::table,
                set: set.as_changeset(),
                filter: expected.and(tasks::lease_owner.eq(lease)),
            })),
            None => parts.push(Box::new(Update {
                table: tasks::table,
                set: set.as_changeset(),
                filter: expected,
            })),
        }
    }
    let promotion = match (&plan.activity, plan.promote_lifecycle) {
        (Some(update), true) => Some(PromotionCtes {
            activity: update.id.get(),
            results: update.changes.results.as_ref().map(Option::as_deref),
            now,
        }),
        (None, true) => unreachable!("a promotion comes with its activity"),
        (_, false) => None,
    };
    let changed: Vec<i64> = Combined { parts, promotion }.get_result(pg)?;
    let mut changed = changed.into_iter();
    if let Some(update) = &plan.activity {
        if changed.next() != Some(1) {
            return Err(conflict_of_activity(update));
        }
    }
    for update in &plan.tasks {
        if changed.next() != Some(1) {
            return Err(conflict_of_task(update));
        }
    }
    if plan.promote_lifecycle && changed.next() != Some(1) {
        return Err(diesel::result::Error::NotFound.into());
    }
    Ok(())
}

/// `WITH u0 AS (UPDATE … RETURNING 1), u1 AS (…) SELECT ARRAY[count of u0, count of u1, …]`,
/// and the promotion's rows opened last, kept prepared by its SQL text like `Update` (its
/// shapes: which columns each update sets, with a promotion or not).
struct Combined<'a> {
    parts: Vec<Box<dyn QueryFragment<Pg> + 'a>>,
    promotion: Option<PromotionCtes<'a>>,
}

/// The promotion as two more CTEs, `closed` and `opened`, in the order `Promotion` explains.
struct PromotionCtes<'a> {
    activity: i64,
    /// The activity's results as the plan sets them (`None`: the plan leaves them, read them).
    results: Option<Option<&'a str>>,
    now: i64,
}

impl PromotionCtes<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(", ");
        closes_the_open_row(&mut out, &self.now, &self.activity)?;
        out.push_sql(
            ", opened AS (INSERT INTO lifecycles (data_product_id, data_product_version, \
             stage, activity_id, results, started_at) SELECT data_product_id, \
             data_product_version, stage, id, ",
        );
        match &self.results {
            Some(results) => out.push_bind_param::<Nullable<Text>, _>(results)?,
            None => out.push_sql("results"),
        }
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(" FROM activities WHERE activities.id = ");
        out.push_bind_param::<BigInt, _>(&self.activity)?;
        out.push_sql(" AND (SELECT count(*) FROM closed) >= 0 RETURNING 1)");
        Ok(())
    }
}

/// `closed AS (UPDATE lifecycles …)`: the product version's open lifecycle row closed at `now`,
/// the version read from the activity's row through scalar subqueries (its index is used).
fn closes_the_open_row<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    now: &'b i64,
    activity: &'b i64,
) -> QueryResult<()> {
    let of_activity =
        |column: &str| format!("(SELECT {column} FROM activities WHERE activities.id = ");
    out.push_sql("closed AS (UPDATE lifecycles SET finished_at = ");
    out.push_bind_param::<BigInt, _>(now)?;
    out.push_sql(" WHERE lifecycles.finished_at IS NULL AND lifecycles.data_product_id = ");
    out.push_sql(&of_activity("data_product_id"));
    out.push_bind_param::<BigInt, _>(activity)?;
    out.push_sql(") AND lifecycles.data_product_version = ");
    out.push_sql(&of_activity("data_product_version"));
    out.push_bind_param::<BigInt, _>(activity)?;
    out.push_sql(") RETURNING 1)");
    Ok(())
}

impl QueryId for Combined<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Combined<'_> {
    type SqlType = Array<BigInt>;
}

impl QueryFragment<Pg> for Combined<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_sql(&format!("u{i} AS ("));
            part.walk_ast(out.reborrow())?;
            out.push_sql(" RETURNING 1)");
        }
        if let Some(promotion) = &self.promotion {
            promotion.walk_ast(out.reborrow())?;
        }
        out.push_sql(" SELECT ARRAY[");
        for i in 0..self.parts.len() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_sql(&format!("(SELECT count(*) FROM u{i})"));
        }
        if self.promotion.is_some() {
            out.push_sql(", (SELECT count(*) FROM opened)");
        }
        out.push_sql("]");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for Combined<'_> {}

/// A lifecycle promotion in one statement: the product version's open lifecycle row closed and
/// the activity's stage opened, both read from the activity's row; false when the activity is
/// gone. One round trip instead of two per activity that ends PROCESSED.
pub(super) fn promote_in_one(
    pg: &mut PgConnection,
    activity: ActivityId,
    now: i64,
) -> QueryResult<bool> {
    let opened = Promotion {
        activity: activity.get(),
        now,
    }
    .execute(pg)?;
    Ok(opened == 1)
}

/// `WITH closed AS (UPDATE lifecycles … RETURNING 1) INSERT INTO lifecycles SELECT … FROM
/// activities WHERE id = … AND (SELECT count(*) FROM closed) >= 0`. The condition makes the
/// INSERT wait for the UPDATE (a CTE nothing reads would run in no set order): the open row is
/// closed before the next is inserted, as the unique index on open rows requires (a row this
/// statement updated no longer counts against it). Scalar subqueries find the open row
/// through its index (see `plans::promote_lifecycle`).
struct Promotion {
    activity: i64,
    now: i64,
}

impl QueryId for Promotion {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for Promotion {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        closes_the_open_row(&mut out, &self.now, &self.activity)?;
        out.push_sql(
            " INSERT INTO lifecycles (data_product_id, data_product_version, \
             stage, activity_id, results, started_at) SELECT data_product_id, \
             data_product_version, stage, id, results, ",
        );
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(" FROM activities WHERE activities.id = ");
        out.push_bind_param::<BigInt, _>(&self.activity)?;
        out.push_sql(" AND (SELECT count(*) FROM closed) >= 0");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for Promotion {}
