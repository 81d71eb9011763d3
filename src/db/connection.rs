//! Connections to either backend, chosen by the URL's scheme at run time.

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::{Connection, ConnectionError, PgConnection, SqliteConnection};

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where to connect, parsed once from `database.url`.
#[derive(Clone)]
pub(crate) enum Target {
    SqliteFile(String),
    Postgres(String),
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                "database.url must start with sqlite:// or postgres:// (e.g. sqlite://data/odm-devops.db)"
                    .to_owned()
            })?;
        if path.is_empty() || path.contains(":memory:") || path.contains("mode=memory") {
            // Each pooled connection would get its own empty database.
            return Err("database.url: an in-memory SQLite database cannot be shared by a connection pool; give a file path".into());
        }
        Ok(Target::SqliteFile(path.to_owned()))
    }
}

/// r2d2 manager that also sets the SQLite pragmas on every new connection.
#[derive(Clone)]
pub(crate) struct Manager {
    pub(crate) target: Target,
}

// busy_timeout first: the other pragmas may need the lock. synchronous=FULL: a commit that
// returned is on disk, even in WAL mode (NORMAL could lose the last commits on power loss).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = ON;";

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.target {
            Target::SqliteFile(path) => {
                let mut conn = SqliteConnection::establish(path)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
            Target::Postgres(url) => PgConnection::establish(url)
                .map(DbConnection::Pg)
                .map_err(|e| diesel::r2d2::Error::ConnectionError(strip_password(e))),
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// libpq's messages can quote the connection string; keep only its kind.
pub(crate) fn strip_password(e: ConnectionError) -> ConnectionError {
    match e {
        ConnectionError::BadConnection(msg) if msg.contains("password") => {
            ConnectionError::BadConnection(
                "could not connect to PostgreSQL (authentication or address problem; see the server log)".into(),
            )
        }
        other => other,
    }
}
