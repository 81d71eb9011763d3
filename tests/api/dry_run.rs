//! `POST /activities?dryRun=true` (DESIGN §6): the plan of a create, each Azure task checked by
//! the simulator with the run request plus `previewRun: true`, every problem a create and a
//! start would meet, and nothing stored or run. Every test runs on SQLite and on PostgreSQL.

use odm_devops::config::{ExecutorSettings, ListenerKind, ListenerSettings, OdmHttpSettings};
use odm_devops::simulator::{FaultKind, FaultSpec, SimulatorConfig};
use serde_json::{json, Value};

use crate::azure::{
    azure_task, json_field, simulator_config, Azure, DEPLOY_APP, PROVISION_VM, SMOKE_TEST,
};
use crate::helpers::{descriptor, TestApp, TestDb, DEVOPS};
use crate::on_both_backends;

const BODY: &str = r#"{"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"}"#;

/// `dev`: provision a VM, then deploy on its IP (known once task 1 ran), then a smoke test.
fn clean_lifecycle() -> Value {
    json!({
        "dev": [
            azure_task("provision", PROVISION_VM, Some("main"),
                json!({"params": {"vmName": "vm-dev", "size": 2}})),
            azure_task("deploy", DEPLOY_APP, None,
                json!({"params": {"vmIp": "${dev.results.task1.vm.ip}", "port": "8080"}})),
            azure_task("smoke", SMOKE_TEST, None,
                json!({"params": {"endpoint": "http://$<dev.results.deploy.url>/health (${dev.status})"}})),
        ],
        "test": [azure_task("smoke", SMOKE_TEST, None, json!({"params": {"endpoint": "${dev.results.task2.url}"}}))],
    })
}

