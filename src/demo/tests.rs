//! The demo run in-process, its output captured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::scenario::STAGES;
use super::{run, DemoOptions};

/// A parent folder of the test's own, so the test can see the demo leaves nothing in it.
fn parent() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("odm-demo-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_left_nothing(parent: &Path) {
    let left: Vec<_> = std::fs::read_dir(parent).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?}");
    std::fs::remove_dir(parent).unwrap();
}

/// The one line holding every piece.
#[track_caller]
fn line_with<'a>(text: &'a str, pieces: &[&str]) -> &'a str {
    text.lines()
        .find(|line| pieces.iter().all(|p| line.contains(p)))
        .unwrap_or_else(|| panic!("no line with {pieces:?} in:\n{text}"))
}

#[actix_web::test]
async fn the_demo_promotes_the_product_through_every_stage_and_tells_each_step() {
    let parent = parent();
    let options = DemoOptions {
        run_delay: Duration::from_millis(20),
        stage_timeout: Duration::from_secs(20),
        temp_dir: parent.clone(),
    };
    let mut out = Vec::new();
    let result = run(&mut out, &options).await;
    let text = String::from_utf8(out).unwrap();
    assert!(result.is_ok(), "{result:?}\n{text}");

    // The ODM observer got the events, completion included, each stage's transition last.
    line_with(
        &text,
        &["events received by the ODM observer demo-observer"],
    );
    line_with(&text, &["DATA_PRODUCT_TASK_COMPLETED", "PROCESSED"]);
    for stage in STAGES {
        line_with(
            &text,
            &[
                "DATA_PRODUCT_STAGE_TRANSITION",
                &format!("stage {stage}, PROCESSED"),
            ],
        );
        line_with(&text, &[&format!("── stage {stage} ")]);
        line_with(&text, &[&format!("✔ stage {stage} reached in")]);
    }
    // The smoke test has no callback step: Azure's service hook completed it.
    line_with(
        &text,
        &[
            "◀ service hook",
            "Run state changed",
            "(succeeded)",
            "→ HTTP 200",
        ],
    );
    // The dry run caught the draft's undeclared parameter before any run; the fix passed.
    let caught = text
        .find("── dry run of dev, draft descriptor")
        .expect("a dry run");
    line_with(
        &text,
        &["dryRun=true → 200, not valid; pipeline runs so far: 0"],
    );
    line_with(&text, &["✘ deploy-app:", "Unexpected parameter 'replicas'"]);
    let passed = text
        .find("── dry run of dev, corrected descriptor")
        .unwrap();
    line_with(
        &text,
        &["dryRun=true → 200, valid", "pipeline runs so far: 0"],
    );
    assert!(
        caught < passed && passed < text.find("▶ pipeline").unwrap(),
        "{text}"
    );
    // The stage order's gate: prod refused while test was not reached, then started.
    let refused = text
        .find("── stage prod, too early")
        .expect("prod refused first");
    let test_started = text.find("── stage test ").unwrap();
    let prod_started = text.find("── stage prod ─").unwrap();
    assert!(
        refused < test_started && test_started < prod_started,
        "{text}"
    );
    line_with(&text, &["PATCH", "action=START → 422", "stays PLANNED"]);
    line_with(&text, &["stage-order", "test or later, and it is dev"]);
    line_with(&text, &["PATCH", "action=START → activity", "started"]);
    line_with(
        &text,
        &[
            "▶ pipeline",
            "provision-vm (id 1) in odm-demo/Data Products, refs/heads/main → run 1000",
        ],
    );
    // Placeholders, resolved, with where their value came from.
    line_with(
        &text,
        &["vmIp", "= 10.1.0.4 ", "← ${dev.results.task1.vm.ip}"],
    );
    line_with(
        &text,
        &[
            "endpoint",
            "= http://10.1.0.4:8080/trips ",
            "← ${dev.results.deploy-app.url}",
        ],
    );
    line_with(
        &text,
        &["vmIp", "= 10.3.0.4 ", "← ${prod.results.task1.vm.ip}"],
    );
    line_with(
        &text,
        &[
            "appVersion",
            "= 1.4.2 ",
            "← ${dev.results.deploy-app.version}",
        ],
    );
    line_with(&text, &["variables", "ENVIRONMENT = prod"]);
    line_with(&text, &["stagesToSkip", "seed_test_data"]);
    line_with(
        &text,
        &[
            "◀ callback   PATCH callbackRef → HTTP 200: PROCESSED",
            r#""url":"http://10.1.0.4:8080/trips""#,
        ],
    );
    assert_eq!(text.matches("▶ pipeline").count(), 5, "{text}");
    // Four pipelines call back; the smoke test is completed by the service hook.
    assert_eq!(
        text.matches("◀ callback   PATCH callbackRef → HTTP 200: PROCESSED")
            .count(),
        4
    );
    assert_eq!(text.matches("◀ service hook").count(), 1, "{text}");
    assert_eq!(text.matches("✔ task PROCESSED in").count(), 5, "{text}");
    // The callback token is the pipeline's credential: never printed.
    assert_eq!(
        text.matches("token=").count(),
        text.matches("token=…").count()
    );
    assert_eq!(text.matches("token=…").count(), 5);

    line_with(&text, &["── lifecycle of trip-execution 1.0.0 "]);
    for (id, stage) in [(1, "dev"), (2, "test")] {
        let row = line_with(&text, &[&format!("  {id:<4} {stage:<6} ")]);
        assert!(!row.contains("(current)"), "{row}");
    }
    line_with(&text, &["  3    prod   ", "(current)"]);
    line_with(
        &text,
        &[
            "results of the current stage (prod)",
            r#""version":"1.4.2""#,
        ],
    );
    line_with(
        &text,
        &["3 stages, 5 pipeline runs, 4 callbacks, 1 Entra token for them all."],
    );
    assert_left_nothing(&parent);
}

#[actix_web::test]
async fn a_stage_that_does_not_finish_in_time_fails_the_demo_and_says_where() {
    let parent = parent();
    let options = DemoOptions {
        run_delay: Duration::from_secs(5),
        stage_timeout: Duration::from_secs(1),
        temp_dir: parent.clone(),
    };
    let mut out = Vec::new();
    let error = format!("{:#}", run(&mut out, &options).await.unwrap_err());
    assert_eq!(
        error,
        "the demo failed: stage dev did not finish within 1 s: activity 1 is still PROCESSING; \
         its tasks: provision-vm PROCESSING, deploy-app PLANNED"
    );
    let text = String::from_utf8(out).unwrap();
    line_with(&text, &["▶ pipeline", "provision-vm"]);
    assert_left_nothing(&parent);
}
