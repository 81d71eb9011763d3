//! How a connection reaches PostgreSQL, as the server sees it: for the log at startup and the
//! benchmark's report. TLS on a loopback connection is the largest single cost measured on the
//! hot path (README, "PostgreSQL at scale": 0.2–0.4 ms of CPU a task on each side), and
//! libpq's default `sslmode=prefer` turns it on without anyone asking.

use std::fmt;

use diesel::sql_types::{Bool, Nullable, Text};
use diesel::{PgConnection, QueryResult, QueryableByName, RunQueryDsl};

/// How one connection reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Transport {
    /// `server_version`, e.g. `15.19 (Debian 15.19-0+deb12u1)`.
    #[diesel(sql_type = Text)]
    pub server_version: String,
    /// Over a Unix socket (the server sees no client address).
    #[diesel(sql_type = Bool)]
    pub unix_socket: bool,
    /// Over TCP from this host (127.0.0.0/8 or ::1).
    #[diesel(sql_type = Bool)]
    pub loopback: bool,
    /// The TLS protocol version, when the connection is encrypted.
    #[diesel(sql_type = Nullable<Text>)]
    pub tls: Option<String>,
}

impl Transport {
    /// TLS over loopback: encryption nobody on the path needs, at a cost.
    pub fn tls_on_loopback(&self) -> bool {
        self.loopback && self.tls.is_some()
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = self.server_version.split(' ').next().unwrap_or_default();
        write!(f, "PostgreSQL {version} over ")?;
        match (self.unix_socket, self.loopback) {
            (true, _) => write!(f, "its Unix socket")?,
            (false, true) => write!(f, "TCP on this host")?,
            (false, false) => write!(f, "TCP")?,
        }
        match &self.tls {
            Some(protocol) => write!(f, " with TLS ({protocol})"),
            None if self.unix_socket => Ok(()),
            None => write!(f, " without TLS"),
        }
    }
}

/// How `pg` reaches its server.
pub fn transport(pg: &mut PgConnection) -> QueryResult<Transport> {
    diesel::sql_query(
        "SELECT current_setting('server_version') AS server_version, \
         inet_client_addr() IS NULL AS unix_socket, \
         COALESCE(inet_client_addr() <<= '127.0.0.0/8'::inet \
                  OR inet_client_addr() = '::1'::inet, false) AS loopback, \
         (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl) AS tls",
    )
    .get_result(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(unix_socket: bool, loopback: bool, tls: Option<&str>) -> Transport {
        Transport {
            server_version: "15.19 (Debian 15.19-0+deb12u1)".into(),
            unix_socket,
            loopback,
            tls: tls.map(str::to_owned),
        }
    }

    #[test]
    fn says_how_the_server_is_reached() {
        let cases = [
            (
                transport(true, false, None),
                "PostgreSQL 15.19 over its Unix socket",
            ),
            (
                transport(false, true, Some("TLSv1.3")),
                "PostgreSQL 15.19 over TCP on this host with TLS (TLSv1.3)",
            ),
            (
                transport(false, true, None),
                "PostgreSQL 15.19 over TCP on this host without TLS",
            ),
            (
                transport(false, false, Some("TLSv1.2")),
                "PostgreSQL 15.19 over TCP with TLS (TLSv1.2)",
            ),
        ];
        for (transport, said) in cases {
            assert_eq!(transport.to_string(), said);
        }
        assert!(transport(false, true, Some("TLSv1.3")).tls_on_loopback());
        assert!(!transport(false, false, Some("TLSv1.3")).tls_on_loopback());
        assert!(!transport(false, true, None).tls_on_loopback());
    }
}
