//! A task's run: read for `GET /tasks/{id}/run` and `/logs`, and found by its provider's run id
//! for a service hook (which knows only the run).

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::{activities, tasks};
use crate::domain::{ActivityId, Step, TaskId, TaskStatus};

/// What asking a provider about a task's run needs: which executor, which run, and the
/// activity's sealed secrets (for that executor's credentials).
#[derive(Debug, Clone, Queryable)]
pub struct TaskRunRow {
    pub task_id: TaskId,
    pub activity_id: ActivityId,
    pub executor_ref: Option<String>,
    pub run_ref: Option<String>,
    pub run_url: Option<String>,
    pub sealed_secrets: Option<String>,
}

pub fn find_task_run(conn: &mut Conn, id: TaskId) -> QueryResult<Option<TaskRunRow>> {
    tasks::table
        .inner_join(activities::table)
        .filter(tasks::id.eq(id))
        .select((
            tasks::id,
            tasks::activity_id,
            tasks::executor_ref,
            tasks::run_ref,
            tasks::run_url,
            activities::sealed_secrets,
        ))
        .first(conn)
        .optional()
}

/// Whether a run request of `executor` is being sent right now (a leased dispatch): its run,
/// once answered, may be the one a service hook speaks of.
pub fn dispatching(conn: &mut Conn, executor: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        tasks::table
            .filter(tasks::step.eq(Step::Dispatch))
            .filter(tasks::due_at.is_not_null())
            .filter(tasks::lease_owner.is_not_null())
            .filter(tasks::executor_ref.eq(executor)),
    ))
    .get_result(conn)
}

/// Tasks of `executor` awaiting a run whose reference mentions run id `run_id` (its
/// `"runId":<id>` as stored), with their run references for the caller to check exactly.
/// Awaiting tasks have a due step, so this reads the small index of due steps, not every task.
pub fn awaiting_tasks_of_run(
    conn: &mut Conn,
    executor: &str,
    run_id: i32,
) -> QueryResult<Vec<(TaskId, String)>> {
    tasks::table
        .filter(tasks::step.eq(Step::Await))
        .filter(tasks::due_at.is_not_null())
        .filter(tasks::status.eq(TaskStatus::Processing))
        .filter(tasks::executor_ref.eq(executor))
        .filter(tasks::run_ref.like(format!("%\"runId\":{run_id}%")))
        .select((tasks::id, tasks::run_ref.assume_not_null()))
        .order(tasks::id)
        .load(conn)
}
