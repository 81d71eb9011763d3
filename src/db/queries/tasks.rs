//! Tasks: find and list, for the API.

use diesel::prelude::*;

use super::{Conn, Page};
use crate::db::models::*;
use crate::db::schema::tasks;
use crate::domain::{ActivityId, TaskId, TaskStatus};

#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    pub activity_id: Option<ActivityId>,
    pub executor: Option<String>,
    pub status: Option<TaskStatus>,
    pub page: Page,
}

pub fn find_task(conn: &mut Conn, id: TaskId) -> QueryResult<Option<TaskRow>> {
    tasks::table
        .find(id)
        .select(TaskRow::as_select())
        .first(conn)
        .optional()
}

/// The activity a task belongs to (a task never changes activity).
pub fn activity_of_task(conn: &mut Conn, id: TaskId) -> QueryResult<Option<ActivityId>> {
    tasks::table
        .find(id)
        .select(tasks::activity_id)
        .first(conn)
        .optional()
}

pub fn list_tasks(conn: &mut Conn, filter: &TaskFilter) -> QueryResult<Vec<TaskRow>> {
    let mut query = tasks::table.into_boxed();
    if let Some(v) = filter.activity_id {
        query = query.filter(tasks::activity_id.eq(v));
    }
    if let Some(v) = &filter.executor {
        query = query.filter(tasks::executor_ref.eq(v.clone()));
    }
    if let Some(v) = filter.status {
        query = query.filter(tasks::status.eq(v));
    }
    if let Some(after) = filter.page.after {
        query = query.filter(tasks::id.gt(after));
    }
    if let Some(limit) = filter.page.limit {
        query = query.limit(limit);
    }
    query
        .order(tasks::id)
        .select(TaskRow::as_select())
        .load(conn)
}

/// The position of an activity's last task (`None`: it has none).
pub fn last_position(conn: &mut Conn, activity: ActivityId) -> QueryResult<Option<i32>> {
    tasks::table
        .filter(tasks::activity_id.eq(activity))
        .select(diesel::dsl::max(tasks::position))
        .first(conn)
}
