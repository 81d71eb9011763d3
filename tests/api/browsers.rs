//! Browsers cannot drive the API from another site (DESIGN §14), with or without tokens: a
//! body must say it is JSON, and a cross-site request is refused; pipelines' callbacks keep
//! taking any Content-Type.

use serde_json::{json, Value};

use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(browsers_cannot_drive_the_api_from_another_site);
async fn browsers_cannot_drive_the_api_from_another_site(db: TestDb) {
    // No tokens (anonymous, on loopback): the rules hold without any credential.
    let app = spawn_app(test_settings(&db, None)).await;
    let lifecycle = json!({"dev": [{"template": {"name": "a", "definition": {}}}]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let path = format!("{DEVOPS}/activities");
    let body =
        json!({"dataProductId": "p1", "dataProductVersion": "1.0.0", "stage": "dev"}).to_string();
    // A body a browser can send without a preflight: no Content-Type, or a form's.
    for content_type in [
        None,
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app.client.post(format!("{}{path}", app.address));
        if let Some(content_type) = content_type {
            request = request.insert_header(("Content-Type", content_type));
        }
        let mut response = request.send_body(body.clone()).await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        let answer: Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
        assert_eq!(answer["code"], "41501", "{answer}");
    }
    let put = app
        .send(
            "PUT",
            "/api/v1/pp/registry/products/p2/versions/1",
            Some(("text/plain", "{}".into())),
            &[],
        )
        .await;
    put.assert_error(415, "41501");
    assert!(
        app.get(&path).await.json().as_array().unwrap().is_empty(),
        "nothing created"
    );

    let id = app
        .create_activity("p1", "1.0.0", "dev", false)
        .await
        .json()["id"]
        .as_i64()
        .unwrap();
    let start = format!("{DEVOPS}/activities/{id}/status?action=START");
    let json = Some(("application/json", body.clone()));
    for headers in [
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![
            ("Origin", "http://127.0.0.1.evil.example"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        vec![("Origin", "https://127.0.0.1")],
    ] {
        for (method, path, body) in [
            ("PATCH", start.clone(), None),
            ("DELETE", format!("{DEVOPS}/activities/{id}"), None),
            ("POST", path.clone(), json.clone()),
        ] {
            let answer = app.send(method, &path, body, &headers).await;
            answer.assert_error(403, "40301");
        }
    }
    assert_eq!(
        app.activity(id).await["status"],
        "PLANNED",
        "nothing started"
    );
    assert_eq!(app.get(&path).await.json().as_array().unwrap().len(), 1);
    // Reads stay readable (a browser keeps another site from seeing the answer), and the
    // dashboard's own requests carry its origin.
    let read = app
        .send("GET", &path, None, &[("Origin", "http://evil.example")])
        .await;
    assert_eq!(read.status, 200);
    let own = [
        ("Origin", app.address.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let started = app.send("PATCH", &start, None, &own).await;
    assert_eq!(started.status, 200, "{started:?}");
    let own = [
        ("Origin", "http://localhost:1"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    app.send("PATCH", &start, None, &own)
        .await
        .assert_error(403, "40301");
    app.stop().await;
}

on_both_backends!(callbacks_keep_any_content_type);
async fn callbacks_keep_any_content_type(db: TestDb) {
    let executor = FakeExecutor::start().await;
    let app = spawn_app(test_settings(&db, Some(&executor.address))).await;
    let lifecycle = json!({"dev": [fake_task("a", json!({})), fake_task("b", json!({}))]});
    app.put_descriptor("p1", "1.0.0", &descriptor(lifecycle))
        .await;
    let id = app.start_activity("p1", "1.0.0", "dev").await;
    // `curl -d` says application/x-www-form-urlencoded; some clients say nothing at all.
    let body = json!({"status": "PROCESSED"}).to_string();
    let first = executor.wait_for(1).await.remove(0);
    let form = app
        .send(
            "PATCH",
            &first.callback_ref,
            Some(("application/x-www-form-urlencoded", body.clone())),
            &[],
        )
        .await;
    assert_eq!(form.status, 200, "{form:?}");
    let second = executor.wait_for(2).await.remove(1);
    let mut bare = app
        .client
        .post(&second.callback_ref)
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(bare.status(), 200, "{:?}", bare.body().await);
    app.wait_for_activity(id, "PROCESSED").await;
    app.stop().await;
}
