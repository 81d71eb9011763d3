//! Creating, starting, listing, deleting activities; the wire format.

use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

async fn app_with_two_tasks(db: &TestDb) -> (TestApp, FakeExecutor) {
    let lifecycle = json!({
        "dev": [fake_task("provision", json!({"params": {"size": "S"}})), fake_task("deploy", json!({}))],
        "test": [fake_task("smoke", json!({}))]
    });
    stepped_app_with_stages(db, lifecycle).await
}

on_both_backends!(created_activity_is_planned_in_odm_wire_format);
async fn created_activity_is_planned_in_odm_wire_format(db: TestDb) {
    let (app, executor) = app_with_two_tasks(&db).await;
    let answer = app.create_activity("p1", "1.0.0", "dev", false).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let activity = answer.json();
    assert_eq!(activity["status"], "PLANNED");
    assert_eq!(activity["dataProductId"], "p1");
    assert_eq!(activity["stage"], "dev");
    for null_field in ["results", "errors", "startedAt", "finishedAt"] {
        assert_eq!(
            activity.get(null_field),
            Some(&Value::Null),
            "{null_field} present as null"
        );
    }
    let created = activity["createdAt"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2023-11-23T14:32:00.000+00:00".len(),
        "{created}"
    );
    assert!(
        created.ends_with("+00:00")
            && created.as_bytes()[10] == b'T'
            && created.as_bytes()[19] == b'.'
    );

    let tasks = app.tasks_of(activity["id"].as_i64().unwrap()).await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(
        tasks[0]["activityId"],
        activity["id"].to_string(),
        "activityId is a string"
    );
    assert_eq!(tasks[0]["name"], "provision");
    assert_eq!(
        tasks[0]["executorRef"], "fake",
        "braces stripped from $href"
    );
    assert_eq!(tasks[0]["status"], "PLANNED");
    let template: Value = serde_json::from_str(tasks[0]["template"].as_str().unwrap()).unwrap();
    assert_eq!(
        template,
        json!({"pipeline": "provision"}),
        "template is JSON in a string"
    );
    let configurations: Value =
        serde_json::from_str(tasks[0]["configurations"].as_str().unwrap()).unwrap();
    assert_eq!(configurations, json!({"params": {"size": "S"}}));
    assert_eq!(tasks[1]["name"], "deploy");
    assert!(executor.received().is_empty(), "nothing runs before START");
    app.stop().await;
}

on_both_backends!(start_after_creation_dispatches_the_first_task);
async fn start_after_creation_dispatches_the_first_task(db: TestDb) {
    let (app, executor) = app_with_two_tasks(&db).await;
    let answer = app.create_activity("p1", "1.0.0", "dev", true).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let activity = answer.json();
    assert_eq!(activity["status"], "PROCESSING");
    assert!(activity["startedAt"].is_string());
    let id = activity["id"].as_i64().unwrap();
    assert_eq!(
        app.activity(id).await,
        activity,
        "the answer is the activity as stored"
    );
    let received = app.dispatched(&executor, 1).await;
    assert_eq!(received.activity_id, activity["id"].to_string());
    let tasks = app.tasks_of(id).await;
    // ODM's TaskResource (DESIGN §6): the task's name and dates as the API shows them.
    assert_eq!(received.name, tasks[0]["name"]);
    assert_eq!(received.started_at, tasks[0]["startedAt"]);
    assert!(received.started_at.is_string(), "{:?}", received.started_at);
    assert_eq!(received.template, json!({"pipeline": "provision"}));
    assert_eq!(received.configurations["params"], json!({"size": "S"}));
    assert!(
        received.callback_ref.contains("action=STOP&token="),
        "{}",
        received.callback_ref
    );
    let tasks = app.tasks_of(activity["id"].as_i64().unwrap()).await;
    assert_eq!(tasks[0]["status"], "PROCESSING");
    assert_eq!(
        tasks[1]["status"], "PLANNED",
        "the second task waits for the first"
    );
    app.stop().await;
}

on_both_backends!(start_moves_a_planned_activity_to_processing);
async fn start_moves_a_planned_activity_to_processing(db: TestDb) {
    let (app, executor) = app_with_two_tasks(&db).await;
    let id = app.planned_activity("p1", "1.0.0", "dev").await;
    let answer = app.activity_action(id, "START").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "PROCESSING"}));
    app.dispatched(&executor, 1).await;
    let status = app.get(&format!("{DEVOPS}/activities/{id}/status")).await;
    assert_eq!(status.json(), json!({"status": "PROCESSING"}));
    let again = app.activity_action(id, "START").await;
    again.assert_error(409, "40901");
    app.stop().await;
}

