//! Every row of DESIGN §5's error table that concerns these routes, with ODM's envelope.

use serde_json::json;

use crate::fakes::{FakeExecutor, FakeRegistry};
use crate::helpers::*;
use crate::on_both_backends;

async fn app(db: &TestDb) -> (TestApp, FakeExecutor) {
    let lifecycle = json!({"dev": [fake_task("a", json!({}))], "empty": []});
    stepped_app_with_stages(db, lifecycle).await
}

on_both_backends!(malformed_requests_are_400);
async fn malformed_requests_are_400(db: TestDb) {
    let (app, _executor) = app(&db).await;
    let path = format!("{DEVOPS}/activities");
    let broken = app
        .send(
            "POST",
            &path,
            Some(("application/json", "{\"dataProductId\":".into())),
            &[],
        )
        .await;
    assert!(broken.assert_error(400, "40000").contains("not valid JSON"));
    let empty = app
        .send(
            "POST",
            &path,
            Some(("application/json", String::new())),
            &[],
        )
        .await;
    empty.assert_error(400, "40000");
    // A malformed query parameter is 40001 (DESIGN §5), a malformed path id 40000.
    app.call(
        "POST",
        &format!("{path}?startAfterCreation=maybe"),
        Some(&json!({})),
    )
    .await
    .assert_error(400, "40001");
    app.get(&format!("{DEVOPS}/tasks/abc"))
        .await
        .assert_error(400, "40000");
    app.get(&format!("{DEVOPS}/tasks?activityId=x"))
        .await
        .assert_error(400, "40001");
    app.stop().await;
}

on_both_backends!(unknown_actions_are_400_with_their_code);
async fn unknown_actions_are_400_with_their_code(db: TestDb) {
    let (app, _executor) = app(&db).await;
    let id = app.planned_activity("p1", "1.0.0", "dev").await;
    let bad = app.activity_action(id, "PAUSE").await;
    assert!(bad.assert_error(400, "40055").contains("START or ABORT"));
    app.call("PATCH", &format!("{DEVOPS}/activities/{id}/status"), None)
        .await
        .assert_error(400, "40055");
    let task = app.tasks_of(id).await[0]["id"].as_i64().unwrap();
    let start = app.task_action(task, "START").await;
    assert!(start
        .assert_error(400, "40065")
        .contains("through their activity"));
    app.task_action(task, "RESUME")
        .await
        .assert_error(400, "40065");
    app.stop().await;
}

on_both_backends!(missing_things_are_404);
async fn missing_things_are_404(db: TestDb) {
    let (app, _executor) = app(&db).await;
    for path in ["/activities/999", "/activities/999/status"] {
        app.get(&format!("{DEVOPS}{path}"))
            .await
            .assert_error(404, "40401");
    }
    app.activity_action(999, "START")
        .await
        .assert_error(404, "40401");
    app.call("DELETE", &format!("{DEVOPS}/activities/999"), None)
        .await
        .assert_error(404, "40401");
    for path in ["/tasks/999", "/tasks/999/status"] {
        app.get(&format!("{DEVOPS}{path}"))
            .await
            .assert_error(404, "40411");
    }
    // A callback for an unknown task is refused like a bad token: no existence oracle (§5).
    app.call(
        "PATCH",
        &format!("{DEVOPS}/tasks/999/status?action=STOP&token=x"),
        None,
    )
    .await
    .assert_error(401, "40101");
    app.task_action(999, "ABORT")
        .await
        .assert_error(404, "40411");
    app.stop().await;
}

on_both_backends!(media_types_and_sizes_are_checked);
async fn media_types_and_sizes_are_checked(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.server.body_limit_bytes = 200;
    let app = spawn_app(settings).await;
    let path = format!("{DEVOPS}/activities");
    let xml = app
        .send("GET", &path, None, &[("Accept", "application/xml")])
        .await;
    xml.assert_error(406, "40601");
    for accepted in [
        "application/vnd.odmp.v1+json",
        "application/vnd.odmp+json",
        "*/*",
        "text/html, application/json;q=0.9",
    ] {
        assert_eq!(
            app.send("GET", &path, None, &[("Accept", accepted)])
                .await
                .status,
            200,
            "{accepted}"
        );
    }
    let body =
        json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"}).to_string();
    let plain = app
        .send("POST", &path, Some(("text/plain", body.clone())), &[])
        .await;
    plain.assert_error(415, "41501");
    let odm = app
        .send(
            "POST",
            &path,
            Some(("application/vnd.odmp.v1+json", body)),
            &[],
        )
        .await;
    assert_eq!(
        odm.status, 422,
        "accepted as JSON, then no such product: {odm:?}"
    );
    let big = json!({"dataProductId": "x".repeat(500)}).to_string();
    app.send("POST", &path, Some(("application/json", big)), &[])
        .await
        .assert_error(413, "41301");
    app.stop().await;
}

