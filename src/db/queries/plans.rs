//! Reading what a decision needs (`Snapshot`) and applying the plan it returns.

use diesel::dsl::{case_when, IsNotNull};
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::activities::find_activity;
use super::Conn;
use crate::db::schema::{activities, lifecycles, tasks};
use crate::db::DbConnection;
use crate::domain::{
    ActivityChanges, ActivityId, ActivityState, ActivityStatus, Plan, Recorded, Report,
    RetryPolicy, RunSettings, Snapshot, Step, TaskChanges, TaskId, TaskState, TaskStatus,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = activities)]
struct ActivityStateRow {
    id: ActivityId,
    status: ActivityStatus,
    results: Option<String>,
    #[diesel(select_expression = activities::sealed_secrets.is_not_null())]
    #[diesel(select_expression_type = IsNotNull<activities::sealed_secrets>)]
    holds_secrets: bool,
}

/// The light columns of a task: what any decision may need of any task.
#[derive(Queryable, Selectable)]
#[diesel(table_name = tasks)]
struct TaskStateRow {
    id: TaskId,
    position: i32,
    name: String,
    executor_ref: Option<String>,
    status: TaskStatus,
    attempt: i32,
    step: Option<Step>,
    lease_owner: Option<String>,
    deadline_at: Option<i64>,
    step_attempts: i32,
    runs_failed: i32,
    #[diesel(select_expression = tasks::run_ref.is_not_null())]
    #[diesel(select_expression_type = IsNotNull<tasks::run_ref>)]
    has_run: bool,
    #[diesel(select_expression = tasks::reported_outcome.is_not_null())]
    #[diesel(select_expression_type = IsNotNull<tasks::reported_outcome>)]
    holds_callback: bool,
    timeout_ms: Option<i64>,
    retry_max: Option<i32>,
    retry_backoff_ms: Option<i64>,
}

impl TaskStateRow {
    fn into_state(self) -> TaskState {
        let retry = match (self.retry_max, self.retry_backoff_ms) {
            (Some(max), Some(backoff_ms)) => Some(RetryPolicy {
                max: max.max(0) as u32,
                backoff_ms,
            }),
            _ => None,
        };
        TaskState {
            id: self.id,
            position: self.position,
            name: self.name,
            executor: self.executor_ref,
            status: self.status,
            attempt: self.attempt,
            step: self.step,
            lease_owner: self.lease_owner,
            deadline_at: self.deadline_at,
            step_attempts: self.step_attempts,
            runs_failed: self.runs_failed,
            has_run: self.has_run,
            holds_callback: self.holds_callback,
            settings: RunSettings {
                timeout_ms: self.timeout_ms,
                retry,
            },
        }
    }
}

/// A callback's task's `results`, `errors` and `reported_outcome`; NULL for the other tasks.
type SubjectColumns = (Option<String>, Option<String>, Option<String>);

/// Which activity a snapshot is of.
#[derive(Debug, Clone, Copy)]
pub enum SnapshotOf {
    Activity(ActivityId),
    /// The activity of this task, with what the task recorded (for its callback).
    CallbackTask(TaskId),
    /// The activity of this task.
    TaskActivity(TaskId),
}

/// Reads an activity and its tasks to decide on them. On PostgreSQL the activity row is locked
/// until the transaction ends, so writers of one activity queue instead of conflicting (SQLite
/// writes are serialized by the writer's `BEGIN IMMEDIATE`). `None`: no such activity or task.
///
/// Two statements: the activity, and every task's light columns, with the large ones of the
/// callback's task alone (NULL for the others).
pub fn load_snapshot(conn: &mut Conn, of: SnapshotOf) -> QueryResult<Option<Snapshot>> {
    let Some(activity) = locked_activity(conn, of)? else {
        return Ok(None);
    };
    let subject = match of {
        SnapshotOf::CallbackTask(task) => Some(task),
        SnapshotOf::Activity(_) | SnapshotOf::TaskActivity(_) => None,
    };
    let of_subject = || tasks::id.nullable().eq(subject);
    let rows: Vec<(TaskStateRow, SubjectColumns)> = tasks::table
        .filter(tasks::activity_id.eq(activity.id))
        .order(tasks::position)
        .select((
            TaskStateRow::as_select(),
            (
                case_when(of_subject(), tasks::results),
                case_when(of_subject(), tasks::errors),
                case_when(of_subject(), tasks::reported_outcome),
            ),
        ))
        .load(conn)?;
    let mut recorded = None;
    let mut tasks = Vec::with_capacity(rows.len());
    for (row, (results, errors, held)) in rows {
        if Some(row.id) == subject {
            recorded = Some(Recorded {
                task: row.id,
                results,
                errors,
                held: held.as_deref().map(stored_report).transpose()?,
            });
        }
        tasks.push(row.into_state());
    }
    if subject.is_some() && recorded.is_none() {
        // The task is not the activity's (it went between the two statements): none.
        return Ok(None);
    }
    Ok(Some(Snapshot {
        activity: ActivityState {
            id: activity.id,
            status: activity.status,
            results: activity.results,
            holds_secrets: activity.holds_secrets,
        },
        tasks,
        recorded,
    }))
}

