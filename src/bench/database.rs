//! The database of one run: a SQLite file in the run's folder, or a fresh PostgreSQL database
//! on the given server, dropped when the run ends so runs never see each other's rows.

use std::path::Path;

use anyhow::Context;
use diesel::{Connection, PgConnection, RunQueryDsl};

pub(crate) enum BenchDb {
    Sqlite {
        url: String,
    },
    Postgres {
        admin: String,
        name: String,
        url: String,
        /// How the server reaches it (the same URL but for the database's name).
        transport: Option<String>,
    },
}

impl BenchDb {
    pub fn sqlite(dir: &Path) -> BenchDb {
        BenchDb::Sqlite {
            url: format!("sqlite://{}", dir.join("bench.db").display()),
        }
    }

    /// Creates `odm_bench_<random>` on the server of `admin`, connected to as a server given
    /// that URL connects (so `describe` tells the servers' transport, TLS or not).
    pub fn postgres(admin: &str) -> anyhow::Result<BenchDb> {
        let name = format!("odm_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = &crate::db::postgres_url_as_connected(admin);
        let mut conn =
            PgConnection::establish(admin).context("cannot connect to PostgreSQL (--database)")?;
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .with_context(|| format!("cannot create database {name}"))?;
        let url = with_database(admin, &name);
        let transport = crate::db::transport(&mut conn).ok().map(|t| t.to_string());
        Ok(BenchDb::Postgres {
            admin: admin.to_owned(),
            name,
            url,
            transport,
        })
    }

    /// What the server is given as `database.url`.
    pub fn url(&self) -> &str {
        match self {
            BenchDb::Sqlite { url } | BenchDb::Postgres { url, .. } => url,
        }
    }

    /// For the terminal: never the URL (it may hold a password).
    pub fn describe(&self) -> String {
        match self {
            BenchDb::Sqlite { .. } => "SQLite, a temporary file".into(),
            BenchDb::Postgres {
                name, transport, ..
            } => {
                let how = transport.as_deref().unwrap_or("PostgreSQL");
                format!("{how}, fresh database {name}")
            }
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let BenchDb::Postgres { admin, name, .. } = self {
            // The server is killed first; FORCE ends the connections it may have left behind.
            let dropped = PgConnection::establish(admin).map(|mut conn| {
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
            });
            if !matches!(dropped, Ok(Ok(_))) {
                eprintln!("bench: could not drop database {name}; drop it by hand");
            }
        }
    }
}

/// `url` with its database (the last path segment) replaced by `name`, its query kept.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}
