//! A dispatch's run recorded on what its claim read (`state::submitted_on_claim`): one statement
//! while the task's row still shows the claim, the snapshot's decision (`state::submitted`) as
//! soon as anything moved the row since.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::prelude::*;

use odm_devops::db::schema::tasks;
use odm_devops::db::DbError;
use odm_devops::domain::ClaimedStep;
use odm_devops::lifecycle::engine::{apply_decision, claim_due_steps, Decision};
use odm_devops::lifecycle::state::{self, Submittal};
use odm_devops::lifecycle::EngineTimings;
use odm_devops::notifications::Listeners;

use crate::helpers::*;
use crate::on_both_backends;

const CLAIM: &str = "replica-a-1";

/// `count` activities of one task each, started, their dispatches claimed by `CLAIM` as an
/// engine would claim them, in the order of their activities.
async fn claimed_dispatches(db: &TestDb, count: usize) -> Vec<ClaimedStep> {
    let (app, _executor) = stepped_app_with_fake(db).await;
    for product in 0..count {
        let product = format!("p{product}");
        let one_task = descriptor(fake_stage(&["one"]));
        app.put_descriptor(&product, "1.0.0", &one_task).await;
        app.start_activity(&product, "1.0.0", "dev").await;
    }
    app.stop().await;
    let mut claimed = db
        .open()
        .await
        .write(|conn| {
            let now = odm_devops::clock::now_ms();
            claim_due_steps(conn, CLAIM, now, now + 60_000, 10).map_err(DbError::from)
        })
        .await
        .unwrap();
    claimed.sort_by_key(|c| c.task.activity_id.get());
    assert_eq!(claimed.len(), count, "each first task is due for dispatch");
    claimed
}

/// The task's `(step, lease_owner, run_url)` as stored once the engine recorded the run of the
/// dispatch it `claimed`, `moved` (SQL, `{id}` the task's id) having run in between; and
/// whether the decision needed the snapshot.
async fn recorded_after(
    db: &TestDb,
    claimed: ClaimedStep,
    moved: Option<&str>,
) -> (Option<String>, Option<String>, Option<String>, bool) {
    let (task_id, activity_id) = (claimed.task.id, claimed.task.activity_id);
    if let Some(sql) = moved {
        db.execute(sql.replace("{id}", &task_id.get().to_string()))
            .await;
    }
    let store = db.open().await;
    let run = Submittal {
        attempt: claimed.task.attempt,
        run_ref: Some(r#"{"runId":7}"#.into()),
        run_url: Some("https://runs/7".into()),
        configurations: "{}".into(),
        immediate: None,
        held: None,
    };
    let on_snapshot = Arc::new(AtomicBool::new(false));
    let decided = on_snapshot.clone();
    store
        .write(move |conn| {
            let timings = EngineTimings {
                poll_after_ms: 300_000,
                default_timeout_ms: 3_600_000,
            };
            let on_claim = state::submitted_on_claim(
                &claimed.task.read(),
                CLAIM,
                &run,
                &timings.at(odm_devops::clock::now_ms()),
            );
            let with = Decision {
                timings,
                listeners: &Listeners::none(),
                handoff: None,
                on_claim,
            };
            apply_decision(conn, activity_id, with, |s, t| {
                decided.store(true, Ordering::SeqCst);
                state::submitted(s, task_id, CLAIM, run.clone(), t)
            })
        })
        .await
        .expect("the run is recorded");
    let (step, owner, url) = store
        .read(move |conn| {
            tasks::table
                .find(task_id)
                .select((tasks::step, tasks::lease_owner, tasks::run_url))
                .first::<(Option<String>, Option<String>, Option<String>)>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    (step, owner, url, on_snapshot.load(Ordering::SeqCst))
}

on_both_backends!(a_run_is_recorded_on_its_claim_while_the_task_still_shows_it);
async fn a_run_is_recorded_on_its_claim_while_the_task_still_shows_it(db: TestDb) {
    let claimed = claimed_dispatches(&db, 1).await.remove(0);
    let (step, owner, url, on_snapshot) = recorded_after(&db, claimed, None).await;
    assert!(!on_snapshot, "the snapshot was read for the common case");
    assert_eq!(step.as_deref(), Some("await"));
    assert_eq!(owner, None, "the claim is given up once the run is known");
    assert_eq!(url.as_deref(), Some("https://runs/7"));
}

// Each way the row can move between the claim and the run's answer, and what the snapshot then
// decides: had the update on the claim applied, each would read `await` with the run's URL.
on_both_backends!(a_run_is_recorded_on_a_snapshot_once_the_task_moved_since_its_claim);
async fn a_run_is_recorded_on_a_snapshot_once_the_task_moved_since_its_claim(db: TestDb) {
    let held = r#"{"status":"PROCESSED","results":null,"errors":null}"#;
    let cases: [(String, Option<&str>, Option<&str>); 5] = [
        // A callback beat the run's answer and waits for the provider's confirmation.
        (
            format!("UPDATE tasks SET reported_outcome = '{held}' WHERE id = {{id}}"),
            Some("confirm"),
            Some("https://runs/7"),
        ),
        // The activity was aborted: the run just started is cancelled.
        (
            "UPDATE tasks SET status = 'ABORTED', step = NULL, lease_owner = NULL WHERE id = {id}"
                .into(),
            Some("cancel"),
            Some("https://runs/7"),
        ),
        // The lease ran out and another replica took the step over: its word stands.
        (
            "UPDATE tasks SET lease_owner = 'replica-b-1' WHERE id = {id}".into(),
            Some("dispatch"),
            Some("https://runs/7"),
        ),
        // A failed run was followed by a new attempt: nothing of this run is recorded.
        (
            "UPDATE tasks SET attempt = attempt + 1 WHERE id = {id}".into(),
            Some("dispatch"),
            None,
        ),
        // Another step was given to the task under the same claim.
        (
            "UPDATE tasks SET step = 'confirm' WHERE id = {id}".into(),
            Some("confirm"),
            Some("https://runs/7"),
        ),
    ];
    let claimed = claimed_dispatches(&db, cases.len()).await;
    for ((moved, step, url), claimed) in cases.into_iter().zip(claimed) {
        let (stored_step, _, stored_url, on_snapshot) =
            recorded_after(&db, claimed, Some(&moved)).await;
        assert!(on_snapshot, "{moved}: decided on the stale claim");
        assert_eq!(
            (stored_step.as_deref(), stored_url.as_deref()),
            (step, url),
            "{moved}"
        );
    }
}