impl TestApp {
    async fn dry_run(&self, stage: &str, headers: &[(&str, &str)]) -> Value {
        let answer = self.dry_run_answer(stage, headers).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    async fn dry_run_answer(
        &self,
        stage: &str,
        headers: &[(&str, &str)],
    ) -> crate::helpers::Answer {
        let body = BODY.replace("\"dev\"", &format!("\"{stage}\""));
        self.send(
            "POST",
            &format!("{DEVOPS}/activities?dryRun=true"),
            Some(("application/json", body)),
            headers,
        )
        .await
    }

    /// Nothing of an activity is stored: no activity, no task, no outbox row.
    async fn assert_nothing_stored(&self) {
        assert_eq!(
            self.get_json(&format!("{DEVOPS}/activities")).await,
            json!([])
        );
        assert_eq!(self.get_json(&format!("{DEVOPS}/tasks")).await, json!([]));
        assert_eq!(
            self.get_json(&format!("{DEVOPS}/notifications")).await,
            json!([])
        );
    }
}

fn problems(task: &Value) -> Vec<String> {
    task["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["kind"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect()
}

on_both_backends!(a_clean_plan_is_checked_by_azure_and_nothing_is_stored_or_run);
async fn a_clean_plan_is_checked_by_azure_and_nothing_is_stored_or_run(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, executor| {
        settings.notifications.listeners = vec![listener_on(&executor.base_url)];
    })
    .await;
    let app = &azure.app;
    app.put_descriptor("p1", "1.0.0", &descriptor(clean_lifecycle()))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], true, "{plan:#}");
    assert_eq!(plan["problems"], json!([]));
    assert_eq!(
        plan["activity"],
        json!({"id": null, "dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev",
               "status": "PLANNED", "results": null, "errors": null, "createdAt": null,
               "startedAt": null, "finishedAt": null})
    );
    assert_eq!(
        plan["context"],
        json!({"dev": {"status": "RUNNING", "finishedAt": null, "results": null}})
    );
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    for (i, (task, name)) in tasks
        .iter()
        .zip(["provision", "deploy", "smoke"])
        .enumerate()
    {
        assert_eq!(task["position"], i + 1);
        assert_eq!(task["name"], name);
        assert_eq!(task["executor"], "azure-devops");
        assert_eq!(task["problems"], json!([]), "{task:#}");
        assert_eq!(task["preview"]["status"], "PASSED", "{task:#}");
        assert!(task["template"].is_string() && task["configurations"].is_string());
    }
    // Non-string params go as their JSON text, as a run sends them.
    let yaml = tasks[0]["preview"]["finalYaml"].as_str().unwrap();
    assert!(
        yaml.contains("default: \"vm-dev\"") && yaml.contains("default: \"2\""),
        "{yaml}"
    );
    assert_eq!(json_field(&tasks[0], "template")["branch"], "main");
    // Task 2 reads task 1's results: left as written, marked as resolving at run time.
    assert_eq!(tasks[1]["atRunTime"], json!(["${dev.results.task1.vm.ip}"]));
    assert_eq!(
        json_field(&tasks[1], "configurations"),
        json!({"params": {"vmIp": "${dev.results.task1.vm.ip}", "port": "8080"}})
    );
    // The stage's own status resolves (RUNNING); its results by name at run time.
    assert_eq!(tasks[2]["atRunTime"], json!(["$<dev.results.deploy.url>"]));
    assert_eq!(
        json_field(&tasks[2], "configurations")["params"]["endpoint"],
        "http://$<dev.results.deploy.url>/health (RUNNING)"
    );

    // Checked by Azure, run by nobody, stored nowhere.
    assert!(azure.sim.runs().is_empty());
    assert_eq!(azure.sim.stats().runs_created, 0);
    let previews = azure.sim.previews();
    assert_eq!(previews.len(), 3);
    app.assert_nothing_stored().await;
    assert!(azure.sim.listeners().received("events").is_empty());

    // The preview sent exactly the run request the real start sends, plus previewRun.
    let created = app.create_activity("p1", "1.0.0", "dev", true).await;
    assert_eq!(created.status, 201, "{created:?}");
    let task_id = app.tasks_of(created.json()["id"].as_i64().unwrap()).await[0]["id"]
        .as_i64()
        .unwrap();
    let run = azure.wait_for_run_of_task(task_id).await;
    let preview = previews
        .iter()
        .find(|p| p.pipeline_id == PROVISION_VM)
        .unwrap();
    let without_callback = |body: &Value| {
        let mut body = body.clone();
        body["templateParameters"]
            .as_object_mut()
            .unwrap()
            .remove("callbackRef");
        body
    };
    let mut expected = without_callback(&run.request_body);
    expected["previewRun"] = json!(true);
    assert_eq!(without_callback(&preview.request_body), expected);
    // The preview's callbackRef names no task and carries no valid token.
    assert_eq!(
        preview.template_parameters["callbackRef"],
        format!(
            "{}/api/v1/pp/devops/tasks/0/status?action=STOP&token=dry-run",
            app.address
        )
    );
    // The check above can fail: a real create does store rows and events.
    assert_ne!(
        app.get_json(&format!("{DEVOPS}/notifications")).await,
        json!([])
    );
    azure.stop().await;
}

/// An ODM listener on the simulator, so that a dry run recording events would show.
fn listener_on(simulator_base_url: &str) -> ListenerSettings {
    ListenerSettings {
        name: "events".into(),
        address: format!("{simulator_base_url}/_sim/listeners/events"),
        kind: ListenerKind::Odm,
        events: Vec::new(),
        template: None,
        headers: Default::default(),
    }
}

