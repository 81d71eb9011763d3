//! Headless Chromium driven over the DevTools protocol: open a page, run script in it (a click,
//! a form filled in and sent), and wait until the page shows something. For what `--dump-dom`
//! cannot do: the dashboard's clicks.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    profile: std::path::PathBuf,
    /// `http://127.0.0.1:<port>`: the DevTools endpoint.
    endpoint: String,
}

pub struct Page {
    socket: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium with a DevTools port of the system's choosing (blocking: call it from
    /// `spawn_blocking`).
    pub fn launch(chromium: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("odm-ui-{}", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new(chromium)
            // A group of its own, so that its helpers go with it (`Drop`).
            .process_group(0)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("chromium runs");
        // "DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>"
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let endpoint = loop {
            line.clear();
            let read = stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "chromium stopped before it listened");
            if let Some(rest) = line.trim().strip_prefix("DevTools listening on ws://") {
                break format!("http://{}", rest.split('/').next().unwrap());
            }
        };
        // Keep reading its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        Browser {
            child,
            profile,
            endpoint,
        }
    }

    /// A new tab at `url`.
    pub async fn open(&self, url: &str) -> Page {
        let client = awc::Client::default();
        let mut answer = client
            .put(format!("{}/json/new?{url}", self.endpoint))
            .send()
            .await
            .unwrap();
        let target: Value = answer.json().await.unwrap();
        let socket_url = target["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (_, socket) = client
            .ws(socket_url)
            .max_frame_size(16 << 20)
            .connect()
            .await
            .unwrap();
        let mut page = Page { socket, next_id: 0 };
        page.wait_for(
            "the page loaded",
            "location.href !== 'about:blank' && document.readyState === 'complete'",
        )
        .await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        end_group(self.child.id());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills the process group of the Chromium whose id is `pid`, started in a group of its own
/// (`process_group(0)`), and waits (up to 5 s) until none of it runs: Chromium's helpers
/// outlive it, and went on writing into its profile folder after the folder was removed,
/// leaving it behind in the temporary folder.
fn end_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running_in_group(pid) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The processes of process group `group` still running (a dead one waiting for its parent, a
/// zombie, is not), from `/proc`.
fn running_in_group(group: u32) -> usize {
    let stats = std::fs::read_dir("/proc").unwrap().filter_map(|entry| {
        let name = entry.ok()?.file_name().into_string().ok()?;
        name.parse::<u32>().ok()?;
        std::fs::read_to_string(format!("/proc/{name}/stat")).ok()
    });
    stats
        .filter(|stat| {
            // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            fields[2] == group.to_string() && !matches!(fields[0], "Z" | "X")
        })
        .count()
}

impl Page {
    /// The value of `expression` (awaited when it is a promise), run in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
        let result = self.command("Runtime.evaluate", params).await;
        if let Some(error) = result.get("exceptionDetails") {
            panic!("{expression} threw: {error}");
        }
        result["result"]["value"].clone()
    }

    /// Saves what the page shows now as `<ODM_TEST_SCREENSHOTS>/<name>.png`, when that
    /// folder is given: to look at what a test saw.
    pub async fn keep_screenshot(&mut self, name: &str) {
        let Ok(folder) = std::env::var("ODM_TEST_SCREENSHOTS") else {
            return;
        };
        let shot = self
            .command("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = shot["data"].as_str().expect("a screenshot");
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        std::fs::write(
            std::path::Path::new(&folder).join(format!("{name}.png")),
            png,
        )
        .unwrap();
    }

    /// A DevTools command's result.
    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(ws::Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let frame = self.socket.next().await.expect("the page answers").unwrap();
            let ws::Frame::Text(text) = frame else {
                continue;
            };
            let answer: Value = serde_json::from_slice(&text).unwrap();
            if answer["id"] != id {
                continue; // an event
            }
            if let Some(error) = answer.get("error") {
                panic!("{method}: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// The value of `expression` once it is truthy (10 s at most).
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.eval(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < crate::helpers::PATIENCE,
                "the page never showed {what}: {expression} is {value}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
