//! Delivery: in order per entity under concurrent activities, a listener down then back, a slow
//! listener that delays nothing else, two replicas, and a crash between the change and the send.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use odm_devops::simulator::SinkBehaviour;
use serde_json::{json, Value};

use super::*;
use crate::on_both_backends;

/// Each activity's events, in the order the listener got them.
fn by_activity(events: &[Value]) -> BTreeMap<i64, Vec<Value>> {
    let mut grouped: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for event in events {
        grouped
            .entry(activity_of(event))
            .or_default()
            .push(event.clone());
    }
    grouped
}

/// Every activity's events are those of a succeeded two-task stage, in order, each once.
async fn assert_each_in_order(app: &TestApp, events: &[Value], activities: usize) {
    let ids: HashSet<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event was delivered twice");
    let grouped = by_activity(events);
    assert_eq!(grouped.len(), activities, "{grouped:?}");
    for (activity, events) in grouped {
        let tasks = task_ids(app, activity).await;
        assert_eq!(
            sequence(&events, activity, &tasks),
            expected(&SUCCEEDED),
            "activity {activity}"
        );
    }
}

async fn a_listener_down_for_a_while_then_back_gets_everything_in_order(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let listeners = vec![odm_listener(&sim, "down"), odm_listener(&sim, "up")];
    let app = spawn_stepped_app(settings_with(&db, &executor, listeners)).await;
    let down = SinkBehaviour {
        status: Some(503),
        delay_ms: 0,
    };
    sim.listeners().set_behaviour("down", down);
    run_two_tasks(&app, &executor, "p1").await;
    assert_eq!(
        events_of(&sim, "up").len(),
        13,
        "the other listener is not held back"
    );
    assert!(events_of(&sim, "down").is_empty());
    assert!(sim.listeners().refused("down") >= 1);

    // Only the activity's first event is tried: the others wait behind it, in order.
    let failing = app
        .get_json(&format!(
            "{DEVOPS}/notifications?status=failing&listener=down"
        ))
        .await;
    let failing = failing.as_array().unwrap();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0]["type"], "DATA_PRODUCT_ACTIVITY_CREATED");
    assert!(failing[0]["attempts"].as_i64().unwrap() >= 1);
    let error = failing[0]["lastError"].as_str().unwrap();
    assert!(error.contains("503"), "{error}");
    let waiting = app
        .get_json(&format!(
            "{DEVOPS}/notifications?status=pending&listener=down"
        ))
        .await;
    assert_eq!(waiting.as_array().unwrap().len(), 12);
    let metrics = app.get("/metrics").await.text;
    for line in [
        "odm_devops_notifications_pending{listener=\"down\"} 13",
        "odm_devops_notifications_failing{listener=\"down\"} 1",
        "odm_devops_notifications_pending{listener=\"up\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(metrics
        .contains("odm_devops_notifications_sent_total{listener=\"down\",result=\"failed\"}"));
    assert!(
        metrics.contains("odm_devops_notifications_oldest_pending_age_seconds{listener=\"down\"}")
    );

    sim.listeners()
        .set_behaviour("down", SinkBehaviour::default());
    eventually("the listener back gets all", || async {
        actix_web::rt::time::sleep(Duration::from_millis(30)).await;
        app.drive_until_idle().await;
        (events_of(&sim, "down").len() >= 13).then_some(())
    })
    .await;
    assert_each_in_order(&app, &events_of(&sim, "down"), 1).await;
    let left = app
        .get_json(&format!(
            "{DEVOPS}/notifications?listener=down&status=failing"
        ))
        .await;
    assert_eq!(left, json!([]));
    app.stop().await;
}
on_both_backends!(a_listener_down_for_a_while_then_back_gets_everything_in_order);

/// Activities running at once, their tasks calling back in no particular order: each activity's
/// events still arrive in the order they happened.
async fn each_activity_s_events_arrive_in_order_under_concurrent_activities(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let app = spawn_app(settings_with(
        &db,
        &executor,
        vec![odm_listener(&sim, "odm")],
    ))
    .await;
    const ACTIVITIES: usize = 4;
    let products: Vec<String> = (0..ACTIVITIES).map(|n| format!("p{n}")).collect();
    let ids = join_all(products.iter().map(|p| start_two_tasks(&app, p))).await;
    for round in 1..=2 {
        let received = executor.wait_for(ACTIVITIES * round).await;
        let mut callbacks: Vec<_> = received[ACTIVITIES * (round - 1)..].to_vec();
        callbacks.reverse();
        join_all(
            callbacks
                .iter()
                .map(|task| succeed(&app, &task.callback_ref, task.id)),
        )
        .await;
    }
    for id in &ids {
        app.wait_for_activity(*id, "PROCESSED").await;
    }
    eventually("every event delivered", || async {
        (events_of(&sim, "odm").len() >= 13 * ACTIVITIES).then_some(())
    })
    .await;
    assert_each_in_order(&app, &events_of(&sim, "odm"), ACTIVITIES).await;
    app.stop().await;
}
on_both_backends!(each_activity_s_events_arrive_in_order_under_concurrent_activities);

