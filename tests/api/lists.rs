//! Lists page with `?after=<id>&limit=<n>` (DESIGN §14 "No amplification"); without them, the
//! whole list as ODM answers it.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(lists_page_by_id);
async fn lists_page_by_id(db: TestDb) {
    let app = spawn_app(test_settings(&db, None)).await;
    // Tasks without an executor succeed at once: each activity ends PROCESSED with a lifecycle row.
    let task = |name: &str| json!({"template": {"name": name, "definition": {}}});
    let lifecycle =
        json!({"dev": [task("a"), task("b")], "test": [task("c")], "prod": [task("d")]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    for stage in ["dev", "test", "prod"] {
        let id = app.start_activity("p1", "1.0.0", stage).await;
        app.wait_for_activity(id, "PROCESSED").await;
    }
    for list in [
        "/activities",
        "/tasks",
        "/lifecycles",
        "/lifecycles/p1",
        "/lifecycles/p1/1.0.0",
    ] {
        let path = format!("{DEVOPS}{list}");
        let all = app.get(&path).await.ids();
        assert!(
            all.len() >= 3 && all.windows(2).all(|w| w[0] < w[1]),
            "{list}: {all:?}"
        );
        let page = |query: String| {
            let path = format!("{path}?{query}");
            let app = &app;
            async move { app.get(&path).await.ids() }
        };
        assert_eq!(page("limit=2".into()).await, all[..2], "{list}");
        assert_eq!(
            page(format!("after={}&limit=2", all[1])).await,
            all[2..all.len().min(4)],
            "{list}"
        );
        assert_eq!(page(format!("after={}", all[0])).await, all[1..], "{list}");
        assert_eq!(
            page(format!("after={}", all.last().unwrap())).await,
            Vec::<i64>::new()
        );
        assert_eq!(page("after=0&limit=1000".into()).await, all, "{list}");
        for (query, named) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=-5", "limit"),
            ("limit=all", "limit"),
            ("after=-1", "after"),
            ("after=x", "after"),
            ("limit=1&limit=2", "\"limit\""),
        ] {
            let message = app
                .get(&format!("{path}?{query}"))
                .await
                .assert_error(400, "40001");
            assert!(message.contains(named), "{list}?{query}: {message}");
        }
    }
    // Filters and pages combine.
    let path = format!("{DEVOPS}/tasks?status=PROCESSED&limit=1&after=");
    let first: Vec<Value> = app
        .get(&format!("{path}0"))
        .await
        .json()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["status"], "PROCESSED");
    app.stop().await;
}
