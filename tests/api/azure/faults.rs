//! When Azure DevOps or Entra push back: throttling and unavailability are retried (honouring
//! `Retry-After`) without ever creating two runs; refusals fail the task with the provider's
//! own words.

use std::time::Instant;

use odm_devops::config::AzureAuthSettings;
use odm_devops::secret::Secret;
use odm_devops::simulator::{FaultKind, FaultSpec};
use serde_json::json;

use super::*;
use crate::helpers::{descriptor, TestDb};
use crate::on_both_backends;

fn fault(path: &str, kind: FaultKind, count: u32, retry_after_secs: Option<u64>) -> FaultSpec {
    FaultSpec {
        path: path.into(),
        method: Some("POST".into()),
        kind,
        count,
        retry_after_secs,
        delay_ms: None,
    }
}

/// Stores a one-task `dev` stage for product `p` and starts it; the activity id.
async fn start_one_task(azure: &Azure, task: serde_json::Value) -> i64 {
    azure
        .app
        .put_descriptor("p", "1.0.0", &descriptor(json!({"dev": [task]})))
        .await;
    azure.app.start_activity("p", "1.0.0", "dev").await
}

fn smoke() -> serde_json::Value {
    azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "http://x"}}),
    )
}

on_both_backends!(a_rate_limited_run_request_waits_its_retry_after_and_creates_one_run);
async fn a_rate_limited_run_request_waits_its_retry_after_and_creates_one_run(db: TestDb) {
    let azure = Azure::start(&db).await;
    azure
        .sim
        .add_fault(fault("*/runs", FaultKind::RateLimit, 1, Some(1)));
    let asked = Instant::now();
    let id = start_one_task(&azure, smoke()).await;
    azure
        .wait_for_run_of_task(azure.app.tasks_of(id).await[0]["id"].as_i64().unwrap())
        .await;
    assert!(
        asked.elapsed() >= Duration::from_millis(1_000),
        "the run was requested again before Retry-After (1 s) had passed: {:?}",
        asked.elapsed()
    );
    azure.app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(azure.requests_to("POST", "/runs"), [429, 200]);
    assert_eq!(azure.sim.stats().runs_created, 1);
    assert_eq!(azure.sim.runs().len(), 1);
    azure.stop().await;
}

on_both_backends!(a_retry_after_longer_than_the_executor_waits_is_honoured_by_the_engine);
async fn a_retry_after_longer_than_the_executor_waits_is_honoured_by_the_engine(db: TestDb) {
    // The executor waits at most 300 ms itself; a longer Retry-After goes back to the engine,
    // which must not dispatch the task again before it.
    let azure = Azure::start_with(&db, simulator_config(), |_, executor| {
        executor.retry_max_delay_ms = 300;
    })
    .await;
    azure
        .sim
        .add_fault(fault("*/runs", FaultKind::RateLimit, 1, Some(2)));
    let asked = Instant::now();
    let id = start_one_task(&azure, smoke()).await;
    let task_id = azure.app.tasks_of(id).await[0]["id"].as_i64().unwrap();
    eventually("the 429", || async {
        (!azure.requests_to("POST", "/runs").is_empty()).then_some(())
    })
    .await;
    assert_eq!(azure.app.tasks_of(id).await[0]["status"], "PROCESSING");
    azure.wait_for_run_of_task(task_id).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(2_000),
        "dispatched again before Retry-After (2 s): {:?}",
        asked.elapsed()
    );
    azure.app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(azure.requests_to("POST", "/runs"), [429, 200]);
    assert_eq!(azure.sim.runs().len(), 1);
    azure.stop().await;
}

