//! `GET /tasks/{id}/run` and `GET /tasks/{id}/logs`: Azure DevOps asked now, through every
//! state of a run; logs bounded by `logs.max_bytes`; clear errors when Azure cannot answer.

use odm_devops::config::{ExecutorSettings, OdmHttpSettings};
use odm_devops::simulator::{Behaviour, CallbackMode, FaultKind, FaultSpec, SimResult};
use serde_json::json;

use super::*;
use crate::azure::{simulator_config, MANUAL};
use crate::fakes::FakeExecutor;
use crate::helpers::{TestDb, DEVOPS};
use crate::on_both_backends;

fn ended(result: SimResult) -> Behaviour {
    Behaviour {
        callback: CallbackMode::None,
        result,
        ..Behaviour::default()
    }
}

on_both_backends!(run_state_and_logs_follow_a_run_through_every_azure_state);
async fn run_state_and_logs_follow_a_run_through_every_azure_state(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    // One run per way a run ends (a product each: one activity of a version runs at a time).
    for (product, end) in [
        ("succeeds", Some(SimResult::Succeeded)),
        ("fails", Some(SimResult::Failed)),
        ("is-canceled", None),
    ] {
        let (task, run_id) = task_with_run(&azure, product, MANUAL).await;
        let live = app.get_json(&run_path(task)).await;
        assert_eq!(live["state"], "inProgress", "{live}");
        assert_eq!(live["result"], json!(null), "{live}");
        let web = format!("/_build/results?buildId={run_id}");
        assert!(live["url"].as_str().unwrap().ends_with(&web), "{live}");
        let checked = live["checkedAt"].as_str().unwrap();
        assert!(
            checked.ends_with("+00:00") && checked.len() == 29,
            "{checked}"
        );

        let (status, headers, body) = get_raw(app, &logs_path(task)).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers.get("content-type").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert_eq!(headers.get("x-logs-truncated").unwrap(), "false");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("==> log 1 ("), "{text}");
        assert!(
            text.contains("==> log 3 (") && text.contains("Starting: manual"),
            "{text}"
        );
        assert!(!text.contains("Finishing: manual"), "still running: {text}");
        // The callbackRef (and its token) never shows in the logs.
        assert!(
            !text.contains("token=") && !text.contains("callbackRef ="),
            "{text}"
        );

        let (state, last_line) = match end {
            Some(result) => {
                assert!(azure.sim.finish_run(run_id, Some(ended(result))).await);
                let line = match result {
                    SimResult::Succeeded => "manual: done ✓",
                    SimResult::Failed => "##[error]the pipeline failed",
                };
                (result.as_str(), line)
            }
            None => {
                assert!(azure.sim.cancel_run(run_id));
                ("canceled", "##[error]The operation was canceled.")
            }
        };
        let done = app.get_json(&run_path(task)).await;
        assert_eq!(done["state"], "completed", "{done}");
        assert_eq!(done["result"], state, "{done}");
        let text = app.get(&logs_path(task)).await.text;
        assert!(text.contains(last_line), "{state}: {text}");
        assert!(text.contains("Finishing: Finalize Job"), "{state}: {text}");
        assert!(text.ends_with('\n'), "{text}");
    }
    // Every read went to Azure: two run reads per run, from this API (the engine polls after
    // poll_after_secs, 300 s, not within this test).
    let reads = azure.requests_to("GET", "/runs/1000").len()
        + azure.requests_to("GET", "/runs/1001").len()
        + azure.requests_to("GET", "/runs/1002").len();
    assert_eq!(reads, 6);
    azure.stop().await;
}

