//! A database of its own for each test, on SQLite or PostgreSQL.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;

use diesel::{Connection, PgConnection, RunQueryDsl};

pub const POSTGRES_URL_VAR: &str = "ODM_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend. Attributes given before the name (e.g.
/// `#[ignore = "bug: …"]`) go on both tests.
#[macro_export]
macro_rules! on_both_backends {
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            $(#[$attr])*
            #[actix_web::test]
            async fn sqlite() {
                if let Some(db) = $crate::helpers::TestDb::new($crate::helpers::Backend::Sqlite) {
                    super::$name(db).await;
                }
            }

            $(#[$attr])*
            #[actix_web::test]
            async fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::new($crate::helpers::Backend::Postgres) {
                    super::$name(db).await;
                }
            }
        }
    };
}

/// A database of its own for one test: a SQLite file in a fresh folder, or a fresh PostgreSQL
/// database on the server named by `ODM_TEST_POSTGRES_URL`. Removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    sqlite_dir: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// `None` (and a notice on the terminal) when PostgreSQL is not configured.
    pub fn new(backend: Backend) -> Option<TestDb> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("odm-devops-test-{id}"));
                std::fs::create_dir_all(&dir).unwrap();
                let url = format!("sqlite://{}", dir.join("odm.db").display());
                Some(TestDb {
                    backend,
                    url,
                    sqlite_dir: Some(dir),
                    postgres: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
                    announce_postgres_skipped();
                    return None;
                };
                let name = format!("odm_test_{id}");
                let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!("{POSTGRES_URL_VAR} is set but PostgreSQL is unreachable: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .unwrap();
                let (base, query) = admin
                    .split_once('?')
                    .map_or((admin.as_str(), ""), |(b, q)| (b, q));
                let (server, _) = base.rsplit_once('/').expect("a database in the URL");
                let url = if query.is_empty() {
                    format!("{server}/{name}")
                } else {
                    format!("{server}/{name}?{query}")
                };
                Some(TestDb {
                    backend,
                    url,
                    sqlite_dir: None,
                    postgres: Some((admin, name)),
                })
            }
        }
    }
}

impl TestDb {
    /// The test's database opened beside the service (one connection), for what a test sets up
    /// or changes behind the service's back.
    pub async fn open(&self) -> odm_devops::db::Db {
        let url = self.url.clone();
        actix_web::web::block(move || odm_devops::db::Db::connect(&url, 1))
            .await
            .unwrap()
            .expect("the test's database opens")
    }

    /// Runs `sql` (statements that return no rows) on the test's database, beside the service.
    pub async fn execute(&self, sql: String) {
        self.open()
            .await
            .write(move |conn| {
                diesel::sql_query(sql)
                    .execute(conn)
                    .map_err(odm_devops::db::DbError::from)
            })
            .await
            .expect("the statement runs");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin, name)) = &self.postgres {
            if let Ok(mut conn) = PgConnection::establish(admin) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
    }
}

/// Written straight to the terminal: the test harness captures `println!` of passing tests.
fn announce_postgres_skipped() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** {POSTGRES_URL_VAR} is not set: the PostgreSQL runs of the persistence tests are SKIPPED \
             (e.g. {POSTGRES_URL_VAR}=postgres://postgres@127.0.0.1:5432/test) ***\n"
        );
    });
}
