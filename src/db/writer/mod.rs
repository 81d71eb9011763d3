//! Group commit, on both backends. A durable commit costs a disk flush (SQLite: one fsync,
//! 0.2–3.5 ms on a cloud disk; PostgreSQL: a WAL flush and a round trip), so one commit per
//! request caps the service at a few hundred writes/s, and on PostgreSQL each commit also costs
//! its backend CPU the two cores share with the service. Here a writer thread owns a write
//! connection: it takes every write queued while its previous commit was flushing, runs them so
//! that a failed write rolls back alone (behind a savepoint of its own, or, for writes that may
//! run again, behind a shared one, the others then run again) and commits them together
//! (`batch.rs`).
//! Callers hear back only after that COMMIT: an answered write is durable, as before. An idle
//! writer starts at once: no added latency.
//!
//! How many threads: SQLite has a single writer anyway, so one. On PostgreSQL one thread
//! chains every write's round trips, so a thread held up (a lock another replica holds, a slow
//! round trip) would hold up every write; `POSTGRES_WRITE_THREADS` are started, the first takes
//! what waits, the next join only when the earlier ones are held up, and an activity's writes
//! never run on two threads at once, so they never wait for each other's locks (`queue.rs`).
//! Reads stay on the pool.
//!
//! The queue is bounded (`database.write_queue`): a write that finds it full is refused at
//! once with `Overload::WriteQueueFull`, before any of it runs, rather than wait behind a
//! backlog that only grows. The write closure runs inside its caller's tracing span.

mod batch;
#[cfg(test)]
mod behind_tests;
#[cfg(test)]
mod plan_tests;
mod queue;
#[cfg(test)]
pub(super) mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use diesel::r2d2::ManageConnection;

use super::connection::Manager;
use super::listen::Notifying;
use super::{DbConnection, DbError, Overload};
use crate::domain::{TaskId, UpdateOnClaim};
use crate::telemetry::{error_chain, CallerSpan};
pub(crate) use batch::offer_handed_read;
use batch::run_batch;
use queue::{Asleep, Queue, Turn, Waiting};

/// Most writes committed together; bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// One queued write, type-erased so writes of any result type share a batch.
pub(super) trait QueuedWrite: Send {
    /// Runs the write on the batch's connection (`batch.rs` sets its savepoint around it). A
    /// `rerunnable` write may be run again after what it wrote was rolled back.
    fn run(&mut self, conn: &mut DbConnection) -> Ran;
    /// Whether running it again is allowed (`Rerun`): then it needs no savepoint of its own.
    fn rerunnable(&self) -> bool;
    /// What its first statement is, which its batch may run ahead with other writes' (`Ahead`).
    fn ahead(&self) -> Option<&Ahead> {
        None
    }
    /// Delivers the outcome once the batch's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), &DbError>);
}

/// How a write ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    Succeeded,
    /// It returned an error: what it wrote is to be rolled back.
    Failed,
    /// A bug: the connection's transaction state is unknown.
    Panicked,
}

/// What a write does, once (`Once`) or as many times as the batch needs (`Rerun`).
pub(crate) trait Work<T, E>: Send + 'static {
    /// May be run again after a rollback.
    const RERUNNABLE: bool;
    fn work(&mut self, conn: &mut DbConnection) -> Result<T, E>;
    /// See `QueuedWrite::ahead`.
    fn ahead(&self) -> Option<&Ahead> {
        None
    }
}

/// A write that runs once: it gets a savepoint of its own in its batch.
pub(crate) struct Once<F>(Option<F>);

impl<F> Once<F> {
    pub(crate) fn new(work: F) -> Self {
        Once(Some(work))
    }
}

impl<T, E, F> Work<T, E> for Once<F>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
{
    const RERUNNABLE: bool = false;
    fn work(&mut self, conn: &mut DbConnection) -> Result<T, E> {
        (self.0.take().expect("a write of Once runs once"))(conn)
    }
}

/// A write that decides afresh from what it reads each time it runs (an engine decision, a
/// callback), so the batch may roll it back and run it again: it needs no savepoint of its own,
/// a round trip saved per write on PostgreSQL (`batch.rs`).
pub(crate) struct Rerun<F>(pub F);

impl<T, E, F> Work<T, E> for Rerun<F>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
{
    const RERUNNABLE: bool = true;
    fn work(&mut self, conn: &mut DbConnection) -> Result<T, E> {
        (self.0.clone())(conn)
    }
}

/// The first statement of a write, which on PostgreSQL its batch may run ahead of its writes
/// in one statement with the other writes' of the same kind (`batch.rs`); the write runs it
/// itself, and is then answered with what the batch's statement did.
pub(crate) enum Ahead {
    /// An engine step's update decided on its claim (`db::apply_on_claim`): a dispatch's record.
    Record(Box<UpdateOnClaim>),
    /// The snapshot of the callback of this task (`db::load_snapshot` with
    /// `SnapshotOf::CallbackTask`).
    Snapshot(TaskId),
}

