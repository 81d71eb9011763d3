//! How much work is stored, for `/metrics`: two grouped reads, whatever the number of rows.

use diesel::dsl::{case_when, count_star, min, sum};
use diesel::prelude::*;
use diesel::sql_types::Integer;

use super::Conn;
use crate::db::schema::{activities, tasks};
use crate::domain::{ActivityStatus, Step, TaskStatus};

/// Counts indexed like `ActivityStatus::ALL`, `TaskStatus::ALL` and `Step::ALL`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkCounts {
    pub activities: [i64; ActivityStatus::ALL.len()],
    pub tasks: [i64; TaskStatus::ALL.len()],
    pub steps: [StepCounts; Step::ALL.len()],
}

/// The engine's steps of one kind: scheduled, due (`due_at <= now`), and the oldest due time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepCounts {
    pub scheduled: i64,
    pub overdue: i64,
    pub oldest_due_at: Option<i64>,
}

#[derive(Queryable)]
struct TaskGroup {
    status: String,
    step: Option<String>,
    count: i64,
    /// SUM of nothing is NULL.
    overdue: Option<i64>,
    oldest_due_at: Option<i64>,
}

pub fn work_counts(conn: &mut Conn, now: i64) -> QueryResult<WorkCounts> {
    let mut counts = WorkCounts::default();
    let by_status: Vec<(String, i64)> = activities::table
        .group_by(activities::status)
        .select((activities::status, count_star()))
        .load(conn)?;
    for (status, n) in by_status {
        if let Some(status) = ActivityStatus::parse(&status) {
            counts.activities[status as usize] += n;
        }
    }
    // One row per (status, step): both gauges of tasks and steps from one scan.
    let overdue = || tasks::due_at.le(now);
    let one_if_overdue =
        case_when(overdue(), 1.into_sql::<Integer>()).otherwise(0.into_sql::<Integer>());
    let groups: Vec<TaskGroup> = tasks::table
        .group_by((tasks::status, tasks::step))
        .select((
            tasks::status,
            tasks::step,
            count_star(),
            sum(one_if_overdue),
            min(case_when(overdue(), tasks::due_at)),
        ))
        .load(conn)?;
    for group in groups {
        if let Some(status) = TaskStatus::parse(&group.status) {
            counts.tasks[status as usize] += group.count;
        }
        if let Some(step) = group.step.as_deref().and_then(Step::parse) {
            let c = &mut counts.steps[step as usize];
            c.scheduled += group.count;
            c.overdue += group.overdue.unwrap_or(0);
            c.oldest_due_at = match (c.oldest_due_at, group.oldest_due_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Ok(counts)
}
