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
//! How many threads (`Lane`): SQLite has a single writer anyway, so one. On PostgreSQL one thread
//! chains every write's round trips (about 18 per task, each waiting for a PostgreSQL process
//! to be scheduled on the same two cores): measured, the CPU sat 30% idle while one writer
//! gave ~200 tasks/s, and two replicas (two writers) twice that. Several threads that take any
//! write deadlock, though: each batch holds the activities it locked until its commit, and two
//! batches wanting each other's activities wait for each other (measured with four: errors and
//! 5 s stalls). So an activity's writes always go to the same thread (`Db::write_for`,
//! `write_for_task_rerunnable`) and the first thread takes the writes of no activity (claims skip locked
//! rows; creations lock only new rows): three threads measured ~1.7x one thread, five were no
//! faster. The engine's claims have a thread of their own (`Lane::Claim`): behind creations
//! and the like, the claim that dispatches the next task waited, and p99 callback → next
//! dispatch at 200 tasks/s went from 23 to 13 ms with it. `POSTGRES_WRITE_LANES` is 4: the
//! first for writes of no activity, the second for claims, two for activities. Reads stay on
//! the pool.
//!
//! The queue is bounded (`database.write_queue`): a write that finds it full is refused at
//! once with `Overload::WriteQueueFull`, before any of it runs, rather than wait behind a
//! backlog that only grows. The write closure runs inside its caller's tracing span.

mod batch;
#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};

use tokio::sync::oneshot;

use diesel::r2d2::ManageConnection;

use super::connection::Manager;
use super::listen::Notifying;
use super::{DbConnection, DbError, Overload};
use crate::telemetry::{error_chain, CallerSpan};
pub(crate) use batch::offer_read_before_commit;
use batch::run_batch;

/// Most writes committed together; bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// One queued write, type-erased so writes of any result type share a batch.
pub(super) trait QueuedWrite: Send {
    /// Runs the write on the batch's connection (`batch.rs` sets its savepoint around it). A
    /// `rerunnable` write may be run again after what it wrote was rolled back.
    fn run(&mut self, conn: &mut DbConnection) -> Ran;
    /// Whether running it again is allowed (`Rerun`): then it needs no savepoint of its own.
    fn rerunnable(&self) -> bool;
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
            (Err(e), _) => Err(E::from(DbError::Commit(e.to_string()))),
            (Ok(()), None) => Err(E::from(DbError::Canceled)),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(outcome);
        }
    }
}

/// Which writer thread takes a write. PostgreSQL runs each statement in another process, so one
/// thread chains every write's round trips; several threads run batches side by side. Their
/// batches must not wait for each other's row locks (two batches each holding what the other
/// needs are a deadlock PostgreSQL breaks by failing one): an activity's writes, which lock its
/// row, always go to the same thread, and the first thread takes the rest (claims, which skip
/// locked rows; creations, which lock only new rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Any,
    Claim,
    Activity(i64),
}

#[derive(Clone)]
pub(crate) struct Writer {
    /// One queue per lane (`Lane`), each taken by a thread of its own.
    lanes: Arc<[mpsc::SyncSender<Box<dyn QueuedWrite>>]>,
    limit: usize,
    counted: Arc<Counted>,
    /// Set once `Db::listen` starts: batches that leave work due wake the other replicas.
    notifying: Arc<OnceLock<Arc<Notifying>>>,
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
    /// Starts `lanes` writer threads (one, or at least three), each on a connection of its own, taking at
    /// most `limit` writes waiting in all (at least one).
    pub(crate) fn start(manager: Manager, limit: usize, lanes: usize) -> Result<Writer, DbError> {
        assert!(
            lanes == 1 || lanes >= 3,
            "one lane, or one for writes of no activity, one for claims and some for activities"
        );
        let limit = limit.max(1);
        let counted = Arc::new(Counted::default());
        let notifying = Arc::new(OnceLock::new());
        let mut queues = Vec::new();
        for n in 0..lanes {
            let conn = manager
                .connect()
                .map_err(|e| DbError::Config(e.to_string()))?;
            // The shared count bounds the queues together; each channel could hold them all.
            let (queue, incoming) = mpsc::sync_channel::<Box<dyn QueuedWrite>>(limit);
            let (manager, counts, notifies) = (manager.clone(), counted.clone(), notifying.clone());
            std::thread::Builder::new()
                .name(format!("db-writer-{n}"))
                .spawn(move || write_loop(manager, conn, incoming, &counts, &notifies))
                .expect("the writer thread starts");
            queues.push(queue);
        }
        Ok(Writer {
            lanes: queues.into(),
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

    /// Writer threads (lanes).
    pub(crate) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The lane of a write: with one lane, that one; else `Lane::Any` on the first, `Lane::Claim`
    /// on the second, an activity's always on the same one of the others.
    fn queue(&self, lane: Lane) -> &mpsc::SyncSender<Box<dyn QueuedWrite>> {
        let n = self.lanes.len();
        match lane {
            _ if n == 1 => &self.lanes[0],
            Lane::Any => &self.lanes[0],
            Lane::Claim => &self.lanes[1],
            Lane::Activity(id) => &self.lanes[2 + id.rem_euclid(n as i64 - 2) as usize],
        }
    }

    /// Queues `work` on `lane` (never waiting for room) and waits for its group's commit.
    pub(crate) async fn write<T, E, W>(
        &self,
        caller: CallerSpan,
        lane: Lane,
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
        let sent = if waiting >= self.limit as u64 {
            Err(mpsc::TrySendError::Full(()))
        } else {
            self.queue(lane)
                .try_send(Box::new(write))
                .map_err(|e| match e {
                    mpsc::TrySendError::Full(_) => mpsc::TrySendError::Full(()),
                    mpsc::TrySendError::Disconnected(_) => mpsc::TrySendError::Disconnected(()),
                })
        };
        if sent.is_err() {
            self.counted.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(())) => {
                let overload = Overload::WriteQueueFull { limit: self.limit };
                tracing::warn!(error = %overload, "database overloaded");
                return Err(E::from(DbError::Overloaded(overload)));
            }
            Err(mpsc::TrySendError::Disconnected(())) => return Err(E::from(DbError::Canceled)),
        }
        answer
            .await
            .unwrap_or_else(|_| Err(E::from(DbError::Canceled)))
    }
}

fn write_loop(
    manager: Manager,
    mut conn: DbConnection,
    incoming: mpsc::Receiver<Box<dyn QueuedWrite>>,
    counted: &Counted,
    notifying: &OnceLock<Arc<Notifying>>,
) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        counted
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let committed = run_batch(&mut conn, &mut batch, notifying.get().map(|n| &**n));
        if committed.is_ok() {
            counted.commits.fetch_add(1, Ordering::Relaxed);
            counted
                .writes
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        if let Err(e) = &committed {
            tracing::error!(error = %error_chain(e), writes = batch.len(), "group commit failed");
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
    }
}
