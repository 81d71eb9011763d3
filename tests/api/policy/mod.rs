//! Policy gates (DESIGN §9, README "Policy gates"): the stage order, and ODM's policy service
//! (a fake over real HTTP) at START and on task and activity results.

mod results;
mod start;

use odm_devops::policy::fake::FakePolicyService;
use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;

/// A stepped service with the fake executor, `policy.stage_order` and (when given) the fake
/// policy service; product p1 version 1.0.0 has stages dev (`dev_tasks` tasks), test and prod
/// (one task each).
pub async fn gated_app(
    db: &TestDb,
    policy: Option<&FakePolicyService>,
    stage_order: &[&str],
    dev_tasks: &[&str],
) -> (TestApp, FakeExecutor) {
    let executor = FakeExecutor::start().await;
    let mut settings = test_settings(db, Some(&executor.address));
    settings.policy.stage_order = stage_order.iter().map(|s| s.to_string()).collect();
    if let Some(policy) = policy {
        settings.policy.active = true;
        settings.policy.address = Some(policy.address());
        // Generous: a verdict that comes late on a stalled machine must not read as "no
        // answer" (the fake answers at once, or refuses connections when down).
        settings.policy.timeout_ms = 30_000;
    }
    let app = spawn_stepped_app(settings).await;
    let dev: Vec<Value> = dev_tasks.iter().map(|n| fake_task(n, json!({}))).collect();
    let lifecycle = json!({
        "dev": dev,
        "test": [fake_task("check", json!({}))],
        "prod": [fake_task("deploy", json!({}))]
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    (app, executor)
}

pub async fn fake_policy() -> FakePolicyService {
    FakePolicyService::start()
        .await
        .expect("the fake policy service starts")
}

impl TestApp {
    /// Runs a started activity's tasks to the end, each called back without a body.
    pub async fn run_to_end(&self, executor: &FakeExecutor, id: i64) {
        loop {
            self.drive_until_idle().await;
            let activity = self.activity(id).await;
            if activity["status"] != "PROCESSING" {
                return;
            }
            let sent = executor.received();
            let last = sent.last().expect("a task was dispatched");
            let answer = self.call_back(&last.callback_ref, None).await;
            assert_eq!(answer.status, 200, "{answer:?}");
        }
    }

    /// The current lifecycle row of p1 1.0.0 (`Null`: none).
    pub async fn current_stage(&self) -> Value {
        let answer = self
            .get(&format!("{DEVOPS}/lifecycles/p1/1.0.0/current"))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.text.trim().is_empty() {
            Value::Null
        } else {
            answer.json()
        }
    }

    /// One sample of `/metrics`.
    pub async fn policy_checks(&self, event: &str, answer: &str) -> f64 {
        let page = self.get("/metrics").await.text;
        let series =
            format!("odm_devops_policy_checks_total{{event=\"{event}\",answer=\"{answer}\"}} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
            .trim()
            .parse()
            .unwrap()
    }
}
