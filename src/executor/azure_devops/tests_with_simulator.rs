//! The executor against the simulator over loopback HTTP: the whole conversation, as it would
//! go with Azure DevOps and Entra.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use super::AzureDevOpsExecutor;
use crate::executor::{Executor, ExecutorError, RunStatus, Secrets, Submission};
use crate::secret::Secret;
use crate::simulator::test_support::CallbackServer;
use crate::simulator::{
    Behaviour, FaultKind, FaultSpec, ParameterSpec, PipelineSpec, Simulator, SimulatorConfig,
    SimulatorHandle,
};

fn pipeline(id: i32, behaviour: Behaviour) -> PipelineSpec {
    PipelineSpec {
        organization: "org".into(),
        project: "Data Platform".into(),
        id,
        name: Some(format!("pipeline-{id}")),
        parameters: ["vmName", "count", "callbackRef"]
            .into_iter()
            .map(|p| ParameterSpec::Name(p.into()))
            .collect(),
        behaviour,
    }
}

async fn start(token_lifetime_secs: u64) -> SimulatorHandle {
    Simulator::start(SimulatorConfig {
        token_expires_in_secs: token_lifetime_secs,
        default_delay_ms: 50,
        pats: vec!["pat-1".into()],
        pipelines: vec![
            pipeline(
                7,
                Behaviour {
                    results: json!({"vm": "${{ parameters.vmName }}"}),
                    ..Behaviour::default()
                },
            ),
            pipeline(
                8,
                Behaviour {
                    manual: true,
                    ..Behaviour::default()
                },
            ),
        ],
        ..SimulatorConfig::default()
    })
    .await
    .unwrap()
}

fn executor(sim: &SimulatorHandle) -> AzureDevOpsExecutor {
    let mut settings = sim.executor_settings();
    settings.retry_base_delay_ms = 10;
    settings.request_timeout_ms = 1_000;
    AzureDevOpsExecutor::new("azure-devops", &settings).unwrap()
}

fn task(
    id: i64,
    pipeline_id: i32,
    callback_ref: String,
    configurations: serde_json::Value,
) -> Submission {
    Submission {
        task_id: id,
        activity_id: 1,
        task_name: format!("task{id}"),
        started_at: None,
        callback_ref,
        template: json!({"organization": "org", "project": "Data Platform",
                         "pipelineId": pipeline_id, "branch": "main"}),
        configurations,
        secrets: Secrets::new(),
    }
}

fn run_id(submitted: &crate::executor::Submitted) -> i32 {
    submitted.run.0["runId"].as_i64().unwrap() as i32
}

#[actix_web::test]
async fn the_simulator_records_the_exact_body_and_calls_back_with_results() {
    let sim = start(3599).await;
    let callbacks = CallbackServer::start().await;
    let submitted = executor(&sim)
        .submit(&task(
            21,
            7,
            callbacks.callback_ref(21),
            json!({"params": {"vmName": "vm-dev", "count": 2}, "stagesToSkip": ["qa"],
                   "context": {"dev": {"status": "RUNNING"}}}),
        ))
        .await
        .unwrap();
    let id = run_id(&submitted);
    assert!(submitted
        .web_url
        .unwrap()
        .ends_with(&format!("_build/results?buildId={id}")));
    let run = sim
        .wait_for_completion(id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        run.request_body,
        json!({
            "resources": {"repositories": {"self": {"refName": "refs/heads/main"}}},
            "templateParameters": {"vmName": "vm-dev", "count": "2",
                                   "callbackRef": callbacks.callback_ref(21)},
            "stagesToSkip": ["qa"],
        })
    );
    assert_eq!(run.authenticated_with, "bearer");
    let received = callbacks.wait_for(1).await;
    assert_eq!(received[0].method, "PATCH");
    assert_eq!(
        received[0].body,
        Some(json!({"status": "PROCESSED", "results": {"vm": "vm-dev"}}))
    );
    let status = executor(&sim)
        .status(&submitted.run, &Secrets::new())
        .await
        .unwrap();
    assert_eq!(status, RunStatus::Succeeded);
    callbacks.stop().await;
    sim.stop().await;
}

