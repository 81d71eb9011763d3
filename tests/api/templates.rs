//! Templates given by reference: resolved through a remote ODM registry when the activity is
//! created, refused precisely when they cannot be.

use serde_json::{json, Value};

use crate::fakes::{FakeExecutor, FakeRegistry};
use crate::helpers::*;
use crate::on_both_backends;

const TEMPLATES: &str = "/api/v1/pp/registry/templates";

/// ODM's answer to `GET …/templates/{id}`: the definition is a JSON text.
fn template_answer(id: &str, definition: Value) -> Value {
    json!({
        "id": id, "fullyQualifiedName": format!("urn:org.opendatamesh:templates:{id}:1.0.0"),
        "entityType": "template", "name": id, "version": "1.0.0",
        "specification": "odm-http", "specificationVersion": "1.0.0",
        "definitionMediaType": "application/json", "definition": definition.to_string()
    })
}

/// The descriptor as ODM's registry returns it: the task's definition points at the registry's
/// templates endpoint, its rawContent keeps the reference the author wrote.
fn normalized_with_references(registry: &str) -> Value {
    let authored = json!({"service": {"$href": "{fake}"},
                          "template": {"name": "deploy", "definition": {"$ref": "template.json"}}});
    descriptor(json!({
        "stageNames": ["dev"],
        "tasksInfo": [
            {"stageName": "dev", "order": 1, "service": {"$href": "{fake}"},
             "template": {"name": "deploy", "definition": {
                 "$ref": format!("{registry}{TEMPLATES}/tpl-1"), "originalRef": "template.json",
                 "mediaType": "application/json"}},
             "rawContent": authored.to_string()},
            {"stageName": "dev", "order": 2, "service": {"$href": "{fake}"},
             "template": {"$ref": "tpl-1"}}
        ]
    }))
}

fn remote_settings(
    db: &TestDb,
    registry: &FakeRegistry,
    executor: &FakeExecutor,
) -> odm_devops::config::Settings {
    let mut settings = test_settings(db, Some(&executor.address));
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(registry.address.clone());
    settings
}

fn stored_template(task: &Value) -> Value {
    serde_json::from_str(task["template"].as_str().expect("a template")).unwrap()
}

on_both_backends!(a_template_by_reference_is_resolved_once_and_kept);
async fn a_template_by_reference_is_resolved_once_and_kept(db: TestDb) {
    let registry = FakeRegistry::start().await;
    let executor = FakeExecutor::start().await;
    registry.insert("p1", "1.0.0", normalized_with_references(&registry.address));
    registry.insert_template(
        "tpl-1",
        template_answer("tpl-1", json!({"pipeline": "deploy", "v": 1})),
    );
    let app = spawn_stepped_app(remote_settings(&db, &registry, &executor)).await;

    let created = app.create_activity("p1", "1.0.0", "dev", false).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["id"].as_i64().unwrap();
    let tasks = app.tasks_of(id).await;
    assert_eq!(tasks[0]["name"], "deploy");
    assert_eq!(tasks[1]["name"], "task2", "the §3 name rules still apply");
    for task in &tasks {
        assert_eq!(stored_template(task), json!({"pipeline": "deploy", "v": 1}));
    }
    assert_eq!(
        registry.template_requests(),
        ["tpl-1"],
        "one request for the two tasks that share the template"
    );

    // The activity keeps its snapshot: a later change in the registry does not reach it.
    registry.insert_template(
        "tpl-1",
        template_answer("tpl-1", json!({"pipeline": "deploy", "v": 2})),
    );
    let started = app.start_planned(id).await;
    assert_eq!(started.status, 200, "{started:?}");
    let received = app.dispatched(&executor, 1).await;
    assert_eq!(received.template, json!({"pipeline": "deploy", "v": 1}));
    assert_eq!(registry.template_requests().len(), 1);
    app.stop().await;
}

/// A task on the fake executor whose template is the reference.
fn task_by_reference(reference: &str) -> Value {
    json!({"service": {"$href": "{fake}"},
           "template": {"name": "deploy", "definition": {"$ref": reference}}})
}

/// Creating an activity of the product's `dev` stage is refused so; the message.
async fn refusal(app: &TestApp, product: &str, status: u16, code: &str) -> String {
    app.create_activity(product, "1.0.0", "dev", false)
        .await
        .assert_error(status, code)
}