on_both_backends!(each_task_lists_its_problems_and_nothing_is_stored_or_run);
async fn each_task_lists_its_problems_and_nothing_is_stored_or_run(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [
            // `colour` is declared nowhere in the pipeline's YAML: only Azure can tell.
            azure_task("provision", PROVISION_VM, None,
                json!({"params": {"vmName": "vm-dev", "colour": "blue"}})),
            // A stage that does not exist: the create itself would refuse it.
            azure_task("deploy", DEPLOY_APP, None,
                json!({"params": {"vmIp": "${staging.results.task1.ip}", "port": "80"}})),
            {"service": {"$href": "{gitlab}"}, "template": {"name": "elsewhere", "definition": {}}},
            // Stage test exists but never ran: a start now would fail this task before sending it.
            azure_task("smoke", SMOKE_TEST, None,
                json!({"params": {"endpoint": "${test.results.task1.url}"}})),
        ],
        "test": [azure_task("check", SMOKE_TEST, None, json!({"params": {"endpoint": "x"}}))],
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], false);
    assert_eq!(plan["problems"], json!([]), "{plan:#}");
    let tasks = plan["tasks"].as_array().unwrap();

    let first = problems(&tasks[0]);
    assert_eq!(tasks[0]["preview"]["status"], "REFUSED");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("preview: Azure DevOps rejected the preview run request (HTTP 400): Unexpected parameter 'colour'"), "{first:?}");
    assert!(
        first[0].contains("must be declared in the `parameters:` section"),
        "{first:?}"
    );

    let second = problems(&tasks[1]);
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(second[0].starts_with("placeholder: placeholder ${staging.results.task1.ip} at task2.configurations.params.vmIp: unknown stage staging"), "{second:?}");
    // Still previewed: the parameters are declared, so Azure has nothing against it.
    assert_eq!(tasks[1]["preview"]["status"], "PASSED");

    assert_eq!(
        problems(&tasks[2]),
        ["executor: Executor [gitlab] not supported"]
    );
    assert_eq!(tasks[2]["preview"]["status"], "NOT_CHECKED");

    let fourth = problems(&tasks[3]);
    assert_eq!(fourth.len(), 1, "{fourth:?}");
    assert!(fourth[0].starts_with("placeholder: placeholder ${test.results.task1.url} did not resolve: no PROCESSED or RUNNING activity of stage test"), "{fourth:?}");
    assert!(
        fourth[0].ends_with("the task would fail before it is sent"),
        "{fourth:?}"
    );
    assert_eq!(tasks[3]["atRunTime"], json!([]));

    assert!(azure.sim.runs().is_empty());
    assert_eq!(azure.sim.stats().runs_created, 0);
    app.assert_nothing_stored().await;
    // The create refuses what the plan said it would.
    let created = app.create_activity("p1", "1.0.0", "dev", false).await;
    let message = created.assert_error(422, "42201");
    assert!(message.contains("unknown stage staging"), "{message}");
    azure.stop().await;
}

on_both_backends!(policy_refusals_a_start_would_meet_are_listed);
async fn policy_refusals_a_start_would_meet_are_listed(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.policy.stage_order = vec!["dev".into(), "test".into(), "prod".into()];
    })
    .await;
    let app = &azure.app;
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    let lifecycle = json!({"dev": [task.clone()], "prod": [task]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let plan = app.dry_run("prod", &[]).await;
    assert_eq!(plan["valid"], false);
    let listed = plan["problems"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{plan:#}");
    assert_eq!(listed[0]["kind"], "policy");
    let message = listed[0]["message"].as_str().unwrap();
    assert!(message.starts_with("START would be refused: "), "{message}");
    assert!(
        message.contains("stage-order") && message.contains("test or later"),
        "{message}"
    );
    assert_eq!(plan["tasks"][0]["problems"], json!([]));
    assert_eq!(plan["tasks"][0]["preview"]["status"], "PASSED");
    // The first stage is always allowed.
    assert_eq!(app.dry_run("dev", &[]).await["valid"], true);
    app.assert_nothing_stored().await;
    azure.stop().await;
}

on_both_backends!(a_policy_service_down_is_a_problem_not_an_error);
async fn a_policy_service_down_is_a_problem_not_an_error(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.policy.active = true;
        settings.policy.address = Some(format!(
            "http://127.0.0.1:{}",
            crate::helpers::unused_port()
        ));
        settings.policy.timeout_ms = 2_000;
    })
    .await;
    let app = &azure.app;
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    app.put_descriptor("p1", "1.0.0", &descriptor(json!({"dev": [task]})))
        .await;
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], false);
    let message = plan["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("policy service is unreachable"),
        "{message}"
    );
    assert!(
        !message.contains("127.0.0.1"),
        "no internal address: {message}"
    );
    azure.stop().await;
}

