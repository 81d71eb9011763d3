//! What the executor sends: bodies, URLs, credentials; and how it reads answers.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use wiremock::matchers::{body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::test_support::*;
use super::AzureDevOpsExecutor;
use crate::executor::{Executor, ExecutorError, RunRef, RunStatus, Secrets};
use crate::secret::Secret;

#[actix_web::test]
async fn run_request_has_the_exact_body_url_and_token() {
    let server = MockServer::start().await;
    mount_entra(&server, 3600).await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .and(query_param("api-version", "7.1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(run_answer(501)))
        .expect(1)
        .mount(&server)
        .await;
    let mut template = template();
    template["branch"] = json!("feature/x");
    let configurations = json!({
        "params": {"vmName": "vm-dev", "count": 3, "enabled": true, "tags": ["a", "b"],
                   "spec": {"cpu": 2}, "none": null},
        "stagesToSkip": ["qa", "perf"],
        "variables": {"plain": "x", "number": 5,
                      "secret": {"value": "s", "isSecret": true}},
        "context": {"dev": {"status": "RUNNING"}},
        "timeout": 60,
    });
    let submitted = executor(&server)
        .submit(&submission(template, configurations))
        .await
        .unwrap();

    let sent = requests_to(&server, RUNS_PATH).await;
    assert_eq!(header(&sent[0], "authorization"), "Bearer tok-1");
    assert_eq!(header(&sent[0], "content-type"), "application/json");
    assert_eq!(
        sent[0].body_json::<Value>().unwrap(),
        json!({
            "resources": {"repositories": {"self": {"refName": "refs/heads/feature/x"}}},
            "templateParameters": {
                "vmName": "vm-dev", "count": "3", "enabled": "true", "tags": "[\"a\",\"b\"]",
                "spec": "{\"cpu\":2}", "none": "null",
                "callbackRef": "http://odm/api/v1/pp/devops/tasks/11/status?action=STOP&token=t",
            },
            "stagesToSkip": ["qa", "perf"],
            "variables": {"plain": {"value": "x"}, "number": {"value": "5"},
                          "secret": {"value": "s", "isSecret": true}},
        })
    );
    assert_eq!(
        submitted.run,
        RunRef(
            json!({"organization": "org", "project": "Data Platform", "pipelineId": 7, "runId": 501})
        )
    );
    assert_eq!(
        submitted.web_url.as_deref(),
        Some("https://dev.azure.com/org/Data%20Platform/_build/results?buildId=501")
    );
    assert_eq!(submitted.outcome, None);
}

#[actix_web::test]
async fn branch_forms_misspelled_stages_and_minimal_bodies() {
    let server = MockServer::start().await;
    mount_entra(&server, 3600).await;
    mount_run(&server, 1).await;
    let executor = executor(&server);
    let cases = [
        (json!("refs/tags/v1.2"), json!({"stageToSkip": ["qa"]})),
        (json!(null), json!({"params": {"a": "b"}})),
        (json!("  "), json!(null)),
    ];
    for (branch, configurations) in cases {
        let mut template = template();
        template["branch"] = branch;
        template["pipelineId"] = json!("7");
        executor
            .submit(&submission(template, configurations))
            .await
            .unwrap();
    }
    let bodies: Vec<Value> = requests_to(&server, RUNS_PATH)
        .await
        .iter()
        .map(|r| r.body_json().unwrap())
        .collect();
    let callback = "http://odm/api/v1/pp/devops/tasks/11/status?action=STOP&token=t";
    assert_eq!(
        bodies,
        vec![
            json!({"resources": {"repositories": {"self": {"refName": "refs/tags/v1.2"}}},
                   "templateParameters": {"callbackRef": callback}, "stagesToSkip": ["qa"]}),
            json!({"templateParameters": {"a": "b", "callbackRef": callback}, "stagesToSkip": []}),
            json!({"templateParameters": {"callbackRef": callback}, "stagesToSkip": []}),
        ]
    );
}

#[actix_web::test]
async fn a_bad_template_fails_before_any_request() {
    let server = MockServer::start().await;
    let err = executor(&server)
        .submit(&submission(
            json!({"organization": "org", "project": "p", "pipelineId": "seven"}),
            json!({}),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ExecutorError::InvalidTask(
            "template.pipelineId must be an int32 (a number or a numeric string), got string \"seven\""
                .into()
        )
    );
    let err = executor(&server)
        .submit(&submission(template(), json!({"params": "x"})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("configurations.params"), "{err}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[actix_web::test]
async fn one_token_for_many_concurrent_submits_and_a_new_one_after_expiry() {
    let server = MockServer::start().await;
    // 2 s lifetime: renewed 0.5 s before it runs out.
    let issued = mount_entra(&server, 2).await;
    mount_run(&server, 9).await;
    let executor = executor(&server);
    let tasks: Vec<_> = (0..25).map(|_| submission(template(), json!({}))).collect();
    let results = join_all(tasks.iter().map(|t| executor.submit(t))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 1);

    actix_web::rt::time::sleep(Duration::from_millis(1_600)).await;
    executor
        .submit(&submission(template(), json!({})))
        .await
        .unwrap();
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 2);
    let runs = requests_to(&server, RUNS_PATH).await;
    assert_eq!(runs.len(), 26);
    assert_eq!(header(&runs[25], "authorization"), "Bearer tok-2");
    let token_request = &requests_to(&server, TOKEN_PATH).await[0];
    assert_eq!(
        String::from_utf8_lossy(&token_request.body),
        format!(
            "grant_type=client_credentials&client_id=app-1&client_secret={CLIENT_SECRET}\
             &scope=499b84ac-1321-427f-aa17-267ca6975798%2F.default"
        )
    );
}

#[actix_web::test]
async fn a_refused_cached_token_is_replaced_once() {
    let server = MockServer::start().await;
    let issued = mount_entra(&server, 3600).await;
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_run(&server, 3).await;
    executor(&server)
        .submit(&submission(template(), json!({})))
        .await
        .unwrap();
    assert_eq!(issued.load(std::sync::atomic::Ordering::SeqCst), 2);
    let runs = requests_to(&server, RUNS_PATH).await;
    assert_eq!(header(&runs[1], "authorization"), "Bearer tok-2");
}

#[actix_web::test]
async fn pat_and_activity_secrets_choose_the_authorization_header() {
    let server = MockServer::start().await;
    mount_run(&server, 4).await;
    let with_pat =
        AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), pat("my-pat"))).unwrap();
    with_pat
        .submit(&submission(template(), json!({})))
        .await
        .unwrap();

    // The service principal is configured but the activity's secrets win: no token request.
    let with_sp = executor(&server);
    for (kind, value) in [("pat", "activity-pat"), ("token", "activity-token")] {
        let mut task = submission(template(), json!({}));
        task.secrets = Secrets::from([(kind.to_owned(), Secret::new(value))]);
        with_sp.submit(&task).await.unwrap();
    }
    let headers: Vec<String> = requests_to(&server, RUNS_PATH)
        .await
        .iter()
        .map(|r| header(r, "authorization"))
        .collect();
    assert_eq!(
        headers,
        vec![
            "Basic Om15LXBhdA==".to_owned(),
            "Basic OmFjdGl2aXR5LXBhdA==".to_owned(),
            "Bearer activity-token".to_owned(),
        ]
    );
    assert!(requests_to(&server, TOKEN_PATH).await.is_empty());
}

#[actix_web::test]
async fn run_states_map_to_statuses() {
    let server = MockServer::start().await;
    let executor =
        AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), pat("p"))).unwrap();
    let cases = [
        (json!({"state": "inProgress"}), RunStatus::Running),
        (json!({"state": "canceling"}), RunStatus::Running),
        (json!({"state": "unknown"}), RunStatus::Running),
        (
            json!({"state": "completed", "result": "succeeded"}),
            RunStatus::Succeeded,
        ),
        (
            json!({"state": "completed", "result": "canceled"}),
            RunStatus::Canceled,
        ),
        (
            json!({"state": "completed", "result": "failed"}),
            RunStatus::Failed("Azure DevOps pipeline run 103 failed".into()),
        ),
        (
            json!({"state": "completed", "result": "unknown",
                   "_links": {"web": {"href": "https://w/104"}}}),
            RunStatus::Failed(
                "Azure DevOps pipeline run 104 completed with result 'unknown' (see https://w/104)"
                    .into(),
            ),
        ),
    ];
    for (n, (answer, expected)) in cases.into_iter().enumerate() {
        let run_id = 98 + n as i32;
        // The run id is in the failure message: 103 and 104 are the failed ones.
        Mock::given(method("GET"))
            .and(path(format!(
                "/org/Data%20Platform/_apis/pipelines/7/runs/{run_id}"
            )))
            .and(query_param("api-version", "7.1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
        let run = RunRef(json!({"organization": "org", "project": "Data Platform",
                                "pipelineId": 7, "runId": run_id}));
        let status = executor.status(&run, &Secrets::new()).await.unwrap();
        assert_eq!(status, expected, "run {run_id}");
    }
    let err = executor
        .status(&RunRef(json!({"runId": 1})), &Secrets::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::InvalidTask(_)), "{err}");
}

