//! The one door to the database. Everything else calls `Db::read`/`Db::write` with a closure;
//! the closure runs on the blocking pool (never on an actix worker), with a pooled connection
//! taken inside it, or on the writer thread (`writer/`); either way inside the caller's tracing span.
//! Backend-specific SQL lives only under this module.
//!
//! The database refuses work rather than queue it without end: a write queue that is full, or
//! no pooled connection free within the pool's timeout, is `DbError::Overloaded` (503 50301
//! with `Retry-After` at the API; a transient error for the engine).

mod connection;
pub mod listen;
pub mod models;
mod queries;
pub mod schema;
#[cfg(test)]
mod tests;
mod types;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub(crate) use connection::postgres_url_as_connected;
pub use connection::{Backend, DbConnection};
pub use queries::*;

use crate::domain::{ActivityId, TaskId, UpdateOnClaim};
use crate::telemetry::CallerSpan;
use connection::{Manager, Target};
pub(crate) use writer::offer_handed_read;
pub use writer::WriteCounts;
use writer::{Ahead, Once, Rerun, RerunAhead, Work, Writer};

/// Writer threads on PostgreSQL: the first takes every write, the others join when the earlier
/// ones are held up (`writer/queue.rs`). SQLite has one writer at a time, so one thread.
pub const POSTGRES_WRITE_THREADS: usize = 4;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("no database connection available")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("the blocking pool dropped a database call")]
    Canceled,
    #[error("commit failed: {0}")]
    Commit(String),
    #[error(transparent)]
    Overloaded(#[from] Overload),
}

impl DbError {
    /// PostgreSQL broke a deadlock (SQLSTATE 40P01) or a serialization conflict (40001) by
    /// failing this write: nothing of it stayed (its savepoint was rolled back), and the same
    /// write may succeed at once. Replicas' write batches can meet this way: each holds the
    /// activities it locked until its commit. diesel names 40001 but not 40P01, whose message
    /// is PostgreSQL's own (English unless `lc_messages` says otherwise).
    pub fn is_lock_conflict(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            DbError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => {
                true
            }
            DbError::Query(Error::DatabaseError(_, info)) => {
                info.message().starts_with("deadlock detected")
            }
            _ => false,
        }
    }
}

/// The database cannot take more work right now; the same request may succeed a moment later.
/// The message is for the client: it names the limit and its config key, nothing internal.
#[derive(Debug, thiserror::Error)]
pub enum Overload {
    #[error(
        "the service is overloaded: its database write queue is full \
         ({limit} writes waiting, database.write_queue); retry later"
    )]
    WriteQueueFull { limit: usize },
    #[error(
        "the service is overloaded: no database connection became free within {} ms \
         ({size} connections, database.pool_size; database.pool_timeout_ms); retry later",
        waited.as_millis()
    )]
    NoConnection {
        size: u32,
        waited: Duration,
        /// The pool's own error: it names a connection failure when there was one (log only).
        #[source]
        cause: diesel::r2d2::PoolError,
    },
    /// SQLite: another process held the database file's write lock for all the time a batch
    /// waited for it (`DbError::is_sqlite_locked`; its cause is logged once for the batch).
    #[error(
        "the service is overloaded: another process held its SQLite database's write lock for \
         {} ms, as long as the service waits for it; retry later",
        waited.as_millis()
    )]
    SqliteLocked { waited: Duration },
}

impl Overload {
    /// When to try again: soon, the work under way finishes in milliseconds.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl DbError {
    /// SQLite gave up waiting for a lock another connection holds (`SQLITE_BUSY`, once
    /// `busy_timeout` has passed). SQLite's messages are not translated.
    pub fn is_sqlite_locked(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(_, info))
                if info.message() == "database is locked"
        )
    }

    /// Worth trying again later as it is (the engine reschedules the step; a client gets 503).
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Overloaded(_))
    }

    /// A unique or partial-unique index refused the write.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        )
    }
}

