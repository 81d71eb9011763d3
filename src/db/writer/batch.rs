//! One batch of writes in one transaction: each write's failure undone alone, one COMMIT.
//!
//! The savepoints are managed here rather than with a nested `Connection::transaction` per
//! write, to save round trips on PostgreSQL: the transaction and the first savepoint open in
//! one message, and a savepoint is set (releasing the previous one in the same message) only
//! before a write whose failure must not undo the writes since the last one. Writes that may
//! run again (`Rerun`: engine decisions and callbacks, which decide afresh from what they read)
//! share a savepoint: when one of them fails, the batch rolls back to the savepoint and runs the
//! others again, each behind a savepoint of its own then. Profiled (issue 15), a savepoint per
//! write was 2.4 of ~15 round trips a task. A write that runs once (`Once`) never runs twice.
//! Savepoints a write opens itself (diesel's nested transactions) nest inside.
//!
//! On PostgreSQL the batch also carries the wake-up of the other replicas (`listen.rs`): one
//! NOTIFY before the COMMIT when a write that stayed left engine work due, not one per write.
//! And the reads of the dispatches its writes handed to their engine (`offer_handed_read`), all
//! in one statement after the writes and before the commit: the engine would otherwise read
//! them in a transaction of its own right after this one, one statement for the hand-offs it
//! received together (issue 15: at 200 tasks/s 1 of 3.7 commits per task, when a batch is one
//! write; at full load ~0.12 statements a task on one replica, ~0.25 on two), and the dispatch
//! would wait for that read.

use std::cell::RefCell;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::{Connection, QueryResult};

use super::{Ahead, QueuedWrite, Ran};
use crate::db::listen::{self, Notifying};
use crate::db::{self, ContextRows, DbConnection, DbError};
use crate::domain::{ClaimedStep, TaskId, UpdateOnClaim};

/// A read of a dispatch handed to the engine, offered to the batch of the write that handed it.
pub(crate) struct HandedOffer {
    task: TaskId,
    claim: String,
    /// Gets the task as its engine would read it, and its activity's Context rows; not called
    /// when the task's lease moved on.
    deliver: Box<dyn FnOnce(ClaimedStep, Option<ContextRows>)>,
}

thread_local! {
    /// A PostgreSQL batch is under way on this thread (a writer thread): offers are taken.
    static TAKES_OFFERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// What the write running now offered to read before the commit.
    static OFFERED: RefCell<Vec<HandedOffer>> = const { RefCell::new(Vec::new()) };
}

/// Offers the batch of the write running on this thread to read `task`, handed to the engine
/// under `claim`, as the engine would (`db::handed_steps_with_contexts`): on PostgreSQL, when
/// the write stays, the batch reads every such task of its writes in one statement after the
/// writes, in their transaction, before the commit, and `deliver` gets what was read of this
/// one (it is not called when the lease moved on). Otherwise (SQLite, the write rolled back,
/// no batch on this thread) the offer is not taken, or dropped unrun, and the engine reads
/// the task itself.
/// The read's error fails the whole batch (PostgreSQL aborts the transaction), as any
/// statement's would.
pub(crate) fn offer_handed_read(
    task: TaskId,
    claim: String,
    deliver: impl FnOnce(ClaimedStep, Option<ContextRows>) + 'static,
) {
    if TAKES_OFFERS.with(|b| b.get()) {
        let offer = HandedOffer {
            task,
            claim,
            deliver: Box::new(deliver),
        };
        OFFERED.with(|offered| offered.borrow_mut().push(offer));
    }
}

fn take_offered() -> Vec<HandedOffer> {
    OFFERED.with(|offered| std::mem::take(&mut *offered.borrow_mut()))
}

