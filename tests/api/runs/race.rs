//! A service hook racing the pipeline's own callback: whichever is applied first settles the
//! task, the other changes nothing, and the lifecycle moves once.

use futures_util::future::join;
use odm_devops::simulator::{Behaviour, CallbackMode, SimResult};
use serde_json::json;

use super::hooks::{activity_once, only_task, read, start, subscribe, with_hook_secret, SECRET};
use super::*;
use crate::azure::{json_field, SMOKE_TEST};
use crate::helpers::{TestDb, DEVOPS};
use crate::on_both_backends;

on_both_backends!(a_hook_and_a_callback_racing_settle_the_task_once);
async fn a_hook_and_a_callback_racing_settle_the_task_once(db: TestDb) {
    let azure = with_hook_secret(&db).await;
    azure.sim.put_pipeline(long_running(0));

    // The callback first, then Azure's hook (the simulator sends it after the run's last
    // step called back): the hook changes nothing, the callback's results stay.
    subscribe(&azure, SECRET);
    let first = start(&azure, "callback-first", SMOKE_TEST).await;
    let done = activity_once(&azure, first, "PROCESSED").await;
    assert_eq!(
        json_field(&done, "results")["task1"]["passed"],
        true,
        "{done}"
    );
    crate::helpers::eventually("the hook delivered", || async {
        (azure.sim.hook_deliveries().len() == 1).then_some(())
    })
    .await;
    assert_eq!(azure.sim.hook_deliveries()[0].status, Some(200));
    let task = only_task(&azure, first).await;
    assert_eq!(
        json_field(&task, "results")["checked"],
        "http://x",
        "{task}"
    );

    // The hook first: the run failed; the late callback claiming success changes nothing.
    let second = start(&azure, "hook-first", LONG_RUNNING).await;
    let task_id = only_task(&azure, second).await["id"].as_i64().unwrap();
    let run = azure.wait_for_run_of_task(task_id).await;
    crate::helpers::eventually("the run recorded", || async {
        only_task(&azure, second).await["runUrl"]
            .as_str()
            .map(|_| ())
    })
    .await;
    let failed = Behaviour {
        callback: CallbackMode::None,
        result: SimResult::Failed,
        ..Behaviour::default()
    };
    assert!(azure.sim.finish_run(run.id, Some(failed)).await);
    activity_once(&azure, second, "FAILED").await;
    let late = azure
        .app
        .call_back(
            &run.template_parameters["callbackRef"],
            Some(json!({"status": "PROCESSED", "results": {"ok": true}})),
        )
        .await;
    late.assert_error(409, "40911");
    let task = only_task(&azure, second).await;
    assert_eq!(task["status"], "FAILED");
    assert_eq!(task["results"], json!(null));

    // At the same moment: whichever lands first settles the task; the other changes nothing.
    // (The test sends the hook itself, at the same time as the callback.)
    azure.sim.clear_hooks();
    let mut winners = Vec::new();
    for round in 0..4 {
        let product = format!("race-{round}");
        let activity = start(&azure, &product, LONG_RUNNING).await;
        let task_id = only_task(&azure, activity).await["id"].as_i64().unwrap();
        let run = azure.wait_for_run_of_task(task_id).await;
        crate::helpers::eventually("the run recorded", || async {
            only_task(&azure, activity).await["runUrl"]
                .as_str()
                .map(|_| ())
        })
        .await;
        // Azure has the run succeeded; its hook and the pipeline's callback arrive together.
        let quiet = Behaviour {
            callback: CallbackMode::None,
            ..Behaviour::default()
        };
        assert!(azure.sim.finish_run(run.id, Some(quiet)).await);
        let event = run_event(run.id, LONG_RUNNING, "completed", Some("succeeded"));
        let auth = basic("azure", SECRET);
        let callback_body = json!({"status": "PROCESSED", "results": {"from": "callback"}});
        let (hook, callback) = join(
            send_hook(&azure.app, "azure-devops", &event, Some(&auth)),
            azure
                .app
                .call_back(&run.template_parameters["callbackRef"], Some(callback_body)),
        )
        .await;
        assert_eq!(hook.status, 200, "{hook:?}");
        let activity = activity_once(&azure, activity, "PROCESSED").await;
        let task = only_task(&azure, activity["id"].as_i64().unwrap()).await;
        let results = json_field(&task, "results");
        match callback.status {
            // The callback settled it: its results are the task's.
            200 => {
                assert_eq!(results, json!({"from": "callback"}), "{task}");
                winners.push("callback");
            }
            // The hook's poll settled it first (no results): the callback was refused.
            409 => {
                assert_eq!(results, json!(null), "{task}");
                winners.push("hook");
            }
            other => panic!("callback answered {other}: {callback:?}"),
        }
        let rows = read(&azure, &format!("{DEVOPS}/lifecycles/{product}/1.0.0")).await;
        assert_eq!(rows.as_array().unwrap().len(), 1, "promoted once: {rows}");
        assert!(azure.requests_to("GET", &format!("/runs/{}", run.id)).len() <= 1);
    }
    assert_eq!(winners.len(), 4, "{winners:?}");
    azure.stop().await;
}