on_both_backends!(unresolvable_templates_are_refused_naming_the_task_and_reference);
async fn unresolvable_templates_are_refused_naming_the_task_and_reference(db: TestDb) {
    let registry = FakeRegistry::start().await;
    let executor = FakeExecutor::start().await;
    let missing = format!("{}{TEMPLATES}/nope", registry.address);
    let first = fake_task("first", json!({}));
    let dev = json!({"dev": [first, task_by_reference(&missing)]});
    registry.insert("missing", "1.0.0", descriptor(dev));
    let elsewhere = "https://git.example.com/pipelines/template.json";
    let dev = json!({"dev": [task_by_reference(elsewhere)]});
    registry.insert("elsewhere", "1.0.0", descriptor(dev));
    for (product, definition) in [
        ("array", json!([1, 2])),
        ("placeholder", json!({"ip": "${dev.results.task1.ip}"})),
        ("ok", json!({"pipeline": "ok"})),
    ] {
        let id = format!("tpl-{product}");
        let dev = json!({"dev": [task_by_reference(&id)]});
        registry.insert(product, "1.0.0", descriptor(dev));
        registry.insert_template(&id, template_answer(&id, definition));
    }
    let mut settings = remote_settings(&db, &registry, &executor);
    settings.registry.timeout_ms = 300;
    let app = spawn_app(settings).await;

    assert_eq!(
        refusal(&app, "missing", 422, "42201").await,
        format!(
            "the template `{missing}` of task 2 (deploy) of stage dev does not exist: \
             the registry has no template nope"
        )
    );
    assert_eq!(
        refusal(&app, "elsewhere", 422, "42201").await,
        format!(
            "the template `{elsewhere}` of task 1 (deploy) of stage dev does not name a template \
             of the registry: give its id or its URL …/templates/{{id}}"
        )
    );
    assert_eq!(
        refusal(&app, "array", 422, "42201").await,
        "the template `tpl-array` of task 1 (deploy) of stage dev is not usable: \
         its `definition` must hold a JSON object, found an array"
    );
    let message = refusal(&app, "placeholder", 422, "42201").await;
    assert!(
        message.contains("${dev.results.task1.ip}"),
        "the resolved definition is checked like an inline one: {message}"
    );
    // The caller hears which service and what happened; its URL and its answer go to the log.
    registry.answer_templates_with(Some(500));
    let message = refusal(&app, "ok", 502, "50250").await;
    assert_eq!(
        message,
        "the ODM registry answered 500 while resolving the template `tpl-ok` of task 1 (deploy) \
         of stage dev"
    );
    registry.answer_templates_with(None);
    registry.delay_templates(1500);
    let message = refusal(&app, "ok", 503, "50050").await;
    assert_eq!(
        message,
        "the ODM registry is unreachable while resolving the template `tpl-ok` of task 1 \
         (deploy) of stage dev"
    );
    assert_eq!(
        app.get(&format!("{DEVOPS}/activities")).await.json(),
        json!([]),
        "nothing was created"
    );
    app.stop().await;
}

on_both_backends!(the_embedded_registry_refuses_templates_by_reference);
async fn the_embedded_registry_refuses_templates_by_reference(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let dev = json!({"dev": [{"template": {"$ref": "tpl-1"}}]});
    app.put_descriptor("p1", "1.0.0", &descriptor(dev)).await;
    assert_eq!(
        refusal(&app, "p1", 422, "42201").await,
        "the template `tpl-1` of task 1 (task1) of stage dev cannot be resolved: templates by \
         reference are resolved only through a remote ODM registry (`registry.mode: remote`), \
         and this service uses its embedded one"
    );
    app.stop().await;
}

/// A registry that answers HTTP/1.0 and closes each connection after its answer: the template's
/// GET, right after the descriptor's, still reaches it. It used to go out on the pooled
/// connection the registry had just closed, and be answered 503 50050 "unreachable".
#[actix_web::test]
async fn a_registry_that_closes_each_connection_is_still_reached() {
    use std::io::{Read, Write};
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let executor = FakeExecutor::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let descriptor = normalized_with_references(&address).to_string();
    let template = template_answer("tpl-1", json!({"pipeline": "deploy"})).to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let is_template = String::from_utf8_lossy(&request).contains(TEMPLATES);
            let body = if is_template { &template } else { &descriptor };
            let answer = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    });
    let mut settings = test_settings(&db, Some(&executor.address));
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(address);
    let app = spawn_app(settings).await;
    for patch in 0..100 {
        let version = format!("1.0.{patch}");
        let answer = app.create_activity("p1", &version, "dev", false).await;
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    app.stop().await;
}