/// A `Rerun` write whose first statement is `ahead`.
pub(crate) struct RerunAhead<F> {
    pub ahead: Ahead,
    pub work: F,
}

impl<T, E, F> Work<T, E> for RerunAhead<F>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
{
    const RERUNNABLE: bool = true;
    fn work(&mut self, conn: &mut DbConnection) -> Result<T, E> {
        (self.work.clone())(conn)
    }
    fn ahead(&self) -> Option<&Ahead> {
        Some(&self.ahead)
    }
}

struct Write<T, E, W> {
    caller: CallerSpan,
    work: W,
    outcome: Option<Result<T, E>>,
    reply: Option<oneshot::Sender<Result<T, E>>>,
}

impl<T, E, W> QueuedWrite for Write<T, E, W>
where
    W: Work<T, E>,
    T: Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
{
    fn rerunnable(&self) -> bool {
        W::RERUNNABLE
    }

    fn ahead(&self) -> Option<&Ahead> {
        self.work.ahead()
    }

    fn run(&mut self, conn: &mut DbConnection) -> Ran {
        let (work, caller) = (&mut self.work, &self.caller);
        match catch_unwind(AssertUnwindSafe(|| caller.run(|| work.work(conn)))) {
            Ok(outcome) => {
                let ran = if outcome.is_ok() {
                    Ran::Succeeded
                } else {
                    Ran::Failed
                };
                self.outcome = Some(outcome);
                ran
            }
            Err(_) => Ran::Panicked,
        }
    }

    fn finish(mut self: Box<Self>, commit: Result<(), &DbError>) {
        let outcome = match (commit, self.outcome.take()) {
            (Ok(()), Some(outcome)) => outcome,
            (Err(e), Some(Err(own))) => {
                tracing::debug!(error = %error_chain(e), "batch commit failed after this write had failed");
                Err(own)
            }
            (Err(e), _) => Err(E::from(answer_to_each_write(e))),
            (Ok(()), None) => Err(E::from(DbError::Canceled)),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
}

/// What each write of a batch whose transaction failed with `batch_error` is told: an overload
/// as it is (it may succeed later), anything else as a failed commit with its whole cause chain
/// (the write's own log line then says why, not only that the commit failed).
pub(super) fn answer_to_each_write(batch_error: &DbError) -> DbError {
    match batch_error {
        DbError::Overloaded(Overload::SqliteLocked { waited }) => {
            DbError::Overloaded(Overload::SqliteLocked { waited: *waited })
        }
        DbError::Commit(why) => DbError::Commit(why.clone()),
        other => DbError::Commit(error_chain(other).to_string()),
    }
}

#[derive(Clone)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Closes the queue when the last clone is dropped (the threads then stop).
    _closer: Arc<Closer>,
    limit: usize,
    counted: Arc<Counted>,
    /// Set once `Db::listen` starts: batches that leave work due wake the other replicas.
    notifying: Arc<OnceLock<Arc<Notifying>>>,
}

/// The queue (`queue.rs`) and one wake-up per thread.
struct Shared {
    queue: Mutex<Queue>,
    wake: Vec<Condvar>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A thread that panicked while holding it left the queue consistent: each change is
        // one call.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the thread whose turn it is, when what waits changes what it would do
    /// (`Queue::to_wake`).
    fn wake_whose_turn(&self, queue: &mut Queue) {
        if let Some(thread) = queue.to_wake(Instant::now()) {
            queue.woke(thread);
            self.wake[thread].notify_one();
        }
    }

    /// Wakes every thread (stopping: each checks whether anything is left for it).
    fn wake_all(&self) {
        for wake in &self.wake {
            wake.notify_one();
        }
    }
}

struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake_all();
    }
}

/// What the writer did since the process started (for `/metrics` and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Transactions committed, each carrying a batch of writes.
    pub commits: u64,
    /// Writes those commits carried (failed writes, rolled back to their savepoint, included).
    pub writes: u64,
    /// Writes waiting for the writer now (at most `database.write_queue`).
    pub queued: u64,
}

#[derive(Default)]
struct Counted {
    commits: AtomicU64,
    writes: AtomicU64,
    queued: AtomicU64,
}