on_both_backends!(invalid_activities_are_422_naming_the_problem);
async fn invalid_activities_are_422_naming_the_problem(db: TestDb) {
    let (app, _executor) = app(&db).await;
    let create = |body: serde_json::Value| {
        let app = &app;
        async move {
            app.call("POST", &format!("{DEVOPS}/activities"), Some(&body))
                .await
        }
    };
    let missing = create(json!({"dataProductId": "p1", "stage": 3}))
        .await
        .assert_error(422, "42201");
    assert!(
        missing.contains("dataProductVersion is missing")
            && missing.contains("stage must be a string"),
        "{missing}"
    );
    let unknown =
        create(json!({"dataProductId": "p9", "dataProductVersion": "1.0.0", "stage": "dev"})).await;
    assert!(unknown
        .assert_error(422, "42201")
        .contains("version 1.0.0 of product p9 does not exist"));
    let stage =
        create(json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "prod"}))
            .await;
    let message = stage.assert_error(422, "42201");
    assert!(
        message.contains("stage prod is not defined") && message.contains("dev, empty"),
        "{message}"
    );
    let empty =
        create(json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "empty"}))
            .await;
    assert!(empty.assert_error(422, "42201").contains("has no tasks"));
    let array = create(json!([1])).await;
    assert!(array.assert_error(422, "42201").contains("JSON object"));
    assert!(
        app.get(&format!("{DEVOPS}/activities"))
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing half-written"
    );
    app.stop().await;
}

on_both_backends!(bad_placeholder_references_are_422_listing_each);
async fn bad_placeholder_references_are_422_listing_each(db: TestDb) {
    let (app, _executor) = app(&db).await;
    let lifecycle = json!({
        "dev": [
            fake_task("a", json!({"params": {"own": "${dev.results.task1.x}", "later": "${dev.results.task2.y}"}})),
            fake_task("b", json!({"url": "${staging.results.task1.url}", "broken": "${dev.results"}))
        ]
    });
    app.put_descriptor("p2", "1.0.0", &descriptor(lifecycle))
        .await;
    let answer = app.create_activity("p2", "1.0.0", "dev", false).await;
    let message = answer.assert_error(422, "42201");
    assert!(
        message.starts_with("4 bad placeholder references"),
        "{message}"
    );
    for expected in [
        "task1.configurations.params.own",
        "task1.configurations.params.later",
        "staging",
        "task2.configurations.broken",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
    app.stop().await;
}

on_both_backends!(a_second_planned_activity_for_a_stage_is_422);
async fn a_second_planned_activity_for_a_stage_is_422(db: TestDb) {
    let (app, _executor) = app(&db).await;
    let first = app
        .create_activity("p1", "1.0.0", "dev", false)
        .await
        .json();
    let second = app.create_activity("p1", "1.0.0", "dev", false).await;
    assert!(second
        .assert_error(422, "42202")
        .contains(&format!("activity {}", first["id"])));
    app.stop().await;
}

on_both_backends!(api_tokens_guard_the_api_but_not_callbacks);
async fn api_tokens_guard_the_api_but_not_callbacks(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.auth.api_tokens = vec!["team-token".into()];
    let app = spawn_app(settings).await;
    let path = format!("{DEVOPS}/activities");
    app.get(&path).await.assert_error(401, "40101");
    app.send("GET", &path, None, &[("Authorization", "Bearer wrong")])
        .await
        .assert_error(401, "40101");
    let auth = [("Authorization", "Bearer team-token")];
    assert_eq!(app.send("GET", &path, None, &auth).await.status, 200);
    let descriptor = descriptor(fake_stage(&["a"])).to_string();
    let put = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/p1/versions/1.0.0",
            Some(("application/json", descriptor)),
            &auth,
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let body =
        json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"}).to_string();
    let created = app
        .send(
            "POST",
            &format!("{path}?startAfterCreation=true"),
            Some(("application/json", body)),
            &auth,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let task = app.dispatched(&executor, 1).await;
    assert_eq!(
        app.call_back(&task.callback_ref, None).await.status,
        200,
        "pipelines only have their callbackRef"
    );
    assert_eq!(
        app.get("/health/live").await.status,
        200,
        "probes need no token"
    );
    app.stop().await;
}

#[actix_web::test]
async fn unknown_routes_get_the_envelope_too() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let app = spawn_app(test_settings(&db, None)).await;
    app.get(&format!("{DEVOPS}/nothing-here"))
        .await
        .assert_error(404, "40400");
    app.stop().await;
}

on_both_backends!(remote_registry_errors_map_to_odm_codes);
async fn remote_registry_errors_map_to_odm_codes(db: TestDb) {
    let registry = FakeRegistry::start().await;
    let executor = FakeExecutor::start().await;
    registry.insert("p1", "1.0.0", descriptor(fake_stage(&["a"])));
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(registry.address.clone());
    let app = spawn_app(settings).await;
    assert_eq!(
        app.create_activity("p1", "1.0.0", "dev", false)
            .await
            .status,
        201
    );
    assert_eq!(registry.queries(), vec!["format=normalized".to_owned()]);
    let absent = app.create_activity("p1", "9.9.9", "dev", false).await;
    assert!(absent
        .assert_error(422, "42201")
        .contains("version 9.9.9 of product p1 does not exist"));
    registry.answer_with(500);
    app.create_activity("p1", "1.0.0", "dev", false)
        .await
        .assert_error(502, "50250");
    let embedded = app.get("/api/v1/pp/registry/products/p1/versions").await;
    embedded.assert_error(404, "40400");
    app.stop().await;

    let mut settings = test_settings(&db, Some(&executor.address));
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(format!("http://127.0.0.1:{}", refused_port()));
    let app = spawn_app(settings).await;
    app.create_activity("p1", "1.0.0", "dev", false)
        .await
        .assert_error(503, "50050");
    app.stop().await;
}

on_both_backends!(a_database_failure_is_a_generic_500);
async fn a_database_failure_is_a_generic_500(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    // Break the database under the running service.
    let direct = odm_devops::db::Db::connect(&db.url, 1).unwrap();
    direct
        .write(|conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query("DROP TABLE lifecycles").execute(conn)?;
            Ok::<_, odm_devops::db::DbError>(())
        })
        .await
        .unwrap();
    let answer = app.get(&format!("{DEVOPS}/lifecycles")).await;
    let message = answer.assert_error(500, "50001");
    assert!(
        !message.contains("lifecycles") && !message.contains("table"),
        "nothing internal: {message}"
    );
    assert!(
        !answer.text.to_lowercase().contains("sql"),
        "{}",
        answer.text
    );
    app.stop().await;
}

