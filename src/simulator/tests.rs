//! The simulator on its own, over HTTP: it must refuse what Azure would refuse (and a little
//! more), in Azure's and Entra's shapes, and behave like a pipeline.

use std::time::Duration;

use serde_json::{json, Value};

use super::test_support::CallbackServer;
use super::*;

fn config() -> SimulatorConfig {
    SimulatorConfig {
        pats: vec!["pat-1".into()],
        default_delay_ms: 20,
        pipelines: vec![PipelineSpec {
            organization: "org".into(),
            project: "Data Platform".into(),
            id: 7,
            name: Some("deploy".into()),
            parameters: vec![
                ParameterSpec::Name("vmName".into()),
                ParameterSpec::Full {
                    name: "callbackRef".into(),
                    required: true,
                },
            ],
            behaviour: Behaviour {
                results: json!({"vm": {"name": "${{ parameters.vmName }}", "run": "${{ run.id }}"}}),
                ..Behaviour::default()
            },
        }],
        ..SimulatorConfig::default()
    }
}

const PAT_HEADER: &str = "Basic OnBhdC0x"; // base64(":pat-1")

async fn send(
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> (u16, String, Value) {
    let client = awc::Client::default();
    let mut request = client
        .request(method.parse().unwrap(), url)
        .insert_header(("X-TFS-FedAuthRedirect", "Suppress"));
    if let Some(value) = authorization {
        request = request.insert_header(("Authorization", value));
    }
    let mut response = match body {
        Some(body) => request.send_json(&body).await.unwrap(),
        None => request.send().await.unwrap(),
    };
    let bytes = response.body().await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (response.status().as_u16(), text, json)
}

fn runs_url(sim: &SimulatorHandle) -> String {
    format!(
        "{}/org/Data%20Platform/_apis/pipelines/7/runs?api-version=7.1",
        sim.base_url()
    )
}

#[actix_web::test]
async fn token_route_issues_tokens_and_refuses_like_entra() {
    let sim = Simulator::start(config()).await.unwrap();
    let client = awc::Client::default();
    let form = |secret: &'static str, scope: &'static str| {
        [
            ("grant_type", "client_credentials"),
            ("client_id", "odm-devops-sim"),
            ("client_secret", secret),
            ("scope", scope),
        ]
    };
    let mut ok = client
        .post(sim.token_url())
        .send_form(&form("sim-secret", AZURE_DEVOPS_SCOPE))
        .await
        .unwrap();
    let token: Value = ok.json().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3599);

    let mut refused = client
        .post(sim.token_url())
        .send_form(&form("wrong", AZURE_DEVOPS_SCOPE))
        .await
        .unwrap();
    let error: Value = refused.json().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(error["error"], "invalid_client");
    assert!(error["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215: Invalid client secret provided."));

    let mut refused = client
        .post(sim.token_url())
        .send_form(&form("sim-secret", "https://graph.microsoft.com/.default"))
        .await
        .unwrap();
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "invalid_scope");
    assert_eq!(sim.token_requests(), 3);
    assert_eq!(sim.tokens_issued(), 1);
    sim.stop().await;
}

#[actix_web::test]
async fn run_requests_are_checked_against_the_official_shapes() {
    let sim = Simulator::start(config()).await.unwrap();
    let url = runs_url(&sim);
    let valid = json!({"templateParameters": {"callbackRef": "http://127.0.0.1:1/cb"}});
    let cases: Vec<(String, Option<&str>, Value, u16, &str)> = vec![
        (url.clone(), None, valid.clone(), 401, "TF400813"),
        (url.clone(), Some("Bearer made-up"), valid.clone(), 401, "not issued by this simulator"),
        (url.replace("?api-version=7.1", ""), Some(PAT_HEADER), valid.clone(), 400, "No api-version was supplied"),
        (url.replace("7.1", "6.0"), Some(PAT_HEADER), valid.clone(), 400, "REST API version of 6.0"),
        (url.replace("/7/", "/8/"), Some(PAT_HEADER), valid.clone(), 404, "Pipeline with id 8 does not exist"),
        (url.replace("/7/", "/x/"), Some(PAT_HEADER), valid.clone(), 400, "pipelineId in the route must be an int32"),
        (url.clone(), Some(PAT_HEADER),
         json!({"resources": {"repositories": {"refName": "refs/heads/main"}}, "templateParameters": {"callbackRef": "c"}}),
         400, "no repository resource 'refName' (only 'self'; a branch goes at resources.repositories.self.refName)"),
        (url.clone(), Some(PAT_HEADER), json!({"branch": "main"}), 400, "RunPipelineParameters has no property 'branch'"),
        (url.clone(), Some(PAT_HEADER), json!({"templateParameters": {"callbackRef": "c", "vmName": 3}}), 400,
         "templateParameters.vmName must be a string, got the number 3"),
        (url.clone(), Some(PAT_HEADER), json!({"templateParameters": {"callbackRef": "c"}, "stagesToSkip": "qa"}), 400,
         "stagesToSkip must be an array of strings"),
        (url.clone(), Some(PAT_HEADER), json!({"templateParameters": {"callbackRef": "c"}, "variables": {"v": "x"}}), 400,
         "variables.v must be an object"),
        (url.clone(), Some(PAT_HEADER), json!({"templateParameters": {"callbackRef": "c", "other": "x"}}), 400,
         "Unexpected parameter 'other'"),
        (url.clone(), Some(PAT_HEADER), json!({"templateParameters": {}}), 400,
         "A value for the 'callbackRef' parameter must be provided."),
    ];
    for (url, auth, body, status, text) in cases {
        let (got, raw, json) = send("POST", &url, auth, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {raw}");
        assert!(raw.contains(text), "{body}: {raw}");
        assert_eq!(json["$id"], "1", "Azure's error shape: {raw}");
        assert!(json["typeKey"].is_string(), "{raw}");
    }
    assert!(sim.runs().is_empty());
    assert_eq!(sim.stats().run_requests, 13);

    // Without `X-TFS-FedAuthRedirect: Suppress` a stranger gets the sign-in page.
    let mut page = awc::Client::default()
        .post(&url)
        .send_json(&valid)
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 203);
    let html = page.body().await.unwrap();
    assert!(String::from_utf8_lossy(&html).contains("Sign In"));
    sim.stop().await;
}

