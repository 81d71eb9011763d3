//! How much work is stored, for `/metrics`: two grouped reads. The statuses of activities and
//! tasks take one pass over each table (the cost of a scrape grows with them); the engine's
//! steps are read through the partial index on scheduled tasks, so they cost next to nothing.

use diesel::dsl::{case_when, count_star, min, sum};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

use super::Conn;
use crate::db::schema::{activities, tasks};
use crate::db::DbConnection;
use crate::domain::{ActivityStatus, Step, TaskStatus};

/// Counts indexed like `ActivityStatus::ALL`, `TaskStatus::ALL` and `Step::ALL`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkCounts {
    pub activities: [i64; ActivityStatus::ALL.len()],
    pub tasks: [i64; TaskStatus::ALL.len()],
    pub steps: [StepCounts; Step::ALL.len()],
    /// Undelivered notifications, per listener that has any.
    pub listeners: Vec<super::ListenerBacklog>,
}

/// The engine's steps of one kind: scheduled, due (`due_at <= now`), and the oldest due time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepCounts {
    pub scheduled: i64,
    pub overdue: i64,
    pub oldest_due_at: Option<i64>,
}

#[derive(Queryable)]
struct StepGroup {
    step: Option<Step>,
    count: i64,
    /// SUM of nothing is NULL.
    overdue: Option<i64>,
    oldest_due_at: Option<i64>,
}

const ACTIVITY: &str = "activity";
const TASK: &str = "task";

pub fn work_counts(conn: &mut Conn, now: i64) -> QueryResult<WorkCounts> {
    let mut counts = WorkCounts::default();
    // MultiConnection has no UNION: the same statement, built for the connection's backend.
    macro_rules! statuses {
        ($conn:expr) => {
            activities::table
                .group_by(activities::status)
                .select((
                    ACTIVITY.into_sql::<Text>(),
                    activities::status,
                    count_star(),
                ))
                .union_all(tasks::table.group_by(tasks::status).select((
                    TASK.into_sql::<Text>(),
                    tasks::status,
                    count_star(),
                )))
                .load::<(String, String, i64)>($conn)
        };
    }
    let by_status = match conn {
        DbConnection::Sqlite(c) => statuses!(c)?,
        DbConnection::Pg(c) => statuses!(c)?,
    };
    for (kind, status, n) in by_status {
        let count = match kind.as_str() {
            ACTIVITY => ActivityStatus::parse(&status).map(|s| &mut counts.activities[s as usize]),
            _ => TaskStatus::parse(&status).map(|s| &mut counts.tasks[s as usize]),
        };
        if let Some(count) = count {
            *count += n;
        }
    }
    let overdue = || tasks::due_at.le(now);
    let one_if_overdue =
        case_when(overdue(), 1.into_sql::<Integer>()).otherwise(0.into_sql::<Integer>());
    let steps: Vec<StepGroup> = tasks::table
        .filter(tasks::step.is_not_null())
        .group_by(tasks::step)
        .select((
            tasks::step,
            count_star(),
            sum(one_if_overdue),
            min(case_when(overdue(), tasks::due_at)),
        ))
        .load(conn)?;
    for group in steps {
        if let Some(step) = group.step {
            counts.steps[step as usize] = StepCounts {
                scheduled: group.count,
                overdue: group.overdue.unwrap_or(0),
                oldest_due_at: group.oldest_due_at,
            };
        }
    }
    counts.listeners = super::listener_backlogs(conn)?;
    Ok(counts)
}
