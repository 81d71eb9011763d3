//! The OpenAPI document describes the routes the service really has.

use crate::helpers::*;

#[actix_web::test]
async fn every_documented_operation_is_routed() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let app = spawn_app(test_settings(&db, None)).await;
    let doc = app.get(&format!("{DEVOPS}/v3/api-docs")).await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 16);
    for (path, operations) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{product}", "p")
            .replace("{version}", "v");
        for method in operations.as_object().unwrap().keys() {
            let answer = app.call(&method.to_uppercase(), &concrete, None).await;
            let unrouted = answer.status == 404 && answer.text.contains("\"40400\"");
            assert!(
                !unrouted && answer.status != 405,
                "{method} {path} is documented but not routed: {answer:?}"
            );
        }
    }
    app.stop().await;
}