on_both_backends!(lists_are_filtered_and_ordered_by_id);
async fn lists_are_filtered_and_ordered_by_id(db: TestDb) {
    let (app, _executor) = app_with_two_tasks(&db).await;
    app.put_descriptor("p2", "2.0.0", &descriptor(fake_stage(&["a"])))
        .await;
    let first = app
        .create_activity("p1", "1.0.0", "dev", false)
        .await
        .json();
    let second = app
        .create_activity("p1", "1.0.0", "test", true)
        .await
        .json();
    let third = app
        .create_activity("p2", "2.0.0", "dev", false)
        .await
        .json();
    let ids = |answer: Answer| answer.ids();
    let all = ids(app.get(&format!("{DEVOPS}/activities")).await);
    assert_eq!(
        all,
        vec![
            first["id"].as_i64().unwrap(),
            second["id"].as_i64().unwrap(),
            third["id"].as_i64().unwrap()
        ]
    );
    assert_eq!(
        ids(app
            .get(&format!("{DEVOPS}/activities?dataProductId=p1"))
            .await)
        .len(),
        2
    );
    assert_eq!(
        ids(app
            .get(&format!("{DEVOPS}/activities?dataProductId=p1&stage=test"))
            .await),
        vec![second["id"].as_i64().unwrap()]
    );
    assert_eq!(
        ids(app
            .get(&format!("{DEVOPS}/activities?dataProductVersion=2.0.0"))
            .await),
        vec![third["id"].as_i64().unwrap()]
    );
    assert_eq!(
        ids(app
            .get(&format!("{DEVOPS}/activities?status=PROCESSING"))
            .await),
        vec![second["id"].as_i64().unwrap()]
    );
    assert_eq!(
        ids(app
            .get(&format!(
                "{DEVOPS}/activities?status=PLANNED&dataProductId=p2"
            ))
            .await),
        vec![third["id"].as_i64().unwrap()]
    );
    let bad = app
        .get(&format!("{DEVOPS}/activities?status=RUNNING"))
        .await;
    // A malformed query parameter (DESIGN §5: 40001).
    assert!(bad
        .assert_error(400, "40001")
        .contains("PLANNED, PROCESSING"));

    let tasks = |answer: Answer| -> Vec<(i64, String)> {
        answer
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["id"].as_i64().unwrap(),
                    t["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let of_first = tasks(
        app.get(&format!("{DEVOPS}/tasks?activityId={}", first["id"]))
            .await,
    );
    assert_eq!(of_first.len(), 2);
    assert!(of_first[0].0 < of_first[1].0);
    let processing = tasks(app.get(&format!("{DEVOPS}/tasks?status=PROCESSING")).await);
    assert_eq!(processing.len(), 1);
    assert_eq!(
        tasks(app.get(&format!("{DEVOPS}/tasks?executor=fake")).await).len(),
        4
    );
    assert_eq!(
        tasks(app.get(&format!("{DEVOPS}/tasks?executor=other")).await).len(),
        0
    );
    app.stop().await;
}

on_both_backends!(only_planned_activities_can_be_deleted);
async fn only_planned_activities_can_be_deleted(db: TestDb) {
    let (app, _executor) = app_with_two_tasks(&db).await;
    let planned = app
        .create_activity("p1", "1.0.0", "dev", false)
        .await
        .json();
    let id = planned["id"].as_i64().unwrap();
    let deleted = app
        .call("DELETE", &format!("{DEVOPS}/activities/{id}"), None)
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.json()["id"], id);
    app.get(&format!("{DEVOPS}/activities/{id}"))
        .await
        .assert_error(404, "40401");
    assert!(app.tasks_of(id).await.is_empty(), "its tasks went with it");
    let running = app.create_activity("p1", "1.0.0", "dev", true).await.json();
    let refused = app
        .call(
            "DELETE",
            &format!("{DEVOPS}/activities/{}", running["id"]),
            None,
        )
        .await;
    assert!(refused.assert_error(422, "42201").contains("PROCESSING"));
    app.stop().await;
}
