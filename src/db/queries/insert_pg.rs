//! PostgreSQL: a new activity and all its tasks inserted in one statement.
//!
//! diesel's batch INSERT was a second round trip after the activity's, and its SQL (one VALUES
//! row per task) is never kept prepared, so PostgreSQL parsed and planned it on every creation.
//! Here the activity's INSERT is a data-modifying CTE, and the tasks' INSERT reads its id and
//! takes each column as one array (`unnest`): one statement whose text does not vary with the
//! number of tasks, kept prepared, with 28 bound values whatever the stage holds (PostgreSQL takes
//! at most 65,535 in one statement).
//!
//! The CTEs are named after the tables, so the answer's columns are written by the rows'
//! `Selectable`s themselves (`"activities"."id"`, `"tasks"."run_ref" IS NOT NULL`, …) and cannot
//! drift from what they read. A CTE's name is not in scope in its own body: `INSERT INTO tasks`
//! there is the table, and `activities` the CTE defined before it.

use diesel::dsl::{AsSelect, SqlTypeOf};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel::{PgConnection, QueryResult, RunQueryDsl, SelectableHelper};

use super::plans::TaskStateRow;
use crate::db::models::{ActivityRow, NewActivity, NewTask};
use crate::domain::{ActivityStatus, Step, TaskStatus};

/// Inserts `activity` and `tasks` (their `activity_id` ignored): the activity's row and, one per
/// task, the tasks' light state as the database filled them in (in no set order). At least one
/// task: without, the answer would hold no row, the activity's neither.
///
/// `unless_in_the_way`: inserted only if the version has no PROCESSING activity and the stage
/// no PLANNED one (what stops a started activity; `activities_in_the_way`), checked by the
/// statement itself: an empty answer, nothing written, when one is in the way.
pub(super) fn insert_activity_with_tasks(
    pg: &mut PgConnection,
    activity: &NewActivity<'_>,
    tasks: &[NewTask<'_>],
    unless_in_the_way: bool,
) -> QueryResult<Vec<(ActivityRow, TaskStateRow)>> {
    InsertActivityWithTasks {
        activity,
        unless_in_the_way,
        statuses: tasks.iter().map(|t| t.status).collect(),
        created_ats: tasks.iter().map(|t| t.created_at).collect(),
        positions: tasks.iter().map(|t| t.position).collect(),
        names: tasks.iter().map(|t| t.name).collect(),
        descriptions: tasks.iter().map(|t| t.description).collect(),
        executor_refs: tasks.iter().map(|t| t.executor_ref).collect(),
        templates: tasks.iter().map(|t| t.template.as_deref()).collect(),
        configurations: tasks.iter().map(|t| t.configurations.as_deref()).collect(),
        planned_configurations: tasks
            .iter()
            .map(|t| t.planned_configurations.as_deref())
            .collect(),
        timeouts_ms: tasks.iter().map(|t| t.timeout_ms).collect(),
        retry_maxes: tasks.iter().map(|t| t.retry_max).collect(),
        retry_backoffs_ms: tasks.iter().map(|t| t.retry_backoff_ms).collect(),
        started_ats: tasks.iter().map(|t| t.begun.started_at).collect(),
        deadlines_at: tasks.iter().map(|t| t.begun.deadline_at).collect(),
        attempts: tasks.iter().map(|t| t.begun.attempt).collect(),
        steps: tasks.iter().map(|t| t.begun.step).collect(),
        step_attempts: tasks.iter().map(|t| t.begun.step_attempts).collect(),
        dues_at: tasks.iter().map(|t| t.begun.due_at).collect(),
        lease_owners: tasks
            .iter()
            .map(|t| t.begun.lease_owner.as_deref())
            .collect(),
        leases_until: tasks.iter().map(|t| t.begun.lease_until).collect(),
        answer: (ActivityRow::as_select(), TaskStateRow::as_select()),
    }
    .load(pg)
}

/// `WITH activities AS (INSERT … SELECT … [WHERE NOT EXISTS …] RETURNING *), tasks AS (INSERT
/// … SELECT activities.id, k.* FROM activities, unnest(…) AS k RETURNING *) SELECT
/// <ActivityRow>, <TaskStateRow> FROM activities, tasks`: the task columns as arrays, one
/// element per task.
struct InsertActivityWithTasks<'a> {
    activity: &'a NewActivity<'a>,
    unless_in_the_way: bool,
    statuses: Vec<TaskStatus>,
    created_ats: Vec<i64>,
    positions: Vec<i32>,
    names: Vec<&'a str>,
    descriptions: Vec<Option<&'a str>>,
    executor_refs: Vec<Option<&'a str>>,
    templates: Vec<Option<&'a str>>,
    configurations: Vec<Option<&'a str>>,
    planned_configurations: Vec<Option<&'a str>>,
    timeouts_ms: Vec<Option<i64>>,
    retry_maxes: Vec<Option<i32>>,
    retry_backoffs_ms: Vec<Option<i64>>,
    started_ats: Vec<Option<i64>>,
    deadlines_at: Vec<Option<i64>>,
    attempts: Vec<i32>,
    steps: Vec<Option<Step>>,
    step_attempts: Vec<i32>,
    dues_at: Vec<Option<i64>>,
    lease_owners: Vec<Option<&'a str>>,
    leases_until: Vec<Option<i64>>,
    /// The columns the rows read (a field: the walk borrows what it writes for its lifetime).
    answer: (AsSelect<ActivityRow, Pg>, AsSelect<TaskStateRow, Pg>),
}

