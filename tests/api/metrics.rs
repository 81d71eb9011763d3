//! `/metrics`: what a platform engineer reads after an activity ran (README "Metrics").

use std::collections::HashMap;

use serde_json::json;

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

/// One scrape: the page, and its samples keyed `name{labels}`.
pub(crate) struct Scrape {
    page: String,
    pub(crate) samples: HashMap<String, f64>,
}

impl Scrape {
    #[track_caller]
    pub(crate) fn value(&self, sample: &str) -> f64 {
        *self
            .samples
            .get(sample)
            .unwrap_or_else(|| panic!("{sample} is not on the page:\n{}", self.page))
    }
}

pub(crate) async fn scrape(app: &TestApp) -> Scrape {
    let mut response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let page = String::from_utf8(response.body().await.unwrap().to_vec()).unwrap();
    let samples = page
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (sample, value) = line.rsplit_once(' ').unwrap();
            (sample.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect();
    Scrape { page, samples }
}

/// Scrapes until `sample` has `value` (the engine records a step once its commit is done).
pub(crate) async fn scrape_until(app: &TestApp, sample: &str, value: f64) -> Scrape {
    eventually(&format!("{sample} = {value}"), || async move {
        let scrape = scrape(app).await;
        (scrape.samples.get(sample) == Some(&value)).then_some(scrape)
    })
    .await
}

const PRODUCT: &str = "metrics-product";

on_both_backends!(a_finished_activity_shows_on_the_metrics_page);
async fn a_finished_activity_shows_on_the_metrics_page(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let lifecycle = fake_stage(&["first", "second"]);
    app.put_descriptor(PRODUCT, "1.0.0", &descriptor(lifecycle))
        .await;
    // The first run request is answered late: meanwhile its dispatch is due and under way.
    executor.delay_replies(1000);
    let id = app.start_activity(PRODUCT, "1.0.0", "dev").await;
    let first = app.dispatched(&executor, 1).await;
    let during = scrape(&app).await;
    assert_eq!(during.value(r#"odm_devops_database_up"#), 1.0);
    assert_eq!(
        during.value(r#"odm_devops_activities{status="PROCESSING"}"#),
        1.0
    );
    assert_eq!(
        during.value(r#"odm_devops_tasks{status="PROCESSING"}"#),
        1.0
    );
    assert_eq!(during.value(r#"odm_devops_tasks{status="PLANNED"}"#), 1.0);
    let dispatch = r#"{step="dispatch"}"#;
    assert_eq!(
        during.value(&format!("odm_devops_engine_steps_scheduled{dispatch}")),
        1.0
    );
    assert_eq!(
        during.value(&format!("odm_devops_engine_steps_overdue{dispatch}")),
        1.0
    );
    let age = during.value(&format!(
        "odm_devops_engine_oldest_overdue_step_age_seconds{dispatch}"
    ));
    assert!((0.0..10.0).contains(&age), "{age}");
    executor.delay_replies(0);
    let dispatched = r#"odm_devops_engine_steps_run_total{step="dispatch",result="done"}"#;
    scrape_until(&app, dispatched, 1.0).await;

    let results = json!({"status": "PROCESSED", "results": {"url": "https://x"}});
    let answer = app.call_back(&first.callback_ref, Some(results)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let second = app.dispatched(&executor, 2).await;
    assert_eq!(app.call_back(&second.callback_ref, None).await.status, 200);
    app.wait_for_activity(id, "PROCESSED").await;
    let replay = app.call_back(&second.callback_ref, None).await;
    assert_eq!(replay.status, 200, "the same callback again: {replay:?}");
    let (path, token) = second.callback_ref.split_once("&token=").unwrap();
    let forged = app.call_back(&format!("{path}&token=x{token}"), None).await;
    assert_eq!(forged.status, 401, "{forged:?}");

    scrape_until(&app, dispatched, 2.0).await;
    // The stored-work gauges are read at most every 5 s: they catch up within that.
    let after = scrape_until(&app, r#"odm_devops_activities{status="PROCESSED"}"#, 1.0).await;
    for (sample, expected) in [
        (r#"odm_devops_activities{status="PROCESSED"}"#, 1.0),
        (r#"odm_devops_activities{status="PROCESSING"}"#, 0.0),
        (r#"odm_devops_tasks{status="PROCESSED"}"#, 2.0),
        (r#"odm_devops_engine_steps_scheduled{step="dispatch"}"#, 0.0),
        (r#"odm_devops_engine_steps_scheduled{step="await"}"#, 0.0),
        (
            r#"odm_devops_task_outcomes_total{outcome="processed"}"#,
            2.0,
        ),
        (r#"odm_devops_task_outcomes_total{outcome="failed"}"#, 0.0),
        (r#"odm_devops_callbacks_total{answer="accepted"}"#, 2.0),
        (r#"odm_devops_callbacks_total{answer="replay"}"#, 1.0),
        (r#"odm_devops_callbacks_total{answer="unauthorized"}"#, 1.0),
        (r#"odm_devops_callbacks_total{answer="refused"}"#, 0.0),
        (
            r#"odm_devops_http_requests_total{method="PATCH",route="/api/v1/pp/devops/tasks/{id}/status",status="200"}"#,
            3.0,
        ),
        (
            r#"odm_devops_http_requests_total{method="PATCH",route="/api/v1/pp/devops/tasks/{id}/status",status="401"}"#,
            1.0,
        ),
        (
            r#"odm_devops_http_requests_total{method="POST",route="/api/v1/pp/devops/activities",status="201"}"#,
            1.0,
        ),
        (
            r#"odm_devops_http_request_duration_seconds_count{method="GET",route="/metrics"}"#,
            after.value(
                r#"odm_devops_http_requests_total{method="GET",route="/metrics",status="200"}"#,
            ),
        ),
        (
            r#"odm_devops_executor_requests_total{executor="fake",class="2xx"}"#,
            2.0,
        ),
        (
            r#"odm_devops_executor_requests_total{executor="fake",class="error"}"#,
            0.0,
        ),
        ("odm_devops_next_dispatch_delay_seconds_count", 1.0),
    ] {
        assert_eq!(after.value(sample), expected, "{sample}");
    }
    // Labels never carry ids, tokens or products.
    assert!(!after.page.contains(PRODUCT), "{}", after.page);
    assert!(!after.page.contains(token), "{}", after.page);
    for id in [id, first.id, second.id] {
        for leak in [format!("/{id}/"), format!("/{id}\"")] {
            assert!(!after.page.contains(&leak), "{leak} in\n{}", after.page);
        }
    }
    app.stop().await;
}

on_both_backends!(the_metrics_page_needs_no_api_token);
async fn the_metrics_page_needs_no_api_token(db: TestDb) {
    let mut settings = test_settings(&db, None);
    settings.auth.api_tokens = vec!["team-token".into()];
    let app = spawn_app(settings).await;
    app.get(&format!("{DEVOPS}/activities/42"))
        .await
        .assert_error(401, "40101");
    // A path no route matches needs the token too (deny by default).
    assert_eq!(app.get("/no/such/route/7").await.status, 401);
    let page = scrape(&app).await;
    assert_eq!(
        page.value(r#"odm_devops_http_requests_total{method="GET",route="/api/v1/pp/devops/activities/{id}",status="401"}"#),
        1.0,
        "a refused request counts under its route's pattern"
    );
    assert_eq!(
        page.value(
            r#"odm_devops_http_requests_total{method="GET",route="unmatched",status="401"}"#
        ),
        1.0
    );
    assert!(!page.page.contains("team-token"));
    assert!(!page.page.contains("/7") && !page.page.contains("/42"));
    app.stop().await;
}

on_both_backends!(stored_work_is_read_at_most_every_five_seconds);
async fn stored_work_is_read_at_most_every_five_seconds(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    let lifecycle = json!({"dev": [{"template": {"name": "a", "definition": {}}}]});
    app.put_descriptor(PRODUCT, "1.0.0", &descriptor(lifecycle))
        .await;
    app.put_descriptor("other", "1.0.0", &descriptor(json!({"dev": [{}]})))
        .await;
    assert_eq!(
        app.create_activity(PRODUCT, "1.0.0", "dev", false)
            .await
            .status,
        201
    );
    let planned = r#"odm_devops_activities{status="PLANNED"}"#;
    let first = scrape(&app).await;
    assert_eq!(first.value(planned), 1.0);
    assert_eq!(
        app.create_activity("other", "1.0.0", "dev", false)
            .await
            .status,
        201
    );
    // Scrapes right after, several at once: one cached read, the in-memory counters current.
    let scrapes = futures_util::future::join_all((0..4).map(|_| scrape(&app))).await;
    let created = r#"odm_devops_http_requests_total{method="POST",route="/api/v1/pp/devops/activities",status="201"}"#;
    for again in &scrapes {
        assert_eq!(
            again.value(planned),
            1.0,
            "the stored work is not read again"
        );
        assert_eq!(again.value(created), 2.0, "the rest of the page is current");
    }
    scrape_until(&app, planned, 2.0).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_metrics_token_guards_the_page() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let mut settings = test_settings(&db, None);
    settings.auth.api_tokens = vec!["team-token".into()];
    settings.metrics.token = Some("scraper-token".into());
    let app = spawn_app(settings).await;
    for headers in [
        vec![],
        vec![("Authorization", "Bearer team-token")],
        vec![("Authorization", "Bearer scraper-token-not")],
        vec![("Authorization", "Basic scraper-token")],
    ] {
        let answer = app.send("GET", "/metrics", None, &headers).await;
        assert_eq!(answer.status, 401, "{headers:?}: {answer:?}");
        let body = answer.json();
        assert_eq!(body["code"], "40101");
        assert!(body["message"].as_str().unwrap().contains("metrics token"));
    }
    let page = app
        .send(
            "GET",
            "/metrics",
            None,
            &[("Authorization", "Bearer scraper-token")],
        )
        .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.text.contains("odm_devops_database_up 1"));
    assert!(!page.text.contains("scraper-token"));
    // The metrics token opens nothing else.
    let api = app
        .send(
            "GET",
            &format!("{DEVOPS}/activities"),
            None,
            &[("Authorization", "Bearer scraper-token")],
        )
        .await;
    api.assert_error(401, "40101");
    app.stop().await;
}