async fn a_slow_listener_delays_neither_the_engine_nor_another_listener(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    let listeners = vec![odm_listener(&sim, "slow"), odm_listener(&sim, "fast")];
    let app = spawn_app(settings_with(&db, &executor, listeners)).await;
    let slow = SinkBehaviour {
        status: None,
        delay_ms: 3_000,
    };
    sim.listeners().set_behaviour("slow", slow);
    let started = Instant::now();
    run_two_tasks(&app, &executor, "p1").await;
    eventually("the fast listener has every event", || async {
        (events_of(&sim, "fast").len() == 13).then_some(())
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "the stage and the fast listener took {took:?} beside a listener answering in 3 s"
    );
    assert!(
        events_of(&sim, "slow").is_empty(),
        "the slow listener is still busy"
    );
    app.stop().await;
}
on_both_backends!(a_slow_listener_delays_neither_the_engine_nor_another_listener);

/// Two replicas on one database send each row once: a row is leased to one claim.
async fn two_replicas_deliver_each_row_once(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    executor.reply_with("PROCESSED", Some(json!({"done": true})));
    let settings = || settings_with(&db, &executor, vec![odm_listener(&sim, "odm")]);
    let (a, b) = futures_util::future::join(spawn_app(settings()), spawn_app(settings())).await;
    const ACTIVITIES: usize = 6;
    let mut ids = Vec::new();
    for n in 0..ACTIVITIES {
        let app = if n % 2 == 0 { &a } else { &b };
        ids.push(start_two_tasks(app, &format!("p{n}")).await);
    }
    for id in &ids {
        a.wait_for_activity(*id, "PROCESSED").await;
    }
    eventually("every event delivered", || async {
        (events_of(&sim, "odm").len() >= 13 * ACTIVITIES).then_some(())
    })
    .await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let events = events_of(&sim, "odm");
    assert_eq!(events.len(), 13 * ACTIVITIES, "no row sent twice");
    assert_each_in_order(&a, &events, ACTIVITIES).await;
    let rows = a.get_json(&format!("{DEVOPS}/notifications")).await;
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "DELIVERED" && r["attempts"] == 1));
    a.stop().await;
    b.stop().await;
}
on_both_backends!(two_replicas_deliver_each_row_once);

/// A replica killed (SIGKILL) after the changes committed, before their events went out: the
/// rows are in the database, and the next replica sends them all, in order.
async fn a_crash_between_the_change_and_the_delivery_loses_nothing(db: TestDb) {
    let sim = simulator().await;
    let executor = FakeExecutor::start().await;
    executor.reply_with("PROCESSED", Some(json!({"done": true})));
    sim.listeners().set_behaviour(
        "odm",
        SinkBehaviour {
            status: Some(503),
            delay_ms: 0,
        },
    );
    let config = std::env::temp_dir().join(format!("odm-listener-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(
        &config,
        format!(
            "notifications:\n  listeners: [{{name: odm, address: \"{}\"}}]\n  retry_first_ms: 20\n  retry_max_ms: 50\n",
            sim.listener_address("odm")
        ),
    )
    .unwrap();
    let env = [
        ("DATABASE__URL", db.url.clone()),
        ("EXECUTORS__FAKE__KIND", "odm-http".to_string()),
        ("EXECUTORS__FAKE__ADDRESS", executor.address.clone()),
        ("ENGINE__LEASE_SECS", "1".to_string()),
    ];
    let first = spawn_app_process_with_config(&env, &config).await;
    let id = start_two_tasks(&first, "p1").await;
    first.wait_for_activity(id, "PROCESSED").await;
    let rows = first.get_json(&format!("{DEVOPS}/notifications")).await;
    assert_eq!(rows.as_array().unwrap().len(), 13);
    first.kill().await;
    std::fs::remove_file(&config).unwrap();
    assert!(events_of(&sim, "odm").is_empty());

    sim.listeners()
        .set_behaviour("odm", SinkBehaviour::default());
    let next = spawn_app(settings_with(
        &db,
        &executor,
        vec![odm_listener(&sim, "odm")],
    ))
    .await;
    eventually("the next replica sends every event", || async {
        (events_of(&sim, "odm").len() >= 13).then_some(())
    })
    .await;
    assert_each_in_order(&next, &events_of(&sim, "odm"), 1).await;
    next.stop().await;
}
on_both_backends!(a_crash_between_the_change_and_the_delivery_loses_nothing);