impl QueryId for InsertActivityWithTasks<'_> {
    type QueryId = ();
    // Cached by its SQL text (which does not vary), as `prepared::Update`.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for InsertActivityWithTasks<'_> {
    type SqlType = (
        SqlTypeOf<AsSelect<ActivityRow, Pg>>,
        SqlTypeOf<AsSelect<TaskStateRow, Pg>>,
    );
}

/// Pushes each value as a bound parameter of its SQL type, separated by commas.
macro_rules! binds {
    ($out:ident; $ty0:ty => $v0:expr $(, $ty:ty => $v:expr)* $(,)?) => {{
        $out.push_bind_param::<$ty0, _>($v0)?;
        $(
            $out.push_sql(", ");
            $out.push_bind_param::<$ty, _>($v)?;
        )*
    }};
}

impl QueryFragment<Pg> for InsertActivityWithTasks<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let a = self.activity;
        out.push_sql(
            "WITH activities AS (INSERT INTO activities (data_product_id, data_product_version, \
             stage, status, sealed_secrets, created_at, started_at) SELECT ",
        );
        binds!(out;
            Text => &a.data_product_id,
            Text => &a.data_product_version,
            Text => &a.stage,
            Text => &a.status,
            Nullable<Text> => &a.sealed_secrets,
            BigInt => &a.created_at,
            Nullable<BigInt> => &a.started_at,
        );
        if self.unless_in_the_way {
            out.push_sql(
                " WHERE NOT EXISTS (SELECT 1 FROM activities a WHERE a.data_product_id = ",
            );
            out.push_bind_param::<Text, _>(&a.data_product_id)?;
            out.push_sql(" AND a.data_product_version = ");
            out.push_bind_param::<Text, _>(&a.data_product_version)?;
            out.push_sql(&format!(
                " AND (a.status = '{}' OR (a.status = '{}' AND a.stage = ",
                ActivityStatus::Processing.as_str(),
                ActivityStatus::Planned.as_str()
            ));
            out.push_bind_param::<Text, _>(&a.stage)?;
            out.push_sql(")))");
        }
        out.push_sql(
            " RETURNING *), tasks AS (INSERT INTO tasks (activity_id, status, created_at, \
             position, name, description, executor_ref, template, configurations, \
             planned_configurations, timeout_ms, retry_max, retry_backoff_ms, started_at, \
             deadline_at, attempt, step, step_attempts, due_at, lease_owner, lease_until) \
             SELECT activities.id, k.* FROM activities, unnest(",
        );
        // In the order of the columns above.
        binds!(out;
            Array<Text> => &self.statuses,
            Array<BigInt> => &self.created_ats,
            Array<Integer> => &self.positions,
            Array<Text> => &self.names,
            Array<Nullable<Text>> => &self.descriptions,
            Array<Nullable<Text>> => &self.executor_refs,
            Array<Nullable<Text>> => &self.templates,
            Array<Nullable<Text>> => &self.configurations,
            Array<Nullable<Text>> => &self.planned_configurations,
            Array<Nullable<BigInt>> => &self.timeouts_ms,
            Array<Nullable<Integer>> => &self.retry_maxes,
            Array<Nullable<BigInt>> => &self.retry_backoffs_ms,
            Array<Nullable<BigInt>> => &self.started_ats,
            Array<Nullable<BigInt>> => &self.deadlines_at,
            Array<Integer> => &self.attempts,
            Array<Nullable<Text>> => &self.steps,
            Array<Integer> => &self.step_attempts,
            Array<Nullable<BigInt>> => &self.dues_at,
            Array<Nullable<Text>> => &self.lease_owners,
            Array<Nullable<BigInt>> => &self.leases_until,
        );
        out.push_sql(") AS k RETURNING *) SELECT ");
        self.answer.walk_ast(out.reborrow())?;
        out.push_sql(" FROM activities, tasks");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for InsertActivityWithTasks<'_> {}
