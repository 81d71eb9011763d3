//! `GET /board`: the promotion board the dashboard draws (a route DESIGN does not list): one row
//! per product version, its stages in descriptor order, each in the state its activities say.

use serde_json::{json, Value};

use crate::fakes::{FakeExecutor, FakeRegistry};
use crate::helpers::*;
use crate::on_both_backends;

pub const BOARD: &str = "/api/v1/pp/devops/board";

/// A stage-map descriptor written as text, its stages in `stages` order: sent as a `Value`, its
/// keys would go out sorted, and the order of the keys is what the board must follow.
pub fn ordered_descriptor(stages: &[(&str, Value)]) -> String {
    let map: Vec<String> = stages
        .iter()
        .map(|(stage, tasks)| format!("{}: {tasks}", json!(stage)))
        .collect();
    format!(
        r#"{{"dataProductDescriptor": "1.0.0", "info": {{"name": "board"}},
            "internalComponents": {{"lifecycleInfo": {{{}}}}}}}"#,
        map.join(", ")
    )
}

fn done(name: &str) -> Value {
    json!([{"template": {"name": name, "definition": {}}}])
}

/// What the board tests share, on a stepped service with the fake executor:
/// * `sales 1.0.0` (stages dev, test, prod): dev reached, test running, prod not yet;
/// * `sales 2.0.0` (same stages): dev failed (aborted), test planned, prod not yet.
///
/// The activity ids: (1.0.0 dev, 1.0.0 test, 2.0.0 dev, 2.0.0 test).
pub async fn board_scenario(app: &TestApp) -> [i64; 4] {
    let stages = [
        ("dev", done("build")),
        ("test", json!([fake_task("smoke", json!({}))])),
        ("prod", done("release")),
    ];
    for version in ["1.0.0", "2.0.0"] {
        let path = format!("/api/v1/pp/registry/products/sales/versions/{version}");
        let text = ordered_descriptor(&stages);
        let put = app
            .send("PUT", &path, Some(("application/json", text)), &[])
            .await;
        assert_eq!(put.status, 201, "{put:?}");
    }
    let reached = app.start_activity("sales", "1.0.0", "dev").await;
    app.wait_for_activity(reached, "PROCESSED").await;
    let running = app.start_activity("sales", "1.0.0", "test").await;
    app.drive_until_idle().await;
    // A stage whose tasks run on the fake executor, aborted while it runs: failed.
    let second = [
        ("dev", json!([fake_task("build", json!({}))])),
        ("test", done("smoke")),
        ("prod", done("release")),
    ];
    let put = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/sales/versions/2.0.0",
            Some(("application/json", ordered_descriptor(&second))),
            &[],
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let failed = app.start_activity("sales", "2.0.0", "dev").await;
    app.drive_until_idle().await;
    let aborted = app.activity_action(failed, "ABORT").await;
    assert_eq!(aborted.status, 200, "{aborted:?}");
    let planned = app.planned_activity("sales", "2.0.0", "test").await;
    app.wait_for_activity(running, "PROCESSING").await;
    [reached, running, failed, planned]
}

/// (stage, state, activityId) of each column of a row.
fn columns(row: &Value) -> Vec<(String, String, Option<i64>)> {
    row["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["stage"].as_str().unwrap().to_owned(),
                c["state"].as_str().unwrap().to_owned(),
                c["activityId"].as_i64(),
            )
        })
        .collect()
}

fn column(stage: &str, state: &str, activity: Option<i64>) -> (String, String, Option<i64>) {
    (stage.to_owned(), state.to_owned(), activity)
}

