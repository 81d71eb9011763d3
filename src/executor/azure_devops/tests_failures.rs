//! How the executor behaves when Azure DevOps or Entra says no, slows it down or goes silent.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::test_support::*;
use super::AzureDevOpsExecutor;
use crate::executor::{Executor, ExecutorError, RunRef, Secrets};

fn pat_executor(server: &MockServer) -> AzureDevOpsExecutor {
    AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), pat("p"))).unwrap()
}

async fn submit(executor: &AzureDevOpsExecutor) -> Result<i64, ExecutorError> {
    executor
        .submit(&submission(template(), json!({"params": {"vm": "a"}})))
        .await
        .map(|s| s.run.0["runId"].as_i64().unwrap())
}

#[actix_web::test]
async fn a_429_with_retry_after_is_waited_out_and_one_run_is_created() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_run(&server, 31).await;
    let started = Instant::now();
    assert_eq!(submit(&pat_executor(&server)).await, Ok(31));
    assert!(started.elapsed() >= Duration::from_millis(950));
    // Two POSTs reached the server; only the second was answered with a run.
    assert_eq!(requests_to(&server, RUNS_PATH).await.len(), 2);
}

#[actix_web::test]
async fn a_503_is_retried_with_backoff() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    mount_run(&server, 32).await;
    assert_eq!(submit(&pat_executor(&server)).await, Ok(32));
    assert_eq!(requests_to(&server, RUNS_PATH).await.len(), 3);
}

#[actix_web::test]
async fn exhausted_retries_are_transient_or_rate_limited() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Transient(m) if m.contains("HTTP 503")),
        "{err}"
    );
    // max_retries = 3: four attempts in all.
    assert_eq!(requests_to(&server, RUNS_PATH).await.len(), 4);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    assert!(
        matches!(err, ExecutorError::RateLimited { retry_after: Some(d), .. } if d.is_zero()),
        "{err:?}"
    );

    // Longer than retry_max_delay_ms: handed back to the engine at once.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "120"))
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    assert!(
        matches!(err, ExecutorError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 120),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, RUNS_PATH).await.len(), 1);
}

#[actix_web::test]
async fn azure_errors_carry_message_and_type_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_json(azure_error(
            "The pipeline with id 7 does not exist.",
            "PipelineNotFoundException",
        )))
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    assert_eq!(
        err,
        ExecutorError::InvalidTask(
            "Azure DevOps rejected the run request (HTTP 404): The pipeline with id 7 does not \
             exist. [PipelineNotFoundException]"
                .into()
        )
    );
}

#[actix_web::test]
async fn an_unexpected_parameter_says_to_declare_it_in_the_yaml() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(azure_error(
            "Unexpected parameter 'vm'",
            "PipelineValidationException",
        )))
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    let ExecutorError::InvalidTask(message) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("Unexpected parameter 'vm' [PipelineValidationException]"));
    assert!(
        message.contains("`parameters:`") && message.contains("`callbackRef`"),
        "{message}"
    );
}

#[actix_web::test]
async fn entra_errors_surface_error_and_description_but_not_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the \
                                  secret being sent in the request is the client secret value.",
            "error_codes": [7000215],
        })))
        .expect(1)
        .mount(&server)
        .await;
    let executor = executor(&server);
    let (first, second) = futures_util::join!(submit(&executor), submit(&executor));
    let err = first.unwrap_err();
    assert_eq!(
        second.unwrap_err(),
        err,
        "the queued submit shares the failed refresh"
    );
    let ExecutorError::Unauthorized(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("invalid_client: AADSTS7000215: Invalid client secret"),
        "{message}"
    );
    assert!(!message.contains(CLIENT_SECRET));
    assert!(requests_to(&server, RUNS_PATH).await.is_empty());
}

#[actix_web::test]
async fn a_sign_in_page_or_401_is_an_authentication_failure() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(
            ResponseTemplate::new(203)
                .set_body_raw("<html><title>Sign In</title></html>", "text/html"),
        )
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    let ExecutorError::Unauthorized(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("authentication failed: Azure DevOps answered the run request with a non-JSON page (HTTP 203, text/html)"),
        "{message}"
    );

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(403).set_body_json(azure_error(
            "TF400813: The user 'x' is not authorized to access this resource.",
            "UnauthorizedRequestException",
        )))
        .mount(&server)
        .await;
    let run = RunRef(json!({"organization": "o", "project": "p", "pipelineId": 1, "runId": 2}));
    let err = pat_executor(&server)
        .status(&run, &Secrets::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Unauthorized(m) if m.contains("TF400813") && m.contains("HTTP 403")),
        "{err:?}"
    );
}

#[actix_web::test]
async fn a_run_request_that_may_have_arrived_is_never_sent_twice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(run_answer(1))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    assert!(
        matches!(&err, ExecutorError::OutcomeUnknown(m) if m.contains("timeout")),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, RUNS_PATH).await.len(), 1);

    // A gateway 502 may hide a run created behind it.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .mount(&server)
        .await;
    let err = submit(&pat_executor(&server)).await.unwrap_err();
    assert!(matches!(err, ExecutorError::OutcomeUnknown(_)), "{err:?}");
    assert_eq!(requests_to(&server, RUNS_PATH).await.len(), 1);
}

#[actix_web::test]
async fn status_requests_are_retried_after_timeouts_and_5xx() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"state": "inProgress", "id": 2})),
        )
        .mount(&server)
        .await;
    let run = RunRef(json!({"organization": "o", "project": "p", "pipelineId": 1, "runId": 2}));
    let status = pat_executor(&server).status(&run, &Secrets::new()).await;
    assert_eq!(status, Ok(crate::executor::RunStatus::Running));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[actix_web::test]
async fn an_unreachable_service_is_transient() {
    // Bind and drop a listener: the port is then (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let executor = AzureDevOpsExecutor::new(
        "azure-devops",
        &settings(&format!("http://127.0.0.1:{port}"), pat("p")),
    )
    .unwrap();
    let err = submit(&executor).await.unwrap_err();
    assert!(
        matches!(&err, ExecutorError::Transient(m) if m.contains("could not connect") && m.contains("after 4 attempts")),
        "{err:?}"
    );
}

#[actix_web::test]
async fn a_low_rate_limit_budget_spaces_the_next_requests() {
    let server = MockServer::start().await;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(run_answer(5))
                .insert_header("X-RateLimit-Limit", "200")
                .insert_header("X-RateLimit-Remaining", "1")
                .insert_header("X-RateLimit-Reset", reset.to_string().as_str()),
        )
        .mount(&server)
        .await;
    let executor = pat_executor(&server);
    submit(&executor).await.unwrap();
    let started = Instant::now();
    submit(&executor).await.unwrap();
    // 1 unit left until the reset (1-2 s away): the next request waits half of that.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    let body: Value = requests_to(&server, RUNS_PATH).await[1]
        .body_json()
        .unwrap();
    assert_eq!(body["templateParameters"]["vm"], "a");
}
