//! Group commit for SQLite. A durable commit (WAL, `synchronous=FULL`) costs one fsync — about
//! 3.5 ms on a cloud disk — and SQLite has a single writer anyway, so one commit per request
//! caps the service near 300 writes/s. Here one thread owns the write connection: it takes every
//! write queued while the previous commit was flushing, runs each in its own savepoint (a failed
//! write rolls back alone) and commits them together. Callers hear back only after that COMMIT:
//! an answered write is on disk, as before. An idle writer starts at once: no added latency.
//!
//! The queue is bounded (`database.write_queue`): a write that finds it full is refused at
//! once with `Overload::WriteQueueFull`, before any of it runs, rather than wait behind a
//! backlog that only grows. The write closure runs inside its caller's tracing span.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::Connection;
use tokio::sync::oneshot;

use diesel::r2d2::ManageConnection;

use super::connection::Manager;
use super::{DbConnection, DbError, Overload};
use crate::telemetry::{error_chain, CallerSpan};

/// Most writes committed together; bounds how long the first of them waits.
const MAX_BATCH: usize = 256;

/// One queued write, type-erased so writes of any result type share a batch.
trait QueuedWrite: Send {
    /// Runs in a savepoint (rolled back if it fails); false when it panicked, which leaves the
    /// connection's transaction state unknown.
    fn run(&mut self, conn: &mut DbConnection) -> bool;
    /// Delivers the outcome once the batch's commit is known.
    fn finish(self: Box<Self>, commit: Result<(), &DbError>);
}

struct Write<T, E, F> {
    caller: CallerSpan,
    work: Option<F>,
    outcome: Option<Result<T, E>>,
    reply: Option<oneshot::Sender<Result<T, E>>>,
}

