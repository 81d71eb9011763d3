//! Who the executor API is to Azure (the executor's identity, workload identity without a
//! secret, or the `x-odm-pat` / `x-odm-token` ODM forwards), and who may call it.

use std::path::PathBuf;

use odm_devops::config::{AzureAuthSettings, WorkloadIdentitySettings};
use odm_devops::secret::Secret;
use odm_devops::simulator::SimulatorConfig;
use serde_json::json;

use super::*;
use crate::helpers::{spawn_app, test_settings, Backend};

const PAT: &str = "odm-forwarded-pat";

on_both_backends!(secrets_in_odm_headers_authenticate_that_request_and_are_never_kept);
async fn secrets_in_odm_headers_authenticate_that_request_and_are_never_kept(db: TestDb) {
    let config = SimulatorConfig {
        pats: vec![PAT.into()],
        ..simulator_config()
    };
    // The executor's own identity is wrong: only the forwarded PAT can work.
    let azure = Azure::start_with(&db, config, |_, executor| {
        if let AzureAuthSettings::ClientCredentials(c) = &mut executor.auth {
            c.client_secret = Secret::new("not-the-secret");
        }
    })
    .await;
    let app = &azure.app;

    let without = send_task(app, &odm_task(1, template(PROVISION_VM), json!({})), &[]).await;
    let errors = without.json()["errors"].as_str().unwrap().to_owned();
    assert!(
        errors.contains("AADSTS7000215"),
        "Entra's refusal: {errors}"
    );

    let task = odm_task(2, template(PROVISION_VM), json!({}));
    let with = send_task(app, &task, &[("x-odm-pat", PAT)]).await;
    assert_eq!(with.json()["status"], "PROCESSING", "{with:?}");
    let run = azure.sim.runs().pop().unwrap();
    assert_eq!(run.authenticated_with, "pat");
    assert_eq!(
        task_status(app, 2, &[("x-odm-pat", PAT)]).await.json(),
        "PROCESSING"
    );
    // Without it, the status read is Azure's refusal, said as such.
    let message = task_status(app, 2, &[]).await.assert_error(502, "50261");
    assert!(message.contains("AADSTS7000215"), "{message}");
    // A bearer token is forwarded as x-odm-token; the simulator only knows its own tokens.
    let refused = task_status(app, 2, &[("x-odm-token", "forged")]).await;
    refused.assert_error(502, "50261");

    assert!(!with.text.contains(PAT));
    if db.backend == Backend::Sqlite {
        let file = PathBuf::from(db.url.trim_start_matches("sqlite://"));
        let stored = std::fs::read(&file).unwrap();
        let wal = std::fs::read(file.with_extension("db-wal")).unwrap_or_default();
        let needle = PAT.as_bytes();
        for bytes in [stored, wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the PAT was stored"
            );
        }
    }
    azure.stop().await;
}

