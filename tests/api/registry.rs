//! Descriptors: the embedded registry, preloading, and ODM's normalized shape from a remote one.

use serde_json::{json, Value};

use crate::fakes::{FakeExecutor, FakeRegistry};
use crate::helpers::*;
use crate::on_both_backends;

const REGISTRY: &str = "/api/v1/pp/registry/products";

on_both_backends!(the_embedded_registry_stores_validated_descriptors);
async fn the_embedded_registry_stores_validated_descriptors(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let d1 = descriptor(json!({"dev": [{"template": {"name": "a"}}]}));
    let put = app
        .call("PUT", &format!("{REGISTRY}/p1/versions/1.0.0"), Some(&d1))
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let again = app
        .call("PUT", &format!("{REGISTRY}/p1/versions/1.0.0"), Some(&d1))
        .await;
    assert_eq!(again.status, 200, "replacing is not creating");
    app.call("PUT", &format!("{REGISTRY}/p1/versions/0.9.0"), Some(&d1))
        .await;
    assert_eq!(
        app.get(&format!("{REGISTRY}/p1/versions/1.0.0"))
            .await
            .json(),
        d1
    );
    assert_eq!(
        app.get(&format!("{REGISTRY}/p1/versions")).await.json(),
        json!(["0.9.0", "1.0.0"])
    );
    app.get(&format!("{REGISTRY}/p1/versions/2.0.0"))
        .await
        .assert_error(404, "40421");
    let invalid = app
        .call(
            "PUT",
            &format!("{REGISTRY}/p1/versions/2.0.0"),
            Some(&descriptor(json!({"dev": {"not": "a list"}}))),
        )
        .await;
    assert!(invalid
        .assert_error(422, "42211")
        .contains("lifecycleInfo.dev must be a list"));
    let no_lifecycle = app
        .call(
            "PUT",
            &format!("{REGISTRY}/p1/versions/2.0.0"),
            Some(&json!({"info": {}})),
        )
        .await;
    no_lifecycle.assert_error(422, "42211");
    // A `+` sent encoded, as URL encoders write it (semver build metadata), is a `+`.
    let put = app
        .call(
            "PUT",
            &format!("{REGISTRY}/p1/versions/2.0.0%2Bb1"),
            Some(&d1),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(
        app.get(&format!("{REGISTRY}/p1/versions")).await.json(),
        json!(["0.9.0", "1.0.0", "2.0.0+b1"])
    );
    for spelt in ["2.0.0+b1", "2.0.0%2Bb1", "2.0.0%2bb1"] {
        let read = app.get(&format!("{REGISTRY}/p1/versions/{spelt}")).await;
        assert_eq!(read.json(), d1, "{spelt}");
    }
    app.stop().await;
}

on_both_backends!(a_planned_activity_keeps_its_snapshot_of_the_descriptor);
async fn a_planned_activity_keeps_its_snapshot_of_the_descriptor(db: TestDb) {
    let (app, executor) = stepped_app_with_fake(&db).await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(json!({"dev": [fake_task("before", json!({"v": 1}))]})),
    )
    .await;
    let id = app.planned_activity("p1", "1.0.0", "dev").await;
    app.put_descriptor(
        "p1",
        "1.0.0",
        &descriptor(
            json!({"dev": [fake_task("after", json!({"v": 2})), fake_task("x", json!({}))]}),
        ),
    )
    .await;
    let started = app.start_planned(id).await;
    assert_eq!(started.status, 200, "{started:?}");
    let received = app.dispatched(&executor, 1).await;
    assert_eq!(received.template, json!({"pipeline": "before"}));
    assert_eq!(received.configurations["v"], 1);
    assert_eq!(app.tasks_of(id).await.len(), 1);
    app.stop().await;
}

