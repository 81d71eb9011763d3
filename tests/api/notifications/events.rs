//! Every event type with ODM's shapes, the `events` filter, webhooks and their refusal at start.

use odm_devops::app::{Application, EngineMode};
use odm_devops::config::{HeaderSetting, ListenerKind, ListenerSettings};
use serde_json::{json, Value};

use super::*;
use crate::on_both_backends;

async fn every_event_of_a_stage_reaches_an_odm_listener_in_order_with_odms_shapes(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let mut completions = odm_listener(&sim, "completions");
    completions.events = vec!["DATA_PRODUCT_ACTIVITY_COMPLETED".into()];
    let listeners = vec![odm_listener(&sim, "odm"), completions];
    let app = spawn_stepped_app(settings_with(&db, &executor, listeners)).await;
    let id = run_two_tasks(&app, &executor, "p1").await;

    let tasks = task_ids(&app, id).await;
    let received = sim.listeners().received("odm");
    assert!(received
        .iter()
        .all(|r| r.path == "/_sim/listeners/odm/api/v1/pp/notification/dispatch"));
    let events = events_of(&sim, "odm");
    assert_eq!(sequence(&events, id, &tasks), expected(&SUCCEEDED));
    let mut last_id = 0;
    for event in &events {
        let keys: Vec<_> = event.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "afterState",
                "beforeState",
                "entityId",
                "id",
                "time",
                "type"
            ],
            "{event}"
        );
        assert!(event["beforeState"].is_null());
        assert!(event["time"].as_i64().is_some_and(|t| t > 0));
        let id = event["id"].as_i64().unwrap();
        assert!(id > last_id, "ids grow in the order sent: {events:?}");
        last_id = id;
    }
    let after = |i: usize| &events[i]["afterState"];
    // The activity's events carry the activity and the descriptor (ODM's Blindata observer
    // reads afterState.activity.{stage,status,results} and dataProductVersion.info.version).
    for (i, status) in [(0, "PLANNED"), (3, "PROCESSING"), (10, "PROCESSED")] {
        assert_eq!(after(i)["activity"]["status"], status, "{}", events[i]);
        assert_eq!(after(i)["activity"]["id"], id);
        assert_eq!(after(i)["activity"]["stage"], "dev");
        assert_eq!(after(i)["dataProductVersion"]["info"]["version"], "1.0.0");
    }
    let results = after(10)["activity"]["results"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(results).unwrap(),
        json!({"task1": {"n": 1}, "task2": {"n": 2}})
    );
    // A task's events carry the task as GET /tasks/{id} shows it (status of the moment).
    let shown = app.task(tasks[0]).await;
    let completed = &after(5)["task"];
    assert_eq!(completed, &shown, "the task as the API returns it");
    assert_eq!(completed["activityId"], id.to_string());
    assert_eq!(after(4)["task"]["status"], "PROCESSING");
    assert_eq!(after(1)["task"]["status"], "PLANNED");
    assert_eq!(after(6)["task"]["id"], tasks[0]);
    assert_eq!(after(6)["activity"]["id"], id);
    assert_eq!(keys_of(after(11)), ["activity"]);
    let transition = after(12);
    assert_eq!(transition["lifecycle"]["stage"], "dev");
    assert_eq!(transition["lifecycle"]["finishedAt"], Value::Null);
    assert_eq!(transition["previousLifecycle"], Value::Null);
    assert_eq!(transition["activity"]["status"], "PROCESSED");

    // A listener that asked for one type gets exactly that.
    let only = events_of(&sim, "completions");
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["type"], "DATA_PRODUCT_ACTIVITY_COMPLETED");

    // The outbox lists each row, delivered at the first try.
    let delivered = app
        .get_json(&format!("{DEVOPS}/notifications?status=delivered"))
        .await;
    let delivered = delivered.as_array().unwrap();
    assert_eq!(delivered.len(), 14, "{delivered:?}");
    for row in delivered {
        assert_eq!(row["status"], "DELIVERED");
        assert_eq!(row["attempts"], 1);
        assert!(row["lastError"].is_null() && row["deliveredAt"].is_string());
    }
    assert_eq!(delivered[0]["listener"], "odm");
    assert_eq!(
        delivered[0]["event"]["type"],
        "DATA_PRODUCT_ACTIVITY_CREATED"
    );
    let pending = app
        .get_json(&format!("{DEVOPS}/notifications?status=pending"))
        .await;
    assert_eq!(pending, json!([]));
    let of_one = app
        .get_json(&format!("{DEVOPS}/notifications?listener=completions"))
        .await;
    assert_eq!(of_one.as_array().unwrap().len(), 1);
    let page = app
        .get(&format!(
            "{DEVOPS}/notifications?limit=5&after={}",
            delivered[2]["id"]
        ))
        .await
        .ids();
    assert_eq!(page.len(), 5);
    assert_eq!(Value::from(page[0]), delivered[3]["id"]);
    let message = app
        .get(&format!("{DEVOPS}/notifications?status=sent"))
        .await
        .assert_error(400, "40001");
    assert!(message.contains("pending, delivered, failing"), "{message}");
    app.stop().await;
}
on_both_backends!(every_event_of_a_stage_reaches_an_odm_listener_in_order_with_odms_shapes);