on_both_backends!(logs_are_the_last_max_bytes_cut_on_a_character);
async fn logs_are_the_last_max_bytes_cut_on_a_character(db: TestDb) {
    let max = 1_000;
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.logs.max_bytes = max;
    })
    .await;
    azure.sim.put_pipeline(long_running(2_000));
    let (task, run_id) = task_with_run(&azure, "verbose", LONG_RUNNING).await;
    assert!(
        azure
            .sim
            .finish_run(run_id, Some(ended(SimResult::Succeeded)))
            .await
    );
    let (status, headers, body) = get_raw(&azure.app, &logs_path(task)).await;
    assert_eq!(status, 200);
    assert!(body.len() <= max, "{} bytes", body.len());
    // Lines of "étape N: déploiement en cours ✓" are cut somewhere: never inside a character.
    let text = String::from_utf8(body).expect("valid UTF-8, cut on a character");
    assert!(!text.contains('\u{FFFD}'), "{text}");
    assert!(
        text.len() + 3 >= max,
        "at most a character short: {}",
        text.len()
    );
    assert_eq!(headers.get("x-logs-truncated").unwrap(), "true");
    assert_eq!(headers.get("x-logs-max-bytes").unwrap(), "1000");
    assert!(text.contains("long-running: done ✓"), "{text}");
    assert!(
        text.ends_with("##[section]Finishing: Finalize Job (succeeded)\n"),
        "{text}"
    );
    assert!(
        !text.contains("Initialize job"),
        "the first log lies before the bound"
    );
    // Reading went backwards from the last log and stopped at the bound: the first logs'
    // texts were never fetched.
    let fetched =
        |log: i32| azure.requests_to("GET", &format!("/runs/{run_id}/signedlogcontent/{log}"));
    assert!(fetched(1).is_empty() && fetched(2).is_empty());
    assert_eq!(fetched(3), [200], "the long log, read to its tail");

    azure.stop().await;

    // The whole thing when it fits (a service of its own: one engine per database here).
    let whole = Azure::start(&db).await;
    let (task, _) = task_with_run(&whole, "short", MANUAL).await;
    let (_, headers, body) = get_raw(&whole.app, &logs_path(task)).await;
    assert_eq!(headers.get("x-logs-truncated").unwrap(), "false");
    assert!(String::from_utf8(body).unwrap().starts_with("==> log 1 ("));
    // The logs may be asked for as text; the JSON routes still refuse to answer text.
    let as_text = [("Accept", "text/plain")];
    let text = whole
        .app
        .send("GET", &logs_path(task), None, &as_text)
        .await;
    assert_eq!(text.status, 200, "{text:?}");
    let refused = whole.app.send("GET", &run_path(task), None, &as_text).await;
    refused.assert_error(406, "40601");
    whole.stop().await;
}

fn fault(path: &str, kind: FaultKind, count: u32, retry_after_secs: Option<u64>) -> FaultSpec {
    FaultSpec {
        path: path.into(),
        method: Some("GET".into()),
        kind,
        count,
        retry_after_secs,
        delay_ms: Some(2_000),
    }
}

on_both_backends!(azure_down_slow_throttling_or_refusing_is_a_clear_error);
async fn azure_down_slow_throttling_or_refusing_is_a_clear_error(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |_, executor| {
        executor.max_retries = 1;
        executor.retry_base_delay_ms = 10;
        executor.retry_max_delay_ms = 1_000;
        executor.request_timeout_ms = 500;
    })
    .await;
    let app = &azure.app;
    let (task, run_id) = task_with_run(&azure, "p", MANUAL).await;
    let run_route = format!("*/runs/{run_id}");
    let logs_route = format!("*/runs/{run_id}/logs");
    for (route, path) in [(&run_route, run_path(task)), (&logs_route, logs_path(task))] {
        // Down: 503 on every try.
        azure
            .sim
            .add_fault(fault(route, FaultKind::Unavailable, 2, None));
        let down = app.get(&path).await;
        let message = down.assert_error(503, "50081");
        assert!(
            message.contains("executor [azure-devops]") && message.contains("HTTP 503"),
            "{message}"
        );
        assert!(
            !message.contains("127.0.0.1"),
            "no internal address: {message}"
        );
        // Throttling: a Retry-After longer than the executor waits is handed to the caller.
        azure
            .sim
            .add_fault(fault(route, FaultKind::RateLimit, 1, Some(3_600)));
        let throttled = app.get(&path).await;
        let message = throttled.assert_error(503, "50081");
        assert!(message.contains("429"), "{message}");
        // Slow: no answer within the request timeout (500 ms), twice.
        azure.sim.add_fault(fault(route, FaultKind::Slow, 2, None));
        let slow = app.get(&path).await;
        let message = slow.assert_error(503, "50081");
        assert!(message.contains("did not answer"), "{message}");
        // Refused: Azure's sign-in page (credentials it does not take).
        azure
            .sim
            .add_fault(fault(route, FaultKind::SignInPage, 1, None));
        let refused = app.get(&path).await;
        let message = refused.assert_error(502, "50281");
        assert!(message.contains("authentication failed"), "{message}");
        // And once Azure is back, it answers.
        assert_eq!(app.get(&path).await.status, 200);
    }
    // A signed log URL that fails is as clear.
    azure.sim.add_fault(fault(
        "*/signedlogcontent/*",
        FaultKind::ServerError,
        2,
        None,
    ));
    let message = app.get(&logs_path(task)).await.assert_error(503, "50081");
    assert!(message.contains("HTTP 500"), "{message}");
    azure.stop().await;
}

