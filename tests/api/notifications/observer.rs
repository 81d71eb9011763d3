//! ODM's observer route: a product version (or product) deleted in ODM aborts what runs of it
//! (runs cancelled at Azure), then deletes its activities and tasks; lifecycle rows stay.

use serde_json::{json, Value};

use crate::azure::{azure_task, Azure, MANUAL};
use crate::helpers::*;
use crate::on_both_backends;

const OBSERVER: &str = "/api/v1/pp/devops/api/v1/up/observer/notifications";

/// ODM's notification of `event_type` about product `p`.
fn notification(event_type: &str, version: Option<&str>) -> Value {
    let before = version.map_or(
        Value::Null,
        |v| json!({"dataProductVersion": {"info": {"version": v}}}),
    );
    json!({
        "id": 42,
        "event": {"id": 7, "type": event_type, "entityId": "p", "beforeState": before,
                  "afterState": null, "time": 1714558530000i64},
        "status": "PROCESSING",
    })
}

/// `init` succeeds at once (no executor), `dev` waits on a manual Azure run.
fn lifecycle() -> Value {
    descriptor(json!({
        "init": [{"template": {"name": "noop", "definition": {}}}],
        "dev": [azure_task("approval", MANUAL, None, json!({}))],
    }))
}

async fn activities_of(app: &TestApp, version: &str) -> Vec<i64> {
    app.get(&format!(
        "{DEVOPS}/activities?dataProductId=p&dataProductVersion={version}"
    ))
    .await
    .ids()
}

async fn a_deleted_version_takes_its_activities_and_tasks_and_cancels_its_runs(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    for version in ["1.0.0", "2.0.0"] {
        app.put_descriptor("p", version, &lifecycle()).await;
    }
    let done = app.start_activity("p", "1.0.0", "init").await;
    app.wait_for_activity(done, "PROCESSED").await;
    let running = app.start_activity("p", "1.0.0", "dev").await;
    let task = app.tasks_of(running).await[0]["id"].as_i64().unwrap();
    let run = azure.wait_for_run_of_task(task).await;
    eventually("the run recorded", || async {
        app.task(task).await["runUrl"].as_str().map(|_| ())
    })
    .await;
    let other_version = app.planned_activity("p", "2.0.0", "dev").await;

    let ignored = app
        .call(
            "POST",
            OBSERVER,
            Some(&notification("DATA_PRODUCT_CREATED", None)),
        )
        .await;
    assert_eq!(ignored.status, 200, "{ignored:?}");
    assert_eq!(ignored.json()["handled"], false);
    let message = app
        .call(
            "POST",
            OBSERVER,
            Some(&notification("DATA_PRODUCT_VERSION_DELETED", None)),
        )
        .await
        .assert_error(400, "40000");
    assert!(
        message.contains("beforeState.dataProductVersion.info.version"),
        "{message}"
    );

    let deleted = app
        .call(
            "POST",
            OBSERVER,
            Some(&notification("DATA_PRODUCT_VERSION_DELETED", Some("1.0.0"))),
        )
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let answer = deleted.json();
    assert_eq!(answer["handled"], true);
    assert_eq!(answer["abortedActivities"], 1, "{answer}");
    eventually(&format!("run {} cancelled", run.id), || async {
        let run = azure.sim.run(run.id)?;
        (run.result.as_deref() == Some("canceled")).then_some(())
    })
    .await;
    eventually("the version's activities deleted", || async {
        activities_of(app, "1.0.0").await.is_empty().then_some(())
    })
    .await;
    for id in [done, running] {
        app.get(&format!("{DEVOPS}/activities/{id}"))
            .await
            .assert_error(404, "40401");
        let tasks = app.get(&format!("{DEVOPS}/tasks?activityId={id}")).await;
        assert_eq!(tasks.ids(), Vec::<i64>::new());
    }
    app.get(&format!("{DEVOPS}/tasks/{task}"))
        .await
        .assert_error(404, "40411");
    let lifecycles = app.get_json(&format!("{DEVOPS}/lifecycles/p/1.0.0")).await;
    assert_eq!(
        lifecycles.as_array().unwrap().len(),
        1,
        "lifecycle rows stay"
    );
    assert_eq!(lifecycles[0]["stage"], "init");
    assert_eq!(activities_of(app, "2.0.0").await, [other_version]);

    // The whole product: every version's activities.
    let product = app
        .call(
            "POST",
            OBSERVER,
            Some(&notification("DATA_PRODUCT_DELETED", None)),
        )
        .await;
    assert_eq!(product.status, 200, "{product:?}");
    assert_eq!(product.json()["abortedActivities"], 1);
    assert_eq!(product.json()["deletedActivities"], 1);
    assert!(activities_of(app, "2.0.0").await.is_empty());
    azure.stop().await;
}
on_both_backends!(a_deleted_version_takes_its_activities_and_tasks_and_cancels_its_runs);
