//! What the service does to runs besides starting them: cancel them when an activity is aborted,
//! authenticate with the activity's own credentials, confirm callbacks with Azure before
//! accepting them, and poll runs that never call back.

use odm_devops::config::{AzureAuthSettings, AzureDevOpsSettings, Settings};
use odm_devops::secret::Secret;
use odm_devops::simulator::{FaultKind, FaultSpec};
use serde_json::{json, Value};

use super::*;
use crate::helpers::{descriptor, TestDb, DEVOPS};
use crate::on_both_backends;

/// Azure creates the run at once but answers the run request 1.5 s later.
fn slow_run_answer() -> FaultSpec {
    FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::Slow,
        count: 1,
        retry_after_secs: None,
        delay_ms: Some(1_500),
    }
}

/// Calls back PROCESSED as the pipeline's last step would, while its run is in progress; the
/// service holds the outcome until Azure confirms it.
async fn call_back_before_the_run_ends(azure: &Azure, run: &RunRecord) {
    let done = json!({"status": "PROCESSED", "results": {"approved": true}});
    let answer = azure
        .app
        .call_back(&run.template_parameters["callbackRef"], Some(done))
        .await;
    assert_eq!(
        answer.json(),
        json!({"status": "PROCESSING"}),
        "held until confirmed"
    );
}

/// Ends a run at the simulator, without a (second) callback.
async fn end_run(azure: &Azure, run: &RunRecord, result: SimResult) {
    let behaviour = Behaviour {
        callback: CallbackMode::None,
        result,
        ..Behaviour::default()
    };
    assert!(azure.sim.finish_run(run.id, Some(behaviour)).await);
}

fn id_of(task: &Value) -> i64 {
    task["id"].as_i64().unwrap()
}

async fn abort(azure: &Azure, activity_id: i64) {
    let answer = azure.app.activity_action(activity_id, "ABORT").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json(), json!({"status": "ABORTED"}));
}

/// Waits until the simulator says the run was cancelled, through one `PATCH …/builds/{id}`.
async fn assert_cancelled(azure: &Azure, run_id: i32) {
    let builds = format!("/{ORG}/{PROJECT}/_apis/build/builds/{run_id}");
    // The simulator logs a request once its answer is built, after the run has ended: waiting
    // for the run alone read the log too early under load (`[]`, seen once in a full run).
    eventually(&format!("run {run_id} cancelled"), || {
        let builds = builds.clone();
        async move {
            let run = azure.sim.run(run_id)?;
            let logged = !azure.requests_to("PATCH", &builds).is_empty();
            (run.result.as_deref() == Some("canceled") && logged).then_some(())
        }
    })
    .await;
    assert_eq!(azure.requests_to("PATCH", &builds), [200]);
    assert_eq!(azure.sim.run(run_id).unwrap().callback, None);
}

/// Waits until the service recorded the run of the task at `position` (its `runUrl`).
async fn wait_for_recorded_run(azure: &Azure, activity_id: i64, position: usize) -> RunRecord {
    let task_id = id_of(&azure.app.tasks_of(activity_id).await[position]);
    eventually("the run recorded by the service", || async move {
        azure.app.tasks_of(activity_id).await[position]["runUrl"]
            .as_str()
            .map(|_| ())
    })
    .await;
    azure
        .run_of_task(task_id)
        .expect("the simulator has the run")
}

fn two_manual_tasks() -> Value {
    descriptor(json!({"dev": [
        azure_task("approval", MANUAL, None, json!({})),
        azure_task("sign-off", MANUAL, None, json!({})),
    ]}))
}

on_both_backends!(aborting_a_running_activity_cancels_its_run);
async fn aborting_a_running_activity_cancels_its_run(db: TestDb) {
    let azure = Azure::start(&db).await;
    azure
        .app
        .put_descriptor("p", "1.0.0", &two_manual_tasks())
        .await;
    let id = azure.app.start_activity("p", "1.0.0", "dev").await;
    let run = wait_for_recorded_run(&azure, id, 0).await;

    abort(&azure, id).await;
    assert_cancelled(&azure, run.id).await;
    let tasks = azure.app.tasks_of(id).await;
    assert_eq!(
        [&tasks[0]["status"], &tasks[1]["status"]],
        ["ABORTED", "ABORTED"]
    );
    assert_eq!(azure.sim.runs().len(), 1, "the second task never ran");
    azure.stop().await;
}

