//! The database door's own promises that need no running service.

use std::collections::BTreeSet;
use std::path::Path;

/// The migration directories of one backend (name = `<date>-<number>_<what>`).
fn migration_names(backend: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Each backend has its own SQL, but one history: a migration added for one backend only
/// would leave the other schema behind (diesel records applied migrations by name).
#[test]
fn sqlite_and_postgres_migrations_have_the_same_names() {
    let sqlite = migration_names("sqlite");
    let postgres = migration_names("postgres");
    assert!(!sqlite.is_empty(), "no SQLite migrations found");
    assert_eq!(
        sqlite.symmetric_difference(&postgres).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "migrations present for one backend only"
    );
    for backend in ["sqlite", "postgres"] {
        for name in &sqlite {
            for file in ["up.sql", "down.sql"] {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("migrations")
                    .join(backend)
                    .join(name)
                    .join(file);
                assert!(path.is_file(), "{} is missing", path.display());
            }
        }
    }
}

/// Every lookup of an activity's tasks (its snapshot, its Context, a cascade on delete) goes
/// through the index of `UNIQUE (activity_id, position)`, on both backends: the separate index
/// on `activity_id` alone was dropped as redundant, and the lookup must not turn into a scan
/// of every task row should that constraint ever change.
#[actix_web::test]
async fn an_activitys_tasks_are_found_through_an_index_on_both_backends() {
    let (db, dir) = super::writer::tests::temp_db();
    let plan = plan_of_task_lookup(&db).await;
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        plan.iter().any(|d| d.starts_with("SEARCH tasks USING")
            && d.contains("INDEX sqlite_autoindex_tasks_1 (activity_id=?)")),
        "SQLite: {plan:?}"
    );

    let Some((db, admin, name, _)) = super::writer::tests::postgres_db_at() else {
        return;
    };
    let plan = plan_of_task_lookup(&db).await;
    drop(db);
    super::writer::tests::drop_database(&admin, &name);
    assert!(
        plan.iter()
            .any(|l| l.contains("Index") && l.contains("tasks_activity_id_position_key")),
        "PostgreSQL: {plan:?}"
    );
    assert!(
        plan.iter()
            .any(|l| l.contains("Index Cond: (activity_id = ")),
        "PostgreSQL: {plan:?}"
    );
    assert!(
        !plan.iter().any(|l| l.contains("Seq Scan")),
        "PostgreSQL: {plan:?}"
    );
}

/// The query plan of looking up an activity's tasks, a line per step.
async fn plan_of_task_lookup(db: &super::Db) -> Vec<String> {
    use diesel::sql_types::Text;
    use diesel::{QueryableByName, RunQueryDsl};
    const LOOKUP: &str = "SELECT id FROM tasks WHERE activity_id = 7";

    #[derive(QueryableByName)]
    struct SqliteStep {
        #[diesel(sql_type = Text)]
        detail: String,
    }
    #[derive(QueryableByName)]
    struct PostgresLine {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    db.read(|conn| -> Result<Vec<String>, super::DbError> {
        Ok(match conn {
            super::DbConnection::Sqlite(c) => {
                diesel::sql_query(format!("EXPLAIN QUERY PLAN {LOOKUP}"))
                    .load::<SqliteStep>(c)?
                    .into_iter()
                    .map(|s| s.detail)
                    .collect()
            }
            super::DbConnection::Pg(c) => {
                // A young table is small enough for a scan to look cheaper: with scans
                // priced out, only a missing index leaves one in the plan.
                diesel::sql_query("SET enable_seqscan = off").execute(c)?;
                let plan = diesel::sql_query(format!("EXPLAIN {LOOKUP}")).load::<PostgresLine>(c);
                diesel::sql_query("RESET enable_seqscan").execute(c)?;
                plan?.into_iter().map(|l| l.line).collect()
            }
        })
    })
    .await
    .unwrap()
}