on_both_backends!(the_board_shows_each_version_s_stages_in_descriptor_order);
async fn the_board_shows_each_version_s_stages_in_descriptor_order(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_stepped_app(test_settings(&db, Some(&executor.address))).await;
    let [reached, running, failed, planned] = board_scenario(&app).await;

    let board = app.get_json(BOARD).await;
    let rows = board.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{board}");
    let (first, second) = (&rows[0], &rows[1]);
    assert_eq!(
        (&first["dataProductId"], &first["dataProductVersion"]),
        (&json!("sales"), &json!("1.0.0"))
    );
    assert_eq!(first["id"], reached, "a row's id is its first activity's");
    // Descriptor order (dev, test, prod), not the alphabetical order a JSON object would give.
    assert_eq!(
        columns(first),
        [
            column("dev", "reached", Some(reached)),
            column("test", "running", Some(running)),
            column("prod", "notYet", None),
        ]
    );
    assert_eq!(first["currentStage"], "dev");
    let dev = &first["stages"][0];
    assert_eq!(
        (&dev["current"], &dev["activityStatus"]),
        (&json!(true), &json!("PROCESSED"))
    );
    assert!(dev["at"].as_str().unwrap().ends_with("+00:00"), "{dev}");
    assert_eq!(
        dev["reachedAt"], dev["at"],
        "promoted when its activity finished"
    );
    assert_eq!(first["stages"][1]["activityStatus"], "PROCESSING");
    assert_eq!(first["problem"], Value::Null);

    assert_eq!(second["dataProductVersion"], "2.0.0");
    assert_eq!(
        columns(second),
        [
            column("dev", "failed", Some(failed)),
            column("test", "planned", Some(planned)),
            column("prod", "notYet", None),
        ]
    );
    assert_eq!(second["stages"][0]["activityStatus"], "ABORTED");
    assert_eq!(second["currentStage"], Value::Null);
    assert_eq!(second["stages"][0]["reachedAt"], Value::Null);

    // A stage the descriptor no longer lists keeps its column, after the descriptor's.
    let text = ordered_descriptor(&[("prod", done("release")), ("dev", done("build"))]);
    let put = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/sales/versions/2.0.0",
            Some(("application/json", text)),
            &[],
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let board = app.get_json(&format!("{BOARD}?after={reached}")).await;
    let row = &board[0];
    assert_eq!(
        columns(row),
        [
            column("prod", "notYet", None),
            column("dev", "failed", Some(failed)),
            column("test", "planned", Some(planned)),
        ]
    );
    let in_descriptor: Vec<&Value> = row["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["inDescriptor"])
        .collect();
    assert_eq!(in_descriptor, [&json!(true), &json!(true), &json!(false)]);
    app.stop().await;
}

on_both_backends!(the_board_is_paged_and_needs_the_api_token);
async fn the_board_is_paged_and_needs_the_api_token(db: TestDb) {
    let mut settings = test_settings(&db, None);
    settings.auth.api_tokens = vec!["team-token".into()];
    let app = spawn_stepped_app(settings).await;
    let auth = [("Authorization", "Bearer team-token")];
    let mut firsts = Vec::new();
    for version in ["1", "2", "3"] {
        let text = ordered_descriptor(&[("dev", done("a"))]);
        let path = format!("/api/v1/pp/registry/products/p/versions/{version}");
        let put = app
            .send("PUT", &path, Some(("application/json", text)), &auth)
            .await;
        assert_eq!(put.status, 201, "{put:?}");
        let body = json!({"dataProductId": "p", "dataProductVersion": version, "stage": "dev"});
        let created = app
            .send(
                "POST",
                &format!("{DEVOPS}/activities?startAfterCreation=true"),
                Some(("application/json", body.to_string())),
                &auth,
            )
            .await;
        assert_eq!(created.status, 201, "{created:?}");
        firsts.push(created.json()["id"].as_i64().unwrap());
    }
    app.drive_until_idle().await;
    // A second activity of version 1 does not make a second row, nor move version 1.
    let body = json!({"dataProductId": "p", "dataProductVersion": "1", "stage": "dev"});
    let again = app
        .send(
            "POST",
            &format!("{DEVOPS}/activities?startAfterCreation=true"),
            Some(("application/json", body.to_string())),
            &auth,
        )
        .await;
    assert_eq!(again.status, 201, "{again:?}");

    app.get(BOARD).await.assert_error(401, "40101");
    app.send("GET", BOARD, None, &[("Authorization", "Bearer wrong")])
        .await
        .assert_error(401, "40101");
    let page = |query: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .send("GET", &format!("{BOARD}{query}"), None, &auth)
                .await;
            assert_eq!(answer.status, 200, "{query}: {answer:?}");
            let rows = answer.json();
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["dataProductVersion"].as_str().unwrap().to_owned(),
                        r["id"].as_i64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let all = page("").await;
    assert_eq!(
        all,
        [
            ("1".into(), firsts[0]),
            ("2".into(), firsts[1]),
            ("3".into(), firsts[2])
        ]
    );
    assert_eq!(page("?limit=2").await, all[..2]);
    let after = format!("?after={}&limit=1", firsts[0]);
    let answer = app
        .send("GET", &format!("{BOARD}{after}"), None, &auth)
        .await;
    assert_eq!(answer.json()[0]["dataProductVersion"], "2", "{answer:?}");
    assert_eq!(answer.json().as_array().unwrap().len(), 1);
    let last = format!("?after={}", firsts[2]);
    let answer = app
        .send("GET", &format!("{BOARD}{last}"), None, &auth)
        .await;
    assert_eq!(answer.json(), json!([]));
    for bad in [
        "limit=0",
        "limit=1001",
        "after=-1",
        "limit=two",
        "limit=1&limit=2",
    ] {
        let answer = app
            .send("GET", &format!("{BOARD}?{bad}"), None, &auth)
            .await;
        answer.assert_error(400, "40001");
    }
    app.stop().await;
}

on_both_backends!(the_board_reads_stage_order_from_a_remote_registry_and_survives_its_failure);
async fn the_board_reads_stage_order_from_a_remote_registry_and_survives_its_failure(db: TestDb) {
    let registry = FakeRegistry::start().await;
    let task = |stage: &str, name: &str| json!({"stageName": stage, "order": 1, "template": {"name": name, "definition": {}}});
    // ODM's normalized shape: `stageNames` gives the order.
    let normalized = json!({"internalComponents": {"lifecycleInfo": {
        "stageNames": ["dev", "test", "prod"],
        "tasksInfo": [task("prod", "release"), task("test", "smoke"), task("dev", "build")]
    }}});
    registry.insert("dpd", "1.0.0", normalized);
    let mut settings = test_settings(&db, None);
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(registry.address.clone());
    let app = spawn_stepped_app(settings).await;
    let test = app.start_activity("dpd", "1.0.0", "test").await;
    app.wait_for_activity(test, "PROCESSED").await;

    let board = app.get_json(BOARD).await;
    assert_eq!(
        columns(&board[0]),
        [
            column("dev", "notYet", None),
            column("test", "reached", Some(test)),
            column("prod", "notYet", None),
        ]
    );
    // The registry fails: the row stays, with the stages its activities name and why.
    registry.answer_with(503);
    let board = app.get_json(BOARD).await;
    assert_eq!(columns(&board[0]), [column("test", "reached", Some(test))]);
    let problem = board[0]["problem"].as_str().unwrap();
    assert!(problem.contains("ODM registry answered 503"), "{problem}");
    assert!(
        !problem.contains(&registry.address),
        "no internal URL: {problem}"
    );
    app.stop().await;
}
