//! The OpenAPI document describes the routes the service really has.

use odm_devops::config::ExecutorSettings;

use crate::helpers::*;

#[actix_web::test]
async fn every_documented_operation_is_routed() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let mut settings = test_settings(&db, None);
    // The service hook route exists only for an executor with a hook secret.
    if let Some(ExecutorSettings::AzureDevops(azure)) = settings.executors.get_mut("azure-devops") {
        azure.service_hook_secret = Some("hook-secret".into());
    }
    let app = spawn_app(settings).await;
    let doc = app.get(&format!("{DEVOPS}/v3/api-docs")).await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 24);
    for (path, operations) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{executor}", "azure-devops")
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

/// What schemathesis found wrong in the document itself (see README, Testing with generated
/// inputs): a header named with braces, which no client can send (the HTTP parser answers an
/// empty 400), a JSON body promised where the service sends none, and answers not listed.
#[test]
fn the_document_describes_what_the_service_really_answers() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../src/api/openapi.json")).unwrap();
    let is_token = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let empty = vec![];
            let parameters = operation["parameters"].as_array().unwrap_or(&empty);
            for parameter in parameters.iter().filter(|p| p["in"] == "header") {
                let name = parameter["name"].as_str().unwrap();
                assert!(is_token(name), "{method} {path}: header {name:?}");
            }
            if path.starts_with("/api/v1/pp/") && !path.ends_with("/api-docs") {
                let responses = &operation["responses"];
                assert!(responses.get("406").is_some(), "{method} {path}: 406");
                if !parameters.is_empty() {
                    assert!(responses.get("400").is_some(), "{method} {path}: 400");
                }
            }
        }
    }
    let current = &doc["paths"]["/api/v1/pp/devops/lifecycles/{product}/{version}/current"];
    assert!(
        current["get"]["responses"]["200"].get("content").is_none(),
        "200 with an empty body when there is no current row"
    );
}