on_both_backends!(nul_characters_are_refused_before_the_database);
async fn nul_characters_are_refused_before_the_database(db: TestDb) {
    // Found with hostile inputs: PostgreSQL cannot store NUL in text, so these were 500s there
    // (reads too) while SQLite took them. Both backends now answer alike.
    let (app, _executor) = app(&db).await;
    for (path, code) in [
        (format!("{DEVOPS}/activities?dataProductId=a%00b"), "40001"),
        (format!("{DEVOPS}/tasks?executor=%00"), "40001"),
        (format!("{DEVOPS}/lifecycles/a%00b"), "40000"),
        (format!("{DEVOPS}/lifecycles/p1/1.0%00/current"), "40000"),
        (
            "/api/v1/pp/registry/products/a%00b/versions".to_owned(),
            "40000",
        ),
        (
            "/api/v1/pp/registry/products/p1/versions/1%00".to_owned(),
            "40000",
        ),
    ] {
        let message = app.get(&path).await.assert_error(400, code);
        assert!(message.contains("NUL"), "{path}: {message}");
    }
    let put = app
        .call(
            "PUT",
            "/api/v1/pp/registry/products/a%00b/versions/1",
            Some(&descriptor(json!({"dev": [{}]}))),
        )
        .await;
    put.assert_error(400, "40000");
    for lifecycle in [
        json!({"d\u{0}v": [{}]}),
        json!({"dev": [{"template": {"name": "a\u{0}"}}]}),
        json!({"dev": [{"template": {"name": "a", "description": "\u{0}"}}]}),
        json!({"dev": [{"service": {"$href": "{fa\u{0}ke}"}}]}),
    ] {
        let put = app
            .call(
                "PUT",
                "/api/v1/pp/registry/products/p2/versions/1",
                Some(&descriptor(lifecycle.clone())),
            )
            .await;
        let message = put.assert_error(422, "42211");
        assert!(message.contains("NUL"), "{lifecycle}: {message}");
    }
    let create = app
        .call(
            "POST",
            &format!("{DEVOPS}/activities"),
            Some(
                &json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "d\u{0}v"}),
            ),
        )
        .await;
    assert!(create
        .assert_error(422, "42201")
        .contains("stage contains a NUL"));
    assert_eq!(
        app.get(&format!("{DEVOPS}/activities")).await.json(),
        json!([])
    );
    app.stop().await;
}