on_both_backends!(workload_identity_needs_no_secret_and_picks_up_a_rotated_token_file);
async fn workload_identity_needs_no_secret_and_picks_up_a_rotated_token_file(db: TestDb) {
    let dir = std::env::temp_dir().join(format!("odm-wi-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("azure-identity-token");
    let (first, rotated) = (
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJvbmUifQ.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0d28ifQ.c2ln",
    );
    std::fs::write(&token_file, format!("{first}\n")).unwrap();
    let config = SimulatorConfig {
        federated_tokens: vec![first.into()],
        ..simulator_config()
    };
    let path = token_file.display().to_string();
    let azure = Azure::start_with(&db, config, |_, executor| {
        let AzureAuthSettings::ClientCredentials(c) = executor.auth.clone() else {
            unreachable!("the simulator's settings use client credentials")
        };
        executor.auth = AzureAuthSettings::WorkloadIdentity(WorkloadIdentitySettings {
            token_url: c.token_url,
            client_id: c.client_id,
            token_file: path,
            scope: c.scope,
            client_secret: None,
        });
    })
    .await;
    let app = &azure.app;
    let run = |id| odm_task(id, template(PROVISION_VM), json!({}));
    assert_eq!(
        send_task(app, &run(1), &[]).await.json()["status"],
        "PROCESSING"
    );
    assert_eq!(azure.sim.stats().assertions_accepted, 1);
    assert_eq!(azure.sim.runs().pop().unwrap().authenticated_with, "bearer");

    // The platform rotates the token; Entra stops trusting the old one; the access token runs out.
    std::fs::write(&token_file, rotated).unwrap();
    azure.sim.set_federated_tokens(vec![rotated.into()]);
    azure.sim.expire_tokens();
    assert_eq!(
        send_task(app, &run(2), &[]).await.json()["status"],
        "PROCESSING"
    );
    assert_eq!(
        azure.sim.stats().assertions_accepted,
        2,
        "the file was read again"
    );
    assert_eq!(azure.sim.stats().runs_created, 2);

    // A file that holds no JWT: Entra's refusal, named, in the task's errors.
    std::fs::write(&token_file, "not-a-jwt").unwrap();
    azure.sim.expire_tokens();
    let failed = send_task(app, &run(3), &[]).await.json();
    assert_eq!(failed["status"], "FAILED");
    assert!(
        failed["errors"].as_str().unwrap().contains("AADSTS50027"),
        "{failed}"
    );
    // No file at all: said with its path.
    std::fs::remove_file(&token_file).unwrap();
    azure.sim.expire_tokens();
    let failed = send_task(app, &run(4), &[]).await.json();
    assert!(
        failed["errors"]
            .as_str()
            .unwrap()
            .contains("azure-identity-token cannot be read"),
        "{failed}"
    );
    assert!(azure.sim.stats().assertions_refused >= 1);
    azure.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// The routes' own tokens, the API tokens as the default, anonymous on purpose, and off.
#[actix_web::test]
async fn who_may_call_the_executor_api() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let invalid = json!({"id": 1});
    let bearer = |token: &'static str| ("Authorization", format!("Bearer {token}"));

    let mut settings = test_settings(&db, None);
    settings.auth.api_tokens = vec![Secret::new("api")];
    let app = spawn_app(settings.clone()).await;
    send_task(&app, &invalid, &[])
        .await
        .assert_error(401, "40101");
    let (name, value) = bearer("api");
    send_task(&app, &invalid, &[(name, &value)])
        .await
        .assert_error(422, "42201");
    app.stop().await;

    settings.executor_api.tokens = vec![Secret::new("odm")];
    let app = spawn_app(settings.clone()).await;
    let (name, value) = bearer("api");
    let message = send_task(&app, &invalid, &[(name, &value)])
        .await
        .assert_error(401, "40101");
    assert!(message.contains("executor_api.tokens"), "{message}");
    let (name, value) = bearer("odm");
    send_task(&app, &invalid, &[(name, &value)])
        .await
        .assert_error(422, "42201");
    task_status(&app, 1, &[(name, &value)])
        .await
        .assert_error(404, "40401");
    // The rule is the route's: an encoded variant reaches it under the same rule, a doubled
    // slash reaches no route (and needs the API token); a browser on another site is refused.
    let encoded = app
        .send(
            "POST",
            "/api/v1/up/executor/%74asks",
            Some(("application/json", invalid.to_string())),
            &[(name, &value)],
        )
        .await;
    encoded.assert_error(422, "42201");
    let doubled = app
        .send(
            "POST",
            "//api/v1/up/executor/tasks",
            Some(("application/json", invalid.to_string())),
            &[(name, &value)],
        )
        .await;
    assert_eq!(doubled.status, 401, "{doubled:?}");
    let cross_site = [(name, value.as_str()), ("Sec-Fetch-Site", "cross-site")];
    send_task(&app, &invalid, &cross_site)
        .await
        .assert_error(403, "40301");
    // Its tokens open nothing else.
    let other = app
        .send("GET", "/api/v1/pp/devops/tasks", None, &[(name, &value)])
        .await;
    other.assert_error(401, "40101");
    app.stop().await;

    settings.executor_api.anonymous = true;
    let app = spawn_app(settings.clone()).await;
    send_task(&app, &invalid, &[])
        .await
        .assert_error(422, "42201");
    // The default executor has no credentials: the task fails saying so, as the engine's do.
    let task = odm_task(7, template(PROVISION_VM), json!({}));
    let failed = send_task(&app, &task, &[]).await.json();
    assert_eq!(failed["status"], "FAILED");
    let errors = failed["errors"].as_str().unwrap();
    assert!(errors.contains("Executor [azure-devops] is not configured correctly: executors.azure-devops.auth.token_url still contains <tenant>"), "{errors}");
    assert_eq!(task_status(&app, 7, &[]).await.json(), "FAILED");
    app.get("/api/v1/pp/devops/tasks")
        .await
        .assert_error(401, "40101");
    app.stop().await;

    settings.auth.api_tokens.clear();
    settings.executor_api.enabled = false;
    let app = spawn_app(settings).await;
    send_task(&app, &invalid, &[])
        .await
        .assert_error(404, "40400");
    task_status(&app, 1, &[]).await.assert_error(404, "40400");
    app.stop().await;
}
