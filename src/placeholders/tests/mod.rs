//! Table-driven tests: one row per behaviour, exact expected values.

mod check;
pub(crate) mod generated;
mod planned;
mod resolve;
mod scanner;

use serde_json::{json, Value};

use super::StageTaskNames;

/// The context of DESIGN §4, plus values that exercise every kind and awkward text.
fn context() -> Value {
    json!({
        "dev": {
            "status": "PROCESSED",
            "finishedAt": "2023-11-23T14:32:00.000+00:00",
            "results": {
                "task1": {
                    "vm": {"name": "vm-dev", "ip": "198.168.20.120"},
                    "vms": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                    "port": 8080,
                    "enabled": true,
                    "nothing": null,
                    "tags": ["a", "b"],
                    "quote": "say \"hi\"",
                    "backslash": "C:\\temp\\new",
                    "multiline": "line1\nline2",
                    "odd key": 1,
                    "a.b": 2,
                    "it's": 3
                },
                "task2": {"url": "localhost:8121/helloWorld"},
                "task3": {"from": "position 3"}
            }
        },
        "test": {"status": "RUNNING", "finishedAt": null, "results": null},
        "stage-notemplate": {
            "status": "PROCESSED",
            "finishedAt": "2023-11-20T10:00:00.000+00:00",
            "results": {"task1": {"id": "x-1"}}
        },
        "prod": {"status": "RUNNING", "finishedAt": null, "results": {"task1": {"ok": true}}}
    })
}

/// dev's first task is *named* `task3`: `results.task3` must still mean position 3.
fn names() -> StageTaskNames {
    let mut names = StageTaskNames::new();
    names.add_stage("dev", ["task3", "deploy", "check"]);
    names.add_stage("test", ["smoke"]);
    names.add_stage("stage-notemplate", ["task1"]);
    names.add_stage("prod", ["build", "build", "release"]);
    names
}