#[actix_web::test]
async fn cancel_patches_the_build_with_status_cancelling() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/org/Data%20Platform/_apis/build/builds/77"))
        .and(query_param("api-version", "7.1"))
        .and(body_json(json!({"status": "cancelling"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": 77, "status": "cancelling"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let executor =
        AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), pat("p"))).unwrap();
    let run = RunRef(json!({"organization": "org", "project": "Data Platform",
                            "pipelineId": 7, "runId": 77}));
    let secrets = Secrets::from([("token".to_owned(), Secret::new("t"))]);
    executor.cancel(&run, &secrets).await.unwrap();
    let sent = requests_to(&server, "/org/Data%20Platform/_apis/build/builds/77").await;
    assert_eq!(header(&sent[0], "authorization"), "Bearer t");
}

#[actix_web::test]
async fn a_byte_order_mark_before_the_json_is_ignored() {
    let server = MockServer::start().await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(run_answer(12).to_string().as_bytes());
    Mock::given(method("POST"))
        .and(path(RUNS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let executor =
        AzureDevOpsExecutor::new("azure-devops", &settings(&server.uri(), pat("p"))).unwrap();
    let submitted = executor
        .submit(&submission(template(), json!({})))
        .await
        .unwrap();
    assert_eq!(submitted.run.0["runId"], 12);
}

#[actix_web::test]
async fn setup_errors_name_the_key() {
    use crate::config::{AzureAuthSettings, ClientCredentialsSettings};
    let attempt = |change: &dyn Fn(&mut ClientCredentialsSettings)| {
        let mut c = ClientCredentialsSettings {
            token_url: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
            client_id: "app".into(),
            client_secret: Secret::new("s"),
            scope: "scope".into(),
        };
        change(&mut c);
        let s = settings(
            "https://dev.azure.com",
            AzureAuthSettings::ClientCredentials(c),
        );
        AzureDevOpsExecutor::new("azure-devops", &s)
            .err()
            .unwrap_or_default()
    };
    assert_eq!(
        attempt(&|c| c.client_id = " ".into()),
        "executors.azure-devops.auth.client_id is blank"
    );
    let err = attempt(&|c| c.client_secret = Secret::new(""));
    assert!(
        err.starts_with("executors.azure-devops.auth.client_secret is blank"),
        "{err}"
    );
    assert!(err.contains("ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET"));
    let err = attempt(&|c| {
        c.token_url = "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token".into()
    });
    assert!(
        err.contains("auth.token_url still contains <tenant>"),
        "{err}"
    );
    assert_eq!(attempt(&|_| {}), "");
    let err = AzureDevOpsExecutor::new("ado", &settings("dev.azure.com", pat("p")))
        .err()
        .unwrap();
    assert_eq!(
        err,
        "executors.ado.base_url must be an http(s) URL, got \"dev.azure.com\""
    );
    let err = AzureDevOpsExecutor::new("ado", &settings("https://x", pat(" ")))
        .err()
        .unwrap();
    assert_eq!(err, "executors.ado.auth.pat is blank");
}
