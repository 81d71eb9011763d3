//! Reading what a decision needs (`Snapshot`) and applying the plan it returns.

use diesel::dsl::{case_when, IsNotNull};
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::combined::{apply_combined, combinable, promote_in_one};
use super::prepared::Update;
use super::Conn;
use crate::db::schema::{activities, lifecycles, tasks};
use crate::db::DbConnection;
use crate::domain::{
    ActivityChanges, ActivityId, ActivityState, ActivityStatus, ActivityUpdate, Plan, Recorded,
    Report, RetryPolicy, RunSettings, Snapshot, Step, TaskChanges, TaskId, TaskState, TaskStatus,
    TaskUpdate,
};

#[derive(Queryable, Selectable)]
#[diesel(table_name = activities)]
pub(super) struct ActivityStateRow {
    id: ActivityId,
    status: ActivityStatus,
    results: Option<String>,
    #[diesel(select_expression = activities::sealed_secrets.is_not_null())]
    #[diesel(select_expression_type = IsNotNull<activities::sealed_secrets>)]
    holds_secrets: bool,
}

impl ActivityStateRow {
    pub(super) fn id(&self) -> ActivityId {
        self.id
    }

    pub(super) fn into_state(self) -> ActivityState {
        ActivityState {
            id: self.id,
            status: self.status,
            results: self.results,
            holds_secrets: self.holds_secrets,
        }
    }
}

/// The light columns of a task: what any decision may need of any task.
#[derive(Queryable, Selectable)]
#[diesel(table_name = tasks)]
pub(super) struct TaskStateRow {
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
    pub(super) fn into_state(self) -> TaskState {
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
            settings: run_settings(self.timeout_ms, self.retry_max, self.retry_backoff_ms),
        }
    }
}

/// A task's `timeout` and `retry` as stored.
pub(super) fn run_settings(
    timeout_ms: Option<i64>,
    retry_max: Option<i32>,
    retry_backoff_ms: Option<i64>,
) -> RunSettings {
    let retry = match (retry_max, retry_backoff_ms) {
        (Some(max), Some(backoff_ms)) => Some(RetryPolicy {
            max: max.max(0) as u32,
            backoff_ms,
        }),
        _ => None,
    };
    RunSettings { timeout_ms, retry }
}

/// The snapshot of an activity its own transaction inserted with `tasks` (as they came back
/// from their INSERT): nothing to read, and nothing another transaction could change or lock
/// before the commit.
pub fn inserted_snapshot(
    activity: &crate::db::models::ActivityRow,
    tasks: Vec<TaskState>,
) -> Snapshot {
    Snapshot {
        activity: ActivityState {
            id: activity.id,
            status: activity.status,
            results: activity.results.clone(),
            holds_secrets: activity.sealed_secrets.is_some(),
        },
        tasks,
        recorded: None,
    }
}

