//! This binary as ODM's Azure DevOps executor (DESIGN §6): `POST /api/v1/up/executor/tasks`
//! and `GET …/tasks/{id}/status` driven the way ODM's Java DevOps server drives them (its JSON:
//! JSON-text template and configurations, epoch-ms and ISO dates, its headers), against the
//! Azure DevOps + Entra simulator over HTTP, on SQLite and PostgreSQL.
//!
//! * here: a task starts its run (callbackRef, params, stagesToSkip, branch, context kept out,
//!   placeholders resolved), replays, conflicts, invalid tasks, Azure refusing and throttling.
//! * `status`: every Azure state, live and fast, the mapping kept; unknown tasks.
//! * `access`: `x-odm-*` secrets, workload identity with a rotated token file, the route's
//!   tokens, `enabled: false`.
//! * `itself`: this binary's engine using a second instance as its `odm-http` executor.

mod access;
mod itself;
mod status;

use odm_devops::simulator::FaultKind;
use serde_json::{json, Value};

use crate::azure::{simulator_config, Azure, ORG, PROJECT, PROVISION_VM};
use crate::helpers::{refused_port, Answer, TestApp, TestDb};
use crate::on_both_backends;

pub const TASKS: &str = "/api/v1/up/executor/tasks";

/// Where ODM's server would be called back (nobody listens: the runs' callbacks fail, which
/// these tests do not need).
pub fn odm_callback(task_id: i64) -> String {
    format!(
        "http://127.0.0.1:{}/api/v1/pp/devops/tasks/{task_id}/status?action=STOP",
        refused_port()
    )
}

/// A TaskResource exactly as ODM's DevOps server serializes it (Jackson, field order of the
/// class, `template` and `configurations` as JSON text, `Date`s as epoch milliseconds).
pub fn odm_task(id: i64, template: Value, configurations: Value) -> Value {
    json!({
        "id": id,
        "activityId": "41",
        "callbackRef": odm_callback(id),
        "template": template.to_string(),
        "configurations": configurations.to_string(),
        "status": "PROCESSING",
        "results": null,
        "errors": null,
        "createdAt": 1764751200000i64,
        "startedAt": 1764751201000i64,
        "finishedAt": null
    })
}

pub fn template(pipeline_id: i32) -> Value {
    json!({"organization": ORG, "project": PROJECT, "pipelineId": pipeline_id.to_string(), "branch": "main"})
}

/// POSTs `task` with the headers ODM's RestTemplate sends, and `extra` ones.
pub async fn send_task(app: &TestApp, task: &Value, extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("Accept", "application/json, application/*+json")];
    headers.extend_from_slice(extra);
    app.send(
        "POST",
        TASKS,
        Some(("application/json", task.to_string())),
        &headers,
    )
    .await
}

pub async fn task_status(app: &TestApp, id: i64, extra: &[(&str, &str)]) -> Answer {
    app.send("GET", &format!("{TASKS}/{id}/status"), None, extra)
        .await
}

on_both_backends!(an_odm_task_starts_its_run_once_and_is_echoed);
async fn an_odm_task_starts_its_run_once_and_is_echoed(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let context = json!({"dev": {"status": "PROCESSED", "finishedAt": "2026-12-03T08:00:00.000+00:00",
        "results": {"task1": {"vm": {"name": "vm-from-dev"}}}}});
    let configurations = json!({
        "params": {"vmName": "${dev.results.task1.vm.name}", "size": {"cores": 2}},
        "stagesToSkip": ["Test"],
        "context": context,
    });
    let mut task = odm_task(11, template(PROVISION_VM), configurations);
    task["startedAt"] = json!("2026-12-03T08:00:01.000+00:00");
    task["someFieldOdmAddsLater"] = json!({"kept": true});

    let created = send_task(app, &task, &[]).await;
    assert_eq!(created.status, 201, "{created:?}");
    let mut expected = task.clone();
    expected["status"] = json!("PROCESSING");
    assert_eq!(
        created.json(),
        expected,
        "every field echoed, status PROCESSING"
    );

    let run = azure.sim.runs().pop().expect("a run was started");
    assert_eq!(azure.sim.runs().len(), 1);
    assert_eq!(run.pipeline_id, PROVISION_VM);
    assert_eq!(run.ref_name.as_deref(), Some("refs/heads/main"));
    assert_eq!(run.template_parameters["callbackRef"], task["callbackRef"]);
    assert_eq!(
        run.template_parameters["vmName"], "vm-from-dev",
        "resolved from the context"
    );
    assert_eq!(
        run.template_parameters["size"], r#"{"cores":2}"#,
        "non-strings as compact JSON"
    );
    assert_eq!(run.request_body["stagesToSkip"], json!(["Test"]));
    let sent = run.request_body.to_string();
    assert!(
        !sent.contains("context") && !sent.contains("PROCESSED"),
        "context kept out: {sent}"
    );

    // ODM sends it again (a retry): the same answer, no second run.
    let replay = send_task(app, &task, &[]).await;
    assert_eq!((replay.status, replay.json()), (201, expected));
    let mut reordered = task.clone();
    reordered["template"] = json!(template(PROVISION_VM)); // an object, not text: the same task
    assert_eq!(send_task(app, &reordered, &[]).await.status, 201);
    assert_eq!(azure.sim.stats().runs_created, 1);

    // Another run request under the same task id is refused.
    let mut other = task.clone();
    other["configurations"] = json!(json!({"params": {"vmName": "other"}}).to_string());
    let message = send_task(app, &other, &[]).await.assert_error(409, "40901");
    assert!(
        message.contains("task 11 already has a pipeline run"),
        "{message}"
    );
    assert_eq!(azure.sim.stats().runs_created, 1);
    azure.stop().await;
}