#[cfg(test)]
thread_local! {
    /// The hand-offs' reads run by batches on this thread (a test runs its batch on its own).
    pub(super) static HANDED_READS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Reads the tasks `offers` name in one statement and gives each offer its own.
fn read_handed(conn: &mut DbConnection, offers: Vec<HandedOffer>) -> QueryResult<()> {
    #[cfg(test)]
    HANDED_READS.with(|n| n.set(n.get() + 1));
    let handed: Vec<(TaskId, String)> = offers.iter().map(|o| (o.task, o.claim.clone())).collect();
    let (mut steps, mut contexts) = db::handed_steps_with_contexts(conn, &handed)?;
    for offer in offers {
        let Some(at) = steps.iter().position(|s| s.task.id == offer.task) else {
            continue;
        };
        let step = steps.swap_remove(at);
        let activity = step.activity.id;
        // An activity's rows go to the last of its hand-offs, copies to any before it.
        let context = match steps.iter().any(|s| s.activity.id == activity) {
            true => contexts.get(&activity).cloned(),
            false => contexts.remove(&activity),
        };
        (offer.deliver)(step, context);
    }
    Ok(())
}

/// Marks this thread as running a batch while alive; what was offered and not taken goes.
/// Offers are taken on PostgreSQL only: on SQLite a read is no round trip (the engine reads).
struct BatchUnderWay;

impl BatchUnderWay {
    fn start(conn: &DbConnection) -> BatchUnderWay {
        TAKES_OFFERS.with(|b| b.set(matches!(conn, DbConnection::Pg(_))));
        take_offered();
        db::forget_ahead();
        BatchUnderWay
    }
}

impl Drop for BatchUnderWay {
    fn drop(&mut self) {
        TAKES_OFFERS.with(|b| b.set(false));
        take_offered();
        db::forget_ahead();
    }
}

/// Runs `batch` in one transaction and commits it. A write that fails is rolled back to its
/// savepoint and the others stay; a write that panicked leaves the transaction in an unknown
/// state, so the whole batch fails (the caller reopens the connection). `step` is called as
/// each write, and the commit, starts (a step held up brings the next writer thread in).
///
/// Row locks a write takes (PostgreSQL: the activity's `FOR UPDATE`, a claim's rows) are held
/// until this commit: the batch's later writes run on the same connection and never wait for
/// them; another replica's claims pass them by (`SKIP LOCKED`) and its other writes of the same
/// activity wait for this commit, a few milliseconds.
pub(super) fn run_batch(
    conn: &mut DbConnection,
    batch: &mut [Box<dyn QueuedWrite>],
    notifying: Option<&Notifying>,
    mut step: impl FnMut(),
) -> Result<(), DbError> {
    begin(conn)?;
    // A mark left on this thread by a batch that failed is not this batch's.
    listen::take_work_due();
    let _under_way = BatchUnderWay::start(conn);
    let callbacks = apply_ahead_of_writes(conn, batch, &mut step)?;
    // Per write: it stays (ran and was not rolled back), it left engine work due, and the
    // hand-offs' reads it offered (`offer_handed_read`) on its last run.
    let mut runs = Runs {
        stays: vec![false; batch.len()],
        due: vec![false; batch.len()],
        offered: std::iter::repeat_with(Vec::new).take(batch.len()).collect(),
    };
    // The writes that stayed since the savepoint was last set (all rerunnable when several).
    let mut since_savepoint: Vec<usize> = Vec::new();
    for i in 0..batch.len() {
        if i == callbacks && callbacks > 0 {
            since_savepoint = apply_behind(conn, batch, since_savepoint, &mut runs, &mut step)?;
        }
        let shares_savepoint =
            batch[i].rerunnable() && since_savepoint.iter().all(|&j| batch[j].rerunnable());
        if !since_savepoint.is_empty() && !shares_savepoint {
            conn.batch_execute(NEXT_SAVEPOINT)?;
            since_savepoint.clear();
        }
        step();
        match run_one(conn, batch, i, &mut runs)? {
            true => since_savepoint.push(i),
            false => {
                // Undoes this write and the rerunnable ones since the savepoint (which stays
                // defined); those run again, each protected as before.
                conn.batch_execute(ROLL_BACK_THIS_WRITE)?;
                db::forget_ahead();
                let undone = std::mem::take(&mut since_savepoint);
                since_savepoint = run_again(conn, batch, undone, &mut runs, &mut step)?;
            }
        }
    }
    if callbacks == batch.len() && callbacks > 0 {
        apply_behind(conn, batch, since_savepoint, &mut runs, &mut step)?;
    }
    let Runs {
        stays,
        due,
        offered,
    } = runs;
    // Only a write that stays counts: a rolled-back one made nothing due, and what it offered
    // to read is not there.
    if stays.iter().zip(&due).any(|(stays, due)| *stays && *due) {
        listen::notify_others(conn, notifying)?;
    }
    let offers: Vec<HandedOffer> = (offered.into_iter().zip(&stays))
        .filter(|(_, stays)| **stays)
        .flat_map(|(offers, _)| offers)
        .collect();
    if !offers.is_empty() {
        step();
        read_handed(conn, offers)?;
    }
    step();
    <DbConnection as Connection>::TransactionManager::commit_transaction(conn)
        .map_err(DbError::from)
}

/// On PostgreSQL, two statements ahead of the writes instead of a round trip in each: the
/// updates on claims that engine steps start with (`Ahead::Record`: a dispatch's record of its
/// run, one a task; `db::apply_ahead`), then the snapshots that callbacks start by reading
/// (`Ahead::Snapshot`, one a task; `db::read_snapshots_ahead`). Their writes move to the front
/// of the batch, the callbacks first, then the records: any order of a batch's writes is one
/// they could have been queued in, since none of their callers has heard back before the
/// commit. The records' updates go before the snapshots are read, so a callback sees its
/// task's record; a record whose update did not apply decides afterwards, on a snapshot of its
/// own. The callbacks run one after another right after the read, each of an activity the
/// others' do not touch (`read_ahead.rs`), so each reads what it would have read at its turn.
/// There, all rerunnable, they share the batch's first savepoint with both statements, and
/// whatever rolls back to it forgets what went ahead: each write run again reads and applies
/// its own. A group of fewer than two gains nothing; a task twice in a group is left to its
/// writes.
fn apply_ahead_of_writes(
    conn: &mut DbConnection,
    batch: &mut [Box<dyn QueuedWrite>],
    step: &mut impl FnMut(),
) -> Result<usize, DbError> {
    let DbConnection::Pg(pg) = conn else {
        return Ok(0);
    };
    fn update_of(write: &dyn QueuedWrite) -> Option<&UpdateOnClaim> {
        match write.ahead()? {
            Ahead::Record(update) if write.rerunnable() && db::can_apply_ahead(update) => {
                Some(&**update)
            }
            _ => None,
        }
    }
    fn record_of(write: &dyn QueuedWrite) -> Option<TaskId> {
        update_of(write).map(|update| update.update.id)
    }
    fn callback_of(write: &dyn QueuedWrite) -> Option<TaskId> {
        match write.ahead()? {
            Ahead::Snapshot(task) if write.rerunnable() => Some(*task),
            _ => None,
        }
    }
    let records = once_each(batch, record_of);
    let callbacks = once_each(batch, callback_of);
    let within = |task: Option<TaskId>, group: &[TaskId]| task.is_some_and(|t| group.contains(&t));
    let group = |write: &dyn QueuedWrite| {
        if within(callback_of(write), &callbacks) {
            0
        } else if within(record_of(write), &records) {
            1
        } else {
            2
        }
    };
    // Stable: the others keep their order.
    batch.sort_by_key(|write| group(write.as_ref()));
    let front = batch.iter().filter(|w| group(w.as_ref()) == 0).count();
    let updates: Vec<&UpdateOnClaim> = batch
        .iter()
        .filter(|w| group(w.as_ref()) == 1)
        .filter_map(|w| update_of(w.as_ref()))
        .collect();
    let mut ahead = || -> diesel::QueryResult<()> {
        if !updates.is_empty() {
            step();
            db::apply_ahead(pg, &updates)?;
        }
        if !callbacks.is_empty() {
            step();
            db::read_snapshots_ahead(pg, &callbacks)?;
        }
        Ok(())
    };
    if let Err(e) = ahead() {
        tracing::warn!(error = %crate::telemetry::error_chain(&e), "statements ahead of a batch's writes failed; each write reads and applies its own");
        conn.batch_execute(ROLL_BACK_THIS_WRITE)?;
        db::forget_ahead();
    }
    Ok(front)
}

/// The tasks `of` finds in `batch`'s writes that are found once; empty when fewer than two.
fn once_each(
    batch: &[Box<dyn QueuedWrite>],
    of: fn(&dyn QueuedWrite) -> Option<TaskId>,
) -> Vec<TaskId> {
    let mut tasks: Vec<TaskId> = batch.iter().filter_map(|w| of(w.as_ref())).collect();
    tasks.sort_unstable();
    let once: Vec<TaskId> = tasks
        .chunk_by(|a, b| a == b)
        .filter(|same| same.len() == 1)
        .map(|same| same[0])
        .collect();
    if once.len() >= 2 {
        once
    } else {
        Vec::new()
    }
}

/// What became of each write of a batch on its last run.
struct Runs {
    /// It ran and was not rolled back.
    stays: Vec<bool>,
    /// It left engine work due.
    due: Vec<bool>,
    /// The hand-offs' reads it offered.
    offered: Vec<Vec<HandedOffer>>,
}

/// Runs write `i`; whether it succeeded (what it wrote is then to stay). A panic is a bug and
/// leaves the savepoints in an unknown state, so nothing of the batch stays.
fn run_one(
    conn: &mut DbConnection,
    batch: &mut [Box<dyn QueuedWrite>],
    i: usize,
    runs: &mut Runs,
) -> Result<bool, DbError> {
    let ran = batch[i].run(conn);
    db::end_of_write();
    runs.due[i] = listen::take_work_due();
    runs.offered[i] = take_offered();
    runs.stays[i] = match ran {
        Ran::Succeeded => true,
        Ran::Failed => false,
        Ran::Panicked => {
            return Err(DbError::Commit(
                "a write of this group panicked; the whole group was rolled back".into(),
            ))
        }
    };
    Ok(runs.stays[i])
}

/// Runs `undone` again, rolled back to the savepoint, each behind a savepoint of its own when
/// the one before stayed; the writes that stayed since the savepoint was last set.
fn run_again(
    conn: &mut DbConnection,
    batch: &mut [Box<dyn QueuedWrite>],
    undone: Vec<usize>,
    runs: &mut Runs,
    step: &mut impl FnMut(),
) -> Result<Vec<usize>, DbError> {
    let mut since_savepoint = Vec::new();
    let mut protected = true;
    for j in undone {
        if !protected {
            conn.batch_execute(NEXT_SAVEPOINT)?;
        }
        step();
        if run_one(conn, batch, j, runs)? {
            protected = false;
        } else {
            conn.batch_execute(ROLL_BACK_THIS_WRITE)?;
            db::forget_ahead();
            protected = true;
        }
        since_savepoint = if protected { Vec::new() } else { vec![j] };
    }
    Ok(since_savepoint)
}

/// On PostgreSQL, applies the callbacks' plans kept behind them (`db::apply_behind`), once the
/// last callback at the front of the batch has run; when one no longer matched, or the
/// statement failed, rolls the callbacks back to the savepoint they share and runs them again,
/// each applying its own. The writes that stayed since the savepoint was last set.
fn apply_behind(
    conn: &mut DbConnection,
    batch: &mut [Box<dyn QueuedWrite>],
    since_savepoint: Vec<usize>,
    runs: &mut Runs,
    step: &mut impl FnMut(),
) -> Result<Vec<usize>, DbError> {
    let DbConnection::Pg(pg) = conn else {
        return Ok(since_savepoint);
    };
    step();
    match db::apply_behind(pg) {
        Ok(true) => return Ok(since_savepoint),
        Ok(false) => {
            tracing::debug!("a callback's plan applied behind it no longer matched; its batch's callbacks run again");
        }
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "the callbacks' plans applied behind them failed; each applies its own");
        }
    }
    conn.batch_execute(ROLL_BACK_THIS_WRITE)?;
    db::forget_ahead();
    run_again(conn, batch, since_savepoint, runs, step)
}