#[actix_web::test]
async fn one_token_for_many_concurrent_submits_renewed_after_expiry() {
    let sim = start(2).await;
    let executor = executor(&sim);
    let tasks: Vec<Submission> = (0..30)
        .map(|i| task(i, 7, format!("http://127.0.0.1:9/cb/{i}"), json!({})))
        .collect();
    let results = join_all(tasks.iter().map(|t| executor.submit(t))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(sim.tokens_issued(), 1);
    assert_eq!(sim.runs().len(), 30);

    actix_web::rt::time::sleep(Duration::from_millis(1_600)).await;
    executor.submit(&tasks[0]).await.unwrap();
    assert_eq!(sim.token_requests(), 2);

    // A token the service stops accepting is replaced once, transparently.
    sim.expire_tokens();
    executor.submit(&tasks[1]).await.unwrap();
    assert_eq!(sim.tokens_issued(), 3);
    sim.stop().await;
}

#[actix_web::test]
async fn rate_limits_and_unavailability_are_retried_without_a_second_run() {
    let sim = start(3599).await;
    let executor = executor(&sim);
    sim.add_fault(FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::RateLimit,
        count: 1,
        retry_after_secs: Some(1),
        delay_ms: None,
    });
    let started = std::time::Instant::now();
    executor
        .submit(&task(1, 7, "http://127.0.0.1:9/cb".into(), json!({})))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(sim.stats().run_requests, 2);
    assert_eq!(sim.runs().len(), 1);

    sim.add_fault(FaultSpec {
        path: "*/runs".into(),
        method: None,
        kind: FaultKind::Unavailable,
        count: 2,
        retry_after_secs: None,
        delay_ms: None,
    });
    executor
        .submit(&task(2, 7, "http://127.0.0.1:9/cb".into(), json!({})))
        .await
        .unwrap();
    assert_eq!(sim.stats().run_requests, 5);
    assert_eq!(sim.runs().len(), 2);
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 2);
    sim.stop().await;
}

#[actix_web::test]
async fn a_slow_answer_after_the_run_was_created_is_not_resent() {
    let sim = start(3599).await;
    sim.add_fault(FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::Slow,
        count: 1,
        retry_after_secs: None,
        delay_ms: Some(2_000),
    });
    let err = executor(&sim)
        .submit(&task(1, 7, "http://127.0.0.1:9/cb".into(), json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::OutcomeUnknown(_)), "{err:?}");
    assert_eq!(sim.stats().run_requests, 1);
    assert_eq!(
        sim.runs().len(),
        1,
        "the run exists; the engine waits for its callback"
    );
    sim.stop().await;
}

#[actix_web::test]
async fn an_undeclared_parameter_fails_with_azures_message_and_the_hint() {
    let sim = start(3599).await;
    let err = executor(&sim)
        .submit(&task(
            1,
            7,
            "http://127.0.0.1:9/cb".into(),
            json!({"params": {"region": "eu"}}),
        ))
        .await
        .unwrap_err();
    let ExecutorError::InvalidTask(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("Unexpected parameter 'region' [PipelineValidationException]"),
        "{message}"
    );
    assert!(message.contains("`parameters:`"), "{message}");
    assert!(sim.runs().is_empty());
    sim.stop().await;
}

#[actix_web::test]
async fn a_wrong_client_secret_fails_with_entras_message() {
    let sim = start(3599).await;
    let mut settings = sim.executor_settings();
    if let crate::config::AzureAuthSettings::ClientCredentials(c) = &mut settings.auth {
        c.client_secret = Secret::new("not-the-secret");
    }
    let executor = AzureDevOpsExecutor::new("azure-devops", &settings).unwrap();
    let err = executor
        .submit(&task(1, 7, "http://127.0.0.1:9/cb".into(), json!({})))
        .await
        .unwrap_err();
    let ExecutorError::Unauthorized(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("invalid_client: AADSTS7000215: Invalid client secret provided"),
        "{message}"
    );
    assert!(!message.contains("not-the-secret"));
    assert_eq!(sim.stats().run_requests, 0);
    sim.stop().await;
}

#[actix_web::test]
async fn cancel_reaches_the_simulator_and_the_run_never_calls_back() {
    let sim = start(3599).await;
    let callbacks = CallbackServer::start().await;
    let executor = executor(&sim);
    let submitted = executor
        .submit(&task(1, 8, callbacks.callback_ref(1), json!({})))
        .await
        .unwrap();
    // The activity's own PAT authenticates status and cancel too.
    let secrets = Secrets::from([("pat".to_owned(), Secret::new("pat-1"))]);
    assert_eq!(
        executor.status(&submitted.run, &secrets).await.unwrap(),
        RunStatus::Running
    );
    executor.cancel(&submitted.run, &secrets).await.unwrap();
    assert_eq!(
        executor.status(&submitted.run, &secrets).await.unwrap(),
        RunStatus::Canceled
    );
    let run = sim.run(run_id(&submitted)).unwrap();
    assert_eq!(run.result.as_deref(), Some("canceled"));
    assert!(!sim.finish_run(run.id, None).await);
    assert!(callbacks.received().is_empty());
    let patches: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(
        patches[0].path,
        format!("/org/Data Platform/_apis/build/builds/{}", run.id)
    );
    callbacks.stop().await;
    sim.stop().await;
}