/// A callback's task's `results`, `errors` and `reported_outcome`; NULL for the other tasks.
pub(super) type SubjectColumns = (Option<String>, Option<String>, Option<String>);

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
/// One statement: every task's light columns joined with their activity, the large columns of
/// the callback's task alone (NULL for the others). Every decision reads a snapshot, and on
/// PostgreSQL each statement is a round trip to a process sharing the CPU (issue 15's profile:
/// two statements here were an eighth of a task's). An activity without tasks takes a second
/// statement (`locked_activity`).
///
/// PostgreSQL locks the tasks' rows as well as the activity's (`FOR UPDATE` of a join): claims
/// pass them by (`SKIP LOCKED`) until the commit, as they pass by a task this transaction
/// updates; writers of the same activity wait for the activity's lock first either way. The
/// tasks' locks are needed: with the activity's alone (`FOR UPDATE OF activities`, tried), a
/// writer that waited for it gets the activity re-read after the other's commit but the tasks
/// as they were when its statement started (READ COMMITTED re-reads only locked rows), and
/// decides on stale tasks (`runs::race` fails).
pub fn load_snapshot(conn: &mut Conn, of: SnapshotOf) -> QueryResult<Option<Snapshot>> {
    if let SnapshotOf::CallbackTask(task) = of {
        // Read ahead by its batch, with the other callbacks' (`read_ahead.rs`).
        if let Some(snapshot) = super::read_ahead::take_snapshot_read_ahead(task) {
            return Ok(Some(snapshot));
        }
    }
    let subject = match of {
        SnapshotOf::CallbackTask(task) => Some(task),
        SnapshotOf::Activity(_) | SnapshotOf::TaskActivity(_) => None,
    };
    let of_subject = || tasks::id.nullable().eq(subject);
    // MultiConnection has no FOR UPDATE: the same statement, built for the connection's backend.
    macro_rules! joined {
        ($filter:expr) => {{
            macro_rules! query {
                () => {
                    tasks::table
                        .inner_join(activities::table)
                        .filter($filter)
                        .order(tasks::position)
                        .select((
                            ActivityStateRow::as_select(),
                            TaskStateRow::as_select(),
                            (
                                case_when(of_subject(), tasks::results),
                                case_when(of_subject(), tasks::errors),
                                case_when(of_subject(), tasks::reported_outcome),
                            ),
                        ))
                };
            }
            match conn {
                DbConnection::Pg(pg) => query!().for_update().load(pg),
                DbConnection::Sqlite(sqlite) => query!().load(sqlite),
            }
        }};
    }
    let rows: Vec<(ActivityStateRow, TaskStateRow, SubjectColumns)> = match of {
        SnapshotOf::Activity(id) => joined!(tasks::activity_id.eq(id))?,
        SnapshotOf::CallbackTask(task) | SnapshotOf::TaskActivity(task) => {
            // The task's activity, read in a subquery of its own (`tasks` is already joined).
            let given = diesel::alias!(tasks as given_task);
            let of_task = given
                .filter(given.field(tasks::id).eq(task))
                .select(given.field(tasks::activity_id));
            joined!(tasks::activity_id.eq_any(of_task))?
        }
    };
    let mut rows = rows.into_iter();
    let Some((activity, first, first_subject)) = rows.next() else {
        // No task to join: the activity alone (or none; a missing task has no activity).
        return Ok(locked_activity(conn, of)?.map(|activity| Snapshot {
            activity: activity.into_state(),
            tasks: Vec::new(),
            recorded: None,
        }));
    };
    let task_rows = std::iter::once((first, first_subject)).chain(rows.map(|(_, t, s)| (t, s)));
    snapshot_of_rows(activity, task_rows, subject.as_slice()).map(Some)
}

/// The snapshot of `activity` with its tasks' rows (in order), what a callback's task (one of
/// `subjects`) recorded taken from its row.
pub(super) fn snapshot_of_rows(
    activity: ActivityStateRow,
    task_rows: impl Iterator<Item = (TaskStateRow, SubjectColumns)>,
    subjects: &[TaskId],
) -> QueryResult<Snapshot> {
    let mut recorded = None;
    let mut tasks = Vec::new();
    for (row, (results, errors, held)) in task_rows {
        if subjects.contains(&row.id) {
            recorded = Some(Recorded {
                task: row.id,
                results,
                errors,
                held: held.as_deref().map(stored_report).transpose()?,
            });
        }
        tasks.push(row.into_state());
    }
    Ok(Snapshot {
        activity: activity.into_state(),
        tasks,
        recorded,
    })
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
pub(super) struct ActivityChangeset<'a> {
    status: Option<ActivityStatus>,
    results: Option<Option<&'a str>>,
    errors: Option<Option<&'a str>>,
    sealed_secrets: Option<Option<&'a str>>,
    started_at: Option<Option<i64>>,
    finished_at: Option<Option<i64>>,
}