const NEXT_SAVEPOINT: &str = "RELEASE SAVEPOINT odm_write; SAVEPOINT odm_write";
const ROLL_BACK_THIS_WRITE: &str = "ROLLBACK TO SAVEPOINT odm_write";

/// How a batch's transaction plans on PostgreSQL: index lookups and nested loops only. Every
/// statement a writer runs finds its rows by key (an id, an activity, a product version), and
/// the statements a batch runs ahead of and behind its writes (`queries/on_claim.rs`,
/// `read_ahead.rs`, `behind.rs`) are kept prepared: after five runs PostgreSQL may keep one
/// generic plan for the session's life, made on the table as it was then. Made on a young
/// table, that plan read every task row instead of looking each up, 4–11 ms a statement once
/// the table had grown (issue 15; the benchmark's fresh database), which is why those
/// statements were planned afresh at each run, ~0.5 ms a batch. Here a plan cannot prefer a
/// scan or a hash join, whatever the table's size when it was made (they are priced out, not
/// forbidden: a statement without an index still runs). An index can still be walked whole: a
/// partial one whose condition a statement's filter proves (`tasks_due`, the tasks with a
/// step), which the records avoid (`queries/on_claim.rs`); `plan_tests.rs` checks that each
/// kept plan finds its rows by key. `SET LOCAL`, in the message that opens the transaction:
/// nothing outlives it, and behind PgBouncer in transaction mode no other client's
/// transaction inherits it.
pub(super) const BEGIN_PLAN_BY_INDEX: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SAVEPOINT odm_write";

/// Opens the transaction and the first write's savepoint. SQLite: `BEGIN IMMEDIATE` takes the
/// write lock at once (another process sharing the file waits for it here, under
/// `busy_timeout`, rather than fail at its first write). PostgreSQL: plans as
/// `BEGIN_PLAN_BY_INDEX` says.
fn begin(conn: &mut DbConnection) -> Result<(), DbError> {
    match conn {
        DbConnection::Sqlite(sqlite) => AnsiTransactionManager::begin_transaction_sql(
            sqlite,
            "BEGIN IMMEDIATE; SAVEPOINT odm_write",
        )?,
        DbConnection::Pg(pg) => {
            AnsiTransactionManager::begin_transaction_sql(pg, BEGIN_PLAN_BY_INDEX)?
        }
    }
    Ok(())
}
