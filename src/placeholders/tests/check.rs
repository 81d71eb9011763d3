use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::names;
use crate::placeholders::{check_activity, BadReference, TaskToCheck};

/// (name, template, configurations) in position order.
type Tasks = Vec<(&'static str, Value, Value)>;
/// (placeholder, location, reason)
type Bad = (String, String, String);

fn check(stage: &str, tasks: &Tasks) -> Vec<Bad> {
    let known: BTreeSet<String> = ["dev", "test", "prod", "stage-notemplate"]
        .into_iter()
        .map(String::from)
        .collect();
    let tasks: Vec<TaskToCheck<'_>> = tasks
        .iter()
        .enumerate()
        .map(|(i, (name, template, configurations))| TaskToCheck {
            position: i + 1,
            name,
            template,
            configurations,
        })
        .collect();
    check_activity(stage, &tasks, &known, &names(), usize::MAX)
        .listed
        .into_iter()
        .map(|b| (b.placeholder, b.location, b.reason))
        .collect()
}

fn bad(placeholder: &str, location: &str, reason: &str) -> Bad {
    (placeholder.into(), location.into(), reason.into())
}

const HINT: &str = "; write $${ for a literal ${";

#[test]
fn static_check_table() {
    let cases: Vec<(&str, &str, Tasks, Vec<Bad>)> = vec![
        (
            "earlier task, other stages, escapes, shell $< and the context are fine",
            "dev",
            vec![
                ("provision", json!({"x": "${test.results.task5.anything}"}),
                    json!({"context": {"a": "${bogus", "b": "${dev.results.task2.x}"}})),
                ("deploy", json!({}), json!({
                    "ip": "${dev.results.task1.vm.ip}",
                    "byName": "ip=$<dev.results.provision.vm.ip>",
                    "status": "${prod.status} ${prod.results.release.x} ${prod.results.task1.ok}",
                    "literal": "$${HOME} $${{ parameters.env }}",
                    "shell": "cat $< > out; echo $$",
                    "results": "${dev.results}"
                })),
            ],
            vec![],
        ),
        (
            "syntax errors, each with its location",
            "dev",
            vec![("provision", json!({"steps": [{"script": "echo ${HOME}"}]}),
                json!({"params": {"a": "${dev.results.task1.vm ip}", "b": ["ok", "x ${dev.status"]}}))],
            vec![
                bad("${HOME}", "task1.template.steps[0].script",
                    &format!("syntax error: expected a path after the stage, e.g. `${{HOME.status}}`{HINT}")),
                bad("${dev.results.task1.vm ip}", "task1.configurations.params.a",
                    &format!("syntax error: expected `.`, `[` or `}}` after `${{dev.results.task1.vm`, found ` `{HINT}")),
                bad("${dev.status", "task1.configurations.params.b[1]",
                    &format!("syntax error: missing closing `}}`{HINT}")),
            ],
        ),
        (
            "unknown stage, both spellings",
            "dev",
            vec![("provision", json!({}), json!({"a": "${staging.status}", "b": "$<staging.status>"}))],
            vec![
                bad("${staging.status}", "task1.configurations.a",
                    &format!("unknown stage staging (known stages: dev, prod, stage-notemplate, test){HINT}")),
                bad("$<staging.status>", "task1.configurations.b",
                    "unknown stage staging (known stages: dev, prod, stage-notemplate, test); write $$< for a literal $<"),
            ],
        ),
        (
            "same and later tasks of the own stage, by position and by name",
            "dev",
            vec![
                ("provision", json!({}), json!({})),
                ("deploy", json!({}), json!({
                    "same": "${dev.results.task2.x}",
                    "later": "${dev.results.verify.x}",
                    "beyond": "${dev.results.task9.x}"
                })),
                ("verify", json!({}), json!({})),
            ],
            vec![
                bad("${dev.results.task9.x}", "task2.configurations.beyond",
                    "task2 cannot use the results of task9 of its own stage dev: only earlier tasks have finished when it runs"),
                bad("${dev.results.verify.x}", "task2.configurations.later",
                    "task2 cannot use the results of task \"verify\" (task3) of its own stage dev: only earlier tasks have finished when it runs"),
                bad("${dev.results.task2.x}", "task2.configurations.same",
                    "task2 cannot use the results of task2 of its own stage dev: only earlier tasks have finished when it runs"),
            ],
        ),
        (
            "own-stage names come from the tasks; taskN is a position even if a task is named so",
            "prod",
            vec![
                ("task3", json!({}), json!({})),
                ("build", json!({}), json!({"a": "${prod.results.task3.x}", "b": "${prod.results.task1.x}"})),
            ],
            vec![bad("${prod.results.task3.x}", "task2.configurations.a",
                "task2 cannot use the results of task3 of its own stage prod: only earlier tasks have finished when it runs")],
        ),
        (
            "unknown and shared task names",
            "dev",
            vec![
                ("twin", json!({}), json!({})),
                ("twin", json!({}), json!({})),
                ("deploy", json!({}), json!({
                    "a": "${dev.results.nope.x}",
                    "b": "${dev.results.twin.x}",
                    "c": "${prod.results.build.x}",
                    "d": "${test.results.nope.x}"
                })),
            ],
            vec![
                bad("${dev.results.nope.x}", "task3.configurations.a", "stage dev has no task named \"nope\""),
                bad("${dev.results.twin.x}", "task3.configurations.b",
                    "task name \"twin\" is shared by several tasks of stage dev; refer to one by position (taskN)"),
                bad("${prod.results.build.x}", "task3.configurations.c",
                    "task name \"build\" is shared by several tasks of stage prod; refer to one by position (taskN)"),
                bad("${test.results.nope.x}", "task3.configurations.d", "stage test has no task named \"nope\""),
            ],
        ),
        (
            "several bad references in one string and in several tasks, all reported",
            "dev",
            vec![
                ("provision", json!({"a.b": {"c d": "${staging.a}-${dev.results.task1.b}-${x"}}), json!({})),
                ("deploy", json!({}), json!({"k": ["${dev.results.task2.y}"]})),
            ],
            vec![
                bad("${staging.a}", "task1.template['a.b']['c d']",
                    &format!("unknown stage staging (known stages: dev, prod, stage-notemplate, test){HINT}")),
                bad("${dev.results.task1.b}", "task1.template['a.b']['c d']",
                    "task1 cannot use the results of task1 of its own stage dev: only earlier tasks have finished when it runs"),
                bad("${x", "task1.template['a.b']['c d']", &format!("syntax error: missing closing `}}`{HINT}")),
                bad("${dev.results.task2.y}", "task2.configurations.k[0]",
                    "task2 cannot use the results of task2 of its own stage dev: only earlier tasks have finished when it runs"),
            ],
        ),
    ];
    for (what, stage, tasks, want) in cases {
        assert_eq!(check(stage, &tasks), want, "{what}");
    }
}

#[test]
fn bad_reference_display() {
    let bad = BadReference {
        position: 2,
        placeholder: "${dev.results.task2.x}".into(),
        location: "task2.configurations.params.vmIp".into(),
        reason: "task2 cannot use the results of task2 of its own stage dev".into(),
    };
    assert_eq!(
        bad.to_string(),
        "placeholder ${dev.results.task2.x} at task2.configurations.params.vmIp: \
         task2 cannot use the results of task2 of its own stage dev"
    );
}