on_both_backends!(the_secret_headers_authenticate_the_preview_and_are_never_returned);
async fn the_secret_headers_authenticate_the_preview_and_are_never_returned(db: TestDb) {
    let config = SimulatorConfig {
        pats: vec!["pat-of-the-team".into()],
        ..simulator_config()
    };
    let azure = Azure::start_with(&db, config, |_, _| {}).await;
    let app = &azure.app;
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    app.put_descriptor("p1", "1.0.0", &descriptor(json!({"dev": [task]})))
        .await;
    let header = ("x-odm-azure-devops-executor-secret-pat", "pat-of-the-team");
    let answer = app.dry_run_answer("dev", &[header]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!answer.text.contains("pat-of-the-team"), "{}", answer.text);
    assert_eq!(answer.json()["valid"], true, "{}", answer.text);
    // Without the header, the executor's own identity (a bearer token).
    assert_eq!(app.dry_run("dev", &[]).await["valid"], true);
    let used: Vec<String> = azure
        .sim
        .previews()
        .into_iter()
        .map(|p| p.authenticated_with)
        .collect();
    assert_eq!(used, ["pat", "bearer"]);
    // A PAT Azure does not accept: the preview is refused, naming no secret.
    let plan = app
        .dry_run(
            "dev",
            &[("x-odm-azure-devops-executor-secret-pat", "revoked-pat")],
        )
        .await;
    assert_eq!(plan["tasks"][0]["preview"]["status"], "REFUSED");
    let text = plan.to_string();
    assert!(
        text.contains("authentication failed") || text.contains("refused"),
        "{text}"
    );
    assert!(!text.contains("revoked-pat"), "{text}");
    app.assert_nothing_stored().await;
    assert!(azure.sim.runs().is_empty());
    azure.stop().await;
}

on_both_backends!(a_dry_run_needs_the_api_token_and_keeps_the_create_s_errors);
async fn a_dry_run_needs_the_api_token_and_keeps_the_create_s_errors(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, _| {
        settings.auth.api_tokens = vec!["team-token".into()];
    })
    .await;
    let app = &azure.app;
    let auth = ("Authorization", "Bearer team-token");
    let task = azure_task(
        "smoke",
        SMOKE_TEST,
        None,
        json!({"params": {"endpoint": "x"}}),
    );
    let put = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/p1/versions/1.0.0",
            Some((
                "application/json",
                descriptor(json!({"dev": [task]})).to_string(),
            )),
            &[auth],
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    app.dry_run_answer("dev", &[])
        .await
        .assert_error(401, "40101");
    app.dry_run_answer("dev", &[("Authorization", "Bearer wrong")])
        .await
        .assert_error(401, "40101");
    assert!(
        azure.sim.previews().is_empty(),
        "nothing asked without the token"
    );
    assert_eq!(app.dry_run("dev", &[auth]).await["valid"], true);
    // The create's refusals of the request and the descriptor stay errors.
    let message = app
        .dry_run_answer("nope", &[auth])
        .await
        .assert_error(422, "42201");
    assert!(message.contains("stage nope is not defined"), "{message}");
    let post = |query: &'static str| async move {
        let path = format!("{DEVOPS}/activities?{query}");
        let body = Some(("application/json", BODY.to_owned()));
        app.send("POST", &path, body, &[auth]).await
    };
    post("dryRun=maybe").await.assert_error(400, "40001");
    post("dryRun=true&dryRun=true")
        .await
        .assert_error(400, "40001");
    // With startAfterCreation too: still only the plan.
    let both = post("dryRun=true&startAfterCreation=true").await;
    assert_eq!(both.status, 200, "{both:?}");
    assert_eq!(both.json()["activity"]["id"], Value::Null);
    let listed = app
        .send("GET", &format!("{DEVOPS}/activities"), None, &[auth])
        .await;
    assert_eq!(listed.json(), json!([]));
    assert!(azure.sim.runs().is_empty());
    azure.stop().await;
}

