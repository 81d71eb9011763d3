//! The perimeter (DESIGN §14), attacked over HTTP: every hostile request of issue 9 that the
//! perimeter answers, each with what it must not change.

use serde_json::{json, Value};

use crate::fakes::{FakeExecutor, FakeRegistry, Received};
use crate::helpers::*;
use crate::on_both_backends;

const TOKEN: &str = "team-token";
const AUTH: (&str, &str) = ("Authorization", "Bearer team-token");

/// A service with `auth.api_tokens` set, a descriptor `p1` (dev: one task on the fake
/// executor) and one PLANNED activity of it; the activity's id.
async fn guarded(db: &TestDb, executor: &FakeExecutor) -> (TestApp, i64) {
    let mut settings = test_settings(db, Some(&executor.address));
    settings.auth.api_tokens = vec![TOKEN.into()];
    let app = spawn_app(settings).await;
    let descriptor = descriptor(json!({"dev": [fake_task("a", json!({}))]}));
    let put = as_team(
        &app,
        "PUT",
        "/api/v1/pp/registry/products/p1/versions/1.0.0",
        Some(&descriptor),
    )
    .await;
    assert_eq!(put.status, 201, "{put:?}");
    let body = json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"});
    let created = as_team(&app, "POST", &format!("{DEVOPS}/activities"), Some(&body)).await;
    assert_eq!(created.status, 201, "{created:?}");
    (app, created.json()["id"].as_i64().unwrap())
}

/// A request with the API token.
async fn as_team(app: &TestApp, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let body = body.map(|b| ("application/json", b.to_string()));
    app.send(method, path, body, &[AUTH]).await
}