on_both_backends!(numbers_are_stored_exactly_as_sent);
async fn numbers_are_stored_exactly_as_sent(db: TestDb) {
    // Found by the generated placeholder tests: serde_json's default float parsing may land one
    // step away from the number written, so 1171.4285714285713 came back as 1171.428571428571.
    let app = spawn_stepped_app(test_settings(&db, None)).await;
    let numbers = r#"{"x":1171.4285714285713,"y":0.30000000000000004,"z":2.2250738585072014e-308}"#;
    let body = format!(
        r#"{{"internalComponents":{{"lifecycleInfo":{{"dev":[{{"template":{{"name":"a","definition":{numbers}}},"configurations":{numbers}}}]}}}}}}"#
    );
    let path = format!("{REGISTRY}/p1/versions/1.0.0");
    let put = app
        .send("PUT", &path, Some(("application/json", body)), &[])
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let stored = app.get(&path).await.text;
    assert!(stored.contains(numbers), "{stored}");
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    app.wait_for_activity(id, "PROCESSED").await;
    let task = app.tasks_of(id).await.remove(0);
    assert_eq!(task["template"], numbers);
    assert!(
        task["configurations"]
            .as_str()
            .unwrap()
            .contains(&numbers[1..numbers.len() - 1]),
        "{task}"
    );
    app.stop().await;
}

on_both_backends!(normalized_descriptors_from_an_odm_registry_are_understood);
async fn normalized_descriptors_from_an_odm_registry_are_understood(db: TestDb) {
    let registry = FakeRegistry::start().await;
    let executor = FakeExecutor::start().await;
    let fixture = format!(
        "{}/tests/fixtures/odm-dpd-multiple-tasks-normalized.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut normalized: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    // Point the fixture's tasks at the fake executor (ODM's own name for it is azure-devops).
    let text = normalized.to_string().replace("azure-devops", "fake");
    normalized = serde_json::from_str(&text).unwrap();
    registry.insert("dpd", "1.0.0", normalized);
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(registry.address.clone());
    let app = spawn_stepped_app(settings).await;

    let prod = app.create_activity("dpd", "1.0.0", "prod", true).await;
    assert_eq!(prod.status, 201, "{prod:?}");
    let prod_id = prod.json()["id"].as_i64().unwrap();
    let tasks = app.tasks_of(prod_id).await;
    assert_eq!(
        tasks
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["testPipeline", "testPipeline2"]
    );
    let received = app.dispatched(&executor, 1).await;
    assert_eq!(
        received.template,
        json!({"organization": "andreagioia", "project": "opendatamesh", "pipelineId": "3", "branch": "main"}),
        "the definition comes from rawContent"
    );
    assert_eq!(received.configurations["stagesToSkip"], json!([]));
    app.activity_action(prod_id, "ABORT").await;

    let wrong = app
        .create_activity("dpd", "1.0.0", "stage-wrong-executor", true)
        .await
        .json();
    let wrong_id = wrong["id"].as_i64().unwrap();
    app.wait_for_activity(wrong_id, "FAILED").await;
    assert_eq!(
        app.tasks_of(wrong_id).await[0]["errors"],
        "Executor [wrong-executor] not supported"
    );
    let noservice = app
        .create_activity("dpd", "1.0.0", "stage-noservice", true)
        .await
        .json();
    app.wait_for_activity(noservice["id"].as_i64().unwrap(), "PROCESSED")
        .await;
    app.stop().await;
}

#[actix_web::test]
async fn descriptors_in_the_preload_folder_are_stored_at_start() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let dir = std::env::temp_dir().join(format!("odm-preload-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut d = descriptor(json!({"dev": [{"template": {"name": "a"}}]}));
    d["info"] = json!({"id": "urn:dp:sales", "version": "3.1.0"});
    std::fs::write(dir.join("sales.json"), d.to_string()).unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let mut settings = test_settings(&db, None);
    settings.registry.preload_dir = Some(dir.display().to_string());
    let app = spawn_app(settings).await;
    assert_eq!(
        app.get(&format!("{REGISTRY}/urn%3Adp%3Asales/versions"))
            .await
            .json(),
        json!(["3.1.0"])
    );
    app.stop().await;

    std::fs::write(dir.join("broken.json"), "{").unwrap();
    let mut settings = test_settings(&db, None);
    settings.registry.preload_dir = Some(dir.display().to_string());
    let refused = actix_web::rt::spawn(async move {
        odm_devops::app::Application::build(settings)
            .await
            .err()
            .map(|e| e.to_string())
    });
    let message = refused
        .await
        .unwrap()
        .expect("a broken descriptor stops the start");
    assert!(
        message.contains("broken.json") && message.contains("not JSON"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