on_both_backends!(limits_a_provider_down_and_executors_that_cannot_preview);
async fn limits_a_provider_down_and_executors_that_cannot_preview(db: TestDb) {
    let azure = Azure::start_with(&db, simulator_config(), |settings, executor| {
        settings.limits.configurations_bytes = 400;
        settings.limits.placeholders_per_task = 2;
        // Quick retries: the unavailable provider is given up on soon.
        executor.max_retries = 1;
        let odm = OdmHttpSettings {
            active: true,
            // Never contacted: an odm-http executor cannot preview a run.
            address: format!("http://127.0.0.1:{}", crate::helpers::unused_port()),
            check_after_callback: false,
            connect_timeout_ms: 1000,
            request_timeout_ms: 1000,
        };
        settings
            .executors
            .insert("gitlab".into(), ExecutorSettings::OdmHttp(odm));
    })
    .await;
    let app = &azure.app;
    let lifecycle = json!({
        "dev": [
            azure_task("big", SMOKE_TEST, None, json!({"params": {"endpoint": "e".repeat(500)}})),
            azure_task("many", SMOKE_TEST, None,
                json!({"params": {"endpoint": "${dev.status} ${dev.status} ${dev.status}"}})),
            {"service": {"$href": "{gitlab}"}, "template": {"name": "elsewhere", "definition": {}}},
            {"template": {"name": "no-executor"}},
            azure_task("down", SMOKE_TEST, None, json!({"params": {"endpoint": "x"}})),
        ],
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    // Azure DevOps answers 503 to the run route for a while: the checks of `many` and `down`.
    azure.sim.add_fault(FaultSpec {
        path: "*/runs".into(),
        method: Some("POST".into()),
        kind: FaultKind::Unavailable,
        count: 100,
        retry_after_secs: None,
        delay_ms: None,
    });
    let plan = app.dry_run("dev", &[]).await;
    assert_eq!(plan["valid"], false);
    let tasks = plan["tasks"].as_array().unwrap();

    let big = problems(&tasks[0]);
    assert_eq!(big.len(), 1, "{big:?}");
    assert!(
        big[0].starts_with(
            "limit: the task's resolved configurations (context included) are more than 400 bytes"
        ),
        "{big:?}"
    );
    assert!(big[0].contains("limits.configurations_bytes"), "{big:?}");
    assert_eq!(
        tasks[0]["preview"]["status"], "NOT_CHECKED",
        "not sendable: not sent"
    );

    let many = problems(&tasks[1]);
    assert!(
        many.iter().any(
            |p| p.starts_with("limit: task 2 (many) of stage dev has 3 placeholders")
                && p.contains("limits.placeholders_per_task")
        ),
        "{many:?}"
    );
    assert_eq!(tasks[1]["preview"]["status"], "UNAVAILABLE");
    assert!(many.iter().any(|p| p.starts_with("preview: the run request could not be checked: Azure DevOps failed the preview run request with HTTP 503")), "{many:?}");

    assert_eq!(tasks[2]["executor"], "gitlab");
    assert_eq!(
        tasks[2]["preview"],
        json!({"status": "NOT_CHECKED", "finalYaml": null})
    );
    assert_eq!(tasks[2]["problems"], json!([]));
    assert_eq!(tasks[3]["executor"], Value::Null);
    assert_eq!(tasks[3]["preview"]["status"], "NOT_CHECKED");
    assert_eq!(tasks[3]["problems"], json!([]));
    assert_eq!(tasks[4]["preview"]["status"], "UNAVAILABLE");
    assert!(azure.sim.runs().is_empty());
    app.assert_nothing_stored().await;
    azure.stop().await;
}