impl<'a> ActivityChangeset<'a> {
    pub(super) fn of(c: &'a ActivityChanges) -> Self {
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
pub(super) struct TaskChangeset<'a> {
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
    pub(super) fn of(c: &'a TaskChanges) -> Self {
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

/// Applies a state-machine plan with compare-and-set updates, kept prepared (`prepared.rs`);
/// on PostgreSQL, several as one statement (`combined.rs`). Call inside `Db::write`.
pub fn apply_plan(conn: &mut Conn, plan: &Plan, now: i64) -> Result<(), ApplyError> {
    // Combined, the promotion is part of the one statement.
    let promotes_apart = match conn {
        DbConnection::Pg(pg) if combinable(plan) => {
            apply_combined(pg, plan, now)?;
            false
        }
        _ => {
            apply_one_by_one(conn, plan)?;
            plan.promote_lifecycle
        }
    };
    if promotes_apart {
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

/// As `apply_plan`, or, on PostgreSQL, keeps `plan` for the write's batch to apply with its
/// other callbacks' once they have run (`behind.rs`: a callback whose snapshot the batch read
/// ahead): answered as applied, its rows are not changed yet. So only for a write that reads
/// none of the plan's rows afterwards.
pub fn apply_plan_or_keep(conn: &mut Conn, plan: &Plan, now: i64) -> Result<(), ApplyError> {
    if matches!(conn, DbConnection::Pg(_)) && super::behind::defer(plan, now) {
        if plan.makes_work_due(now) {
            crate::db::listen::mark_work_due();
        }
        return Ok(());
    }
    apply_plan(conn, plan, now)
}

pub(super) fn conflict_of_activity(update: &ActivityUpdate) -> ApplyError {
    ApplyError::Conflict(format!(
        "activity {} is no longer {}",
        update.id, update.expected
    ))
}

pub(super) fn conflict_of_task(update: &TaskUpdate) -> ApplyError {
    ApplyError::Conflict(format!(
        "task {} is no longer {}",
        update.id, update.expected
    ))
}

/// A statement per update.
fn apply_one_by_one(conn: &mut Conn, plan: &Plan) -> Result<(), ApplyError> {
    if let Some(update) = &plan.activity {
        let changes = ActivityChangeset::of(&update.changes);
        let filter = activities::id
            .eq(update.id)
            .and(activities::status.eq(update.expected));
        let changed = if update.changes == ActivityChanges::default() {
            // Nothing to set: diesel refuses it, as before.
            diesel::update(activities::table.filter(filter))
                .set(changes)
                .execute(conn)?
        } else {
            Update {
                table: activities::table,
                set: changes.as_changeset(),
                filter,
            }
            .execute(conn)?
        };
        if changed == 0 {
            return Err(conflict_of_activity(update));
        }
    }
    for update in &plan.tasks {
        let changes = TaskChangeset::of(&update.changes);
        let expected = tasks::id
            .eq(update.id)
            .and(tasks::status.eq(update.expected));
        let empty = update.changes == TaskChanges::default();
        // Kept prepared (`prepared.rs`), one shape with the claim's lease and one without.
        macro_rules! update {
            ($filter:expr) => {
                if empty {
                    // Nothing to set: diesel refuses it, as before.
                    diesel::update(tasks::table.filter($filter))
                        .set(changes)
                        .execute(conn)?
                } else {
                    Update {
                        table: tasks::table,
                        set: changes.as_changeset(),
                        filter: $filter,
                    }
                    .execute(conn)?
                }
            };
        }
        let changed = match &update.expected_lease {
            Some(lease) => update!(expected.and(tasks::lease_owner.eq(lease))),
            None => update!(expected),
        };
        if changed == 0 {
            return Err(conflict_of_task(update));
        }
    }
    Ok(())
}

/// Closes the current lifecycle row of the product version and opens the activity's stage,
/// both read from the activity's row in the statements themselves (no read first: a statement
/// less per promotion); on PostgreSQL both in one statement (`combined::Promotion`). The unique
/// index on `activity_id` makes a second promotion of the same activity fail.
fn promote_lifecycle(conn: &mut Conn, activity_id: ActivityId, now: i64) -> QueryResult<()> {
    if let DbConnection::Pg(pg) = conn {
        // One round trip instead of two (`combined.rs`).
        return match promote_in_one(pg, activity_id, now)? {
            true => Ok(()),
            false => Err(DieselError::NotFound),
        };
    }
    let activity = || activities::table.filter(activities::id.eq(activity_id));
    // Scalar subqueries (one row): PostgreSQL then finds the open row through its index; as
    // `= ANY (…)` it scanned every lifecycle row (measured: 1.9 ms a promotion).
    let product = activity()
        .select(activities::data_product_id)
        .single_value();
    let version = activity()
        .select(activities::data_product_version)
        .single_value();
    Update {
        table: lifecycles::table,
        set: lifecycles::finished_at.eq(now).as_changeset(),
        filter: lifecycles::data_product_id
            .nullable()
            .eq(product)
            .and(lifecycles::data_product_version.nullable().eq(version))
            .and(lifecycles::finished_at.is_null()),
    }
    .execute(conn)?;
    let opened = diesel::insert_into(lifecycles::table)
        .values(activity().select((
            activities::data_product_id,
            activities::data_product_version,
            activities::stage,
            activities::id.nullable(),
            activities::results,
            now.into_sql::<diesel::sql_types::BigInt>(),
        )))
        .into_columns((
            lifecycles::data_product_id,
            lifecycles::data_product_version,
            lifecycles::stage,
            lifecycles::activity_id,
            lifecycles::results,
            lifecycles::started_at,
        ))
        .execute(conn)?;
    if opened == 0 {
        return Err(DieselError::NotFound);
    }
    Ok(())
}
