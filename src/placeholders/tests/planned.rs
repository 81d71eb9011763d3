//! `resolve_planned`: a dry run's resolution, with the new activity's own stage (`test`, RUNNING
//! with no results in the shared context) resolving at run time.

use serde_json::json;

use super::{context, names};
use crate::placeholders::{resolve_planned, PlannedValue};

fn planned(value: serde_json::Value) -> PlannedValue {
    resolve_planned(&value, &context(), &names(), "test", usize::MAX).unwrap()
}

#[test]
fn references_to_the_own_stage_s_results_stay_as_written_and_are_listed() {
    let got = planned(json!({
        "whole": "${test.results.task1.url}",
        "inside": "http://$<test.results.smoke.host>:80",
        "all": ["${test.results}", "${test.*}"],
        "status": "${test.status}",
        "finished": "${test.finishedAt}",
        "other": "${dev.results.task1.vm.ip}",
        "escaped": "$${test.results.task1.url}",
    }));
    assert_eq!(
        got.value,
        json!({
            "whole": "${test.results.task1.url}",
            "inside": "http://$<test.results.smoke.host>:80",
            "all": ["${test.results}", "${test.*}"],
            "status": "RUNNING",
            "finished": null,
            "other": "198.168.20.120",
            "escaped": "${test.results.task1.url}",
        })
    );
    // Object members in key order; the escaped one is literal text, not a placeholder.
    assert_eq!(
        got.at_run_time,
        [
            "${test.results}",
            "${test.*}",
            "$<test.results.smoke.host>",
            "${test.results.task1.url}",
        ]
    );
    assert!(got.unresolved.is_empty());
}

#[test]
fn every_unresolved_reference_is_listed_and_the_rest_still_resolves() {
    let got = planned(json!([
        "${nostage.results.task1.x}",
        "${dev.results.task1.missing} and ${dev.results.task2.url}",
        "${dev.results.task1.",
    ]));
    assert_eq!(
        got.value,
        json!([
            "${nostage.results.task1.x}",
            "${dev.results.task1.missing} and localhost:8121/helloWorld",
            "${dev.results.task1.",
        ])
    );
    let listed: Vec<&str> = got
        .unresolved
        .iter()
        .map(|u| u.placeholder.as_str())
        .collect();
    assert_eq!(
        listed,
        [
            "${nostage.results.task1.x}",
            "${dev.results.task1.missing}",
            "${dev.results.task1."
        ]
    );
    assert!(got.unresolved[0].reason.contains("stage nostage"));
    assert!(got.unresolved[2].reason.starts_with("syntax error"));
}

#[test]
fn what_placeholders_insert_is_still_bounded() {
    let many = json!("${dev.results.task2.url}".repeat(100));
    let error = resolve_planned(&many, &context(), &names(), "test", 100).unwrap_err();
    assert_eq!(
        error,
        crate::placeholders::ResolveError::TooLarge { max: 100 }
    );
}
