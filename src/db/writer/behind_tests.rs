//! The callbacks' plans a PostgreSQL batch applies behind them, in one statement
//! (`db/queries/behind.rs`).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use diesel::prelude::*;

use super::tests::{
    claimed_for_dispatch, drop_database, postgres_connection, queued, run_as_one_batch,
    sqlite_connection, Queued,
};
use crate::db::{DbConnection, DbError};
use crate::domain::{
    ActivityChanges, ActivityId, ActivityStatus, ActivityUpdate, Plan, Step, TaskChanges, TaskId,
    TaskStatus, TaskUpdate,
};

/// How a callback's write goes in `batch_of_plans`.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Callback {
    Applies,
    /// Its write reads the rows afterwards: it applies its plan at once (`apply_plan`).
    AppliesNow,
    /// Its plan expects its task PLANNED: someone changed the row first.
    Conflicts,
    /// It fails after applying its plan.
    FailsAfter,
    /// Its plan also promotes the activity's lifecycle.
    Promotes,
}

/// A callback's write of task `task` (of activity `task`): it reads its snapshot, applies
/// (`apply_plan_or_keep`) a plan that finishes the task, marks its activity's results and, for task 1, hands task 6
/// (activity 1's next) to a claim; counted in `runs`.
fn plan_write(task: i64, how: Callback, runs: &Arc<AtomicUsize>) -> Queued<()> {
    let runs = runs.clone();
    let work = move |conn: &mut DbConnection| -> Result<(), DbError> {
        runs.fetch_add(1, SeqCst);
        let of = crate::db::SnapshotOf::CallbackTask(TaskId(task));
        crate::db::load_snapshot(conn, of)?.expect("the callback's activity");
        let finish = TaskUpdate {
            id: TaskId(task),
            expected: match how {
                Callback::Conflicts => TaskStatus::Planned,
                _ => TaskStatus::Processing,
            },
            // One with the claim's lease expected, one without.
            expected_lease: (task % 2 == 0).then(|| "claim".to_owned()),
            changes: TaskChanges {
                status: Some(TaskStatus::Processed),
                results: Some(Some(format!("done {task}"))),
                finished_at: Some(Some(7)),
                step: Some(None),
                due_at: Some(None),
                lease_owner: Some(None),
                lease_until: Some(None),
                ..TaskChanges::default()
            },
        };
        let next = TaskUpdate {
            id: TaskId(6),
            expected: TaskStatus::Planned,
            expected_lease: None,
            changes: TaskChanges {
                status: Some(TaskStatus::Processing),
                step: Some(Some(Step::Dispatch)),
                due_at: Some(Some(0)),
                lease_owner: Some(Some("handed".into())),
                lease_until: Some(Some(99)),
                ..TaskChanges::default()
            },
        };
        let plan = Plan {
            activity: Some(ActivityUpdate {
                id: ActivityId(task),
                expected: ActivityStatus::Processing,
                changes: ActivityChanges {
                    results: Some(Some(format!("after {task}"))),
                    ..ActivityChanges::default()
                },
            }),
            tasks: match task {
                1 => vec![finish, next],
                _ => vec![finish],
            },
            promote_lifecycle: how == Callback::Promotes,
        };
        match how {
            Callback::AppliesNow => crate::db::apply_plan(conn, &plan, 7),
            _ => crate::db::apply_plan_or_keep(conn, &plan, 7),
        }
        .map_err(|e| DbError::Config(e.to_string()))?;
        match how {
            Callback::FailsAfter => Err(DbError::Config(format!("callback {task} failed"))),
            _ => Ok(()),
        }
    };
    queued(super::RerunAhead {
        ahead: super::Ahead::Snapshot(TaskId(task)),
        work,
    })
}

/// What a batch of plans left: each task's (id, status, results, lease_owner), each
/// activity's (id, results), the activities with an open lifecycle row.
pub(super) type Rows = (
    Vec<(i64, String, Option<String>, Option<String>)>,
    Vec<(i64, Option<String>)>,
    Vec<Option<i64>>,
);

/// One batch of five callbacks (tasks 1-5, each of its own activity, as `claimed_for_dispatch`
/// makes them; activity 1 has a second task, 6, PLANNED), `how[i]` task i+1's: each callback's
/// outcome, how often each ran, and the rows once committed.
pub(super) fn batch_of_plans(
    conn: &mut DbConnection,
    how: [Callback; 5],
) -> (Vec<bool>, Vec<usize>, Rows) {
    use crate::db::schema::{activities, lifecycles, tasks};
    use diesel::connection::SimpleConnection;
    conn.batch_execute("DELETE FROM lifecycles; DELETE FROM tasks; DELETE FROM activities")
        .unwrap();
    claimed_for_dispatch(conn, 5);
    // Activity 5's product version is at a stage already: a promotion closes that row.
    conn.batch_execute(
        "INSERT INTO lifecycles (data_product_id, data_product_version, stage, started_at) \
         VALUES ('p5', '1.0.0', 'dev', 0); \
         UPDATE tasks SET step = 'await'; \
         INSERT INTO tasks (id, activity_id, position, name, status, created_at, attempt) \
         VALUES (6, 1, 1, 't', 'PLANNED', 0, 0)",
    )
    .unwrap();
    let runs: Vec<Arc<AtomicUsize>> = (0..5).map(|_| Default::default()).collect();
    let writes = (1..).zip(how).zip(&runs);
    let writes = writes.map(|((task, how), runs)| plan_write(task, how, runs));
    let outcomes = run_as_one_batch(conn, writes.collect())
        .iter()
        .map(Result::is_ok)
        .collect();
    let tasks = tasks::table
        .select((tasks::id, tasks::status, tasks::results, tasks::lease_owner))
        .order(tasks::id)
        .load(conn)
        .unwrap();
    let activities = activities::table
        .select((activities::id, activities::results))
        .order(activities::id)
        .load(conn)
        .unwrap();
    let open = lifecycles::table
        .filter(lifecycles::finished_at.is_null())
        .select(lifecycles::activity_id)
        .load(conn)
        .unwrap();
    (
        outcomes,
        runs.iter().map(|r| r.load(SeqCst)).collect(),
        (tasks, activities, open),
    )
}