/// How much work the database takes on before refusing more (`database.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbLimits {
    /// Pooled connections (`database.pool_size`).
    pub pool_size: u32,
    /// How long a caller waits for a pooled connection (`database.pool_timeout_ms`).
    pub pool_timeout: Duration,
    /// Writes waiting for the writer thread, the group being committed aside
    /// (`database.write_queue`).
    pub write_queue: usize,
    /// SQLite: how long a batch of writes waits for the file's write lock while another
    /// process holds it (a `sqlite3` shell in a transaction, a backup) before its writes are
    /// refused as overloaded (`Overload::SqliteLocked`). Not a configuration key:
    /// `SQLITE_LOCK_WAIT` outside tests.
    pub sqlite_lock_wait: Duration,
}

impl DbLimits {
    /// SQLite's `busy_timeout`: long enough for another process's short transaction.
    pub const SQLITE_LOCK_WAIT: Duration = Duration::from_secs(10);

    /// `pool_size` connections, the other limits at their defaults (config/default.yaml).
    pub fn with_pool_size(pool_size: u32) -> DbLimits {
        DbLimits {
            pool_size,
            pool_timeout: Duration::from_secs(10),
            write_queue: 1024,
            sqlite_lock_wait: DbLimits::SQLITE_LOCK_WAIT,
        }
    }
}

#[derive(Clone)]
pub struct Db {
    /// Reads, each on a pooled connection.
    pool: Pool<Manager>,
    /// Writes, on both backends: writer threads own write connections and commit the writes
    /// queued meanwhile together (group commit, `writer/`), with the wake-up for the other
    /// replicas (`listen.rs`) sent once per batch. No write takes another path.
    writer: Writer,
    backend: Backend,
    /// PostgreSQL: `database.url`, for the LISTEN connection.
    postgres_url: Option<Arc<str>>,
    /// The activity of tasks claimed lately, so that a callback finds its writer thread
    /// without a read (`write_callback`). A task never changes activity.
    task_activities: Arc<Mutex<HashMap<TaskId, ActivityId>>>,
}

/// Most tasks `task_activities` remembers; it starts afresh when full (a miss costs a read).
const REMEMBERED_TASKS: usize = 65_536;

impl Db {
    /// Opens the pool (creating the SQLite file and its folder if needed) and runs migrations,
    /// with `pool_size` connections and the default limits.
    pub fn connect(url: &str, pool_size: u32) -> Result<Db, DbError> {
        Db::connect_with(url, DbLimits::with_pool_size(pool_size))
    }

    /// `connect` with every limit given.
    pub fn connect_with(url: &str, limits: DbLimits) -> Result<Db, DbError> {
        let target = Target::parse(url).map_err(DbError::Config)?;
        if matches!(&target, Target::Postgres(chosen) if chosen != url) {
            tracing::info!(
                "database.url reaches PostgreSQL over TCP on this host and names no sslmode: \
                 connecting without TLS unless the server requires it (sslmode=allow); \
                 name an sslmode in the URL to choose otherwise"
            );
        }
        if let Target::SqliteFile(path) = &target {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        DbError::Config(format!("cannot create folder {}: {e}", dir.display()))
                    })?;
                }
            }
        }
        let manager = Manager {
            target,
            sqlite_lock_wait: limits.sqlite_lock_wait,
        };
        // No test query at check-out: on PostgreSQL it cost every read a round trip and a
        // transaction of its own (a third of the server's transactions per task). A connection
        // the server dropped fails its next statement, which marks it broken (diesel), and the
        // pool replaces it when it comes back; the writer reopens its own after a failed batch.
        let pool = Pool::builder()
            .max_size(limits.pool_size)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .connection_timeout(limits.pool_timeout)
            .build(manager.clone())?;
        migrate(&pool)?;
        log_transport(&pool);
        let (backend, postgres_url) = match &manager.target {
            Target::SqliteFile(_) => (Backend::Sqlite, None),
            Target::Postgres(url) => (Backend::Postgres, Some(Arc::from(url.as_str()))),
        };
        let threads = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => POSTGRES_WRITE_THREADS,
        };
        let writer = Writer::start(manager, limits.write_queue, threads)?;
        Ok(Db {
            pool,
            writer,
            backend,
            postgres_url,
            task_activities: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The commits this process's writer made, and the writes they carried.
    pub fn write_counts(&self) -> WriteCounts {
        self.writer.counts()
    }

    /// PostgreSQL (`database.listen: true`): from now on, write batches of this `Db` (its clones
    /// share its writer) that leave engine work due send NOTIFY before they commit, and a
    /// connection of its own LISTENs for the other replicas' (`listen.rs`), telling `observer`.
    /// `None`, and nothing changes, on SQLite. Listening stops when the handle is dropped.
    pub fn listen(&self, observer: impl listen::ListenObserver) -> Option<listen::ListenHandle> {
        let notifying = Arc::new(listen::Notifying::new(
            self.postgres_url.as_deref()?.to_owned(),
        ));
        let handle = listen::spawn(notifying.clone(), observer);
        self.writer.notify_with(notifying);
        Some(handle)
    }
}

fn migrate(pool: &Pool<Manager>) -> Result<(), DbError> {
    let mut conn = pool.get()?;
    let applied = match &mut *conn {
        DbConnection::Sqlite(c) => {
            // Replicas starting together must not run the same migration twice: holding the
            // write lock from before reading which migrations are applied makes them take
            // turns.
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
            let result = c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len());
            if result.is_ok() {
                AnsiTransactionManager::commit_transaction(c)?;
            } else {
                AnsiTransactionManager::rollback_transaction(c)?;
            }
            result
        }
        DbConnection::Pg(c) => {
            // Replicas starting together must not run the same migration twice.
            c.batch_execute("SELECT pg_advisory_lock(727274)")?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            c.batch_execute("SELECT pg_advisory_unlock(727274)")?;
            result
        }
    }
    .map_err(|e| DbError::Migration(e.to_string()))?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(())
}

