//! Notifications (DESIGN §9) over real HTTP, on both databases: events written to the outbox with
//! the change they report and delivered to listeners served by the simulator
//! (`/_sim/listeners/{name}`), which records what it receives and can be told to fail or be slow.
//!
//! * `events`: every event type with ODM's shapes, the `events` filter, webhooks.
//! * `delivery`: order per entity, a listener down then back, a slow one, replicas, a crash.
//! * `observer`: ODM's observer route deleting a product version.

mod delivery;
mod events;
mod observer;

use odm_devops::config::{ListenerKind, ListenerSettings, Settings};
use odm_devops::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;

/// What a two-task stage that succeeds announces, in order, with the entity of each event
/// (`A`: the activity, `1`/`2`: its tasks).
pub const SUCCEEDED: [(&str, char); 13] = [
    ("DATA_PRODUCT_ACTIVITY_CREATED", 'A'),
    ("DATA_PRODUCT_TASK_CREATED", '1'),
    ("DATA_PRODUCT_TASK_CREATED", '2'),
    ("DATA_PRODUCT_ACTIVITY_STARTED", 'A'),
    ("DATA_PRODUCT_TASK_STARTED", '1'),
    ("DATA_PRODUCT_TASK_COMPLETED", '1'),
    ("DATA_PRODUCT_TASK_RESULTS", '1'),
    ("DATA_PRODUCT_TASK_STARTED", '2'),
    ("DATA_PRODUCT_TASK_COMPLETED", '2'),
    ("DATA_PRODUCT_TASK_RESULTS", '2'),
    ("DATA_PRODUCT_ACTIVITY_COMPLETED", 'A'),
    ("DATA_PRODUCT_ACTIVITY_RESULTS", 'A'),
    ("DATA_PRODUCT_STAGE_TRANSITION", 'A'),
];

/// An ODM listener named `name` on the simulator.
pub fn odm_listener(sim: &SimulatorHandle, name: &str) -> ListenerSettings {
    ListenerSettings {
        name: name.into(),
        address: sim.listener_address(name),
        kind: ListenerKind::Odm,
        events: Vec::new(),
        template: None,
        headers: Default::default(),
    }
}

/// Test settings with the fake executor, `listeners`, and quick retries.
pub fn settings_with(
    db: &TestDb,
    executor: &FakeExecutor,
    listeners: Vec<ListenerSettings>,
) -> Settings {
    let mut settings = test_settings(db, Some(&executor.address));
    settings.notifications.listeners = listeners;
    settings.notifications.retry_first_ms = 20;
    settings.notifications.retry_max_ms = 100;
    settings.notifications.timeout_ms = 5_000;
    settings
}

pub async fn simulator() -> SimulatorHandle {
    Simulator::start(SimulatorConfig::default())
        .await
        .expect("the simulator starts")
}

/// The events a listener received, in order.
pub fn events_of(sim: &SimulatorHandle, listener: &str) -> Vec<Value> {
    sim.listeners()
        .received(listener)
        .into_iter()
        .map(|r| r.body)
        .collect()
}

/// A two-task `dev` stage of product `product` (version 1.0.0), created and started; its id.
pub async fn start_two_tasks(app: &TestApp, product: &str) -> i64 {
    app.put_descriptor(
        product,
        "1.0.0",
        &descriptor(fake_stage(&["build", "deploy"])),
    )
    .await;
    app.start_activity(product, "1.0.0", "dev").await
}

/// A two-task `dev` stage of product `product` run to PROCESSED, each task calling back with
/// results `{"n": <position>}`; its id.
pub async fn run_two_tasks(app: &TestApp, executor: &FakeExecutor, product: &str) -> i64 {
    // Counted before the start: its first task is handed to the engine when the creation
    // commits and may reach the executor before the creation's answer reaches the test.
    let already = executor.received().len();
    let id = start_two_tasks(app, product).await;
    for n in 1..=2 {
        let task = app.dispatched(executor, already + n).await;
        succeed(app, &task.callback_ref, n as i64).await;
    }
    app.wait_for_activity(id, "PROCESSED").await;
    id
}

/// Calls a task back PROCESSED with results `{"n": n}`.
pub async fn succeed(app: &TestApp, callback_ref: &str, n: i64) {
    let answer = app
        .call_back(
            callback_ref,
            Some(json!({"status": "PROCESSED", "results": {"n": n}})),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

/// `(type, entity)` of each event, the entity named as in `SUCCEEDED` for `activity`'s.
pub fn sequence(events: &[Value], activity: i64, tasks: &[i64]) -> Vec<(String, char)> {
    events
        .iter()
        .map(|e| {
            let entity: i64 = e["entityId"].as_str().unwrap().parse().unwrap();
            let kind = e["type"].as_str().unwrap().to_owned();
            let name = if kind.contains("_TASK_") {
                let position = tasks.iter().position(|t| *t == entity).expect("its task");
                char::from(b'1' + position as u8)
            } else {
                assert_eq!(entity, activity, "{e}");
                'A'
            };
            (kind, name)
        })
        .collect()
}

pub fn expected(events: &[(&str, char)]) -> Vec<(String, char)> {
    events.iter().map(|(t, e)| (t.to_string(), *e)).collect()
}

/// The activity an event is about (its own, or its task's).
pub fn activity_of(event: &Value) -> i64 {
    let after = &event["afterState"];
    match after["task"]["activityId"].as_str() {
        Some(id) => id.parse().unwrap(),
        None => after["activity"]["id"].as_i64().unwrap(),
    }
}

/// The ids of an activity's tasks, in position order.
pub async fn task_ids(app: &TestApp, activity: i64) -> Vec<i64> {
    app.tasks_of(activity)
        .await
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}
