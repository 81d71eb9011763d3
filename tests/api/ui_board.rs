//! The dashboard's promotion board in a real browser (headless Chromium): its rows and stage
//! columns in descriptor order with their states (the DOM), and drawn in the states' colours at
//! the places they belong (a screenshot, its pixels read back), on both databases.

use crate::board::board_scenario;
use crate::fakes::FakeExecutor;
use crate::helpers::*;
use crate::on_both_backends;
use crate::ui::{chromium, render, screenshot, section};
use crate::ui_driver::Browser;
use serde_json::json;

/// The board's colours (`index.html`, `.stage.<state>`), as RGB.
const REACHED: [u8; 3] = [0x2e, 0x9e, 0x4f];
const RUNNING: [u8; 3] = [0xe0, 0xa8, 0x00];
const FAILED: [u8; 3] = [0xc9, 0x30, 0x2c];
const PLANNED: [u8; 3] = [0x7d, 0x93, 0xb2];
const NOT_YET: [u8; 3] = [0xdf, 0xe3, 0xe8];

on_both_backends!(the_board_renders_each_version_s_stages_in_descriptor_order);
async fn the_board_renders_each_version_s_stages_in_descriptor_order(db: TestDb) {
    let Some(chromium) = chromium() else { return };
    let executor = FakeExecutor::start().await;
    let app = spawn_stepped_app(test_settings(&db, Some(&executor.address))).await;
    let [reached, running, failed, planned] = board_scenario(&app).await;

    let url = format!("{}/ui#activity={running}", app.address);
    let (dom, png) = actix_web::rt::task::spawn_blocking(move || {
        (
            render(&chromium, &url),
            screenshot(&chromium, &url, 1400, 900),
        )
    })
    .await
    .unwrap();

    let board = section(&dom, "board");
    let versions: Vec<&str> = attributes(board, "data-version");
    assert_eq!(versions, ["1.0.0", "2.0.0"], "{board}");
    let rows: Vec<&str> = board.split("<tr ").skip(1).collect();
    let cells = |row: &str| -> Vec<(String, String)> {
        let stages = attributes(row, "data-stage");
        let states = attributes(row, "data-state");
        stages
            .iter()
            .zip(states)
            .map(|(a, b)| (a.to_string(), b.to_owned()))
            .collect()
    };
    let expected = |pairs: [(&str, &str); 3]| {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(rows[0]),
        expected([("dev", "reached"), ("test", "running"), ("prod", "notYet")])
    );
    assert_eq!(
        cells(rows[1]),
        expected([("dev", "failed"), ("test", "planned"), ("prod", "notYet")])
    );
    // Which activity each cell opens, and that the current stage is marked.
    assert_eq!(
        attributes(rows[0], "data-activity"),
        [reached.to_string(), running.to_string()]
    );
    assert_eq!(
        attributes(rows[1], "data-activity"),
        [failed.to_string(), planned.to_string()]
    );
    assert!(
        rows[0].contains(r#"class="stage reached current""#),
        "{}",
        rows[0]
    );
    assert!(rows[0].contains(&format!("activity {running} · PROCESSING")));
    // The opened activity's tasks: the fake executor's task, with its run's live state asked.
    let tasks = section(&dom, "tasks");
    assert!(tasks.contains("<td>smoke</td>"), "{tasks}");
    assert!(
        tasks.contains("<button type=\"button\">Check run</button>"),
        "{tasks}"
    );

    let pixels = Pixels::decode(&png);
    let [reached_box] = pixels.boxes(REACHED)[..] else {
        panic!("one reached cell: {:?}", pixels.boxes(REACHED))
    };
    let [running_box] = pixels.boxes(RUNNING)[..] else {
        panic!("one running cell")
    };
    let [failed_box] = pixels.boxes(FAILED)[..] else {
        panic!("one failed cell")
    };
    let [planned_box] = pixels.boxes(PLANNED)[..] else {
        panic!("one planned cell")
    };
    let [first_not_yet, second_not_yet] = pixels.boxes(NOT_YET)[..] else {
        panic!("two not-yet cells: {:?}", pixels.boxes(NOT_YET))
    };
    for cell in [
        reached_box,
        running_box,
        failed_box,
        planned_box,
        first_not_yet,
        second_not_yet,
    ] {
        assert!(
            cell.width() >= 100 && cell.height() >= 30,
            "a cell is drawn: {cell:?}"
        );
    }
    // First version's row: reached, running, not yet, left to right on one line.
    assert_in_a_row(&[reached_box, running_box, first_not_yet]);
    // Second version's row, below it: failed, planned, not yet.
    assert_in_a_row(&[failed_box, planned_box, second_not_yet]);
    assert!(
        failed_box.top > reached_box.bottom,
        "{failed_box:?} under {reached_box:?}"
    );
    app.stop().await;
}

/// Each value of `name="…"` in `html`, in order.
fn attributes<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let marker = format!("{name}=\"");
    html.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

fn assert_in_a_row(cells: &[Box]) {
    for pair in cells.windows(2) {
        let (left, right) = (pair[0], pair[1]);
        assert!(left.right < right.left, "{left:?} left of {right:?}");
        assert!(
            left.top.abs_diff(right.top) <= 2,
            "{left:?} on the line of {right:?}"
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Box {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

impl Box {
    fn width(&self) -> u32 {
        self.right - self.left + 1
    }
    fn height(&self) -> u32 {
        self.bottom - self.top + 1
    }
}

/// A screenshot's pixels, as RGB.
struct Pixels {
    width: u32,
    rgb: Vec<[u8; 3]>,
}

impl Pixels {
    fn decode(png: &[u8]) -> Pixels {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        let channels = info.color_type.samples();
        assert!(channels >= 3, "a colour screenshot: {:?}", info.color_type);
        let rgb = buffer[..info.buffer_size()]
            .chunks(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Pixels {
            width: info.width,
            rgb,
        }
    }

    /// The boxes drawn in exactly `colour`: its pixels grouped into bands of consecutive lines
    /// (the board's rows are apart), then into runs along each band (a row's cells are apart).
    fn boxes(&self, colour: [u8; 3]) -> Vec<Box> {
        let at = |i: usize| (i as u32 % self.width, i as u32 / self.width);
        let points: Vec<(u32, u32)> = (0..self.rgb.len())
            .filter(|&i| self.rgb[i] == colour)
            .map(at)
            .collect();
        let mut bands: Vec<Vec<(u32, u32)>> = Vec::new();
        for point in points {
            match bands.last_mut() {
                Some(band) if point.1 <= band.last().unwrap().1 + 1 => band.push(point),
                _ => bands.push(vec![point]),
            }
        }
        let mut boxes = Vec::new();
        for mut band in bands {
            band.sort();
            let mut start = 0;
            for i in 1..=band.len() {
                if i == band.len() || band[i].0 > band[i - 1].0 + 1 {
                    let part = &band[start..i];
                    let tops = part.iter().map(|p| p.1);
                    boxes.push(Box {
                        left: part[0].0,
                        right: part[part.len() - 1].0,
                        top: tops.clone().min().unwrap(),
                        bottom: tops.max().unwrap(),
                    });
                    start = i;
                }
            }
        }
        // A few stray pixels of the colour (anti-aliased text) are no cell.
        boxes.retain(|b| b.width() >= 20 && b.height() >= 10);
        boxes
    }
}

on_both_backends!(a_click_on_a_board_cell_opens_its_activity_s_tasks_and_logs);
async fn a_click_on_a_board_cell_opens_its_activity_s_tasks_and_logs(db: TestDb) {
    let Some(chromium) = chromium() else { return };
    let executor = FakeExecutor::start().await;
    let app = spawn_stepped_app(test_settings(&db, Some(&executor.address))).await;
    let [_, running, failed, _] = board_scenario(&app).await;
    let browser = actix_web::rt::task::spawn_blocking(move || Browser::launch(&chromium))
        .await
        .unwrap();
    let mut page = browser.open(&format!("{}/ui", app.address)).await;
    page.wait_for(
        "the board",
        "document.querySelectorAll('#board .stage').length === 6",
    )
    .await;
    assert_eq!(page.eval(TASKS_SHOWN).await, json!(false));

    let click = |activity: i64| {
        format!("document.querySelector('#board .stage[data-activity=\"{activity}\"]').click()")
    };
    page.eval(&click(failed)).await;
    let title = page
        .wait_for("the failed activity's tasks", TASKS_TITLE)
        .await;
    assert_eq!(title, format!("Tasks of activity {failed}"));
    assert_eq!(
        page.eval("location.hash").await,
        format!("#activity={failed}")
    );
    let tasks = page.wait_for("its task", TASK_ROWS).await;
    assert_eq!(tasks[0][2], "build", "{tasks}");
    assert_eq!(tasks[0][4], "ABORTED", "{tasks}");

    // The running activity's task: its run's live state and its logs, as the service answers.
    page.eval(&click(running)).await;
    page.wait_for(
        "the running activity's tasks",
        &format!("{TASKS_TITLE} === 'Tasks of activity {running}'"),
    )
    .await;
    let tasks = page.wait_for("its task", TASK_ROWS).await;
    assert_eq!(
        (&tasks[0][2], &tasks[0][4]),
        (&json!("smoke"), &json!("PROCESSING"))
    );
    let task = tasks[0][1].as_str().unwrap().to_owned();
    // The fake executor shows no run: the cell and the logs say what the service answers.
    let refusal = |path: String| {
        let app = &app;
        async move {
            let answer = app.get(&path).await;
            assert!(answer.status >= 400, "{path}: {answer:?}");
            answer.json()["message"].as_str().unwrap().to_owned()
        }
    };
    let run_refusal = refusal(format!("{DEVOPS}/tasks/{task}/run")).await;
    let run = tasks[0][5].as_str().unwrap();
    assert!(run.contains(&run_refusal), "{run_refusal:?} in {run:?}");
    page.eval("[...document.querySelectorAll('#tasks button')].find(b => b.textContent === 'Logs').click()")
        .await;
    let logs = page.wait_for("the logs", LOGS).await;
    let logs_refusal = refusal(format!("{DEVOPS}/tasks/{task}/logs")).await;
    assert!(
        logs.as_str().unwrap().starts_with("Cannot read the logs: ")
            && logs.as_str().unwrap().contains(&logs_refusal),
        "{logs_refusal:?} in {logs}"
    );
    page.keep_screenshot("tasks-and-logs").await;
    let title = page
        .eval("document.getElementById('logs-title').textContent")
        .await;
    assert_eq!(title, format!("Logs of task {task} (smoke)"));
    drop(browser);
    app.stop().await;
}

/// The tasks panel's title when it is shown, else false.
pub const TASKS_TITLE: &str = "!document.getElementById('tasks-section').hidden && document.getElementById('tasks-title').textContent";
const TASKS_SHOWN: &str = "!document.getElementById('tasks-section').hidden";
/// The logs shown, once loaded.
pub const LOGS: &str = "!document.getElementById('logs-section').hidden && document.getElementById('logs').textContent !== 'loading…' && document.getElementById('logs').textContent";
/// The tasks table, each row as its cells' text.
pub const TASK_ROWS: &str = "(() => { const rows = [...document.querySelectorAll('#tasks tr')].map(r => [...r.cells].map(c => c.textContent)); return rows.length ? rows : null; })()";