#[actix_web::test]
async fn a_run_calls_back_with_its_parameters_then_completes() {
    let sim = Simulator::start(config()).await.unwrap();
    let callbacks = CallbackServer::start().await;
    let body = json!({
        "resources": {"repositories": {"self": {"refName": "refs/heads/main"}}},
        "templateParameters": {"vmName": "vm-dev", "callbackRef": callbacks.callback_ref(3)},
        "stagesToSkip": [], "variables": {"v": {"value": "1", "isSecret": false}},
    });
    let (status, raw, run) = send(
        "POST",
        &runs_url(&sim),
        Some(PAT_HEADER),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    let id = run["id"].as_i64().unwrap() as i32;
    assert_eq!(run["state"], "inProgress");
    assert_eq!(
        run["resources"]["repositories"]["self"]["refName"],
        "refs/heads/main"
    );
    assert!(run["_links"]["web"]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/org/Data%20Platform/_build/results?buildId={id}")));

    let done = sim
        .wait_for_completion(id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.result.as_deref(), Some("succeeded"));
    assert_eq!(done.request_body, body);
    assert_eq!(done.authenticated_with, "pat");
    let received = callbacks.wait_for(1).await;
    assert_eq!(received[0].method, "PATCH");
    assert_eq!(
        received[0].path_and_query,
        "/api/v1/pp/devops/tasks/3/status?action=STOP&token=tk3"
    );
    assert_eq!(
        received[0].body,
        Some(
            json!({"status": "PROCESSED", "results": {"vm": {"name": "vm-dev", "run": id.to_string()}}})
        )
    );
    assert_eq!(done.callback.unwrap().status, Some(200));

    let get = format!(
        "{}/org/data%20platform/_apis/pipelines/7/runs/{id}?api-version=7.1",
        sim.base_url()
    );
    let (status, _, run) = send("GET", &get, Some(PAT_HEADER), None).await;
    assert_eq!(
        (status, &run["state"], &run["result"]),
        (200, &json!("completed"), &json!("succeeded"))
    );
    callbacks.stop().await;
    sim.stop().await;
}

#[actix_web::test]
async fn control_routes_declare_pipelines_inject_faults_and_cancel_runs() {
    let sim = Simulator::start(config()).await.unwrap();
    let callbacks = CallbackServer::start().await;
    let control = |path: &str| format!("{}/_sim/{path}", sim.base_url());
    let (status, raw, _) = send(
        "PUT",
        &control("pipelines/org/Data%20Platform/9"),
        None,
        Some(
            json!({"parameters": [{"name": "callbackRef", "required": true}],
                    "behaviour": {"manual": true, "result": "failed", "errors": "boom"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    let (status, _, _) = send(
        "POST",
        &control("faults"),
        None,
        Some(json!({"path": "*/pipelines/9/runs", "method": "POST", "kind": "rateLimit", "retryAfterSecs": 2})),
    )
    .await;
    assert_eq!(status, 201);

    let url = runs_url(&sim).replace("/7/", "/9/");
    let body = json!({"templateParameters": {"callbackRef": callbacks.callback_ref(4)}});
    let (status, _, _) = send("POST", &url, Some(PAT_HEADER), Some(body.clone())).await;
    assert_eq!(status, 429);
    let (status, _, run) = send("POST", &url, Some(PAT_HEADER), Some(body)).await;
    assert_eq!(status, 200);
    let id = run["id"].as_i64().unwrap();

    let cancel = format!(
        "{}/org/Data%20Platform/_apis/build/builds/{id}?api-version=7.1",
        sim.base_url()
    );
    let (status, _, _) = send(
        "PATCH",
        &cancel,
        Some(PAT_HEADER),
        Some(json!({"state": "x"})),
    )
    .await;
    assert_eq!(status, 400, "unknown Build property");
    let (status, raw, build) = send(
        "PATCH",
        &cancel,
        Some(PAT_HEADER),
        Some(json!({"status": "cancelling"})),
    )
    .await;
    assert_eq!(
        (status, &build["status"]),
        (200, &json!("cancelling")),
        "{raw}"
    );

    let (_, _, runs) = send("GET", &control("runs"), None, None).await;
    assert_eq!(runs[0]["state"], "completed");
    assert_eq!(runs[0]["result"], "canceled");
    let (status, _, _) = send("POST", &control(&format!("runs/{id}/finish")), None, None).await;
    assert_eq!(status, 409, "a cancelled run cannot finish");
    let (_, _, stats) = send("GET", &control("stats"), None, None).await;
    assert_eq!(
        (stats["runRequests"].as_u64(), stats["runsCreated"].as_u64()),
        (Some(2), Some(1))
    );
    let (_, _, requests) = send("GET", &control("requests"), None, None).await;
    assert_eq!(requests[0]["fault"], "RateLimit");
    assert_eq!(requests[0]["status"], 429);
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    assert!(
        callbacks.received().is_empty(),
        "a cancelled run never calls back"
    );
    callbacks.stop().await;
    sim.stop().await;
}

#[actix_web::test]
async fn failed_and_silent_runs_and_manual_finish() {
    let sim = Simulator::start(config()).await.unwrap();
    let callbacks = CallbackServer::start().await;
    let mut pipeline = config().pipelines[0].clone();
    pipeline.behaviour = Behaviour {
        manual: true,
        ..Behaviour::default()
    };
    sim.put_pipeline(pipeline);
    let body =
        json!({"templateParameters": {"vmName": "vm-x", "callbackRef": callbacks.callback_ref(5)}});
    let (_, _, run) = send(
        "POST",
        &runs_url(&sim),
        Some(PAT_HEADER),
        Some(body.clone()),
    )
    .await;
    let first = run["id"].as_i64().unwrap() as i32;
    let (_, _, run) = send("POST", &runs_url(&sim), Some(PAT_HEADER), Some(body)).await;
    let second = run["id"].as_i64().unwrap() as i32;
    actix_web::rt::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        sim.run(first).unwrap().state,
        "inProgress",
        "manual runs wait"
    );

    let failed = Behaviour {
        result: SimResult::Failed,
        errors: "could not create ${{ parameters.vmName }}".into(),
        ..Behaviour::default()
    };
    assert!(sim.finish_run(first, Some(failed)).await);
    let silent = Behaviour {
        callback: CallbackMode::None,
        ..Behaviour::default()
    };
    assert!(sim.finish_run(second, Some(silent)).await);
    let received = callbacks.wait_for(1).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        Some(json!({"status": "FAILED", "errors": "could not create vm-x"}))
    );
    assert_eq!(sim.run(first).unwrap().result.as_deref(), Some("failed"));
    assert_eq!(
        sim.run(second).unwrap().result.as_deref(),
        Some("succeeded")
    );
    assert!(sim.run(second).unwrap().callback.is_none());
    callbacks.stop().await;
    sim.stop().await;
}

#[actix_web::test]
async fn only_the_last_completed_runs_are_kept() {
    let mut config = config();
    config.retain_runs = 2;
    config.pipelines[0].behaviour.callback = CallbackMode::None;
    let sim = Simulator::start(config).await.unwrap();
    let body = json!({"templateParameters": {"callbackRef": "http://127.0.0.1:9/cb"}});
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, _, run) = send(
            "POST",
            &runs_url(&sim),
            Some(PAT_HEADER),
            Some(body.clone()),
        )
        .await;
        ids.push(run["id"].as_i64().unwrap() as i32);
    }
    sim.wait_for_completion(ids[2], Duration::from_secs(5))
        .await
        .unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    let kept: Vec<i32> = sim.runs().iter().map(|r| r.id).collect();
    assert_eq!(kept, ids[1..].to_vec());
    // Following completions: the forgotten first one is skipped, the others come in order.
    let completed_after = |n: u64| {
        let url = format!("{}/_sim/runs?completedAfter={n}", sim.base_url());
        async move {
            let (status, _, runs) = send("GET", &url, None, None).await;
            assert_eq!(status, 200);
            runs.as_array()
                .unwrap()
                .iter()
                .map(|r| r["completionSeq"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(completed_after(0).await, vec![2, 3]);
    assert_eq!(completed_after(2).await, vec![3]);
    assert!(completed_after(3).await.is_empty());
    sim.stop().await;
}