/// The tasks of activity `id`, read with the API token.
async fn tasks_of(app: &TestApp, id: i64) -> Vec<Value> {
    let path = format!("{DEVOPS}/tasks?activityId={id}");
    let answer = as_team(app, "GET", &path, None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json().as_array().unwrap().clone()
}

async fn activities(app: &TestApp) -> Vec<Value> {
    let answer = as_team(app, "GET", &format!("{DEVOPS}/activities"), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json().as_array().unwrap().clone()
}

/// The same route written as an attacker would: each percent-encoded, doubled-slash,
/// dot-segment or case variant of `path` (which starts with `/api/`).
fn variants(path: &str) -> Vec<String> {
    let rest = path.strip_prefix("/api/").unwrap();
    let (route, query) = rest.split_once('?').map_or((rest, ""), |(r, q)| (r, q));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let last = route.rsplit_once('/').map_or("", |(_, last)| last);
    let first_char_encoded = format!("%{:02X}", last.as_bytes()[0]);
    let cut = route.len() - last.len();
    [
        format!("/%61pi/{route}"),
        format!("/%61%70%69/{route}"),
        format!("/api/{}{first_char_encoded}{}", &route[..cut], &last[1..]),
        format!("//api/{route}"),
        format!("/api//{route}"),
        format!(
            "/api/{}/{last}",
            route[..cut].replace('/', "//").trim_end_matches('/')
        ),
        format!("/api/./{route}"),
        format!("/api/x/../{route}"),
        format!("/api/%2e/{route}"),
        format!("/api/x/%2e%2e/{route}"),
        format!("/API/{route}"),
        format!("/Api/{route}"),
        format!("/api/{}", route.to_ascii_uppercase()),
        format!("/api/{route}/"),
        format!("/api/{route}%2F"),
        format!("/api%2F{route}"),
        format!("/api/{route};x"),
    ]
    .into_iter()
    .map(|p| format!("{p}{query}"))
    .collect()
}

on_both_backends!(hostile_spellings_of_a_route_never_pass_without_a_token);
async fn hostile_spellings_of_a_route_never_pass_without_a_token(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let (app, id) = guarded(&db, &executor).await;
    let descriptor = descriptor(json!({"dev": [fake_task("b", json!({}))]})).to_string();
    let create = json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"});
    let attempts = [
        ("GET", format!("{DEVOPS}/activities"), None),
        (
            "PUT",
            "/api/v1/pp/registry/products/p2/versions/1.0.0".to_owned(),
            Some(descriptor),
        ),
        (
            "POST",
            format!("{DEVOPS}/activities?startAfterCreation=true"),
            Some(create.to_string()),
        ),
        (
            "PATCH",
            format!("{DEVOPS}/activities/{id}/status?action=START"),
            None,
        ),
        ("DELETE", format!("{DEVOPS}/activities/{id}"), None),
    ];
    let mut tried = 0;
    for (method, path, body) in &attempts {
        for hostile in std::iter::once(path.clone()).chain(variants(path)) {
            let body = body.clone().map(|b| ("application/json", b));
            let answer = app.send(method, &hostile, body, &[]).await;
            assert!(
                answer.status == 401 || answer.status == 404,
                "{method} {hostile} without a token: {answer:?}"
            );
            tried += 1;
        }
    }
    assert!(tried > 80, "{tried}");
    // Nothing changed: no descriptor stored, the activity still PLANNED, nothing sent.
    let p2 = as_team(
        &app,
        "GET",
        "/api/v1/pp/registry/products/p2/versions/1.0.0",
        None,
    )
    .await;
    assert_eq!(p2.status, 404, "{p2:?}");
    let all = activities(&app).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["status"], "PLANNED");
    assert!(executor.received().is_empty());
    // With the token, a spelling the router decodes to the route reaches it, under the same rule.
    let decoded = app
        .send("GET", "/%61pi/v1/pp/devops/%61ctivities", None, &[AUTH])
        .await;
    assert_eq!(decoded.status, 200, "{decoded:?}");
    assert_eq!(decoded.json().as_array().unwrap().len(), 1);
    app.stop().await;
}

/// `guarded`, its activity started: the service, the activity's id and the task it sent.
async fn guarded_and_started(db: &TestDb, executor: &FakeExecutor) -> (TestApp, i64, Received) {
    let (app, id) = guarded(db, executor).await;
    let start = format!("{DEVOPS}/activities/{id}/status?action=START");
    assert_eq!(as_team(&app, "PATCH", &start, None).await.status, 200);
    let task = executor.wait_for(1).await.remove(0);
    (app, id, task)
}

on_both_backends!(a_callback_token_can_only_stop_its_task);
async fn a_callback_token_can_only_stop_its_task(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let (app, id, task) = guarded_and_started(&db, &executor).await;
    let token = task
        .callback_ref
        .split_once("&token=")
        .unwrap()
        .1
        .to_owned();
    let status = format!("{DEVOPS}/tasks/{}/status", task.id);
    for (method, path) in [
        // The exemption once matched `action=STOP` in the raw query; the handler read the last.
        (
            "PATCH",
            format!("{status}?action=STOP&action=ABORT&token={token}"),
        ),
        (
            "PATCH",
            format!("{status}?action=ABORT&action=STOP&token={token}"),
        ),
        (
            "PATCH",
            format!("{status}?action=STOP&%61ction=ABORT&token={token}"),
        ),
    ] {
        let answer = app.send(method, &path, None, &[]).await;
        assert!(
            answer.assert_error(400, "40001").contains("\"action\""),
            "{answer:?}"
        );
    }
    for (method, path) in [
        ("PATCH", format!("{status}?action=ABORT&token={token}")),
        ("POST", format!("{status}?action=ABORT&token={token}")),
        ("PATCH", format!("{status}?action=ABORT")),
        ("PATCH", format!("{status}?action=START&token={token}")),
        ("PATCH", format!("{status}?token={token}")),
        ("GET", format!("{status}?action=STOP&token={token}")),
        (
            "GET",
            format!("{DEVOPS}/tasks/{}?action=STOP&token={token}", task.id),
        ),
        (
            "DELETE",
            format!("{DEVOPS}/activities/{id}?action=STOP&token={token}"),
        ),
        (
            "PATCH",
            format!("{DEVOPS}/activities/{id}/status?action=STOP&token={token}"),
        ),
    ] {
        let answer = app.send(method, &path, None, &[]).await;
        let message = answer.assert_error(401, "40101");
        assert!(message.contains("API token"), "{method} {path}: {message}");
    }
    let tasks = tasks_of(&app, id).await;
    assert_eq!(tasks[0]["status"], "PROCESSING", "nothing aborted");
    assert_eq!(activities(&app).await[0]["status"], "PROCESSING");

    // An unknown task is refused exactly like a wrong token: which ids exist stays unknown.
    let unknown = app
        .send(
            "PATCH",
            &format!("{DEVOPS}/tasks/987654/status?action=STOP&token={token}"),
            None,
            &[],
        )
        .await
        .assert_error(401, "40101");
    let forged = app
        .send(
            "PATCH",
            &format!("{status}?action=STOP&token=x{token}"),
            None,
            &[],
        )
        .await
        .assert_error(401, "40101");
    assert_eq!(
        unknown.replace("987654", "ID"),
        forged.replace(&task.id.to_string(), "ID")
    );
    let no_token = |task: i64| format!("{DEVOPS}/tasks/{task}/status?action=STOP");
    let unknown = app
        .send("PATCH", &no_token(987654), None, &[])
        .await
        .assert_error(401, "40101");
    let known = app
        .send("PATCH", &no_token(task.id), None, &[])
        .await
        .assert_error(401, "40101");
    assert_eq!(unknown, known);

    let done = app.call_back(&task.callback_ref, None).await;
    assert_eq!(done.status, 200, "the callbackRef still works: {done:?}");
    app.stop().await;
}

#[actix_web::test]
async fn every_route_but_the_public_ones_needs_the_api_token() {
    let (_db, app) = guarded_with_hook_secret().await;
    let doc = as_team(&app, "GET", &format!("{DEVOPS}/v3/api-docs"), None)
        .await
        .json();
    let mut operations = vec![];
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    for extra in [
        "/ui/",
        "/ui/app.js",
        "/ui/common.js",
        "/ui/board.js",
        "/ui/tasks.js",
        "/ui/dryrun.js",
        "/nothing/here",
        "/api/v1/pp/devops/nothing",
    ] {
        operations.push(("GET".into(), extra.into()));
    }
    for (method, path) in [
        ("PUT", "/api/v1/pp/devops/activities"),
        ("HEAD", "/health/live"),
    ] {
        operations.push((method.into(), path.into()));
    }
    operations.push(("OPTIONS".into(), format!("{DEVOPS}/activities")));
    let public = [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/ui",
        "/ui/",
        "/ui/app.js",
        "/ui/common.js",
        "/ui/board.js",
        "/ui/tasks.js",
        "/ui/dryrun.js",
    ];
    let mut protected = 0;
    for (method, path) in &operations {
        let concrete = path
            .replace("{id}", "1")
            .replace("{product}", "p")
            .replace("{version}", "v")
            .replace("{executor}", "azure-devops");
        let answer = app.send(method, &concrete, None, &[]).await;
        if method == "GET" && public.contains(&path.as_str()) {
            assert_eq!(answer.status, 200, "{method} {path} is public: {answer:?}");
        } else if path.ends_with("/hooks/{executor}") {
            // Its own credential instead: the executor's service hook secret.
            let message = answer.assert_error(401, "40101");
            assert!(message.contains("service_hook_secret"), "{message}");
            protected += 1;
        } else {
            assert_eq!(
                answer.status, 401,
                "{method} {path} needs the API token: {answer:?}"
            );
            if method != "HEAD" {
                assert!(answer.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("API token"));
            }
            protected += 1;
        }
    }
    assert!(protected >= 20, "{protected}");
    app.stop().await;
}

/// `/hooks/{executor}` of an executor without a hook secret is no route, and is guarded as one:
/// without the API token it answers what any unknown path answers, so which executors have a
/// hook secret stays unknown to a caller without credentials.
#[actix_web::test]
async fn a_hook_without_a_secret_is_guarded_as_a_path_without_a_route() {
    let (_db, app) = guarded_with_hook_secret().await;
    let event = ("application/json", json!({"eventType": "x"}).to_string());
    let unknown = app
        .send(
            "POST",
            "/api/v1/pp/devops/hookz/x",
            Some(event.clone()),
            &[],
        )
        .await
        .assert_error(401, "40101");
    for executor in ["gitlab", "fake", "AZURE-DEVOPS", "azure-devops%2F"] {
        let path = format!("{DEVOPS}/hooks/{executor}");
        let answer = app.send("POST", &path, Some(event.clone()), &[]).await;
        assert_eq!(answer.assert_error(401, "40101"), unknown, "{executor}");
        let with_token = app.send("POST", &path, Some(event.clone()), &[AUTH]).await;
        with_token.assert_error(404, "40400");
    }
    // The executor with a secret, however its name is spelt: its own credential, by name.
    for executor in ["azure-devops", "azure%2Ddevops"] {
        let path = format!("{DEVOPS}/hooks/{executor}");
        let hooked = app.send("POST", &path, Some(event.clone()), &[]).await;
        let message = hooked.assert_error(401, "40101");
        assert!(
            message.contains("service_hook_secret"),
            "{executor}: {message}"
        );
    }
    app.stop().await;
}

// A callback is refused for its token before anything is said of its body: without the
// callbackRef nobody learns how the route reads what it is sent.
on_both_backends!(a_callback_s_token_is_checked_before_its_body);
async fn a_callback_s_token_is_checked_before_its_body(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let (app, id, task) = guarded_and_started(&db, &executor).await;
    let status = format!("{DEVOPS}/tasks/{}/status?action=STOP", task.id);
    let bad_bodies = [
        json!({"status": "DONE"}).to_string(),
        json!([1]).to_string(),
        "{not json".to_owned(),
    ];
    for body in &bad_bodies {
        for path in [status.clone(), format!("{status}&token=wrong")] {
            let answer = app
                .send(
                    "PATCH",
                    &path,
                    Some(("application/json", body.clone())),
                    &[],
                )
                .await;
            answer.assert_error(401, "40101");
        }
    }
    // With its token, the body is what is wrong, and nothing changed.
    let with_token = |body: &String| {
        let body = Some(("application/json", body.clone()));
        app.send("PATCH", &task.callback_ref, body, &[])
    };
    let message = with_token(&bad_bodies[0]).await.assert_error(422, "42203");
    assert!(message.contains("PROCESSED or FAILED"), "{message}");
    let malformed = with_token(&bad_bodies[2]).await;
    assert_eq!(malformed.status, 400, "{malformed:?}");
    let tasks = tasks_of(&app, id).await;
    assert_eq!(tasks[0]["status"], "PROCESSING");
    assert_eq!(app.call_back(&task.callback_ref, None).await.status, 200);
    app.stop().await;
}

#[actix_web::test]
async fn no_token_beyond_loopback_only_on_purpose() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let mut settings = test_settings(&db, None);
    settings.server.bind = "0.0.0.0:0".into();
    let Err(refused) = odm_devops::app::Application::build(settings.clone()).await else {
        panic!("the service started on every interface without a token");
    };
    let message = refused.to_string();
    for way_out in ["ODM_DEVOPS__AUTH__API_TOKENS", "auth.anonymous: true"] {
        assert!(message.contains(way_out), "{message}");
    }
    let mut anonymous = settings.clone();
    anonymous.auth.anonymous = true;
    spawn_app(anonymous).await.stop().await;
    let mut with_token = settings;
    with_token.auth.api_tokens = vec![TOKEN.into()];
    spawn_app(with_token).await.stop().await;

    // The binary says it and exits, as the container would without its token.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_odm-devops"))
        .arg("serve")
        .env_clear()
        .env("ODM_DEVOPS__SERVER__BIND", "0.0.0.0:0")
        .env("ODM_DEVOPS__DATABASE__URL", &db.url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ODM_DEVOPS__AUTH__API_TOKENS"), "{stderr}");
}

on_both_backends!(registry_failures_tell_callers_which_service_not_its_url_or_answer);
async fn registry_failures_tell_callers_which_service_not_its_url_or_answer(db: TestDb) {
    let registry = FakeRegistry::start().await;
    registry.insert("p1", "1.0.0", descriptor(json!({"dev": [{}]})));
    registry.answer_with(500);
    let mut settings = test_settings(&db, None);
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    settings.registry.address = Some(registry.address.clone());
    let app = spawn_app(settings).await;
    let failed = app.create_activity("p1", "1.0.0", "dev", false).await;
    assert_eq!(
        failed.assert_error(502, "50250"),
        "the ODM registry answered 500"
    );
    // The port with its colon: bare, its digits can turn up in the answer's timestamp (they
    // did: port 41551 in 1796415510907).
    let port = format!(":{}", registry.address.rsplit(':').next().unwrap());
    for leak in ["registry trouble", "127.0.0.1", &port, "GET "] {
        assert!(!failed.text.contains(leak), "{leak} in {}", failed.text);
    }
    app.stop().await;

    let mut settings = test_settings(&db, None);
    settings.registry.mode = odm_devops::config::RegistryMode::Remote;
    let unused = refused_port();
    settings.registry.address = Some(format!("http://127.0.0.1:{unused}/internal-path"));
    let app = spawn_app(settings).await;
    let unreachable = app.create_activity("p1", "1.0.0", "dev", false).await;
    assert_eq!(
        unreachable.assert_error(503, "50050"),
        "the ODM registry is unreachable"
    );
    for leak in ["internal-path", &format!("127.0.0.1:{unused}"), "onnect"] {
        assert!(
            !unreachable.text.contains(leak),
            "{leak} in {}",
            unreachable.text
        );
    }
    app.stop().await;
}

/// The allowlist names real routes: each entry, requested as written, is answered by the route
/// of that pattern (the metrics count it under the pattern of the route that answered).
#[actix_web::test]
async fn every_route_that_needs_no_api_token_is_a_real_route() {
    use odm_devops::api::guard::{Access, NO_API_TOKEN};
    let (_db, app) = guarded_with_hook_secret().await;
    for (method, pattern, access) in NO_API_TOKEN {
        let mut path = pattern
            .replace("{id}", "1")
            .replace("{executor}", "azure-devops");
        if *access == Access::Callback {
            path.push_str("?action=STOP&token=x");
        }
        let answer = app.send(method, &path, None, &[]).await;
        let unrouted = answer.text.contains("\"40400\"");
        let refused_here = answer.status == 401 && answer.text.contains("API token");
        assert!(!unrouted && !refused_here, "{method} {pattern}: {answer:?}");
    }
    let metrics = app.get("/metrics").await.text;
    for (method, pattern, _) in NO_API_TOKEN {
        let label = format!("method=\"{method}\",route=\"{pattern}\"");
        assert!(metrics.contains(&label), "{label} in\n{metrics}");
    }
    app.stop().await;
}

/// A service on SQLite with `auth.api_tokens` and the `azure-devops` hook secret set (the
/// database is removed when the first value is dropped).
async fn guarded_with_hook_secret() -> (TestDb, TestApp) {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let mut settings = test_settings(&db, None);
    settings.auth.api_tokens = vec![TOKEN.into()];
    with_hook_secret(&mut settings);
    let app = spawn_app(settings).await;
    (db, app)
}

/// The service hook route of `azure-devops` exists only with its secret.
fn with_hook_secret(settings: &mut odm_devops::config::Settings) {
    use odm_devops::config::ExecutorSettings;
    if let Some(ExecutorSettings::AzureDevops(azure)) = settings.executors.get_mut("azure-devops") {
        azure.service_hook_secret = Some("hook-secret".into());
    }
}