on_both_backends!(an_activity_aborted_while_its_run_request_is_in_flight_cancels_the_run);
async fn an_activity_aborted_while_its_run_request_is_in_flight_cancels_the_run(db: TestDb) {
    let azure = Azure::start(&db).await;
    azure.sim.add_fault(slow_run_answer());
    azure
        .app
        .put_descriptor("p", "1.0.0", &two_manual_tasks())
        .await;
    let id = azure.app.start_activity("p", "1.0.0", "dev").await;
    let run = azure
        .wait_for_run_of_task(id_of(&azure.app.tasks_of(id).await[0]))
        .await;
    assert_eq!(
        azure.app.tasks_of(id).await[0]["runUrl"],
        Value::Null,
        "still waiting for Azure's answer"
    );

    abort(&azure, id).await;
    assert_cancelled(&azure, run.id).await;
    assert_eq!(azure.app.activity(id).await["status"], "ABORTED");
    azure.stop().await;
}

on_both_backends!(an_activitys_own_pat_is_used_instead_of_the_configured_credentials);
async fn an_activitys_own_pat_is_used_instead_of_the_configured_credentials(db: TestDb) {
    let config = SimulatorConfig {
        pats: vec!["activity-pat-1".into()],
        ..simulator_config()
    };
    // The configured service principal cannot sign in: only the activity's PAT can work.
    let azure = Azure::start_with(&db, config, |_, executor| {
        if let AzureAuthSettings::ClientCredentials(c) = &mut executor.auth {
            c.client_secret = Secret::new("wrong");
        }
    })
    .await;
    let app = &azure.app;
    let dev = descriptor(json!({"dev": [azure_task("smoke", SMOKE_TEST, None, json!({}))]}));
    for product in ["with-pat", "wrong-pat", "no-pat"] {
        app.put_descriptor(product, "1.0.0", &dev).await;
    }
    let start_with_pat = |product: &'static str, pat: &'static str| async move {
        let body = json!({"dataProductId": product, "dataProductVersion": "1.0.0", "stage": "dev"});
        let answer = app
            .send(
                "POST",
                &format!("{DEVOPS}/activities?startAfterCreation=true"),
                Some(("application/json", body.to_string())),
                &[("x-odm-azure-devops-executor-secret-pat", pat)],
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["id"].as_i64().unwrap()
    };

    let id = start_with_pat("with-pat", "activity-pat-1").await;
    app.wait_for_activity(id, "PROCESSED").await;
    let task = app.tasks_of(id).await.remove(0);
    assert_eq!(
        azure.run_of_task(id_of(&task)).unwrap().authenticated_with,
        "pat"
    );
    assert_eq!(azure.sim.token_requests(), 0, "Entra was never asked");
    let shown = format!("{}{}", app.activity(id).await, app.tasks_of(id).await[0]);
    assert!(!shown.contains("activity-pat-1"), "{shown}");

    let id = start_with_pat("wrong-pat", "not-a-pat").await;
    app.wait_for_activity(id, "FAILED").await;
    let errors = errors_of(&app.tasks_of(id).await[0]);
    assert!(
        errors.contains("Azure DevOps refused the run request (HTTP 401)")
            && errors.contains("the personal access token is not accepted"),
        "{errors}"
    );
    assert_eq!(azure.sim.token_requests(), 0);

    let id = app.start_activity("no-pat", "1.0.0", "dev").await;
    app.wait_for_activity(id, "FAILED").await;
    let errors = errors_of(&app.tasks_of(id).await[0]);
    assert!(errors.contains("AADSTS7000215"), "{errors}");
    assert_eq!(azure.sim.runs().len(), 1);
    azure.stop().await;
}

fn checked_after_callback(_: &mut Settings, executor: &mut AzureDevOpsSettings) {
    executor.check_after_callback = true;
}

on_both_backends!(check_after_callback_holds_a_task_until_azure_confirms_its_run);
async fn check_after_callback_holds_a_task_until_azure_confirms_its_run(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), checked_after_callback).await;
    let app = &azure.app;
    app.put_descriptor("p", "1.0.0", &two_manual_tasks()).await;
    let id = app.start_activity("p", "1.0.0", "dev").await;
    let first = wait_for_recorded_run(&azure, id, 0).await;
    call_back_before_the_run_ends(&azure, &first).await;
    let status_of_first = format!("/_apis/pipelines/{MANUAL}/runs/{}", first.id);
    eventually("a confirmation request", || async {
        (!azure.requests_to("GET", &status_of_first).is_empty()).then_some(())
    })
    .await;
    pause(Duration::from_millis(300)).await;
    assert_eq!(app.tasks_of(id).await[0]["status"], "PROCESSING");
    assert_eq!(azure.sim.runs().len(), 1, "the next task waits");

    end_run(&azure, &first, SimResult::Succeeded).await;
    let second = wait_for_recorded_run(&azure, id, 1).await;
    let first_task = app.tasks_of(id).await.remove(0);
    assert_eq!(first_task["status"], "PROCESSED");
    assert_eq!(
        json_field(&first_task, "results"),
        json!({"approved": true})
    );

    // Azure says the run failed: that wins over the callback.
    call_back_before_the_run_ends(&azure, &second).await;
    end_run(&azure, &second, SimResult::Failed).await;
    app.wait_for_activity(id, "FAILED").await;
    let errors = errors_of(&app.tasks_of(id).await[1]);
    assert!(
        errors.contains(&format!(
            "the pipeline called back but the provider reports the run failed: Azure DevOps \
             pipeline run {} failed",
            second.id
        )),
        "{errors}"
    );
    azure.stop().await;
}

