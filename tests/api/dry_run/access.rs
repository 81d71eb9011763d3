//! Who may ask for a dry run, the secret headers it uses and never keeps, and what stays an
//! error as for a create.

use std::path::PathBuf;

use odm_devops::simulator::SimulatorConfig;
use serde_json::{json, Value};

use super::BODY;
use crate::azure::{azure_task, simulator_config, Azure, SMOKE_TEST};
use crate::helpers::{descriptor, Backend, TestDb, DEVOPS};
use crate::on_both_backends;

on_both_backends!(the_secret_headers_authenticate_the_preview_and_are_never_returned);
async fn the_secret_headers_authenticate_the_preview_and_are_never_returned(db: TestDb) {
    let config = SimulatorConfig {
        pats: vec!["pat-of-the-team".into()],
        ..simulator_config()
    };
    let azure = Azure::start_with(&db, config, |_, _| {}).await;
    let app = &azure.app;
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    app.put_descriptor("p1", "1.0.0", &descriptor(json!({"dev": [task]})))
        .await;
    let header = ("x-odm-azure-devops-executor-secret-pat", "pat-of-the-team");
    let answer = app.dry_run_answer("dev", &[header]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!answer.text.contains("pat-of-the-team"), "{}", answer.text);
    assert_eq!(answer.json()["valid"], true, "{}", answer.text);
    // Without the header, the executor's own identity (a bearer token).
    assert_eq!(app.dry_run("dev", &[]).await["valid"], true);
    let used: Vec<String> = azure
        .sim
        .previews()
        .into_iter()
        .map(|p| p.authenticated_with)
        .collect();
    assert_eq!(used, ["pat", "bearer"]);
    // A PAT Azure does not accept: the preview is refused, naming no secret.
    let plan = app
        .dry_run(
            "dev",
            &[("x-odm-azure-devops-executor-secret-pat", "revoked-pat")],
        )
        .await;
    assert_eq!(plan["tasks"][0]["preview"]["status"], "REFUSED");
    let text = plan.to_string();
    assert!(
        text.contains("authentication failed") || text.contains("refused"),
        "{text}"
    );
    assert!(!text.contains("revoked-pat"), "{text}");
    app.assert_nothing_stored().await;
    // Not in the database either, sealed or not (a SQLite file and its WAL can be read).
    if db.backend == Backend::Sqlite {
        let file = PathBuf::from(db.url.trim_start_matches("sqlite://"));
        let stored = std::fs::read(&file).unwrap();
        let wal = std::fs::read(file.with_extension("db-wal")).unwrap_or_default();
        let needle = b"pat-of-the-team";
        for bytes in [stored, wal] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }
    assert!(azure.sim.runs().is_empty());
    azure.stop().await;
}

on_both_backends!(a_dry_run_needs_the_api_token_and_keeps_the_create_s_errors);
async fn a_dry_run_needs_the_api_token_and_keeps_the_create_s_errors(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.auth.api_tokens = vec!["team-token".into()];
    })
    .await;
    let app = &azure.app;
    let auth = ("Authorization", "Bearer team-token");
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    let put = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/p1/versions/1.0.0",
            Some((
                "application/json",
                descriptor(json!({"dev": [task]})).to_string(),
            )),
            &[auth],
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    app.dry_run_answer("dev", &[])
        .await
        .assert_error(401, "40101");
    app.dry_run_answer("dev", &[("Authorization", "Bearer wrong")])
        .await
        .assert_error(401, "40101");
    assert!(
        azure.sim.previews().is_empty(),
        "nothing asked without the token"
    );
    assert_eq!(app.dry_run("dev", &[auth]).await["valid"], true);
    // The create's refusals of the request and the descriptor stay errors.
    let message = app
        .dry_run_answer("nope", &[auth])
        .await
        .assert_error(422, "42201");
    assert!(message.contains("stage nope is not defined"), "{message}");
    let post = |query: &'static str| async move {
        let path = format!("{DEVOPS}/activities?{query}");
        let body = Some(("application/json", BODY.to_owned()));
        app.send("POST", &path, body, &[auth]).await
    };
    post("dryRun=maybe").await.assert_error(400, "40001");
    post("dryRun=true&dryRun=true")
        .await
        .assert_error(400, "40001");
    // With startAfterCreation too: still only the plan.
    let both = post("dryRun=true&startAfterCreation=true").await;
    assert_eq!(both.status, 200, "{both:?}");
    assert_eq!(both.json()["activity"]["id"], Value::Null);
    let listed = app
        .send("GET", &format!("{DEVOPS}/activities"), None, &[auth])
        .await;
    assert_eq!(listed.json(), json!([]));
    assert!(azure.sim.runs().is_empty());
    azure.stop().await;
}
