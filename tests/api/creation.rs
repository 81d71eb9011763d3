//! An activity created with `startAfterCreation=true` is inserted already started: its start
//! decided on the rows about to be written (`db::new_rows_snapshot`), not an INSERT and then the
//! start's UPDATE.

use serde_json::json;

use odm_devops::db::models::{NewActivity, NewTask};
use odm_devops::db::{self, DbError};
use odm_devops::domain::{ActivityStatus, Plan, TaskChanges, TaskStatus, TaskUpdate};

use crate::helpers::*;
use crate::on_both_backends;

fn two_stages() -> serde_json::Value {
    json!({
        "dev": [fake_task("first", json!({})), fake_task("second", json!({}))],
        "test": [fake_task("smoke", json!({}))]
    })
}

on_both_backends!(an_activity_created_started_runs_its_first_task_and_plans_the_others);
async fn an_activity_created_started_runs_its_first_task_and_plans_the_others(db: TestDb) {
    let (app, executor) = stepped_app_with_stages(&db, two_stages()).await;
    let created = app.create_activity("p1", "1.0.0", "dev", true).await;
    assert_eq!(created.status, 201, "{created:?}");
    let activity = created.json();
    assert_eq!(activity["status"], "PROCESSING", "{activity}");
    assert!(activity["startedAt"].is_string(), "{activity}");
    let id = activity["id"].as_i64().unwrap();
    let tasks = app.tasks_of(id).await;
    let statuses: Vec<_> = tasks.iter().map(|t| t["status"].clone()).collect();
    assert_eq!(
        statuses,
        [json!("PROCESSING"), json!("PLANNED")],
        "{tasks:?}"
    );
    assert!(tasks[0]["startedAt"].is_string(), "{tasks:?}");

    // The first task is dispatched (to the one engine the start handed it to), and the second
    // once the first is back.
    let first = app.dispatched(&executor, 1).await;
    assert_eq!(Some(first.id), tasks[0]["id"].as_i64(), "{tasks:?}");
    app.call_back(&first.callback_ref, None).await;
    let second = app.dispatched(&executor, 2).await;
    assert_eq!(Some(second.id), tasks[1]["id"].as_i64(), "{tasks:?}");
    app.call_back(&second.callback_ref, None).await;
    app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(executor.received().len(), 2, "each task ran once");
    app.stop().await;
}

on_both_backends!(an_activity_created_started_behind_another_is_refused_naming_it);
/// On PostgreSQL the started INSERT checks itself that nothing is in the way (one statement
/// less); refused, the request takes the long way, which names what is in the way. Either way
/// nothing of the refused activity stays.
async fn an_activity_created_started_behind_another_is_refused_naming_it(db: TestDb) {
    let (app, _executor) = stepped_app_with_stages(&db, two_stages()).await;
    let dev = app.create_activity("p1", "1.0.0", "dev", true).await;
    let dev = dev.json()["id"].as_i64().unwrap();
    let test = app.create_activity("p1", "1.0.0", "test", true).await;
    let message = test.assert_error(409, "40901");
    let expected = format!("activity {dev} of product p1, version 1.0.0 is PROCESSING");
    assert!(message.starts_with(&expected), "{message}");

    // A PLANNED one of the stage is in the way of a started one as of a planned one.
    app.put_descriptor("p1", "2.0.0", &descriptor(two_stages()))
        .await;
    let planned = app.create_activity("p1", "2.0.0", "dev", false).await;
    let planned = planned.json()["id"].as_i64().unwrap();
    let again = app.create_activity("p1", "2.0.0", "dev", true).await;
    let message = again.assert_error(422, "42202");
    let expected = format!("activity {planned} is already PLANNED for product p1, version 2.0.0");
    assert!(message.starts_with(&expected), "{message}");

    let ids = app.get(&format!("{DEVOPS}/activities")).await.ids();
    assert_eq!(ids, [dev, planned], "nothing of the refused ones stays");
    app.stop().await;
}

on_both_backends!(two_activities_of_one_version_created_started_at_once_one_runs);
async fn two_activities_of_one_version_created_started_at_once_one_runs(db: TestDb) {
    let (app, _executor) = stepped_app_with_stages(&db, two_stages()).await;
    let (dev, test) = futures_util::future::join(
        app.create_activity("p1", "1.0.0", "dev", true),
        app.create_activity("p1", "1.0.0", "test", true),
    )
    .await;
    let mut statuses = [dev.status, test.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{dev:?} {test:?}");
    let refused = if dev.status == 409 { dev } else { test };
    let message = refused.assert_error(409, "40901");
    assert!(message.contains("only one activity"), "{message}");
    // Nothing of the refused one stays.
    let all = app.get_json(&format!("{DEVOPS}/activities")).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["status"], "PROCESSING", "{all:?}");
    app.stop().await;
}

// A start whose changes a new row cannot hold (here a run reference, which only a dispatch
// sets) is not inserted half-made: nothing is written, and the caller inserts and then starts.
on_both_backends!(a_start_a_new_row_cannot_hold_writes_nothing);
async fn a_start_a_new_row_cannot_hold_writes_nothing(db: TestDb) {
    let store = db.open().await;
    let written = store
        .write(|conn| {
            let activity = NewActivity {
                data_product_id: "p1",
                data_product_version: "1.0.0",
                stage: "dev",
                status: ActivityStatus::Planned,
                sealed_secrets: None,
                created_at: 1,
                started_at: None,
            };
            let task = NewTask {
                activity_id: odm_devops::domain::ActivityId(0),
                position: 1,
                name: "first",
                description: None,
                executor_ref: None,
                template: None,
                configurations: None,
                planned_configurations: None,
                status: TaskStatus::Planned,
                created_at: 1,
                timeout_ms: None,
                retry_max: None,
                retry_backoff_ms: None,
                begun: Default::default(),
            };
            let snapshot = db::new_rows_snapshot(&activity, std::slice::from_ref(&task));
            let plan = Plan {
                tasks: vec![TaskUpdate {
                    id: snapshot.tasks[0].id,
                    expected: TaskStatus::Planned,
                    expected_lease: None,
                    changes: TaskChanges {
                        status: Some(TaskStatus::Processing),
                        run_ref: Some(Some("{}".into())),
                        ..Default::default()
                    },
                }],
                ..Default::default()
            };
            let inserted = db::insert_started_activity(conn, activity, vec![task], &plan, 1)?;
            Ok::<_, DbError>(inserted.is_some())
        })
        .await
        .unwrap();
    assert!(!written, "the start was made in the rows");
    let rows = store
        .read(|conn| Ok::<_, DbError>(db::list_activities(conn, &Default::default())?))
        .await
        .unwrap();
    assert!(rows.is_empty(), "nothing inserted: {rows:?}");
}
