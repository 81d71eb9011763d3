//! The dashboard's dry-run form in headless Chromium, against the Azure DevOps simulator: the
//! plan and every problem the service finds, shown as the service answers them and as text;
//! nothing stored or run.

use serde_json::{json, Value};

use crate::azure::{azure_task, Azure, PROVISION_VM, SMOKE_TEST};
use crate::dry_run::problems;
use crate::helpers::*;
use crate::on_both_backends;
use crate::ui::chromium;
use crate::ui_driver::{Browser, Page};

on_both_backends!(the_dry_run_form_shows_the_plan_and_its_problems);
async fn the_dry_run_form_shows_the_plan_and_its_problems(db: TestDb) {
    let Some(chromium) = chromium() else { return };
    let azure = Azure::start(&db).await;
    let app = &azure.app;
    let hostile = "<img src=x onerror=alert(1)>";
    let lifecycle = json!({
        "dev": [
            // `colour` is declared nowhere in the pipeline: Azure's preview refuses it.
            azure_task("provision", PROVISION_VM, None,
                json!({"params": {"vmName": "vm-dev", "colour": "blue"}})),
            {"service": {"$href": "{gitlab}"}, "template": {"name": hostile, "definition": {}}},
        ],
        "prod": [azure_task("smoke", SMOKE_TEST, None, json!({"params": {"endpoint": "x"}}))],
    });
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let browser = actix_web::rt::task::spawn_blocking(move || Browser::launch(&chromium))
        .await
        .unwrap();
    let mut page = browser.open(&format!("{}/ui", app.address)).await;
    page.wait_for(
        "the page",
        "document.getElementById('state').textContent.startsWith('updated')",
    )
    .await;

    let summary = dry_run(&mut page, "dev").await;
    assert_eq!(summary, "not valid: 2 problem(s)");
    let rows = plan_rows(&mut page).await;
    let expected = app.dry_run("dev", &[]).await;
    let tasks = expected["tasks"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, task) in rows.iter().zip(tasks) {
        assert_eq!(row[1], task["name"], "{row}");
        assert_eq!(row[5], task["preview"]["status"], "{row}");
        let listed: Vec<String> = serde_json::from_value(row[6].clone()).unwrap();
        assert_eq!(
            listed,
            problems(task),
            "the service's problems, as they are"
        );
    }
    assert_eq!(rows[0][5], "REFUSED");
    assert!(
        rows[0][4]
            .as_str()
            .unwrap()
            .contains("\"colour\": \"blue\""),
        "{}",
        rows[0]
    );
    assert_eq!(rows[1][1], hostile, "a name is text");
    assert_eq!(
        page.eval("document.querySelector('img') === null").await,
        true
    );
    page.keep_screenshot("dry-run-dev").await;

    let summary = dry_run(&mut page, "prod").await;
    assert_eq!(summary, "valid: 1 task(s) would run, no problem found");
    let rows = plan_rows(&mut page).await;
    assert_eq!(
        (&rows[0][1], &rows[0][5]),
        (&json!("smoke"), &json!("PASSED"))
    );
    app.assert_nothing_stored().await;
    assert!(azure.sim.runs().is_empty(), "no run at Azure");
    drop(browser);
    azure.stop().await;
}

/// Fills the form for p1 1.0.0 and `stage`, sends it; the summary once the plan is shown.
async fn dry_run(page: &mut Page, stage: &str) -> Value {
    page.eval(&format!(
        "(() => {{ const f = document.getElementById('dryrun-form');
            f.dataProductId.value = 'p1'; f.dataProductVersion.value = '1.0.0';
            f.stage.value = '{stage}'; f.requestSubmit(); }})()"
    ))
    .await;
    page.wait_for(
        "the plan",
        "!document.getElementById('dryrun-plan').hidden && document.getElementById('dryrun-summary').textContent",
    )
    .await
}

/// Each task of the plan: its cells' text, the problems (the last cell) as its items' text.
async fn plan_rows(page: &mut Page) -> Vec<Value> {
    let rows = page
        .eval(
            "[...document.querySelectorAll('#dryrun-tasks tr')].map(r => [...r.cells].map((c, i) =>
                i === 6 ? [...c.querySelectorAll('li')].map(l => l.textContent) : c.textContent))",
        )
        .await;
    rows.as_array().unwrap().clone()
}
