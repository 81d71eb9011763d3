//! `/ui`: the dashboard is served with a strict policy and, in a real browser, shows what the
//! API holds. The browser test needs Chromium (`.ci/run` installs it); without it, it says so.

use std::process::Command;
use std::sync::Once;

use serde_json::json;

use crate::helpers::*;
use odm_devops::secret::Secret;

#[actix_web::test]
async fn the_dashboard_is_served_without_a_token_but_its_data_needs_one() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let mut settings = test_settings(&db, None);
    settings.auth.api_tokens = vec![Secret::new("s3cret".to_owned())];
    let app = spawn_app(settings).await;
    for (path, content_type) in [
        ("/ui", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
    ] {
        let mut answer = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("content-type").as_deref(), Some(content_type));
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        if path == "/ui" {
            let policy = header("content-security-policy").unwrap();
            assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-eval"));
            let page = answer.body().await.unwrap();
            assert!(String::from_utf8_lossy(&page).contains(r#"<script src="/ui/app.js">"#));
        }
    }
    // The page holds no data: what it shows comes from the API, which still asks for the token.
    app.get(&format!("{DEVOPS}/activities"))
        .await
        .assert_error(401, "40101");
    app.stop().await;
}

#[actix_web::test]
async fn the_dashboard_shows_activities_tasks_and_current_stages_as_text() {
    let Some(chromium) = chromium() else { return };
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let app = spawn_stepped_app(test_settings(&db, None)).await;
    // Executor-less tasks finish at once; a hostile name must show as text, never as markup.
    let lifecycle = json!({
        "dev": [{"template": {"name": "<img src=x onerror=alert(1)>", "definition": {}}}],
        "test": [{"template": {"name": "smoke", "definition": {}}}]
    });
    app.put_descriptor("sales", "1.0.0", &descriptor(lifecycle))
        .await;
    let dev = app.start_activity("sales", "1.0.0", "dev").await;
    app.wait_for_activity(dev, "PROCESSED").await;
    let test = app.planned_activity("sales", "1.0.0", "test").await;

    let url = format!("{}/ui#activity={dev}", app.address);
    let dom = actix_web::rt::task::spawn_blocking(move || render(&chromium, &url))
        .await
        .unwrap();

    let activities = section(&dom, "activities");
    assert!(
        activities.contains(&format!("<td>{test}</td>")),
        "{activities}"
    );
    assert!(activities.contains(r#"<span class="status PLANNED">PLANNED</span>"#));
    assert!(activities.contains(r#"<span class="status PROCESSED">PROCESSED</span>"#));
    assert!(
        activities.contains("<button>Start</button>"),
        "a PLANNED activity can be started"
    );
    let tasks = section(&dom, "tasks");
    assert!(
        tasks.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{tasks}"
    );
    assert!(!dom.contains("<img"), "data never becomes markup");
    let stages = section(&dom, "lifecycles");
    assert!(
        stages.contains("<td>sales</td><td>1.0.0</td><td>dev</td>"),
        "{stages}"
    );
    app.stop().await;
}

/// The page as the browser left it after running its script for a few (virtual) seconds.
fn render(chromium: &str, url: &str) -> String {
    let profile = tempfile_dir();
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn section<'a>(dom: &'a str, tbody: &str) -> &'a str {
    let start = dom
        .find(&format!(r#"<tbody id="{tbody}">"#))
        .unwrap_or_else(|| panic!("no {tbody} table in {dom}"));
    let end = dom[start..].find("</tbody>").unwrap() + start;
    &dom[start..end]
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("odm-ui-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium from `ODM_TEST_CHROMIUM` or the PATH; `None`, with a notice, when there is none.
fn chromium() -> Option<String> {
    let found = std::env::var("ODM_TEST_CHROMIUM").ok().or_else(|| {
        ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|name| {
                Command::new(name)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(str::to_owned)
    });
    if found.is_none() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            eprintln!("\n*** no Chromium found: the dashboard's browser test is SKIPPED (.ci/run installs it) ***\n")
        });
    }
    found
}
