//! Connections to either backend, chosen by the URL's scheme at run time.

use std::time::Duration;

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
            return Ok(Target::Postgres(postgres_url_as_connected(url)));
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

/// The URL the service connects to PostgreSQL with when given `url` as `database.url`: also
/// what the benchmark's own connection uses, so that what it reports of the transport (TLS or
/// not) is what the servers it starts get.
pub(crate) fn postgres_url_as_connected(url: &str) -> String {
    let chosen = std::env::var_os("PGSSLMODE").is_some();
    without_tls_on_loopback(url, chosen).unwrap_or_else(|| url.to_owned())
}

/// `url` with `sslmode=allow` when it reaches PostgreSQL over TCP on this host and says nothing
/// of TLS (no `ssl…` parameter, `PGSSLMODE` unset: `tls_chosen`); `None` to leave it as it is.
///
/// Why: libpq's default, `sslmode=prefer`, encrypts every round trip whenever the server has
/// TLS on (Debian's default), and on loopback that was the largest single cost measured on the
/// hot path (README, "PostgreSQL at scale": 1.1–1.5 × the throughput without it). It protects
/// nothing there: the traffic never leaves the kernel, and `prefer` checks no certificate and
/// falls back to plaintext silently anyway. `allow` tries plaintext first and still uses TLS when
/// the server requires it (`hostssl` in `pg_hba.conf`), so no server that accepted the service
/// refuses it now. A URL that names TLS in any way (`sslmode=require`, a root certificate…), a
/// host given as a parameter, or several hosts are left alone.
pub(crate) fn without_tls_on_loopback(url: &str, tls_chosen: bool) -> Option<String> {
    if tls_chosen {
        return None;
    }
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let names = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .map(|pair| pair.split('=').next().unwrap_or_default());
    for name in names {
        if name.starts_with("ssl") || name == "host" || name == "hostaddr" || name == "service" {
            return None;
        }
    }
    let authority = before_query.split('/').next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let host = match hosts.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => hosts.split(':').next().unwrap_or_default(),
    };
    if hosts.contains(',') || !is_loopback(host) {
        return None;
    }
    let joiner = match query {
        None => "?",
        Some("") => "",
        Some(_) => "&",
    };
    Some(format!("{url}{joiner}sslmode=allow"))
}

/// A host name or address that is this host over TCP (an empty host is the Unix socket).
fn is_loopback(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// r2d2 manager that also sets the SQLite pragmas on every new connection.
#[derive(Clone)]
pub(crate) struct Manager {
    pub(crate) target: Target,
    /// SQLite: how long a statement waits for a lock another process holds on the file
    /// (`busy_timeout`) before it fails with "database is locked" (`DbLimits::sqlite_lock_wait`).
    pub(crate) sqlite_lock_wait: Duration,
}

#[cfg(test)]
impl Manager {
    /// A manager for `target` waiting `DbLimits::SQLITE_LOCK_WAIT` for SQLite's locks.
    pub(crate) fn new(target: Target) -> Manager {
        Manager {
            target,
            sqlite_lock_wait: super::DbLimits::SQLITE_LOCK_WAIT,
        }
    }
}

// busy_timeout first (`Manager::connect`): the other pragmas may need the lock.
// synchronous=FULL: a commit that returned is on disk, even in WAL mode (NORMAL could lose the
// last commits on power loss).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL;
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
                let busy_timeout = format!(
                    "PRAGMA busy_timeout = {};",
                    self.sqlite_lock_wait.as_millis()
                );
                conn.batch_execute(&busy_timeout)
                    .and_then(|()| conn.batch_execute(SQLITE_PRAGMAS))
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

#[cfg(test)]
mod tests {
    use super::without_tls_on_loopback;

    /// TLS is left off only where nothing was said of it and the server is this host over TCP.
    #[test]
    fn tls_is_left_off_on_loopback_unless_the_url_or_the_environment_chose() {
        let allowed = [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test?sslmode=allow",
            ),
            (
                "postgresql://u:p@localhost/db?application_name=x",
                "postgresql://u:p@localhost/db?application_name=x&sslmode=allow",
            ),
            (
                "postgres://[::1]:5433/db",
                "postgres://[::1]:5433/db?sslmode=allow",
            ),
            (
                "postgres://127.0.0.2/db?",
                "postgres://127.0.0.2/db?sslmode=allow",
            ),
        ];
        for (url, expected) in allowed {
            assert_eq!(
                without_tls_on_loopback(url, false).as_deref(),
                Some(expected),
                "{url}"
            );
        }
        let left_alone = [
            "postgres://postgres@db.internal:5432/test",
            "postgres://postgres@10.0.0.5/test",
            "postgres://postgres@127.0.0.1/test?sslmode=require",
            "postgres://postgres@127.0.0.1/test?sslmode=prefer",
            "postgres://postgres@localhost/test?sslrootcert=/ca.pem",
            "postgres://postgres@%2Fvar%2Frun%2Fpostgresql/test",
            "postgres:///test",
            "postgres://localhost,db.internal/test",
            "postgres://localhost/test?host=db.internal",
            "postgres://localhost/test?service=prod",
            // A password that looks like a host does not fool it.
            "postgres://u:localhost@db.internal/test",
        ];
        for url in left_alone {
            assert_eq!(without_tls_on_loopback(url, false), None, "{url}");
        }
        assert_eq!(
            without_tls_on_loopback("postgres://postgres@127.0.0.1/test", true),
            None,
            "PGSSLMODE set in the environment is the user's choice"
        );
    }
}
