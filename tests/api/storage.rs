//! What the database holds: upgraded from an earlier version without losing what a task still
//! has to do (migrations run at start, DESIGN §13), and read strictly.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};
use odm_devops::db::Db;

use crate::helpers::*;
use crate::on_both_backends;

/// Migrations of the version before task run settings became columns.
const BEFORE_RUN_SETTINGS: usize = 2;

#[derive(QueryableByName, Debug, PartialEq)]
struct Settings {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    timeout_ms: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    retry_max: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    retry_backoff_ms: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    planned_configurations: Option<String>,
}

const LEGACY_ROWS: &str = "
INSERT INTO activities (id, data_product_id, data_product_version, stage, status, created_at)
    VALUES (1, 'p1', '1.0.0', 'dev', 'PROCESSING', 0);
INSERT INTO tasks (id, activity_id, position, name, configurations, planned_configurations,
                   status, created_at) VALUES
    (1, 1, 1, 'resolved', '{\"timeout\":90,\"context\":{}}', '{\"timeout\":90,\"retry\":{\"max\":2,\"backoff\":1.5}}', 'PROCESSING', 0),
    (2, 1, 2, 'planned', '{\"timeout\":0.5,\"retry\":{\"max\":1}}', NULL, 'PLANNED', 0),
    (3, 1, 3, 'no settings', '{\"params\":{\"timeout\":9}}', NULL, 'PLANNED', 0),
    (4, 1, 4, 'none at all', NULL, NULL, 'PLANNED', 0),
    (5, 1, 5, 'unreadable', '{\"timeout\":-5,\"retry\":{\"max\":1.5}}', NULL, 'PLANNED', 0),
    (6, 1, 6, 'not an object', '[1]', NULL, 'PLANNED', 0),
    (7, 1, 7, 'over the caps', '{\"timeout\":1e300,\"retry\":{\"max\":1,\"backoff\":7200}}', NULL, 'PLANNED', 0);
";

fn run_legacy<C>(conn: &mut C, backend: &str)
where
    C: MigrationHarness<C::Backend> + diesel::connection::SimpleConnection + Connection,
{
    let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    let migrations = FileBasedMigrations::from_path(dir).unwrap();
    for _ in 0..BEFORE_RUN_SETTINGS {
        conn.run_next_migration(migrations.clone()).unwrap();
    }
    conn.batch_execute(LEGACY_ROWS).unwrap();
}