on_both_backends!(tasks_without_a_viewable_run_are_told_apart);
async fn tasks_without_a_viewable_run_are_told_apart(db: TestDb) {
    let remote = FakeExecutor::start().await;
    let address = remote.address.clone();
    let azure = Azure::start_with(&db, simulator_config(), move |settings, _| {
        let odm = OdmHttpSettings {
            active: true,
            address,
            check_after_callback: false,
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
        };
        settings
            .executors
            .insert("fake".into(), ExecutorSettings::OdmHttp(odm));
        settings.auth.api_tokens = vec!["api-token".into()];
    })
    .await;
    let app = &azure.app;
    let bearer = [("Authorization", "Bearer api-token")];
    let get = |path: String| async move { app.send("GET", &path, None, &bearer).await };

    // Deny by default: the API token, as every route.
    app.get(&run_path(1)).await.assert_error(401, "40101");
    app.get(&logs_path(1)).await.assert_error(401, "40101");
    get(run_path(999)).await.assert_error(404, "40411");
    get(logs_path(999)).await.assert_error(404, "40411");

    // A PLANNED task has no run yet.
    let body = json!({"dataProductId": "later", "dataProductVersion": "1.0.0", "stage": "dev"});
    let task = azure_task("deploy", MANUAL, None, json!({}));
    let answer = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/later/versions/1.0.0",
            Some((
                "application/json",
                descriptor(json!({"dev": [task]})).to_string(),
            )),
            &bearer,
        )
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let created = app
        .send(
            "POST",
            &format!("{DEVOPS}/activities"),
            Some(("application/json", body.to_string())),
            &bearer,
        )
        .await
        .json();
    let tasks = app
        .send(
            "GET",
            &format!("{DEVOPS}/tasks?activityId={}", created["id"]),
            None,
            &bearer,
        )
        .await
        .json();
    let planned = tasks[0]["id"].as_i64().unwrap();
    let message = get(run_path(planned)).await.assert_error(404, "40412");
    assert!(message.contains("has no run"), "{message}");
    get(logs_path(planned)).await.assert_error(404, "40412");

    // ODM's executor protocol has no run state nor logs.
    let remote_task =
        json!({"service": {"$href": "{fake}"}, "template": {"name": "t"}, "configurations": {}});
    app.send(
        "PUT",
        "/api/v1/pp/registry/products/remote/versions/1.0.0",
        Some((
            "application/json",
            descriptor(json!({"dev": [remote_task]})).to_string(),
        )),
        &bearer,
    )
    .await;
    let body = json!({"dataProductId": "remote", "dataProductVersion": "1.0.0", "stage": "dev"});
    let created = app
        .send(
            "POST",
            &format!("{DEVOPS}/activities?startAfterCreation=true"),
            Some(("application/json", body.to_string())),
            &bearer,
        )
        .await
        .json();
    remote.wait_for(1).await;
    let task_path = format!("{DEVOPS}/tasks?activityId={}", created["id"]);
    let task = crate::helpers::eventually("the remote run recorded", || async {
        let tasks = app.send("GET", &task_path, None, &bearer).await.json();
        let task = tasks[0].clone();
        (task["status"] == "PROCESSING" && task["id"].is_i64())
            .then_some(task["id"].as_i64().unwrap())
    })
    .await;
    // The dispatch answered, its run is recorded: now the executor says it cannot show it.
    crate::helpers::eventually("a run reference for the remote task", || async {
        let answer = get(run_path(task)).await;
        (answer.status == 404 && answer.text.contains("40413")).then_some(())
    })
    .await;
    let message = get(logs_path(task)).await.assert_error(404, "40413");
    assert!(
        message.contains("executor [fake] cannot show the logs of its run"),
        "{message}"
    );
    azure.stop().await;
}
