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
    let scripts = ["common", "board", "tasks", "dryrun", "app"].map(|s| format!("/ui/{s}.js"));
    let mut paths = vec![("/ui".to_owned(), "text/html; charset=utf-8")];
    paths.extend(
        scripts
            .iter()
            .map(|s| (s.clone(), "text/javascript; charset=utf-8")),
    );
    for (path, content_type) in paths {
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
            let page = String::from_utf8_lossy(&page);
            for script in &scripts {
                let tag = format!(r#"<script src="{script}">"#);
                assert!(page.contains(&tag), "{tag}");
            }
        }
    }
    // The page holds no data: what it shows comes from the API, which still asks for the token.
    for data in ["activities", "board", "tasks?activityId=1"] {
        app.get(&format!("{DEVOPS}/{data}"))
            .await
            .assert_error(401, "40101");
    }
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
        activities.contains(r#"<button type="button">Start</button>"#),
        "a PLANNED activity can be started"
    );
    let tasks = section(&dom, "tasks");
    assert!(
        tasks.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{tasks}"
    );
    assert!(!dom.contains("<img"), "data never becomes markup");
    let board = section(&dom, "board");
    assert!(
        board.contains("<td>sales</td><td>1.0.0</td><td>dev</td>"),
        "the current stage: {board}"
    );
    app.stop().await;
}

/// The page as the browser left it after running its script for a few (virtual) seconds.
pub fn render(chromium: &str, url: &str) -> String {
    let output = headless(chromium, url, &["--dump-dom"]);
    String::from_utf8(output).unwrap()
}

/// A PNG of the page (`width` × `height`) as the browser drew it after running its script.
pub fn screenshot(chromium: &str, url: &str, width: u32, height: u32) -> Vec<u8> {
    let file = tempfile_dir().join("page.png");
    let args = [
        format!("--screenshot={}", file.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    headless(chromium, url, &args);
    let png = std::fs::read(&file).unwrap_or_else(|e| panic!("no screenshot at {file:?}: {e}"));
    // To look at what the test saw: ODM_TEST_SCREENSHOTS=<folder>.
    if let Ok(folder) = std::env::var("ODM_TEST_SCREENSHOTS") {
        let name = format!("ui-{}.png", uuid::Uuid::new_v4().simple());
        std::fs::write(std::path::Path::new(&folder).join(name), &png).unwrap();
    }
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
    png
}

/// Runs headless Chromium on `url` with `args`; its standard output.
fn headless(chromium: &str, url: &str, args: &[&str]) -> Vec<u8> {
    let profile = tempfile_dir();
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
        ])
        .args(args)
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
    output.stdout
}

pub fn section<'a>(dom: &'a str, tbody: &str) -> &'a str {
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
pub fn chromium() -> Option<String> {
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