on_both_backends!(an_unavailable_azure_devops_and_entra_are_retried);
async fn an_unavailable_azure_devops_and_entra_are_retried(db: TestDb) {
    let azure = Azure::start(&db).await;
    azure.sim.add_fault(fault(
        "*/oauth2/v2.0/token",
        FaultKind::Unavailable,
        1,
        None,
    ));
    azure
        .sim
        .add_fault(fault("*/runs", FaultKind::Unavailable, 2, None));
    let id = start_one_task(&azure, smoke()).await;
    azure.app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(azure.requests_to("POST", "/oauth2/v2.0/token"), [503, 200]);
    assert_eq!(azure.requests_to("POST", "/runs"), [503, 503, 200]);
    assert_eq!(azure.sim.runs().len(), 1);
    azure.stop().await;
}

on_both_backends!(a_run_created_behind_a_gateway_error_is_not_requested_again);
async fn a_run_created_behind_a_gateway_error_is_not_requested_again(db: TestDb) {
    let azure = Azure::start(&db).await;
    azure.sim.add_fault(fault(
        "*/runs",
        FaultKind::BadGatewayAfterProcessing,
        1,
        None,
    ));
    let id = start_one_task(&azure, smoke()).await;
    // The 502 leaves the outcome unknown: the service waits for the callback of the run that
    // was in fact created, and it completes the task.
    let activity = azure.app.wait_for_activity(id, "PROCESSED").await;
    assert_eq!(azure.requests_to("POST", "/runs"), [502]);
    assert_eq!(azure.sim.runs().len(), 1);
    assert_eq!(
        json_field(&activity, "results"),
        json!({"task1": {"checked": "http://x", "passed": true}})
    );
    azure.stop().await;
}

on_both_backends!(an_undeclared_parameter_fails_the_task_with_azures_message_and_the_hint);
async fn an_undeclared_parameter_fails_the_task_with_azures_message_and_the_hint(db: TestDb) {
    let azure = Azure::start(&db).await;
    let lifecycle = json!({"dev": [
        azure_task("smoke", SMOKE_TEST, None, json!({"params": {"endpoint": "http://x", "region": "eu"}})),
        smoke(),
    ]});
    azure
        .app
        .put_descriptor("p", "1.0.0", &descriptor(lifecycle))
        .await;
    let id = azure.app.start_activity("p", "1.0.0", "dev").await;
    let activity = azure.app.wait_for_activity(id, "FAILED").await;
    let tasks = azure.app.tasks_of(id).await;
    let errors = errors_of(&tasks[0]);
    assert_eq!(tasks[0]["status"], "FAILED");
    assert!(
        errors.contains(
            "Azure DevOps rejected the run request (HTTP 400): Unexpected parameter 'region' \
             [PipelineValidationException]"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("must be declared in the `parameters:` section of the pipeline YAML"),
        "{errors}"
    );
    assert_eq!(tasks[1]["status"], "ABORTED");
    let activity_errors = activity["errors"].as_str().unwrap();
    assert!(
        activity_errors.contains("smoke")
            && activity_errors.contains("Unexpected parameter 'region'"),
        "{activity_errors}"
    );
    assert_eq!(
        azure.requests_to("POST", "/runs"),
        [400],
        "a refusal is not retried"
    );
    assert!(azure.sim.runs().is_empty());
    azure.stop().await;
}

on_both_backends!(a_wrong_client_secret_fails_the_task_with_entras_message);
async fn a_wrong_client_secret_fails_the_task_with_entras_message(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |_, executor| {
        if let AzureAuthSettings::ClientCredentials(c) = &mut executor.auth {
            c.client_secret = Secret::new("the-secret-id-not-its-value");
        }
    })
    .await;
    let id = start_one_task(&azure, smoke()).await;
    azure.app.wait_for_activity(id, "FAILED").await;
    let errors = errors_of(&azure.app.tasks_of(id).await[0]);
    assert!(
        errors.contains(
            "Microsoft Entra refused the executor's client credentials (HTTP 401): \
             invalid_client: AADSTS7000215: Invalid client secret provided"
        ),
        "{errors}"
    );
    assert!(!errors.contains("the-secret-id-not-its-value"), "{errors}");
    assert_eq!(azure.sim.token_requests(), 1, "a refusal is not retried");
    assert_eq!(azure.sim.stats().run_requests, 0);
    azure.stop().await;
}