/// Says once how the service reaches PostgreSQL (nothing on SQLite): TLS on a connection from
/// the same host is a cost worth knowing about (`queries/transport.rs`).
fn log_transport(pool: &Pool<Manager>) {
    let Ok(mut conn) = pool.get() else { return };
    let DbConnection::Pg(pg) = &mut *conn else {
        return;
    };
    match transport(pg) {
        Ok(t) if t.tls_on_loopback() => tracing::info!(
            database = %t,
            "database connected; TLS on a connection from this host costs CPU on both sides: \
             where nothing requires it, PostgreSQL's Unix socket saves it (README: Scaling out, TLS)"
        ),
        Ok(t) => tracing::info!(database = %t, "database connected"),
        Err(e) => tracing::warn!(error = %e, "cannot tell how PostgreSQL is reached"),
    }
}

impl Db {
    /// Runs `f` on the blocking pool with a connection, outside any explicit transaction.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let caller = CallerSpan::capture();
        actix_web::web::block(move || {
            caller.run(|| {
                // A pooled connection the server closed (a restart, a failover, a proxy's idle
                // timeout) fails its next statement with the server's last word ("terminating
                // connection…"), and only the one after that finds it closed and marks it
                // broken. So a failed read pings its connection: a closed one is then broken,
                // the pool drops it, and the read, which changes nothing, runs again on
                // another. Every pooled connection may be such a one: one try more than the
                // pool holds.
                let mut tries = pool.max_size() + 1;
                loop {
                    let mut conn = pooled(&pool)?;
                    let answer = f.clone()(&mut conn);
                    tries -= 1;
                    let closed = answer.is_err() && {
                        use diesel::r2d2::R2D2Connection;
                        conn.ping().is_err() && conn.is_broken()
                    };
                    if !closed || tries == 0 {
                        return answer;
                    }
                    tracing::warn!("a pooled database connection was closed by the server; reading again on another");
                }
            })
        })
        .await
        .map_err(|_| DbError::Canceled)?
    }

    /// Runs `f` in a write transaction; what it wrote is committed (durable) when this returns
    /// Ok, and rolled back when `f` fails. Writes queued together share one commit, each in its
    /// own savepoint.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        self.writer
            .write(CallerSpan::capture(), None, Once::new(f))
            .await
    }

    /// `write` of a write that its batch may roll back and run again before it commits, as
    /// `write_for_rerunnable`, of no activity (it locks none that exists).
    pub async fn write_rerunnable<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        self.writer
            .write(CallerSpan::capture(), None, Rerun(f))
            .await
    }

    /// `write` of changes to one activity (what locks its row): on PostgreSQL, never on two
    /// writer threads at once, so a write that waits holds up its activity's writes only
    /// (`writer/queue.rs`).
    pub async fn write_for<T, E, F>(&self, activity: ActivityId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        self.queue_for(activity, Once::new(f)).await
    }

    /// `write_for` a write that decides afresh from what it reads, which its batch may roll
    /// back and run again before it commits (`writer/batch.rs`): it saves the batch a
    /// savepoint. What it does outside the database must bear being done again.
    pub async fn write_for_rerunnable<T, E, F>(&self, activity: ActivityId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        self.queue_for(activity, Rerun(f)).await
    }

    /// `write_for_rerunnable` of an engine step that starts with `update`, its update decided on
    /// its claim, which `f` applies with `apply_on_claim`: on PostgreSQL its batch may apply it
    /// ahead with other writes' updates, one statement for them all (`queries::on_claim`).
    pub async fn write_on_claim<T, E, F>(
        &self,
        activity: ActivityId,
        update: Option<UpdateOnClaim>,
        f: F,
    ) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        match update {
            Some(update) => {
                let ahead = Ahead::Record(Box::new(update));
                self.queue_for(activity, RerunAhead { ahead, work: f })
                    .await
            }
            None => self.write_for_rerunnable(activity, f).await,
        }
    }

    async fn queue_for<T, E, W>(&self, activity: ActivityId, work: W) -> Result<T, E>
    where
        W: Work<T, E>,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        let locks = Some(activity.get());
        self.writer.write(CallerSpan::capture(), locks, work).await
    }

    /// `write_for` the activity of `task` (see `queue_for_task`).
    pub async fn write_for_task<T, E, F>(&self, task: TaskId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        self.queue_for_task(task, Once::new(f)).await
    }

    /// `write_for_rerunnable` of the callback of `task` (its activity found as `queue_for_task`
    /// finds it), which `f` starts by reading its snapshot (`load_snapshot` with
    /// `SnapshotOf::CallbackTask(task)`): on PostgreSQL its batch may read it ahead with other
    /// callbacks', one statement for them all (`queries::read_ahead`).
    pub async fn write_callback<T, E, F>(&self, task: TaskId, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        let ahead = Ahead::Snapshot(task);
        self.queue_for_task(task, RerunAhead { ahead, work: f })
            .await
    }

    /// Queues `work` as a write of the activity of `task`, known from a claim
    /// (`remember_activities`) or read first. An unknown task, or a failed read, is queued as
    /// a write of no activity: as correct (the write itself finds the task missing; if it
    /// exists, the write may wait for the locks of another thread's batch). SQLite: no read,
    /// one thread.
    async fn queue_for_task<T, E, W>(&self, task: TaskId, work: W) -> Result<T, E>
    where
        W: Work<T, E>,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        if self.writer.threads() == 1 {
            return self.writer.write(CallerSpan::capture(), None, work).await;
        }
        let known = self.remembered().get(&task).copied();
        let activity = match known {
            Some(activity) => Some(activity),
            None => self
                .read(move |conn| queries::activity_of_task(conn, task).map_err(DbError::from))
                .await
                .unwrap_or_else(|e: DbError| {
                    tracing::warn!(task_id = task.get(), error = %crate::telemetry::error_chain(&e), "reading a task's activity failed");
                    None
                }),
        };
        match activity {
            Some(activity) => {
                self.remember_activities([(task, activity)]);
                self.queue_for(activity, work).await
            }
            None => self.writer.write(CallerSpan::capture(), None, work).await,
        }
    }

    /// Tasks and their activities, for `write_for_task` and `write_callback`.
    pub fn remember_activities(&self, tasks: impl IntoIterator<Item = (TaskId, ActivityId)>) {
        if self.writer.threads() == 1 {
            return;
        }
        let mut remembered = self.remembered();
        for (task, activity) in tasks {
            if remembered.len() >= REMEMBERED_TASKS {
                remembered.clear();
            }
            remembered.insert(task, activity);
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, ActivityId>> {
        self.task_activities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        self.read(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from))
            .await
    }
}

/// A pooled connection, or `Overloaded` when none became free within the pool's timeout.
fn pooled(pool: &Pool<Manager>) -> Result<PooledConnection<Manager>, DbError> {
    pool.get().map_err(|cause| {
        let overload = Overload::NoConnection {
            size: pool.max_size(),
            waited: pool.connection_timeout(),
            cause,
        };
        tracing::warn!(error = %crate::telemetry::error_chain(&overload), "database overloaded");
        DbError::Overloaded(overload)
    })
}