on_both_backends!(check_after_callback_confirms_a_callback_that_beats_the_run_answer);
async fn check_after_callback_confirms_a_callback_that_beats_the_run_answer(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), checked_after_callback).await;
    azure.sim.add_fault(slow_run_answer());
    let app = &azure.app;
    app.put_descriptor("p", "1.0.0", &two_manual_tasks()).await;
    let id = app.start_activity("p", "1.0.0", "dev").await;
    let run = azure
        .wait_for_run_of_task(id_of(&app.tasks_of(id).await[0]))
        .await;
    // The pipeline calls back before Azure answered the run request, then its run fails.
    call_back_before_the_run_ends(&azure, &run).await;
    end_run(&azure, &run, SimResult::Failed).await;
    let task = eventually("the task finished", || async {
        let task = app.tasks_of(id).await.remove(0);
        (task["status"] != "PROCESSING").then_some(task)
    })
    .await;
    assert_eq!(task["status"], "FAILED", "the provider's word wins: {task}");
    assert!(
        errors_of(&task).contains("the provider reports the run failed"),
        "{task}"
    );
    assert_eq!(app.activity(id).await["status"], "FAILED");
    azure.stop().await;
}

on_both_backends!(a_pipeline_that_never_calls_back_is_completed_by_polling);
async fn a_pipeline_that_never_calls_back_is_completed_by_polling(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.engine.poll_after_secs = 1;
    })
    .await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [azure_task("quiet", SILENT, None, json!({}))],
        "test": [azure_task("quiet-failure", SILENT_FAILING, None, json!({}))]
    });
    app.put_descriptor("p", "1.0.0", &descriptor(lifecycle))
        .await;

    let dev = app.start_activity("p", "1.0.0", "dev").await;
    app.wait_for_activity(dev, "PROCESSED").await;
    let task = app.tasks_of(dev).await.remove(0);
    assert_eq!(task["results"], Value::Null);
    let run = azure.run_of_task(id_of(&task)).unwrap();
    assert_eq!(run.callback, None, "it never called back");
    let polls = azure.requests_to("GET", &format!("/runs/{}", run.id));
    assert!(
        !polls.is_empty() && polls.iter().all(|s| *s == 200),
        "{polls:?}"
    );

    let test = app.start_activity("p", "1.0.0", "test").await;
    app.wait_for_activity(test, "FAILED").await;
    let task = app.tasks_of(test).await.remove(0);
    let run = azure.run_of_task(id_of(&task)).unwrap();
    let errors = errors_of(&task);
    assert!(
        errors.starts_with(&format!(
            "the run failed without calling back: Azure DevOps pipeline run {} failed (see {}/",
            run.id,
            azure.sim.base_url()
        )),
        "{errors}"
    );
    let current = app
        .get(&format!("{DEVOPS}/lifecycles/p/1.0.0/current"))
        .await
        .json();
    assert_eq!(current["stage"], "dev", "a failed stage is not reached");
    azure.stop().await;
}
