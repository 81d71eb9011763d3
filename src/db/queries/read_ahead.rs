//! PostgreSQL: the snapshots a batch's callbacks decide on, read in one statement ahead of
//! them.
//!
//! A callback's write starts by reading its activity's snapshot (`load_snapshot`, locking the
//! rows): a statement and a round trip of its own, 1 of ~3 a task once a batch's dispatch
//! records go ahead of it (`on_claim.rs`; issue 15). The writer (`writer/batch.rs`) reads the
//! snapshots of a batch's callbacks in one statement before they run, first in the batch and
//! one after another, each of an activity no other of them touches: what each would have read
//! at its turn. `load_snapshot` then answers from here. Whatever rolls back past this read
//! forgets the snapshots (`forget_ahead`): a write run again reads its own.

use std::cell::RefCell;

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::PgConnection;

use super::plans::{snapshot_of_rows, ActivityStateRow, SubjectColumns, TaskStateRow};
use crate::db::schema::{activities, tasks};
use crate::domain::{Snapshot, TaskId};

#[cfg(test)]
thread_local! {
    /// Statements that read snapshots ahead, and snapshots taken from them (tests: whether a
    /// batch took this path).
    pub(crate) static READ_AHEAD: super::Counts = const { super::Counts::new() };
}

thread_local! {
    /// The snapshots this thread's batch read ahead, by the callback's task, until its write
    /// takes it.
    static SNAPSHOTS: RefCell<Vec<(TaskId, Snapshot)>> = const { RefCell::new(Vec::new()) };
}

/// Reads, in one statement and locking their rows as `load_snapshot` does, the snapshots of
/// the activities of `callbacks` (tasks, none twice), and keeps each for its callback's write;
/// an activity with several of them is left to their writes (what the first changes, the next
/// must read). On an error the caller rolls back and calls `forget_ahead`.
pub(crate) fn read_snapshots_ahead(pg: &mut PgConnection, callbacks: &[TaskId]) -> QueryResult<()> {
    let given = diesel::alias!(tasks as given_task);
    let of_callbacks = given
        .filter(given.field(tasks::id).eq_any(callbacks))
        .select(given.field(tasks::activity_id));
    let subject = || tasks::id.eq_any(callbacks);
    let query = tasks::table
        .inner_join(activities::table)
        .filter(tasks::activity_id.eq_any(of_callbacks))
        .order((tasks::activity_id, tasks::position))
        .select((
            ActivityStateRow::as_select(),
            TaskStateRow::as_select(),
            (
                case_when(subject(), tasks::results),
                case_when(subject(), tasks::errors),
                case_when(subject(), tasks::reported_outcome),
            ),
        ))
        .for_update();
    let rows: Vec<(ActivityStateRow, TaskStateRow, SubjectColumns)> = query.load(pg)?;
    #[cfg(test)]
    READ_AHEAD.with(|c| c.add(0));
    let mut read = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while let Some((activity, first, first_subject)) = rows.next() {
        let id = activity.id();
        let mut task_rows = vec![(first, first_subject)];
        while let Some((_, task, subject)) = rows.next_if(|(next, _, _)| next.id() == id) {
            task_rows.push((task, subject));
        }
        let snapshot = snapshot_of_rows(activity, task_rows.into_iter(), callbacks)?;
        let mut its = snapshot.tasks.iter().filter(|t| callbacks.contains(&t.id));
        if let (Some(callback), None) = (its.next(), its.next()) {
            read.push((callback.id, snapshot));
        }
    }
    SNAPSHOTS.with(|snapshots| snapshots.borrow_mut().extend(read));
    Ok(())
}

/// Forgets every snapshot read ahead on this thread: the read was rolled back (or the batch is
/// over).
pub(super) fn forget_snapshots_read_ahead() {
    SNAPSHOTS.with(|snapshots| snapshots.borrow_mut().clear());
}

/// The snapshot read ahead for the callback of `task`, taken (a write run again after a
/// rollback finds none and reads its own).
pub(super) fn take_snapshot_read_ahead(task: TaskId) -> Option<Snapshot> {
    SNAPSHOTS.with(|snapshots| {
        let mut snapshots = snapshots.borrow_mut();
        let at = snapshots.iter().position(|(of, _)| *of == task)?;
        #[cfg(test)]
        READ_AHEAD.with(|c| c.add(1));
        let snapshot = snapshots.swap_remove(at).1;
        // No other callback of the batch touches its activity: its plan may wait (`behind.rs`).
        super::behind::permit(snapshot.activity.id);
        Some(snapshot)
    })
}
