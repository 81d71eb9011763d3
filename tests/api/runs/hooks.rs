//! `POST /hooks/{executor}`: Azure DevOps' "Run state changed" service hook completes a
//! pipeline that never calls back; only with the executor's secret; changes nothing for runs
//! it does not know or tasks already settled; never settles a task twice when it races the
//! pipeline's own callback.

use odm_devops::secret::Secret;
use odm_devops::simulator::{
    Behaviour, CallbackMode, FaultKind, FaultSpec, HookSubscription, PipelineSpec, SimResult,
};
use serde_json::json;

use super::*;
use crate::azure::{errors_of, simulator_config, ORG, PROJECT, SMOKE_TEST};
use crate::helpers::{TestDb, DEVOPS};
use crate::on_both_backends;

pub(super) const SECRET: &str = "hook-secret-1";
/// Pipelines that never call back, succeeding or failing.
pub(super) const SILENT_OK: i32 = 21;
pub(super) const SILENT_FAILS: i32 = 22;

/// The service with `executors.azure-devops.service_hook_secret` set and API tokens required
/// (the hook route needs neither), polling only after the default 300 s.
pub(super) async fn with_hook_secret(db: &TestDb) -> Azure {
    Azure::start_with(db, simulator_config(), |settings, executor| {
        executor.service_hook_secret = Some(Secret::new(SECRET));
        settings.auth.api_tokens = vec!["api-token".into()];
    })
    .await
}

/// Reads with the API token.
pub(super) async fn read(azure: &Azure, path: &str) -> serde_json::Value {
    let answer = azure
        .app
        .send("GET", path, None, &[("Authorization", "Bearer api-token")])
        .await;
    assert_eq!(answer.status, 200, "{path}: {answer:?}");
    answer.json()
}

/// Subscribes the service to the simulator's completed runs, as Azure DevOps would be told to.
pub(super) fn subscribe(azure: &Azure, password: &str) {
    azure.sim.add_hook(HookSubscription {
        url: format!("{}{}", azure.app.address, hook_path("azure-devops")),
        username: "azure-devops".into(),
        password: password.into(),
    });
}

/// Stores a one-task stage of `pipeline` for `product` and starts it (with the API token); the
/// activity's id.
pub(super) async fn start(azure: &Azure, product: &str, pipeline: i32) -> i64 {
    let bearer = [("Authorization", "Bearer api-token")];
    let task = azure_task(
        "deploy",
        pipeline,
        None,
        json!({"params": {"endpoint": "http://x"}}),
    );
    let put = azure
        .app
        .send(
            "PUT",
            &format!("/api/v1/pp/registry/products/{product}/versions/1.0.0"),
            Some((
                "application/json",
                descriptor(json!({"dev": [task]})).to_string(),
            )),
            &bearer,
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    let body = json!({"dataProductId": product, "dataProductVersion": "1.0.0", "stage": "dev"});
    let created = azure
        .app
        .send(
            "POST",
            &format!("{DEVOPS}/activities?startAfterCreation=true"),
            Some(("application/json", body.to_string())),
            &bearer,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    created.json()["id"].as_i64().unwrap()
}

pub(super) async fn activity_once(azure: &Azure, id: i64, status: &str) -> serde_json::Value {
    crate::helpers::eventually(&format!("activity {id} {status}"), || async move {
        let activity = read(azure, &format!("{DEVOPS}/activities/{id}")).await;
        (activity["status"] == status).then_some(activity)
    })
    .await
}

pub(super) async fn only_task(azure: &Azure, activity: i64) -> serde_json::Value {
    read(azure, &format!("{DEVOPS}/tasks?activityId={activity}")).await[0].clone()
}

on_both_backends!(pipelines_without_a_callback_step_complete_through_the_service_hook);
async fn pipelines_without_a_callback_step_complete_through_the_service_hook(db: TestDb) {
    let azure = with_hook_secret(&db).await;
    subscribe(&azure, SECRET);
    // Neither calls back; polling would take 300 s. They run for a second: long enough for
    // the service to have recorded the run before Azure says it completed (real runs take
    // minutes).
    let silent = |id: i32, result: SimResult| {
        let behaviour = Behaviour {
            callback: CallbackMode::None,
            result,
            delay_ms: Some(1_000),
            ..Behaviour::default()
        };
        PipelineSpec::calling_back(ORG, PROJECT, id, "silent", &["endpoint"], behaviour)
    };
    azure
        .sim
        .put_pipeline(silent(SILENT_OK, SimResult::Succeeded));
    azure
        .sim
        .put_pipeline(silent(SILENT_FAILS, SimResult::Failed));
    let ok = start(&azure, "silent", SILENT_OK).await;
    let failing = start(&azure, "failing", SILENT_FAILS).await;
    let done = activity_once(&azure, ok, "PROCESSED").await;
    assert_eq!(
        done["results"],
        json!(null),
        "a hook carries no results: {done}"
    );
    let task = only_task(&azure, ok).await;
    assert_eq!(task["status"], "PROCESSED");
    assert_eq!(task["results"], json!(null));
    let current = read(&azure, &format!("{DEVOPS}/lifecycles/silent/1.0.0/current")).await;
    assert_eq!(current["stage"], "dev");

    activity_once(&azure, failing, "FAILED").await;
    let task = only_task(&azure, failing).await;
    assert_eq!(task["status"], "FAILED");
    assert!(
        errors_of(&task).contains("the run failed without calling back"),
        "{task}"
    );

    let deliveries = azure.sim.hook_deliveries();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:?}"
    );
    // Settled by the engine's poll, the hook's wake-up: one Runs – Get each, at once.
    for run in azure.sim.runs() {
        let reads = azure.requests_to("GET", &format!("/runs/{}", run.id));
        assert_eq!(reads, [200], "run {}", run.id);
    }
    azure.stop().await;
}

