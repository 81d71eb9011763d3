//! What tests do with the service: the shared builders ("a started activity of these tasks",
//! "the nth task the executor received") and the requests and waits they repeat.

use odm_devops::config::{ExecutorSettings, OdmHttpSettings, Settings};
use serde_json::{json, Value};

use super::*;
use crate::fakes::{FakeExecutor, Received};

/// Settings for a test: random port, the test database, quick engine ticks, and an `odm-http`
/// executor named `fake` at `executor_address` when given.
pub fn test_settings(db: &TestDb, executor_address: Option<&str>) -> Settings {
    let mut s = Settings::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    s.server.bind = "127.0.0.1:0".into();
    s.server.public_url = String::new();
    s.server.workers = 1;
    s.database.url = odm_devops::secret::Secret::new(db.url.clone());
    s.database.pool_size = 4;
    s.engine.tick_ms = 100;
    if let Some(address) = executor_address {
        s.executors.insert(
            "fake".into(),
            ExecutorSettings::OdmHttp(OdmHttpSettings {
                active: true,
                address: address.to_owned(),
                check_after_callback: false,
                connect_timeout_ms: 1000,
                request_timeout_ms: 5000,
            }),
        );
    }
    s
}

/// The fake executor, and a service (its engine stepped) that knows it as `fake`.
pub async fn stepped_app_with_fake(db: &TestDb) -> (TestApp, FakeExecutor) {
    let executor = FakeExecutor::start().await;
    let app = spawn_stepped_app(test_settings(db, Some(&executor.address))).await;
    (app, executor)
}

/// A stepped service with the fake executor, and `lifecycle`'s stages registered for product
/// p1, version 1.0.0.
pub async fn stepped_app_with_stages(db: &TestDb, lifecycle: Value) -> (TestApp, FakeExecutor) {
    let (app, executor) = stepped_app_with_fake(db).await;
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    (app, executor)
}

/// A started activity of the `dev` stage of `lifecycle` (product p1, version 1.0.0), on a
/// stepped service with the fake executor; its id. Nothing is dispatched until the test drives
/// the engine.
pub async fn started_activity(db: &TestDb, lifecycle: Value) -> (TestApp, FakeExecutor, i64) {
    let (app, executor) = stepped_app_with_fake(db).await;
    let id = app.start_dev(lifecycle).await;
    (app, executor, id)
}

/// The settings of the fake executor (`test_settings` with an executor address).
pub fn fake_executor(settings: &mut Settings) -> &mut OdmHttpSettings {
    match settings.executors.get_mut("fake") {
        Some(ExecutorSettings::OdmHttp(fake)) => fake,
        _ => panic!("the settings have no fake executor"),
    }
}

/// A `dev` stage of tasks on the fake executor, in this order, with no configurations.
pub fn fake_stage(names: &[&str]) -> Value {
    let tasks: Vec<Value> = names.iter().map(|n| fake_task(n, json!({}))).collect();
    json!({ "dev": tasks })
}

/// A descriptor in the stage-map shape.
pub fn descriptor(lifecycle: Value) -> Value {
    json!({
        "dataProductDescriptor": "1.0.0",
        "info": {"name": "test-product", "version": "1.0.0"},
        "internalComponents": {"lifecycleInfo": lifecycle}
    })
}

/// A task on the fake executor.
pub fn fake_task(name: &str, configurations: Value) -> Value {
    json!({
        "service": {"$href": "{fake}"},
        "template": {"name": name, "definition": {"pipeline": name}},
        "configurations": configurations
    })
}

impl TestApp {
    /// The `n`th task (from 1) the fake executor received: once the stepped engine is idle, or
    /// once it came from the running one.
    pub async fn dispatched(&self, executor: &FakeExecutor, n: usize) -> Received {
        if self.is_stepped() {
            self.drive_until_idle().await;
            let received = executor.received();
            assert!(
                received.len() >= n,
                "{} task(s) at the executor once the engine is idle, not {n}",
                received.len()
            );
            received[n - 1].clone()
        } else {
            executor.wait_for(n).await.remove(n - 1)
        }
    }

