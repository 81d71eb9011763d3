//! The dashboard with a real provider (the Azure DevOps simulator): a click on the board opens
//! the running task, whose run link, live run state (`GET /tasks/{id}/run`) and logs
//! (`GET /tasks/{id}/logs`) the page shows exactly as the service answers them, as text.

use crate::azure::{Azure, MANUAL};
use crate::helpers::*;
use crate::on_both_backends;
use crate::runs::{logs_path, run_path, task_with_run};
use crate::ui::chromium;
use crate::ui_board::{LOGS, TASKS_TITLE, TASK_ROWS};
use crate::ui_driver::Browser;

on_both_backends!(the_dashboard_shows_a_run_s_live_state_and_logs);
async fn the_dashboard_shows_a_run_s_live_state_and_logs(db: TestDb) {
    let Some(chromium) = chromium() else { return };
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let (task, run_id) = task_with_run(&azure, "sales", MANUAL).await;
    let activity = app.task(task).await["activityId"]
        .as_str()
        .unwrap()
        .to_owned();
    let browser = actix_web::rt::task::spawn_blocking(move || Browser::launch(&chromium))
        .await
        .unwrap();
    let mut page = browser.open(&format!("{}/ui", app.address)).await;
    let running = format!("#board .stage.running[data-activity=\"{activity}\"]");
    page.wait_for(
        "the running stage",
        &format!("document.querySelector('{running}') !== null"),
    )
    .await;
    page.eval(&format!("document.querySelector('{running}').click()"))
        .await;
    page.wait_for(
        "its tasks",
        &format!("{TASKS_TITLE} === 'Tasks of activity {activity}'"),
    )
    .await;
    // Asked when the activity is opened: the state Azure reports now.
    let rows = page
        .wait_for(
            "the run's live state",
            &format!("(() => {{ const r = {TASK_ROWS}; return r && r[0][5].includes('inProgress') && r; }})()"),
        )
        .await;
    assert_eq!(rows[0][2], "deploy", "{rows}");
    let live = app.get_json(&run_path(task)).await;
    assert_eq!(live["state"], "inProgress");
    let link = page
        .eval("document.querySelector('#tasks td.run a').href")
        .await;
    assert!(
        link.as_str()
            .unwrap()
            .ends_with(&format!("/_build/results?buildId={run_id}")),
        "{link}"
    );

    // Completed at Azure: "Check run" asks again.
    assert!(
        azure
            .sim
            .finish_run(run_id, Some(odm_devops::simulator::Behaviour::default()))
            .await
    );
    page.eval("[...document.querySelectorAll('#tasks button')].find(b => b.textContent === 'Check run').click()")
        .await;
    page.wait_for(
        "the completed run",
        &format!("(() => {{ const r = {TASK_ROWS}; return r && r[0][5].includes('completed · succeeded'); }})()"),
    )
    .await;

    // The logs, exactly the text the service answers, and no markup made of it.
    page.eval("[...document.querySelectorAll('#tasks button')].find(b => b.textContent === 'Logs').click()")
        .await;
    let shown = page.wait_for("the logs", LOGS).await;
    page.keep_screenshot("run-state-and-logs").await;
    let logs = app.get(&logs_path(task)).await;
    assert_eq!(logs.status, 200, "{logs:?}");
    assert!(logs.text.starts_with("==> log 1 ("), "{}", logs.text);
    assert_eq!(shown, logs.text.as_str(), "shown as the service answers it");
    let children = page
        .eval("document.getElementById('logs').children.length")
        .await;
    assert_eq!(children, 0, "text only");
    drop(browser);
    azure.stop().await;
}
