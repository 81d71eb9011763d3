//! `GET /api/v1/up/executor/tasks/{id}/status`: Azure asked now (PROCESSING at once while the
//! run goes on, never ODM's sleeping), every state mapped, what Azure said kept in the mapping.

use std::time::{Duration, Instant};

use odm_devops::simulator::{Behaviour, SimResult};
use serde_json::json;

use super::*;
use crate::azure::MANUAL;

on_both_backends!(the_status_follows_every_azure_state);
async fn the_status_follows_every_azure_state(db: TestDb) {
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let mut runs = Vec::new();
    for id in [1, 2, 3] {
        let task = odm_task(id, template(MANUAL), json!({}));
        assert_eq!(send_task(app, &task, &[]).await.status, 201);
        runs.push(azure.sim.runs().into_iter().map(|r| r.id).max().unwrap());
    }

    // In progress: PROCESSING, answered at once (ODM's executor slept 3 × 10 s here).
    for id in [1, 2, 3] {
        let asked = Instant::now();
        let answer = task_status(app, id, &[]).await;
        assert_eq!((answer.status, answer.json()), (200, json!("PROCESSING")));
        // Under ODM's 10 s sleep with room for a stalled CI machine (not a speed test).
        assert!(
            asked.elapsed() < Duration::from_secs(9),
            "{:?}",
            asked.elapsed()
        );
    }
    let run_path = |run: i32| format!("/runs/{run}");
    assert_eq!(
        azure.requests_to("GET", &run_path(runs[0])),
        vec![200],
        "asked live"
    );

    assert!(azure.sim.finish_run(runs[0], None).await);
    let failing = Behaviour {
        result: SimResult::Failed,
        ..Behaviour::default()
    };
    assert!(azure.sim.finish_run(runs[1], Some(failing)).await);
    assert!(azure.sim.cancel_run(runs[2]));
    for (id, expected) in [(1, "PROCESSED"), (2, "FAILED"), (3, "ABORTED")] {
        assert_eq!(
            task_status(app, id, &[]).await.json(),
            json!(expected),
            "task {id}"
        );
    }

    // The mapping kept Azure's answer: a finished run is not asked about again.
    let asked = azure.requests_to("GET", &run_path(runs[0])).len();
    assert_eq!(task_status(app, 1, &[]).await.json(), "PROCESSED");
    assert_eq!(azure.requests_to("GET", &run_path(runs[0])).len(), asked);

    task_status(app, 999, &[]).await.assert_error(404, "40401");
    let message = app
        .get(&format!("{TASKS}/x/status"))
        .await
        .assert_error(400, "40000");
    assert!(message.contains("must be a number"), "{message}");
    azure.stop().await;
}
