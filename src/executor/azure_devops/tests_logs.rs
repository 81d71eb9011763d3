//! Run state and logs against a stand-in Azure DevOps (wiremock): the exact requests, the
//! joined text, the bound, and what happens when the provider says no.

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::super::test_support::*;
use super::super::AzureDevOpsExecutor;
use crate::executor::{Executor, ExecutorError, RunRef, Secrets, ViewError};

const RUN_PATH: &str = "/org/Data%20Platform/_apis/pipelines/7/runs/41";
const LOGS_PATH: &str = "/org/Data%20Platform/_apis/pipelines/7/runs/41/logs";

fn run() -> RunRef {
    RunRef(json!({"organization": "org", "project": "Data Platform", "pipelineId": 7, "runId": 41}))
}

fn pat_executor(server: &MockServer) -> AzureDevOpsExecutor {
    AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), pat("p"))).unwrap()
}

fn content_path(id: i32) -> String {
    format!("/signed/log/{id}")
}

/// Logs – List with signed content URLs on `server`, and each log's text behind its URL.
async fn mount_logs(server: &MockServer, texts: &[&str]) {
    let logs: Vec<Value> = (1..)
        .zip(texts)
        .map(|(id, text)| {
            json!({"id": id, "lineCount": text.lines().count(), "createdOn": "2026-12-03T08:00:00Z",
                   "url": format!("{}{LOGS_PATH}/{id}", server.uri()),
                   "signedContent": {"url": format!("{}{}?sig=abc", server.uri(), content_path(id)),
                                     "signatureExpires": "2026-12-03T09:00:00Z"}})
        })
        .collect();
    Mock::given(method("GET"))
        .and(path(LOGS_PATH))
        .and(query_param("$expand", "signedContent"))
        .and(query_param("api-version", "7.1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"logs": logs})))
        .mount(server)
        .await;
    for (id, text) in (1..).zip(texts) {
        Mock::given(method("GET"))
            .and(path(content_path(id)))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(text.as_bytes().to_vec(), "text/plain"),
            )
            .mount(server)
            .await;
    }
}

#[actix_web::test]
async fn the_run_view_is_azure_s_state_result_and_web_page() {
    let server = MockServer::start().await;
    let web = "https://dev.azure.com/org/Data%20Platform/_build/results?buildId=41";
    for (state, result) in [("inProgress", None), ("completed", Some("failed"))] {
        server.reset().await;
        let mut answer = json!({"id": 41, "state": state, "_links": {"web": {"href": web}}});
        if let Some(result) = result {
            answer["result"] = json!(result);
        }
        Mock::given(method("GET"))
            .and(path(RUN_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
        let view = pat_executor(&server)
            .run_view(&run(), &Secrets::new())
            .await
            .unwrap();
        assert_eq!(view.state, state);
        assert_eq!(view.result.as_deref(), result);
        assert_eq!(view.url.as_deref(), Some(web));
    }
}

#[actix_web::test]
async fn logs_are_joined_in_order_under_a_header_each_and_fetched_without_credentials() {
    let server = MockServer::start().await;
    mount_logs(
        &server,
        &["Initialize job\nAgent ready\n", "Checkout", "Deploy ✓\n"],
    )
    .await;
    let logs = pat_executor(&server)
        .logs(&run(), &Secrets::new(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        logs.text,
        "==> log 1 (2 lines) <==\nInitialize job\nAgent ready\n\
         ==> log 2 (1 line) <==\nCheckout\n\
         ==> log 3 (1 line) <==\nDeploy ✓\n"
    );
    assert!(!logs.truncated);
    let list = requests_to(&server, LOGS_PATH).await;
    assert_eq!(
        header(&list[0], "authorization"),
        "Basic OnA=",
        "the list is authenticated"
    );
    for id in 1..=3 {
        let fetched = requests_to(&server, &content_path(id)).await;
        assert_eq!(fetched.len(), 1);
        assert_eq!(
            header(&fetched[0], "authorization"),
            "",
            "a signed URL gets no credentials"
        );
    }
}

#[actix_web::test]
async fn only_the_last_bytes_are_kept_and_earlier_logs_are_not_even_fetched() {
    let server = MockServer::start().await;
    let big = "x".repeat(10_000) + "\nlast line of log 2\n";
    mount_logs(&server, &["early log\n", &big, "tail ✓✓✓\n"]).await;
    let max = 100;
    let logs = pat_executor(&server)
        .logs(&run(), &Secrets::new(), max)
        .await
        .unwrap();
    assert!(logs.truncated);
    assert!(logs.text.len() <= max, "{}", logs.text.len());
    assert!(
        logs.text.ends_with("==> log 3 (1 line) <==\ntail ✓✓✓\n"),
        "{}",
        logs.text
    );
    assert!(logs.text.contains("last line of log 2\n"), "{}", logs.text);
    assert!(
        requests_to(&server, &content_path(1)).await.is_empty(),
        "log 1 lies before the bound"
    );
}

#[actix_web::test]
async fn a_log_without_a_signed_url_gets_one_from_logs_get() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOGS_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"logs": [{"id": 5, "lineCount": 1}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{LOGS_PATH}/5")))
        .and(query_param("$expand", "signedContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 5,
            "signedContent": {"url": format!("{}{}", server.uri(), content_path(5))}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(content_path(5)))
        .respond_with(ResponseTemplate::new(200).set_body_string("hello"))
        .mount(&server)
        .await;
    let logs = pat_executor(&server)
        .logs(&run(), &Secrets::new(), 1000)
        .await
        .unwrap();
    assert_eq!(logs.text, "==> log 5 (1 line) <==\nhello\n");
}

#[actix_web::test]
async fn refusals_and_outages_are_told_apart() {
    // The signed URL expired: Azure answers 403; a refusal, not an outage.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOGS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"logs": [
            {"id": 1, "signedContent": {"url": format!("{}{}", server.uri(), content_path(1))}}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(content_path(1)))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(azure_error("expired", "AccessDenied")),
        )
        .mount(&server)
        .await;
    let err = pat_executor(&server)
        .logs(&run(), &Secrets::new(), 1000)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ViewError::Provider(ExecutorError::Unauthorized(m)) if m.contains("expired")),
        "{err:?}"
    );

    // Down: 503 on every try, retried, then transient.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOGS_PATH))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let err = pat_executor(&server)
        .logs(&run(), &Secrets::new(), 1000)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ViewError::Provider(ExecutorError::Transient(_))),
        "{err:?}"
    );
    assert_eq!(
        requests_to(&server, LOGS_PATH).await.len(),
        4,
        "retried three times"
    );

    // A signed URL answering 502 once is tried again.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LOGS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"logs": [
            {"id": 1, "signedContent": {"url": format!("{}{}", server.uri(), content_path(1))}}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(content_path(1)))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(content_path(1)))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok\n"))
        .mount(&server)
        .await;
    let logs = pat_executor(&server)
        .logs(&run(), &Secrets::new(), 1000)
        .await
        .unwrap();
    assert_eq!(logs.text, "==> log 1 <==\nok\n");
}