on_both_backends!(invalid_tasks_are_refused_naming_what_is_wrong_and_nothing_runs);
async fn invalid_tasks_are_refused_naming_what_is_wrong_and_nothing_runs(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let cases = [
        (
            json!({"activityId": "1", "template": "{\"organization\": \"o\"}"}),
            vec![
                "id is missing",
                "callbackRef is missing",
                "template lacks project, pipelineId",
            ],
        ),
        (
            odm_task(5, json!({"organization": ORG}), json!({})),
            vec!["template lacks project, pipelineId"],
        ),
        (
            json!({"id": 5, "callbackRef": "http://x", "template": "{not json", "createdAt": "tuesday"}),
            vec!["template is not JSON text", "createdAt must be a date"],
        ),
        (
            odm_task(
                5,
                template(PROVISION_VM),
                json!({"params": {"vmName": "${dev.results.task1.vm.name}"}}),
            ),
            vec!["placeholder ${dev.results.task1.vm.name} did not resolve"],
        ),
        (
            odm_task(5, template(PROVISION_VM), json!({"stagesToSkip": "Test"})),
            vec!["configurations.stagesToSkip must be a list"],
        ),
    ];
    for (task, expected) in cases {
        let message = send_task(app, &task, &[]).await.assert_error(422, "42201");
        for part in expected {
            assert!(message.contains(part), "{part}: {message}");
        }
    }
    assert_eq!(azure.sim.stats().run_requests, 0, "nothing reached Azure");
    task_status(app, 5, &[]).await.assert_error(404, "40401");
    azure.stop().await;
}

on_both_backends!(azure_refusing_a_run_fails_the_task_with_its_message);
async fn azure_refusing_a_run_fails_the_task_with_its_message(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    // The pipeline does not declare `colour`: Azure refuses the run.
    let task = odm_task(
        21,
        template(PROVISION_VM),
        json!({"params": {"colour": "red"}}),
    );
    let answer = send_task(app, &task, &[]).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["status"], "FAILED");
    let errors = body["errors"].as_str().unwrap();
    assert!(errors.contains("Unexpected parameter 'colour'"), "{errors}");
    assert!(body["finishedAt"].as_i64().is_some(), "{body}");
    assert_eq!(body["id"], 21);
    assert_eq!(task_status(app, 21, &[]).await.json(), "FAILED");
    // The same task again: the same refusal, not a second attempt.
    let requests = azure.sim.stats().run_requests;
    assert_eq!(send_task(app, &task, &[]).await.json()["status"], "FAILED");
    assert_eq!(azure.sim.stats().run_requests, requests);
    azure.stop().await;
}

on_both_backends!(azure_throttling_is_waited_out_or_answered_503_and_nothing_is_kept);
async fn azure_throttling_is_waited_out_or_answered_503_and_nothing_is_kept(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |_, executor| {
        executor.retry_max_delay_ms = 1_500;
    })
    .await;
    let app = &azure.app;
    let throttle = |retry_after_secs| odm_devops::simulator::FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::RateLimit,
        count: 1,
        retry_after_secs: Some(retry_after_secs),
        delay_ms: None,
    };
    // A short Retry-After is waited out by the executor's client, as for the engine.
    azure.sim.add_fault(throttle(1));
    let task = odm_task(31, template(PROVISION_VM), json!({}));
    assert_eq!(
        send_task(app, &task, &[]).await.json()["status"],
        "PROCESSING"
    );
    assert_eq!(azure.requests_to("POST", "/runs"), vec![429, 200]);

    // A longer one is the caller's to wait: 503 with Retry-After, no run, nothing kept.
    azure.sim.add_fault(throttle(30));
    let task = odm_task(32, template(PROVISION_VM), json!({}));
    let refused = send_task(app, &task, &[]).await;
    let message = refused.assert_error(503, "50061");
    assert!(message.contains("rate limited"), "{message}");
    task_status(app, 32, &[]).await.assert_error(404, "40401");
    assert_eq!(
        send_task(app, &task, &[]).await.json()["status"],
        "PROCESSING"
    );
    assert_eq!(azure.sim.stats().runs_created, 2);
    azure.stop().await;
}