/// The rows `batch_of_plans` leaves when the callbacks of `applied` applied their plans and
/// the others changed nothing; `promoted`: the activities with an open lifecycle row (none:
/// activity 5's version keeps the row it had, of no activity).
fn rows_when(applied: &[i64], promoted: &[i64]) -> Rows {
    let applied = |id: i64| applied.contains(&id);
    let mut tasks: Vec<_> = (1..=5)
        .map(|id| match applied(id) {
            true => (id, "PROCESSED".into(), Some(format!("done {id}")), None),
            false => (id, "PROCESSING".into(), None, Some("claim".into())),
        })
        .collect();
    tasks.push(match applied(1) {
        true => (6, "PROCESSING".into(), None, Some("handed".into())),
        false => (6, "PLANNED".into(), None, None),
    });
    let activities = (1..=5)
        .map(|id| (id, applied(id).then(|| format!("after {id}"))))
        .collect();
    let open = match promoted {
        [] => vec![None],
        promoted => promoted.iter().map(|&id| Some(id)).collect(),
    };
    (tasks, activities, open)
}

/// On PostgreSQL the plans of a batch's callbacks whose snapshots went ahead are applied
/// together in one statement behind them, each with its compare-and-set (a plan of two tasks,
/// one with a lease expected, one without), a promotion's with it (its version's open
/// lifecycle row closed, its own opened); the plan of a write that asks for it applies itself
/// (`apply_plan`: it reads the rows afterwards). When one of them
/// no longer matches, or a callback fails after applying, the callbacks run again and each
/// applies its own: the same outcomes and rows as on SQLite, where each applies its own.
#[test]
fn a_batchs_callbacks_plans_are_applied_behind_them_in_one_statement_on_postgres() {
    use Callback::*;
    let behind = || crate::db::queries::BEHIND.with(crate::db::queries::Counts::get);
    let all = [Applies, Applies, Applies, AppliesNow, Promotes];
    let second_conflicts = [Applies, Conflicts, Applies, Applies, Applies];
    let third_fails = [Applies, Applies, FailsAfter, Applies, Applies];
    let all_apply = (vec![true; 5], vec![1; 5], rows_when(&[1, 2, 3, 4, 5], &[5]));
    let all_but = |failed: usize| {
        let mut outcomes = vec![true; 5];
        outcomes[failed - 1] = false;
        let applied: Vec<i64> = (1..=5).filter(|&t| t != failed as i64).collect();
        (outcomes, rows_when(&applied, &[]))
    };

    let (mut sqlite, _db, dir) = sqlite_connection();
    let before = behind();
    assert_eq!(batch_of_plans(&mut sqlite, all), all_apply);
    let (outcomes, runs, rows) = batch_of_plans(&mut sqlite, second_conflicts);
    assert_eq!((outcomes, rows), all_but(2));
    // Task 2's conflict undid task 1's write, which shared its savepoint.
    assert_eq!(runs, [2, 1, 1, 1, 1]);
    assert_eq!(behind(), before, "SQLite kept plans behind its callbacks");
    let _ = std::fs::remove_dir_all(dir);

    let Some((mut pg, db, admin, name)) = postgres_connection() else {
        return;
    };
    let before = behind();
    assert_eq!(batch_of_plans(&mut pg, all), all_apply);
    let after = behind();
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        [4, 1],
        "four plans kept (the promotion's too, not the one applied at once), applied in one statement"
    );

    // Kept, task 2's plan no longer matched in the statement: all ran again, each applying its
    // own; task 2's conflict then undid only itself.
    let (outcomes, runs, rows) = batch_of_plans(&mut pg, second_conflicts);
    assert_eq!((outcomes, rows), all_but(2));
    assert_eq!(runs, [2; 5]);

    // Task 3's write failed after keeping its plan: what was kept went with the rollback.
    let before = behind();
    let (outcomes, runs, rows) = batch_of_plans(&mut pg, third_fails);
    assert_eq!((outcomes, rows), all_but(3));
    // Tasks 1 and 2 shared its savepoint: they ran again, 4 and 5 read their own snapshots.
    assert_eq!(runs, [2, 2, 1, 1, 1]);
    assert_eq!(
        behind()[1] - before[1],
        0,
        "no statement applied the plans kept before the failure"
    );

    drop((pg, db));
    drop_database(&admin, &name);
}