on_both_backends!(a_run_announced_before_its_run_request_is_answered_is_still_settled);
async fn a_run_announced_before_its_run_request_is_answered_is_still_settled(db: TestDb) {
    let azure = with_hook_secret(&db).await;
    subscribe(&azure, SECRET);
    let at_once = Behaviour {
        callback: CallbackMode::None,
        delay_ms: Some(50),
        ..Behaviour::default()
    };
    azure.sim.put_pipeline(PipelineSpec::calling_back(
        ORG,
        PROJECT,
        SILENT_OK,
        "at-once",
        &["endpoint"],
        at_once,
    ));
    // Azure creates the run, which completes and is announced, 1 s before the run request's
    // answer reaches the service.
    azure.sim.add_fault(FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::Slow,
        count: 1,
        retry_after_secs: None,
        delay_ms: Some(1_000),
    });
    let activity = start(&azure, "fast", SILENT_OK).await;
    // Not 300 s later at the poll: the hook waited for the run request under way.
    activity_once(&azure, activity, "PROCESSED").await;
    let deliveries = azure.sim.hook_deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].status, Some(200));
    azure.stop().await;
}

on_both_backends!(hooks_need_the_executor_s_secret_and_change_nothing_they_do_not_know);
async fn hooks_need_the_executor_s_secret_and_change_nothing_they_do_not_know(db: TestDb) {
    let azure = with_hook_secret(&db).await;
    let app = &azure.app;
    azure.sim.put_pipeline(long_running(0));
    let activity = start(&azure, "p", LONG_RUNNING).await;
    let task_id = only_task(&azure, activity).await["id"].as_i64().unwrap();
    let run = azure.wait_for_run_of_task(task_id).await;
    crate::helpers::eventually("the run recorded", || async {
        only_task(&azure, activity).await["runUrl"]
            .as_str()
            .map(|_| ())
    })
    .await;
    let completed = run_event(run.id, LONG_RUNNING, "completed", Some("succeeded"));

    // Not authenticated: no header, the API token, a wrong password, another scheme.
    for authorization in [
        None,
        Some("Bearer api-token".to_owned()),
        Some(basic("azure", "wrong")),
        Some(basic("", "")),
        Some(format!("Basic {}", "not base64!")),
        Some(format!("Digest {}", SECRET)),
    ] {
        let answer = send_hook(app, "azure-devops", &completed, authorization.as_deref()).await;
        answer.assert_error(401, "40101");
    }
    assert_eq!(only_task(&azure, activity).await["status"], "PROCESSING");
    // The run is still going at Azure: the poll a hook triggers would find it so; and the
    // hook only reads it when the event says it completed.
    let running = run_event(run.id, LONG_RUNNING, "inProgress", None);
    let answer = send_hook(app, "azure-devops", &running, Some(&basic("any", SECRET))).await;
    assert_eq!(answer.json(), json!({"taskId": null, "polling": false}));

    // A run we never started, or of another pipeline: 200, nothing changes.
    for unknown in [
        run_event(run.id + 50, LONG_RUNNING, "completed", Some("succeeded")),
        run_event(run.id, SMOKE_TEST, "completed", Some("succeeded")),
    ] {
        let answer = send_hook(app, "azure-devops", &unknown, Some(&basic("any", SECRET))).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json(), json!({"taskId": null, "polling": false}));
    }
    // Not a run state event (a subscription to the wrong event).
    let mut build = completed.clone();
    build["eventType"] = json!("build.complete");
    send_hook(app, "azure-devops", &build, Some(&basic("any", SECRET)))
        .await
        .assert_error(422, "42203");
    assert_eq!(only_task(&azure, activity).await["status"], "PROCESSING");
    assert!(
        azure
            .requests_to("GET", &format!("/runs/{}", run.id))
            .is_empty(),
        "nothing polled"
    );

    // Known and completed: the task settles; a second delivery (Azure retries) changes nothing.
    azure
        .sim
        .finish_run(
            run.id,
            Some(Behaviour {
                callback: CallbackMode::None,
                ..Behaviour::default()
            }),
        )
        .await;
    let answer = send_hook(
        app,
        "azure-devops",
        &completed,
        Some(&basic("azure", SECRET)),
    )
    .await;
    assert_eq!(answer.json(), json!({"taskId": task_id, "polling": true}));
    activity_once(&azure, activity, "PROCESSED").await;
    let again = send_hook(
        app,
        "azure-devops",
        &completed,
        Some(&basic("azure", SECRET)),
    )
    .await;
    assert_eq!(
        again.json(),
        json!({"taskId": null, "polling": false}),
        "already settled"
    );
    assert_eq!(
        azure.requests_to("GET", &format!("/runs/{}", run.id)),
        [200],
        "polled once"
    );
    let lifecycle = read(&azure, &format!("{DEVOPS}/lifecycles/p/1.0.0")).await;
    assert_eq!(lifecycle.as_array().unwrap().len(), 1, "{lifecycle}");

    // A body larger than the hook takes.
    let mut huge = completed.clone();
    huge["message"]["text"] = json!("x".repeat(300 * 1024));
    send_hook(app, "azure-devops", &huge, Some(&basic("azure", SECRET)))
        .await
        .assert_error(413, "41301");

    // Executors without a secret have no such route: what any unknown path answers, 401
    // without the API token (the hook's secret is none), 404 with it.
    for executor in ["other", "fake", "AZURE-DEVOPS"] {
        let answer = send_hook(app, executor, &completed, Some(&basic("azure", SECRET))).await;
        let message = answer.assert_error(401, "40101");
        assert!(message.contains("API token"), "{message}");
        let path = format!("{DEVOPS}/hooks/{executor}");
        let body = Some(("application/json", completed.to_string()));
        let auth = [("Authorization", "Bearer api-token")];
        let message = app.send("POST", &path, body, &auth).await;
        let message = message.assert_error(404, "40400");
        assert!(message.starts_with("no route for POST"), "{message}");
    }
    azure.stop().await;

    let without = Azure::start(&db).await;
    let answer = send_hook(
        &without.app,
        "azure-devops",
        &completed,
        Some(&basic("a", SECRET)),
    )
    .await;
    answer.assert_error(404, "40400");
    without.stop().await;
}