impl<T, E, F> QueuedWrite for Write<T, E, F>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send,
    T: Send,
    E: From<DbError> + From<diesel::result::Error> + Send,
{
    fn run(&mut self, conn: &mut DbConnection) -> bool {
        let work = self.work.take().expect("a write runs once");
        let caller = &self.caller;
        match catch_unwind(AssertUnwindSafe(|| caller.run(|| conn.transaction(work)))) {
            Ok(outcome) => {
                self.outcome = Some(outcome);
                true
            }
            Err(_) => false,
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

#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::SyncSender<Box<dyn QueuedWrite>>,
    limit: usize,
}

impl Writer {
    /// Starts the writer thread on a connection of its own, taking at most `limit` writes
    /// waiting (at least one).
    pub(crate) fn start(manager: Manager, limit: usize) -> Result<Writer, DbError> {
        let conn = manager
            .connect()
            .map_err(|e| DbError::Config(e.to_string()))?;
        let limit = limit.max(1);
        let (queue, incoming) = mpsc::sync_channel::<Box<dyn QueuedWrite>>(limit);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(manager, conn, incoming))
            .expect("the writer thread starts");
        Ok(Writer { queue, limit })
    }

    /// Queues `work` (never waiting for room) and waits for its group's commit.
    pub(crate) async fn write<T, E, F>(&self, caller: CallerSpan, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let write = Write {
            caller,
            work: Some(work),
            outcome: None,
            reply: Some(reply),
        };
        match self.queue.try_send(Box::new(write)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                let overload = Overload::WriteQueueFull { limit: self.limit };
                tracing::warn!(error = %overload, "database overloaded");
                return Err(E::from(DbError::Overloaded(overload)));
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(E::from(DbError::Canceled)),
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
) {
    while let Ok(first) = incoming.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let committed = run_batch(&mut conn, &mut batch);
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

fn run_batch(conn: &mut DbConnection, batch: &mut [Box<dyn QueuedWrite>]) -> Result<(), DbError> {
    let DbConnection::Sqlite(sqlite) = conn else {
        unreachable!("group commit is for SQLite only");
    };
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    for write in batch.iter_mut() {
        if !write.run(conn) {
            // A panic is a bug; the savepoint state is unknown, so nothing of this batch stays.
            return Err(DbError::Commit(
                "a write of this group panicked; the whole group was rolled back".into(),
            ));
        }
    }
    <DbConnection as Connection>::TransactionManager::commit_transaction(conn)
        .map_err(DbError::from)
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;

    use crate::db::schema::service_meta;
    use crate::db::{meta_get_or_insert, Db, DbError, DbLimits, Overload};

    fn temp_db() -> (Db, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("odm-writer-{}", uuid::Uuid::new_v4().simple()));
        let db = Db::connect(&format!("sqlite://{}", dir.join("w.db").display()), 2).unwrap();
        (db, dir)
    }

    #[actix_web::test]
    async fn writes_queued_together_commit_together_and_a_failure_rolls_back_alone() {
        let (db, dir) = temp_db();
        let writes = (0..40).map(|i| {
            let db = db.clone();
            async move {
                db.write(move |conn| {
                    meta_get_or_insert(conn, &format!("k{i}"), "v")?;
                    if i % 10 == 3 {
                        // Written, then refused: its savepoint must undo the row.
                        return Err(DbError::Config(format!("refused {i}")));
                    }
                    Ok(i)
                })
                .await
            }
        });
        let outcomes = futures_util::future::join_all(writes).await;
        assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 4);
        let stored: Vec<String> = db
            .read(|conn| {
                Ok::<_, DbError>(service_meta::table.select(service_meta::name).load(conn)?)
            })
            .await
            .unwrap();
        assert_eq!(stored.len(), 36);
        assert!(!stored.iter().any(|k| k.ends_with('3')), "{stored:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[actix_web::test]
    async fn a_panicking_write_fails_its_group_and_the_writer_recovers() {
        let (db, dir) = temp_db();
        let panicked = db
            .write(|_conn| -> Result<(), DbError> { panic!("bug in a write") })
            .await;
        assert!(matches!(panicked, Err(DbError::Commit(_))), "{panicked:?}");
        let after = db
            .write(|conn| meta_get_or_insert(conn, "k", "v").map_err(DbError::from))
            .await;
        assert_eq!(after.unwrap(), "v", "the writer still works");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Polls a future once: enough for a write to be queued (or refused).
    async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) {
        std::future::poll_fn(|cx| {
            let _ = std::pin::Pin::new(&mut *future).poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
    }

    #[actix_web::test]
    async fn a_full_queue_refuses_a_write_before_it_runs_and_loses_none_queued() {
        let dir =
            std::env::temp_dir().join(format!("odm-writer-{}", uuid::Uuid::new_v4().simple()));
        let limits = DbLimits {
            write_queue: 2,
            ..DbLimits::with_pool_size(2)
        };
        let db =
            Db::connect_with(&format!("sqlite://{}", dir.join("w.db").display()), limits).unwrap();

        // The writer thread busy with a write that waits to be released.
        let (started, writer_busy) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = actix_web::rt::spawn({
            let db = db.clone();
            async move {
                db.write(move |conn| {
                    let _ = started.send(());
                    released.recv().expect("released");
                    meta_get_or_insert(conn, "blocker", "v").map_err(DbError::from)
                })
                .await
            }
        });
        writer_busy.await.unwrap();

        // Two writes fill the queue.
        let mut queued: Vec<_> = (0..2)
            .map(|i| {
                Box::pin(db.write(move |conn| {
                    meta_get_or_insert(conn, &format!("queued{i}"), "v").map_err(DbError::from)
                }))
            })
            .collect();
        for write in &mut queued {
            poll_once(write).await;
        }

        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = db
            .write({
                let ran = ran.clone();
                move |conn| {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                    meta_get_or_insert(conn, "refused", "v").map_err(DbError::from)
                }
            })
            .await;
        match &refused {
            Err(DbError::Overloaded(overload @ Overload::WriteQueueFull { limit: 2 })) => {
                assert!(
                    overload.to_string().contains("database.write_queue"),
                    "{overload}"
                );
                assert_eq!(overload.retry_after(), std::time::Duration::from_secs(1));
            }
            other => panic!("expected a full queue, got {other:?}"),
        }

        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        for write in queued {
            write.await.unwrap();
        }
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the refused write ran"
        );
        let stored: Vec<String> = db
            .read(|conn| {
                Ok::<_, DbError>(service_meta::table.select(service_meta::name).load(conn)?)
            })
            .await
            .unwrap();
        let mut ours: Vec<&str> = stored
            .iter()
            .map(String::as_str)
            .filter(|name| ["blocker", "queued0", "queued1", "refused"].contains(name))
            .collect();
        ours.sort_unstable();
        assert_eq!(ours, ["blocker", "queued0", "queued1"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `.cargo/config.toml` builds SQLite with the query-planner stability guarantee; without
    /// it every engine write re-prepares its statement (a third of the throughput).
    #[actix_web::test]
    async fn sqlite_is_built_with_stable_query_plans() {
        #[derive(diesel::QueryableByName)]
        struct CompileOption {
            #[diesel(sql_type = diesel::sql_types::Text)]
            compile_options: String,
        }
        let (db, dir) = temp_db();
        let options: Vec<String> = db
            .read(|conn| {
                let rows: Vec<CompileOption> =
                    diesel::sql_query("PRAGMA compile_options").load(conn)?;
                Ok::<_, DbError>(rows.into_iter().map(|r| r.compile_options).collect())
            })
            .await
            .unwrap();
        assert!(options.iter().any(|o| o == "ENABLE_QPSG"), "{options:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