fn locked_activity(conn: &mut Conn, of: SnapshotOf) -> QueryResult<Option<ActivityStateRow>> {
    // MultiConnection has no FOR UPDATE: the same statement, built for the connection's backend.
    macro_rules! first {
        ($filter:expr) => {{
            let query = activities::table.filter($filter);
            match conn {
                DbConnection::Pg(pg) => query
                    .select(ActivityStateRow::as_select())
                    .for_update()
                    .first(pg)
                    .optional(),
                DbConnection::Sqlite(sqlite) => query
                    .select(ActivityStateRow::as_select())
                    .first(sqlite)
                    .optional(),
            }
        }};
    }
    match of {
        SnapshotOf::Activity(id) => first!(activities::id.eq(id)),
        SnapshotOf::CallbackTask(task) | SnapshotOf::TaskActivity(task) => {
            let of_task = tasks::table
                .filter(tasks::id.eq(task))
                .select(tasks::activity_id);
            first!(activities::id.eq_any(of_task))
        }
    }
}

/// A held callback as stored (`tasks.reported_outcome`).
pub(super) fn stored_report(text: &str) -> QueryResult<Report> {
    serde_json::from_str(text).map_err(|e| {
        DieselError::DeserializationError(
            format!("a task's held callback is not a stored report: {e}").into(),
        )
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An expectation of the plan no longer holds: someone else changed the rows first.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Query(#[from] DieselError),
}

#[derive(AsChangeset)]
#[diesel(table_name = activities)]
struct ActivityChangeset<'a> {
    status: Option<ActivityStatus>,
    results: Option<Option<&'a str>>,
    errors: Option<Option<&'a str>>,
    sealed_secrets: Option<Option<&'a str>>,
    started_at: Option<Option<i64>>,
    finished_at: Option<Option<i64>>,
}

impl<'a> ActivityChangeset<'a> {
    fn of(c: &'a ActivityChanges) -> Self {
        ActivityChangeset {
            status: c.status,
            results: c.results.as_ref().map(Option::as_deref),
            errors: c.errors.as_ref().map(Option::as_deref),
            sealed_secrets: c.drop_secrets.then_some(None),
            started_at: c.started_at,
            finished_at: c.finished_at,
        }
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = tasks)]
struct TaskChangeset<'a> {
    status: Option<TaskStatus>,
    results: Option<Option<&'a str>>,
    errors: Option<Option<&'a str>>,
    configurations: Option<Option<&'a str>>,
    started_at: Option<Option<i64>>,
    finished_at: Option<Option<i64>>,
    run_ref: Option<Option<&'a str>>,
    run_url: Option<Option<&'a str>>,
    step: Option<Option<Step>>,
    due_at: Option<Option<i64>>,
    lease_owner: Option<Option<&'a str>>,
    lease_until: Option<Option<i64>>,
    deadline_at: Option<Option<i64>>,
    step_attempts: Option<i32>,
    reported_outcome: Option<Option<String>>,
    attempt: Option<i32>,
    runs_failed: Option<i32>,
}

impl<'a> TaskChangeset<'a> {
    fn of(c: &'a TaskChanges) -> Self {
        let text = |v: &'a Option<Option<String>>| v.as_ref().map(Option::as_deref);
        TaskChangeset {
            status: c.status,
            results: text(&c.results),
            errors: text(&c.errors),
            configurations: text(&c.configurations),
            started_at: c.started_at,
            finished_at: c.finished_at,
            run_ref: text(&c.run_ref),
            run_url: text(&c.run_url),
            step: c.step,
            due_at: c.due_at,
            lease_owner: text(&c.lease_owner),
            lease_until: c.lease_until,
            deadline_at: c.deadline_at,
            step_attempts: c.step_attempts,
            reported_outcome: c.reported_outcome.as_ref().map(|held| {
                held.as_ref()
                    .map(|r| serde_json::to_string(r).expect("a report serializes"))
            }),
            attempt: c.attempt,
            runs_failed: c.runs_failed,
        }
    }
}

/// Applies a state-machine plan with compare-and-set updates. Call inside `Db::write`.
pub fn apply_plan(conn: &mut Conn, plan: &Plan, now: i64) -> Result<(), ApplyError> {
    if let Some(update) = &plan.activity {
        let changed = diesel::update(
            activities::table
                .filter(activities::id.eq(update.id))
                .filter(activities::status.eq(update.expected)),
        )
        .set(ActivityChangeset::of(&update.changes))
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
            .filter(tasks::status.eq(update.expected));
        let changes = TaskChangeset::of(&update.changes);
        let changed = match &update.expected_lease {
            Some(lease) => diesel::update(target.filter(tasks::lease_owner.eq(lease)))
                .set(changes)
                .execute(conn)?,
            None => diesel::update(target).set(changes).execute(conn)?,
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
    if plan.makes_work_due(now) {
        // Other replicas are woken with NOTIFY when this transaction commits (PostgreSQL).
        crate::db::listen::mark_work_due();
    }
    Ok(())
}

/// Closes the current lifecycle row of the product version and opens the activity's stage.
/// The unique index on `activity_id` makes a second promotion of the same activity fail.
fn promote_lifecycle(conn: &mut Conn, activity_id: ActivityId, now: i64) -> QueryResult<()> {
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