impl Writer {
    /// Starts `threads` writer threads (at least one), each on a connection of its own, taking
    /// at most `limit` writes waiting in all (at least one).
    pub(crate) fn start(manager: Manager, limit: usize, threads: usize) -> Result<Writer, DbError> {
        let threads = threads.max(1);
        let limit = limit.max(1);
        let counted = Arc::new(Counted::default());
        let notifying = Arc::new(OnceLock::new());
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(threads)),
            wake: (0..threads).map(|_| Condvar::new()).collect(),
        });
        // Made first: when a connection fails below, dropping it stops the threads started.
        let closer = Arc::new(Closer(shared.clone()));
        for n in 0..threads {
            let conn = manager
                .connect()
                .map_err(|e| DbError::Config(e.to_string()))?;
            let (manager, counts, notifies) = (manager.clone(), counted.clone(), notifying.clone());
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("db-writer-{n}"))
                .spawn(move || write_loop(n, manager, conn, &shared, &counts, &notifies))
                .expect("the writer thread starts");
        }
        Ok(Writer {
            _closer: closer,
            shared,
            limit,
            counted,
            notifying,
        })
    }

    /// From now on, a PostgreSQL batch that leaves engine work due sends one NOTIFY before its
    /// commit (`listen.rs`). Set once: a second call is ignored.
    pub(crate) fn notify_with(&self, notifying: Arc<Notifying>) {
        let _ = self.notifying.set(notifying);
    }

    pub(crate) fn counts(&self) -> WriteCounts {
        WriteCounts {
            commits: self.counted.commits.load(Ordering::Relaxed),
            writes: self.counted.writes.load(Ordering::Relaxed),
            queued: self.counted.queued.load(Ordering::Relaxed),
        }
    }

    /// Writer threads.
    pub(crate) fn threads(&self) -> usize {
        self.shared.wake.len()
    }

    /// Queues `work`, a write that locks `activity` (`None`: no existing activity), never
    /// waiting for room, and waits for its group's commit.
    pub(crate) async fn write<T, E, W>(
        &self,
        caller: CallerSpan,
        activity: Option<i64>,
        work: W,
    ) -> Result<T, E>
    where
        W: Work<T, E>,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            caller,
            work,
            outcome: None,
            reply: Some(reply),
        };
        // Counted before it can be taken, so that the count never goes below zero.
        let waiting = self.counted.queued.fetch_add(1, Ordering::Relaxed);
        if waiting >= self.limit as u64 {
            self.counted.queued.fetch_sub(1, Ordering::Relaxed);
            let overload = Overload::WriteQueueFull { limit: self.limit };
            tracing::warn!(error = %overload, "database overloaded");
            return Err(E::from(DbError::Overloaded(overload)));
        }
        {
            let mut queue = self.shared.lock();
            queue.push(Waiting {
                activity,
                write: Box::new(write),
            });
            self.shared.wake_whose_turn(&mut queue);
        }
        answer
            .await
            .unwrap_or_else(|_| Err(E::from(DbError::Canceled)))
    }
}

/// Writer thread `me`: takes a batch when its turn comes (`Queue::turn`), runs and commits it,
/// then tells each write how it ended.
fn write_loop(
    me: usize,
    manager: Manager,
    mut conn: DbConnection,
    shared: &Shared,
    counted: &Counted,
    notifying: &OnceLock<Arc<Notifying>>,
) {
    loop {
        let mut batch = {
            let mut queue = shared.lock();
            loop {
                let now = Instant::now();
                match queue.turn(me, now) {
                    Turn::Take => break,
                    Turn::Stop => return,
                    Turn::Sleep => {
                        queue.sleeps(me, Asleep::Forever);
                        queue = shared.wake[me]
                            .wait(queue)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    Turn::SleepUntil(then) => {
                        queue.sleeps(me, Asleep::Until(then));
                        queue = shared.wake[me]
                            .wait_timeout(queue, then.saturating_duration_since(now))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
                queue.woke(me);
            }
            let batch = queue.take(me, MAX_BATCH, Instant::now());
            // What this batch left (more than it could take, or another activity's) is for
            // the next idle thread, once its turn comes.
            if !queue.is_empty() {
                shared.wake_whose_turn(&mut queue);
            }
            batch
        };
        counted
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        // Alone (SQLite), no thread asks when this one's steps began: no lock per write.
        let alone = shared.wake.len() == 1;
        let step = || {
            if !alone {
                shared.lock().step(me, Instant::now());
            }
        };
        let committed = run_batch(&mut conn, &mut batch, notifying.get().map(|n| &**n), step);
        if committed.is_ok() {
            counted.commits.fetch_add(1, Ordering::Relaxed);
            counted
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        if let Err(e) = &committed {
            tracing::error!(error = %error_chain(e), writes = batch.len(), "group commit failed");
        }
        // Another process held the SQLite file's lock all along: the same writes may succeed
        // once it lets go, so each is refused as overloaded (503 and `Retry-After`, the engine
        // tries at its next tick), not failed.
        let committed = committed.map_err(|e| {
            if e.is_sqlite_locked() {
                let waited = manager.sqlite_lock_wait;
                DbError::Overloaded(Overload::SqliteLocked { waited })
            } else {
                e
            }
        });
        if committed.is_err() {
            // Whatever state the failure left the connection in, start the next batch clean.
            match manager.connect() {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "reopening the write connection failed")
                }
            }
        }
        for write in batch {
            write.finish(committed.as_ref().map(|_| ()));
        }
        let mut queue = shared.lock();
        queue.done(me);
        // Writes of this batch's activities that waited for it are anyone's now, and the
        // thread whose turn it is may be asleep (they were not its to take when it looked).
        if !queue.is_empty() {
            shared.wake_whose_turn(&mut queue);
        }
        // Stopping: the others may be asleep with nothing of theirs left.
        if queue.closed {
            shared.wake_all();
        }
    }
}