    /// The activity once it is `status`: once the stepped engine is idle, or polled until then
    /// (`PATIENCE` at most) with the running one.
    pub async fn wait_for_activity(&self, id: i64, status: &str) -> Value {
        if self.is_stepped() {
            self.drive_until_idle().await;
            let activity = self.activity(id).await;
            assert_eq!(
                activity["status"], status,
                "once the engine is idle: {activity}"
            );
            return activity;
        }
        eventually(&format!("activity {id} {status}"), || async move {
            let activity = self.activity(id).await;
            (activity["status"] == status).then_some(activity)
        })
        .await
    }

    pub async fn put_descriptor(&self, product: &str, version: &str, descriptor: &Value) {
        let answer = self
            .call(
                "PUT",
                &format!("/api/v1/pp/registry/products/{product}/versions/{version}"),
                Some(descriptor),
            )
            .await;
        assert!(answer.status == 201 || answer.status == 200, "{answer:?}");
    }

    pub async fn create_activity(
        &self,
        product: &str,
        version: &str,
        stage: &str,
        start: bool,
    ) -> Answer {
        let body = json!({"dataProductId": product, "dataProductVersion": version, "stage": stage});
        self.call(
            "POST",
            &format!("{DEVOPS}/activities?startAfterCreation={start}"),
            Some(&body),
        )
        .await
    }

    /// Registers `lifecycle` for product p1, version 1.0.0, and starts its `dev` stage; the
    /// activity's id.
    pub async fn start_dev(&self, lifecycle: Value) -> i64 {
        self.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
            .await;
        self.start_activity("p1", "1.0.0", "dev").await
    }

    /// Creates and starts an activity; its id.
    pub async fn start_activity(&self, product: &str, version: &str, stage: &str) -> i64 {
        let answer = self.create_activity(product, version, stage, true).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["id"].as_i64().unwrap()
    }

    /// Starts a PLANNED activity (`PATCH …/status?action=START`).
    pub async fn start_planned(&self, id: i64) -> Answer {
        self.activity_action(id, "START").await
    }

    pub async fn activity(&self, id: i64) -> Value {
        let answer = self.get(&format!("{DEVOPS}/activities/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    pub async fn tasks_of(&self, activity_id: i64) -> Vec<Value> {
        let answer = self
            .get(&format!("{DEVOPS}/tasks?activityId={activity_id}"))
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json().as_array().unwrap().clone()
    }

    /// Creates a PLANNED activity; its id.
    pub async fn planned_activity(&self, product: &str, version: &str, stage: &str) -> i64 {
        let answer = self.create_activity(product, version, stage, false).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.json()["id"].as_i64().unwrap()
    }

    /// `PATCH …/activities/{id}/status?action=…`
    pub async fn activity_action(&self, id: i64, action: &str) -> Answer {
        let path = format!("{DEVOPS}/activities/{id}/status?action={action}");
        self.call("PATCH", &path, None).await
    }

    /// `PATCH …/tasks/{id}/status?action=…`
    pub async fn task_action(&self, id: i64, action: &str) -> Answer {
        let path = format!("{DEVOPS}/tasks/{id}/status?action={action}");
        self.call("PATCH", &path, None).await
    }

    /// A task as the API shows it.
    pub async fn task(&self, id: i64) -> Value {
        let answer = self.get(&format!("{DEVOPS}/tasks/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    /// Calls back like a pipeline: the callbackRef's path and query on this server.
    pub async fn call_back(&self, callback_ref: &str, body: Option<Value>) -> Answer {
        let path = callback_ref
            .split_once("/api/")
            .map(|(_, rest)| format!("/api/{rest}"))
            .unwrap();
        match body {
            Some(body) => self.call("PATCH", &path, Some(&body)).await,
            None => self.send("PATCH", &path, None, &[]).await,
        }
    }
}