fn keys_of(value: &Value) -> Vec<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

async fn a_failed_task_announces_the_end_of_its_activity(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let app = spawn_stepped_app(settings_with(
        &db,
        &executor,
        vec![odm_listener(&sim, "odm")],
    ))
    .await;
    let id = start_two_tasks(&app, "p1").await;
    let first = app.dispatched(&executor, 1).await;
    let failed = app
        .call_back(
            &first.callback_ref,
            Some(json!({"status": "FAILED", "errors": "boom"})),
        )
        .await;
    assert_eq!(failed.status, 200, "{failed:?}");
    app.wait_for_activity(id, "FAILED").await;
    let tasks = task_ids(&app, id).await;
    let events = events_of(&sim, "odm");
    assert_eq!(
        sequence(&events, id, &tasks),
        expected(&[
            ("DATA_PRODUCT_ACTIVITY_CREATED", 'A'),
            ("DATA_PRODUCT_TASK_CREATED", '1'),
            ("DATA_PRODUCT_TASK_CREATED", '2'),
            ("DATA_PRODUCT_ACTIVITY_STARTED", 'A'),
            ("DATA_PRODUCT_TASK_STARTED", '1'),
            ("DATA_PRODUCT_TASK_COMPLETED", '1'),
            ("DATA_PRODUCT_TASK_RESULTS", '1'),
            ("DATA_PRODUCT_TASK_COMPLETED", '2'),
            ("DATA_PRODUCT_ACTIVITY_COMPLETED", 'A'),
            ("DATA_PRODUCT_ACTIVITY_RESULTS", 'A'),
        ])
    );
    assert_eq!(events[5]["afterState"]["task"]["status"], "FAILED");
    assert_eq!(events[6]["afterState"]["task"]["errors"], "boom");
    assert_eq!(events[7]["afterState"]["task"]["status"], "ABORTED");
    let activity = &events[8]["afterState"]["activity"];
    assert_eq!(activity["status"], "FAILED");
    assert!(activity["errors"].as_str().unwrap().contains("boom"));
    app.stop().await;
}
on_both_backends!(a_failed_task_announces_the_end_of_its_activity);

/// A webhook for Teams, Slack or anything: the body rendered from its template, headers added.
fn webhook(sim: &SimulatorHandle, name: &str, template: &str) -> ListenerSettings {
    ListenerSettings {
        kind: ListenerKind::Webhook,
        template: Some(template.into()),
        ..odm_listener(sim, name)
    }
}

const TEAMS: &str = r#"{"text": "{{type}}: {{afterState.activity.stage}} of {{afterState.activity.dataProductId}} {{afterState.dataProductVersion.info.version}} is {{afterState.activity.status}}", "activity": {{json afterState.activity}}}"#;

