//! The one door to the database. Everything else calls `Db::read`/`Db::write` with a closure;
//! the closure runs on the blocking pool (never on an actix worker), with a pooled connection
//! taken inside it. Backend-specific SQL lives only under this module.

mod connection;
pub mod models;
mod queries;
pub mod schema;
mod types;
mod writer;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::Pool;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use connection::{Backend, DbConnection};
pub use queries::*;

use connection::{Manager, Target};
use writer::Writer;

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
}

impl DbError {
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

#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    backend: Backend,
    /// SQLite only: writes go through one thread that commits them in groups.
    writer: Option<Writer>,
}

impl Db {
    /// Opens the pool (creating the SQLite file and its folder if needed) and runs migrations.
    pub fn connect(url: &str, pool_size: u32) -> Result<Db, DbError> {
        let target = Target::parse(url).map_err(DbError::Config)?;
        if let Target::SqliteFile(path) = &target {
            if let Some(dir) = std::path::Path::new(path).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        DbError::Config(format!("cannot create folder {}: {e}", dir.display()))
                    })?;
                }
            }
        }
        let backend = target.backend();
        let manager = Manager { target };
        let writer_manager = (backend == Backend::Sqlite).then(|| manager.clone());
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(1))
            .connection_timeout(std::time::Duration::from_secs(10))
            .build(manager)?;
        let mut db = Db {
            pool,
            backend,
            writer: None,
        };
        db.migrate()?;
        db.writer = writer_manager.map(Writer::start).transpose()?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.pool.get()?;
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

    /// Runs `f` on the blocking pool with a connection, outside any explicit transaction.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            f(&mut conn)
        })
        .await
        .map_err(|_| DbError::Canceled)?
    }

    /// Runs `f` in a write transaction; what it wrote is committed (on disk) when this returns
    /// Ok, and rolled back when `f` fails. On SQLite, writes queued together share one commit.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        if let Some(writer) = &self.writer {
            return writer.write(f).await;
        }
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get().map_err(DbError::from)?;
            in_write_transaction(&mut conn, f)
        })
        .await
        .map_err(|_| DbError::Canceled)?
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        self.read(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from))
            .await
    }
}

fn in_write_transaction<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    let begun = match conn {
        // Taking the write lock up front: a deferred transaction that reads then writes can
        // fail with SQLITE_BUSY when another writer got there first, whatever busy_timeout says.
        DbConnection::Sqlite(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")
        }
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c),
    };
    begun.map_err(DbError::from)?;
    match f(conn) {
        Ok(value) => {
            <DbConnection as Connection>::TransactionManager::commit_transaction(conn)
                .map_err(DbError::from)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) =
                <DbConnection as Connection>::TransactionManager::rollback_transaction(conn)
            {
                tracing::error!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}