on_both_backends!(unfinished_tasks_keep_their_run_settings_across_the_upgrade);
async fn unfinished_tasks_keep_their_run_settings_across_the_upgrade(db: TestDb) {
    let url = db.url.clone();
    let backend = db.backend;
    actix_web::web::block(move || match backend {
        Backend::Sqlite => {
            let path = url.strip_prefix("sqlite://").unwrap();
            run_legacy(&mut SqliteConnection::establish(path).unwrap(), "sqlite");
        }
        Backend::Postgres => run_legacy(&mut PgConnection::establish(&url).unwrap(), "postgres"),
    })
    .await
    .unwrap();
    let url = db.url.clone();
    let upgraded = actix_web::web::block(move || Db::connect(&url, 1))
        .await
        .unwrap()
        .expect("the upgrade migrates");
    let rows = upgraded
        .read(|conn| {
            diesel::sql_query(
                "SELECT id, timeout_ms, retry_max, retry_backoff_ms, planned_configurations \
                 FROM tasks ORDER BY id",
            )
            .load::<Settings>(conn)
            .map_err(odm_devops::db::DbError::from)
        })
        .await
        .unwrap();
    let settings = |id, timeout_ms, retry: Option<(i32, i64)>, planned: Option<&str>| Settings {
        id,
        timeout_ms,
        retry_max: retry.map(|r| r.0),
        retry_backoff_ms: retry.map(|r| r.1),
        planned_configurations: planned.map(str::to_owned),
    };
    assert_eq!(
        rows,
        vec![
            settings(
                1,
                Some(90_000),
                Some((2, 1_500)),
                Some(r#"{"timeout":90,"retry":{"max":2,"backoff":1.5}}"#)
            ),
            settings(
                2,
                Some(500),
                Some((1, 30_000)),
                Some(r#"{"timeout":0.5,"retry":{"max":1}}"#)
            ),
            settings(3, None, None, Some(r#"{"params":{"timeout":9}}"#)),
            settings(4, None, None, None),
            // Stored values that do not read as settings are ignored, as they were before.
            settings(5, None, None, Some(r#"{"timeout":-5,"retry":{"max":1.5}}"#)),
            settings(6, None, None, Some("[1]")),
            // Over the caps (30 days, an hour): creation refuses them, and the engine read them
            // as the defaults.
            settings(
                7,
                None,
                None,
                Some(r#"{"timeout":1e300,"retry":{"max":1,"backoff":7200}}"#)
            ),
        ]
    );
}

on_both_backends!(a_status_the_service_does_not_know_is_an_error_never_a_guess);
async fn a_status_the_service_does_not_know_is_an_error_never_a_guess(db: TestDb) {
    // Statuses were parsed with a fallback to FAILED: a corrupt row read as a failed activity.
    let app = spawn_app(test_settings(&db, None)).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(serde_json::json!({"dev": [{"template": {"name": "manual"}}]})),
    )
    .await;
    let id = app.planned_activity("p1", "1.0.0", "dev").await;
    let store = db.open().await;
    db.execute(format!(
        "UPDATE activities SET status = 'RUNNING' WHERE id = {id}"
    ))
    .await;

    let read = app.get(&format!("{DEVOPS}/activities/{id}")).await;
    let message = read.assert_error(500, "50001");
    assert!(!message.contains("RUNNING"), "nothing internal: {message}");
    app.get(&format!("{DEVOPS}/activities"))
        .await
        .assert_error(500, "50001");
    app.activity_action(id, "ABORT")
        .await
        .assert_error(500, "50001");
    let stored: Vec<String> = store
        .read(move |conn| {
            use odm_devops::db::schema::activities;
            activities::table
                .select(activities::status)
                .load(conn)
                .map_err(odm_devops::db::DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(stored, ["RUNNING"], "left as it was");
    app.stop().await;
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

on_both_backends!(a_plans_updates_are_kept_prepared);
/// diesel prepares every UPDATE afresh (on PostgreSQL a parse and a plan per execution); the
/// plans' updates are kept prepared by their SQL (`db/queries/prepared.rs`): two updates of the
/// same shape leave one prepared statement on the connection, and both apply.
async fn a_plans_updates_are_kept_prepared(db: TestDb) {
    use diesel::connection::SimpleConnection;
    use odm_devops::db::{apply_plan, DbError};
    use odm_devops::domain::{Plan, Step, TaskChanges, TaskId, TaskStatus, TaskUpdate};

    let (backend, store) = (db.backend, db.open().await);
    let due_at = |at: i64| Plan {
        activity: None,
        tasks: vec![TaskUpdate {
            id: TaskId(1),
            expected: TaskStatus::Planned,
            expected_lease: None,
            changes: TaskChanges {
                step: Some(Some(Step::Dispatch)),
                due_at: Some(Some(at)),
                ..TaskChanges::default()
            },
        }],
        promote_lifecycle: false,
    };
    let (prepared, stored) = store
        .write(move |conn| {
            conn.batch_execute(
                "INSERT INTO activities (id, data_product_id, data_product_version, stage, status, created_at)
                     VALUES (1, 'p1', '1.0.0', 'dev', 'PROCESSING', 0);
                 INSERT INTO tasks (id, activity_id, position, name, status, created_at)
                     VALUES (1, 1, 1, 't', 'PLANNED', 0);",
            )?;
            for at in [10, 20] {
                apply_plan(conn, &due_at(at), at).map_err(|e| DbError::Config(e.to_string()))?;
            }
            let prepared = match backend {
                Backend::Postgres => Some(
                    diesel::sql_query(
                        "SELECT count(*) AS n FROM pg_prepared_statements \
                         WHERE statement LIKE 'UPDATE \"tasks\"%'",
                    )
                    .get_result::<Count>(conn)?
                    .n,
                ),
                Backend::Sqlite => None,
            };
            let stored = diesel::sql_query("SELECT due_at AS n FROM tasks WHERE id = 1")
                .get_result::<Count>(conn)?
                .n;
            Ok::<_, DbError>((prepared, stored))
        })
        .await
        .unwrap();
    assert_eq!(stored, 20, "both updates applied");
    if backend == Backend::Postgres {
        assert_eq!(prepared, Some(1), "one prepared UPDATE for both");
    }
}

#[derive(QueryableByName)]
struct Stored {
    #[diesel(sql_type = Nullable<Text>)]
    results: Option<String>,
    #[diesel(sql_type = Text)]
    first: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    second_due: Option<i64>,
}

on_both_backends!(a_plans_updates_apply_together_and_a_row_that_moved_undoes_them_all);
/// A callback's plan changes the activity and two tasks; on PostgreSQL in one statement
/// (`db/queries/combined.rs`). Either way: all apply, or, when one row no longer matches, the
/// plan is refused naming that row and none of its changes stay.
async fn a_plans_updates_apply_together_and_a_row_that_moved_undoes_them_all(db: TestDb) {
    use diesel::connection::SimpleConnection;
    use odm_devops::db::{apply_plan, DbError};
    use odm_devops::domain::{
        ActivityChanges, ActivityId, ActivityStatus, ActivityUpdate, Plan, Step, TaskChanges,
        TaskId, TaskStatus, TaskUpdate,
    };

    let (backend, store) = (db.backend, db.open().await);
    let finish_first = |results: &str, due: i64| Plan {
        activity: Some(ActivityUpdate {
            id: ActivityId(1),
            expected: ActivityStatus::Processing,
            changes: ActivityChanges {
                results: Some(Some(results.to_owned())),
                ..ActivityChanges::default()
            },
        }),
        tasks: vec![
            TaskUpdate {
                id: TaskId(1),
                expected: TaskStatus::Processing,
                expected_lease: Some("replica-a".into()),
                changes: TaskChanges {
                    status: Some(TaskStatus::Processed),
                    ..TaskChanges::default()
                },
            },
            TaskUpdate {
                id: TaskId(2),
                expected: TaskStatus::Planned,
                expected_lease: None,
                changes: TaskChanges {
                    step: Some(Some(Step::Dispatch)),
                    due_at: Some(Some(due)),
                    ..TaskChanges::default()
                },
            },
        ],
        promote_lifecycle: false,
    };
    let read = |conn: &mut odm_devops::db::DbConnection| {
        diesel::sql_query(
            "SELECT a.results AS results, t1.status AS first, t2.due_at AS second_due \
             FROM activities a, tasks t1, tasks t2 WHERE a.id = 1 AND t1.id = 1 AND t2.id = 2",
        )
        .get_result::<Stored>(conn)
    };
    let (applied, combined) = store
        .write(move |conn| {
            conn.batch_execute(
                "INSERT INTO activities (id, data_product_id, data_product_version, stage, status, created_at)
                     VALUES (1, 'p1', '1.0.0', 'dev', 'PROCESSING', 0);
                 INSERT INTO tasks (id, activity_id, position, name, status, lease_owner, created_at)
                     VALUES (1, 1, 1, 'a', 'PROCESSING', 'replica-a', 0),
                            (2, 1, 2, 'b', 'PLANNED', NULL, 0);",
            )?;
            apply_plan(conn, &finish_first("{\"task1\":1}", 10), 10)
                .map_err(|e| DbError::Config(e.to_string()))?;
            let combined = match backend {
                Backend::Postgres => diesel::sql_query(
                    "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE 'WITH %'",
                )
                .get_result::<Count>(conn)?
                .n,
                Backend::Sqlite => 0,
            };
            Ok::<_, DbError>((read(conn)?, combined))
        })
        .await
        .unwrap();
    assert_eq!(applied.results.as_deref(), Some("{\"task1\":1}"));
    assert_eq!(applied.first, "PROCESSED");
    assert_eq!(applied.second_due, Some(10));
    if backend == Backend::Postgres {
        assert_eq!(combined, 1, "the three updates went as one statement");
    }

    // Task 1 is no longer PROCESSING: the same plan again is refused, naming it, and the
    // activity's and task 2's changes, made before the refusal, do not stay.
    let refused = store
        .write(move |conn| {
            apply_plan(conn, &finish_first("{\"task1\":2}", 20), 20)
                .map_err(|e| DbError::Config(e.to_string()))
        })
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("task 1 is no longer PROCESSING"),
        "{refused}"
    );
    let after = store
        .read(move |conn| Ok::<_, DbError>(read(conn)?))
        .await
        .unwrap();
    assert_eq!(after.results.as_deref(), Some("{\"task1\":1}"));
    assert_eq!(after.first, "PROCESSED");
    assert_eq!(after.second_due, Some(10));
}

on_both_backends!(an_inserted_activity_is_what_reading_it_back_gives);
/// A start of an activity its own transaction inserted decides on what the inserts answered
/// (`db::inserted_snapshot`) instead of reading it back: that must be exactly what a read would
/// give, defaults the database fills in included.
async fn an_inserted_activity_is_what_reading_it_back_gives(db: TestDb) {
    use odm_devops::db::models::{NewActivity, NewTask};
    use odm_devops::db::{self as store, DbError, SnapshotOf};
    use odm_devops::domain::{ActivityId, ActivityStatus, TaskStatus};

    let app = spawn_stepped_app(test_settings(&db, None)).await;
    app.stop().await;
    let (inserted, read) = db
        .open()
        .await
        .write(|conn| {
            let activity = NewActivity {
                data_product_id: "p1",
                data_product_version: "1.0.0",
                stage: "dev",
                status: ActivityStatus::Planned,
                sealed_secrets: Some("sealed"),
                created_at: 1,
                started_at: None,
            };
            let task = |position: i32, name: &'static str, timeout_ms: Option<i64>| NewTask {
                activity_id: ActivityId(0),
                position,
                name,
                description: None,
                executor_ref: Some("fake"),
                template: Some("{}".into()),
                configurations: None,
                planned_configurations: None,
                status: TaskStatus::Planned,
                created_at: 1,
                timeout_ms,
                retry_max: timeout_ms.map(|_| 2),
                retry_backoff_ms: timeout_ms.map(|_| 1_500),
                begun: Default::default(),
            };
            // Given out of order: the snapshot lists tasks by position.
            let tasks = vec![task(2, "second", None), task(1, "first", Some(90_000))];
            let (row, tasks) = store::insert_activity(conn, activity, tasks)?;
            let inserted = store::inserted_snapshot(&row, tasks);
            let read = store::load_snapshot(conn, SnapshotOf::Activity(row.id))?;
            Ok::<_, DbError>((inserted, read.expect("the activity just inserted")))
        })
        .await
        .unwrap();
    assert_eq!(format!("{inserted:?}"), format!("{read:?}"));
    assert_eq!(inserted.tasks.len(), 2);
}