async fn a_webhook_gets_its_template_rendered_with_its_headers(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let mut hook = webhook(&sim, "teams", TEAMS);
    hook.events = vec!["DATA_PRODUCT_ACTIVITY_COMPLETED".into()];
    hook.headers.insert(
        "X-Hook-Token".into(),
        HeaderSetting::Value("s3cret-value".into()),
    );
    let app = spawn_stepped_app(settings_with(&db, &executor, vec![hook])).await;
    let id = run_two_tasks(&app, &executor, "p1").await;
    let received = sim.listeners().received("teams");
    assert_eq!(received.len(), 1, "{received:?}");
    let hook = &received[0];
    assert_eq!(hook.path, "/_sim/listeners/teams");
    assert_eq!(hook.headers["x-hook-token"], "s3cret-value");
    assert_eq!(hook.headers["content-type"], "application/json");
    assert_eq!(
        hook.body["text"],
        "DATA_PRODUCT_ACTIVITY_COMPLETED: dev of p1 1.0.0 is PROCESSED"
    );
    assert_eq!(hook.body["activity"]["id"], id);
    let listed = app.get(&format!("{DEVOPS}/notifications")).await;
    assert!(!listed.text.contains("s3cret-value"), "{}", listed.text);
    app.stop().await;
}
on_both_backends!(a_webhook_gets_its_template_rendered_with_its_headers);

/// What a listener would be sent must render: a template that does not compile, does not
/// render JSON, or names what some event it gets lacks stops the start, naming the listener.
#[actix_web::test]
async fn webhooks_that_cannot_render_and_unusable_listeners_are_refused_at_start() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let refusal = |listener: ListenerSettings| {
        let settings = settings_with(&db, &executor, vec![listener]);
        async move {
            match Application::build_with(settings, EngineMode::Stepped).await {
                Ok(_) => panic!("the service started"),
                Err(e) => e.to_string(),
            }
        }
    };
    let broken = refusal(webhook(&sim, "broken", "{\"t\": \"{{#if}\"}")).await;
    assert!(
        broken.contains("(broken)") && broken.contains("does not compile"),
        "{broken}"
    );
    let text = refusal(webhook(&sim, "text", "{{type}} happened")).await;
    assert!(text.contains("(text)") && text.contains("JSON"), "{text}");
    // `afterState.task` is in task events only: for all events it cannot render.
    let tasks_only = r#"{"t": "{{afterState.task.name}}"}"#;
    let missing = refusal(webhook(&sim, "tasky", tasks_only)).await;
    assert!(
        missing.contains("(tasky)") && missing.contains("DATA_PRODUCT_ACTIVITY_CREATED"),
        "{missing}"
    );
    let mut task_events = webhook(&sim, "tasky", tasks_only);
    task_events.events = vec!["DATA_PRODUCT_TASK_COMPLETED".into()];
    let settings = settings_with(&db, &executor, vec![task_events]);
    assert!(Application::build_with(settings, EngineMode::Stepped)
        .await
        .is_ok());

    let mut unknown = odm_listener(&sim, "typo");
    unknown.events = vec!["DATA_PRODUCT_FINISHED".into()];
    let typo = refusal(unknown).await;
    assert!(
        typo.contains("(typo)") && typo.contains("DATA_PRODUCT_FINISHED"),
        "{typo}"
    );
    let mut from_env = webhook(&sim, "env", TEAMS);
    let variable = "ODM_TEST_UNSET_WEBHOOK_TOKEN_7F3A";
    from_env.headers.insert(
        "Authorization".into(),
        HeaderSetting::Env(odm_devops::config::EnvHeader {
            env: variable.into(),
        }),
    );
    let unset = refusal(from_env).await;
    assert!(
        unset.contains("(env)") && unset.contains(variable),
        "{unset}"
    );
    let plain = refusal(webhook(&sim, "no-template", "")).await;
    assert!(plain.contains("(no-template)"), "{plain}");
}
