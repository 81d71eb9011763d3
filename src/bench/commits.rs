//! Commits per task: the transactions the server committed during the timed part, divided by
//! the tasks processed. PostgreSQL: `xact_commit` of the run's database in `pg_stat_database`
//! (every transaction, reads outside a transaction included); SQLite: the writer's commits,
//! `odm_devops_database_commits_total` on the server's `/metrics` (SQLite reads commit nothing).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};

use super::database::BenchDb;

/// A PostgreSQL backend publishes its counts when it goes idle, at most once a second, and the
/// rest after 10 s idle (or when it exits): before the timed part the server's backends have to
/// publish what storing the descriptors cost.
const POSTGRES_STATS_SETTLE: Duration = Duration::from_millis(10_500);
/// How long the server's backends may take to exit once it is stopped.
const BACKENDS_EXIT_WITHIN: Duration = Duration::from_secs(10);

pub(crate) enum Commits {
    Postgres {
        admin: String,
        name: String,
        before: i64,
    },
    Sqlite {
        metrics: String,
        before: u64,
    },
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Commits {
    /// The count before the timed part (on PostgreSQL, once the counts so far are published).
    pub async fn before(
        database: &BenchDb,
        server_url: &str,
        client: &awc::Client,
    ) -> anyhow::Result<Commits> {
        match database {
            BenchDb::Sqlite { .. } => {
                let metrics = format!("{server_url}/metrics");
                let before = writer_commits(client, &metrics).await?;
                Ok(Commits::Sqlite { metrics, before })
            }
            BenchDb::Postgres { admin, name, .. } => {
                println!(
                    "bench: waiting {:.1} s for PostgreSQL to publish its counts before the timed part",
                    POSTGRES_STATS_SETTLE.as_secs_f64()
                );
                actix_web::rt::time::sleep(POSTGRES_STATS_SETTLE).await;
                let (admin, name) = (admin.clone(), name.clone());
                let before = postgres_commits(&admin, &name, false).await?;
                Ok(Commits::Postgres {
                    admin,
                    name,
                    before,
                })
            }
        }
    }

    /// SQLite: right after the timed part, the server still running.
    pub async fn sqlite_after(&self, client: &awc::Client) -> anyhow::Result<Option<u64>> {
        match self {
            Commits::Sqlite { metrics, before } => {
                let after = writer_commits(client, metrics).await?;
                Ok(Some(after.saturating_sub(*before)))
            }
            Commits::Postgres { .. } => Ok(None),
        }
    }

    /// PostgreSQL: once the server is stopped (its backends publish their counts as they exit).
    pub async fn postgres_after(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Commits::Postgres {
                admin,
                name,
                before,
            } => {
                let after = postgres_commits(admin, name, true).await?;
                Ok(Some(u64::try_from(after - before).unwrap_or(0)))
            }
            Commits::Sqlite { .. } => Ok(None),
        }
    }
}

/// `odm_devops_database_commits_total` on the server's metrics page.
async fn writer_commits(client: &awc::Client, url: &str) -> anyhow::Result<u64> {
    let page = super::load::get(client, url, 16 << 20, " (is metrics.token set?)").await?;
    let page = String::from_utf8_lossy(&page);
    page.lines()
        .find_map(|line| line.strip_prefix("odm_devops_database_commits_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .ok_or_else(|| anyhow!("{url}: no odm_devops_database_commits_total"))
}

/// `xact_commit` of database `name`; with `gone`, once none of its backends is left.
async fn postgres_commits(admin: &str, name: &str, gone: bool) -> anyhow::Result<i64> {
    let (admin, name) = (admin.to_owned(), name.to_owned());
    actix_web::web::block(move || -> anyhow::Result<i64> {
        let mut conn =
            PgConnection::establish(&admin).context("cannot connect to PostgreSQL (--database)")?;
        if gone {
            wait_for_backends_to_exit(&mut conn, &name)?;
        }
        // A fresh snapshot of the statistics for this read.
        diesel::sql_query("SELECT pg_stat_clear_snapshot()").execute(&mut conn)?;
        let count: Count =
            diesel::sql_query("SELECT xact_commit AS n FROM pg_stat_database WHERE datname = $1")
                .bind::<Text, _>(&name)
                .get_result(&mut conn)
                .with_context(|| format!("reading pg_stat_database for {name}"))?;
        Ok(count.n)
    })
    .await
    .map_err(|_| anyhow!("reading PostgreSQL's counts was cancelled"))?
}

/// Waits (at most `BACKENDS_EXIT_WITHIN`) until no client backend of database `name` is left.
fn wait_for_backends_to_exit(conn: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + BACKENDS_EXIT_WITHIN;
    loop {
        let left: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = $1 AND backend_type = 'client backend'",
        )
        .bind::<Text, _>(name)
        .get_result(conn)?;
        if left.n == 0 || Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
