use serde_json::{json, Value};

use super::{context, names};
use crate::placeholders::OnMissing;
use crate::placeholders::{resolve, ResolveError, Unresolved};

enum Want {
    Value(Value),
    /// The whole `Unresolved` message.
    Error(&'static str),
}

fn run(cases: &[(&str, Value, Want)], on_missing: OnMissing) {
    let (context, names) = (context(), names());
    for (what, input, want) in cases {
        let got = resolve(input, &context, &names, on_missing, usize::MAX);
        match (want, got) {
            (Want::Value(want), Ok(got)) => assert_eq!(&got, want, "{what}"),
            (Want::Error(want), Err(got)) => assert_eq!(got.to_string(), *want, "{what}"),
            (Want::Value(want), Err(got)) => panic!("{what}: wanted {want}, got error: {got}"),
            (Want::Error(want), Ok(got)) => panic!("{what}: wanted error {want}, got {got}"),
        }
    }
}

fn ok(v: Value) -> Want {
    Want::Value(v)
}

#[test]
fn values_and_interpolation() {
    run(
        &[
            ("no placeholder", json!({"a": "plain", "n": 1, "b": [true, null]}), ok(json!({"a": "plain", "n": 1, "b": [true, null]}))),
            ("whole string value", json!("${dev.results.task1.vm.ip}"), ok(json!("198.168.20.120"))),
            ("whole number stays a number", json!("${dev.results.task1.port}"), ok(json!(8080))),
            ("whole boolean", json!("${dev.results.task1.enabled}"), ok(json!(true))),
            ("whole null", json!("${dev.results.task1.nothing}"), ok(Value::Null)),
            ("whole object", json!("${dev.results.task1.vm}"), ok(json!({"name": "vm-dev", "ip": "198.168.20.120"}))),
            ("whole array", json!("${dev.results.task1.tags}"), ok(json!(["a", "b"]))),
            ("stage fields", json!(["${dev.status}", "${dev.finishedAt}", "${test.finishedAt}", "${test.results}"]),
                ok(json!(["PROCESSED", "2023-11-23T14:32:00.000+00:00", null, null]))),
            ("nested objects and arrays",
                json!({"a": {"b": ["${dev.results.task1.port}", {"c": "x ${dev.status}"}], "d": 1.5}}),
                ok(json!({"a": {"b": [8080, {"c": "x PROCESSED"}], "d": 1.5}}))),
            ("several placeholders in one string",
                json!("http://${dev.results.task1.vm.ip}:${dev.results.task1.port}/${dev.results.task2.url}"),
                ok(json!("http://198.168.20.120:8080/localhost:8121/helloWorld"))),
            ("non-strings interpolated as compact JSON",
                json!("vm=${dev.results.task1.vm} tags=${dev.results.task1.tags} n=${dev.results.task1.nothing} b=${dev.results.task1.enabled}"),
                ok(json!(r#"vm={"ip":"198.168.20.120","name":"vm-dev"} tags=["a","b"] n=null b=true"#))),
            ("a space around makes it interpolation", json!(" ${dev.results.task1.port}"), ok(json!(" 8080"))),
            ("object keys are never resolved", json!({"${dev.status}": "${dev.status}"}), ok(json!({"${dev.status}": "PROCESSED"}))),
            ("non-ASCII text around", json!("café ${dev.status} ü$"), ok(json!("café PROCESSED ü$"))),
        ],
        OnMissing::Fail,
    );
}

#[test]
fn escapes_and_alternative_spelling() {
    run(
        &[
            (
                "escaped ${ and $< are literal",
                json!("$${dev.status} and $$<dev.status> and ${dev.status}"),
                ok(json!("${dev.status} and $<dev.status> and PROCESSED")),
            ),
            (
                "a whole escaped placeholder stays a string",
                json!("$${dev.results.task1.port}"),
                ok(json!("${dev.results.task1.port}")),
            ),
            (
                "escaped malformed placeholder is fine",
                json!("$${HOME"),
                ok(json!("${HOME")),
            ),
            (
                "other dollars are literal",
                json!("$$HOME costs $5, pid $$, end $"),
                ok(json!("$$HOME costs $5, pid $$, end $")),
            ),
            (
                "a $ before an escape stays",
                json!("$$${dev.status}"),
                ok(json!("$${dev.status}")),
            ),
            (
                "$< spelling, whole",
                json!("$<dev.results.task1.vm.ip>"),
                ok(json!("198.168.20.120")),
            ),
            (
                "$< spelling keeps the type",
                json!("$<dev.results.task1.port>"),
                ok(json!(8080)),
            ),
            (
                "$< spelling inside shell text",
                json!("cat $< > out; echo $<dev.status> $<"),
                ok(json!("cat $< > out; echo PROCESSED $<")),
            ),
            (
                "$< without a well-formed reference is literal",
                json!(["$<not a ref>", "$<dev>", "$<dev.status", "$<dev.status}"]),
                ok(json!([
                    "$<not a ref>",
                    "$<dev>",
                    "$<dev.status",
                    "$<dev.status}"
                ])),
            ),
        ],
        OnMissing::Fail,
    );
}

#[test]
fn paths_names_and_stages() {
    run(
        &[
            (
                "array index",
                json!("${dev.results.task1.vms[1].ip}"),
                ok(json!("10.0.0.2")),
            ),
            (
                "negative index counts from the end",
                json!("${dev.results.task1.vms[-2].ip}"),
                ok(json!("10.0.0.1")),
            ),
            (
                "index of a scalar array",
                json!("${dev.results.task1.tags[0]}"),
                ok(json!("a")),
            ),
            (
                "quoted keys",
                json!([
                    "${dev.results.task1['odd key']}",
                    "${dev.results.task1[\"a.b\"]}",
                    "${dev.results.task1['it\\'s']}"
                ]),
                ok(json!([1, 2, 3])),
            ),
            (
                "stage name with -",
                json!("${stage-notemplate.results.task1.id}"),
                ok(json!("x-1")),
            ),
            (
                "quoted stage name",
                json!("${['stage-notemplate'].status}"),
                ok(json!("PROCESSED")),
            ),
            (
                "task by name",
                json!("${dev.results.deploy.url}"),
                ok(json!("localhost:8121/helloWorld")),
            ),
            (
                "taskN is a position even when a task is named so",
                json!("${dev.results.task3.from}"),
                ok(json!("position 3")),
            ),
            (
                "the name of position 3",
                json!("${dev.results.check.from}"),
                ok(json!("position 3")),
            ),
            (
                "wildcard gives an array",
                json!("${dev.results.task1.vms[*].ip}"),
                ok(json!(["10.0.0.1", "10.0.0.2"])),
            ),
            (
                "wildcard over an object, key order",
                json!("${dev.results.task1.vm.*}"),
                ok(json!(["198.168.20.120", "vm-dev"])),
            ),
            (
                "wildcard matching nothing is an empty array",
                json!("${dev.results.task1.tags[*].x}"),
                ok(json!([])),
            ),
            (
                "wildcard interpolated",
                json!("ips=${dev.results.task1.vms.*.ip}"),
                ok(json!(r#"ips=["10.0.0.1","10.0.0.2"]"#)),
            ),
        ],
        OnMissing::Fail,
    );
}

#[test]
fn text_in_values_cannot_break_json() {
    let input = json!({"cmd": "echo '${dev.results.task1.quote}' ${dev.results.task1.backslash} ${dev.results.task1.multiline}",
                       "whole": "${dev.results.task1.quote}"});
    let got = resolve(&input, &context(), &names(), OnMissing::Fail, usize::MAX).unwrap();
    assert_eq!(
        got,
        json!({"cmd": "echo 'say \"hi\"' C:\\temp\\new line1\nline2", "whole": "say \"hi\""})
    );
    let text = serde_json::to_string(&got).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), got);
}

#[test]
fn what_is_missing_is_named() {
    use Want::Error;
    run(
        &[
            ("missing stage", json!("${staging.status}"),
                Error("placeholder ${staging.status} did not resolve: no PROCESSED or RUNNING activity of stage staging in the context")),
            ("missing task results", json!("x ${dev.results.task4.url}"),
                Error("placeholder ${dev.results.task4.url} did not resolve: stage dev has no results for task4")),
            ("stage without results", json!("${test.results.task1.url}"),
                Error("placeholder ${test.results.task1.url} did not resolve: stage test has no results for task1 (no task of the stage has returned results)")),
            ("named task without results", json!("${test.results.smoke.url}"),
                Error("placeholder ${test.results.smoke.url} did not resolve: stage test has no results for task \"smoke\" (task1) (no task of the stage has returned results)")),
            ("unknown task name", json!("${dev.results.build.url}"),
                Error("placeholder ${dev.results.build.url} did not resolve: stage dev has no task named \"build\"")),
            ("duplicate names are not usable", json!("${prod.results.build.ok}"),
                Error("placeholder ${prod.results.build.ok} did not resolve: task name \"build\" is shared by several tasks of stage prod; refer to one by position (taskN)")),
            ("missing key", json!("${dev.results.task1.vm.ipv6}"),
                Error("placeholder ${dev.results.task1.vm.ipv6} did not resolve: vm.ipv6 not found in the results of task1 of stage dev (vm has no key \"ipv6\")")),
            ("missing first key", json!("${dev.results.task1.vmz.ip}"),
                Error("placeholder ${dev.results.task1.vmz.ip} did not resolve: vmz.ip not found in the results of task1 of stage dev (no key \"vmz\")")),
            ("index out of range", json!("${dev.results.task1.vms[5].ip}"),
                Error("placeholder ${dev.results.task1.vms[5].ip} did not resolve: vms[5].ip not found in the results of task1 of stage dev (vms has 2 elements, no index 5)")),
            ("key into a string", json!("${dev.results.task1.vm.ip.x}"),
                Error("placeholder ${dev.results.task1.vm.ip.x} did not resolve: vm.ip.x not found in the results of task1 of stage dev (vm.ip is a string, not an object)")),
            ("index into an object", json!("${dev.results.task1.vm[0]}"),
                Error("placeholder ${dev.results.task1.vm[0]} did not resolve: vm[0] not found in the results of task1 of stage dev (vm is an object, not an array)")),
            ("missing key of a named task", json!("${dev.results.deploy.nope}"),
                Error("placeholder ${dev.results.deploy.nope} did not resolve: nope not found in the results of task \"deploy\" (task2) of stage dev (no key \"nope\")")),
            ("missing stage field", json!("${dev.foo}"),
                Error("placeholder ${dev.foo} did not resolve: foo not found in stage dev (no key \"foo\")")),
            ("missing quoted key", json!("${dev.results.task1['no such']}"),
                Error("placeholder ${dev.results.task1['no such']} did not resolve: ['no such'] not found in the results of task1 of stage dev (no key \"no such\")")),
            ("missing before a wildcard", json!("${dev.results.task1.vmz[*].ip}"),
                Error("placeholder ${dev.results.task1.vmz[*].ip} did not resolve: vmz not found in the results of task1 of stage dev (no key \"vmz\")")),
            ("the first failure in document order", json!(["ok", "${dev.nope}", "${staging.x}"]),
                Error("placeholder ${dev.nope} did not resolve: nope not found in stage dev (no key \"nope\")")),
        ],
        OnMissing::Fail,
    );
}

#[test]
fn syntax_errors_fail() {
    use Want::Error;
    run(
        &[
            ("space in a path", json!("a ${dev.results.task1.vm ip} b"),
                Error("placeholder ${dev.results.task1.vm ip} did not resolve: syntax error: expected `.`, `[` or `}` after `${dev.results.task1.vm`, found ` `")),
            ("unterminated", json!("x ${dev.status"),
                Error("placeholder ${dev.status did not resolve: syntax error: missing closing `}`")),
            ("no path", json!("${dev}"),
                Error("placeholder ${dev} did not resolve: syntax error: expected a path after the stage, e.g. `${dev.status}`")),
            ("empty", json!("${}"),
                Error("placeholder ${} did not resolve: syntax error: expected a stage name after `${`, found `}`")),
            ("index as stage", json!("${[0].status}"),
                Error("placeholder ${[0].status} did not resolve: syntax error: expected a quoted stage name after `${[`, found `0`")),
            ("descendant", json!("${dev..ip}"),
                Error("placeholder ${dev..ip} did not resolve: syntax error: `..` (descendant search) is not supported")),
            ("filter", json!("${dev.results.task1.vms[?@.ip]}"),
                Error("placeholder ${dev.results.task1.vms[?@.ip]} did not resolve: syntax error: expected an index, `*` or a quoted key after `${dev.results.task1.vms[`, found `?`")),
            ("unterminated quote", json!("${dev.results['task1}"),
                Error("placeholder ${dev.results['task1} did not resolve: syntax error: unterminated quoted key (missing closing ')")),
            ("bad escape", json!("${dev.results['a\\n']}"),
                Error("placeholder ${dev.results['a\\n']} did not resolve: syntax error: unsupported escape `\\n` in a quoted key (only \\\\, \\' and \\\")")),
            ("Azure template expression", json!("${{ parameters.env }}"),
                Error("placeholder ${{ parameters.env } did not resolve: syntax error: expected a stage name after `${`, found `{`")),
            // Found by the generated tests: jsonpath-rust negated it and overflowed (a panic).
            ("the smallest i64 as an index", json!("${dev.results.task1.vms[-9223372036854775808]}"),
                Error("placeholder ${dev.results.task1.vms[-9223372036854775808]} did not resolve: syntax error: index -9223372036854775808 is too large")),
            ("an index beyond i64", json!("${dev.results.task1.vms[9223372036854775808]}"),
                Error("placeholder ${dev.results.task1.vms[9223372036854775808]} did not resolve: syntax error: index 9223372036854775808 is too large")),
        ],
        OnMissing::Fail,
    );
}

#[test]
fn keep_leaves_unresolved_placeholders_as_written() {
    run(
        &[
            (
                "missing key, whole",
                json!("${dev.results.task1.vm.ipv6}"),
                ok(json!("${dev.results.task1.vm.ipv6}")),
            ),
            (
                "the rest is still resolved",
                json!("ip=${dev.results.task1.vm.ipv6} name=${dev.results.task1.vm.name}"),
                ok(json!("ip=${dev.results.task1.vm.ipv6} name=vm-dev")),
            ),
            (
                "missing stage, both spellings",
                json!(["${staging.status}", "$<staging.status>"]),
                ok(json!(["${staging.status}", "$<staging.status>"])),
            ),
            (
                "shared name",
                json!("${prod.results.build.ok}"),
                ok(json!("${prod.results.build.ok}")),
            ),
            (
                "malformed, up to the next placeholder",
                json!("x ${dev.status y ${dev.status}"),
                ok(json!("x ${dev.status y PROCESSED")),
            ),
            (
                "escapes are still consumed",
                json!("$${dev.status} ${nope.x} ${dev.status}"),
                ok(json!("${dev.status} ${nope.x} PROCESSED")),
            ),
        ],
        OnMissing::Keep,
    );
}

#[test]
fn unresolved_display_and_fields() {
    let err = resolve(
        &json!("${dev.results.task3.url}"),
        &context(),
        &names(),
        OnMissing::Fail,
        usize::MAX,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ResolveError::Unresolved(Unresolved {
            placeholder: "${dev.results.task3.url}".into(),
            reason: "url not found in the results of task3 of stage dev (no key \"url\")".into(),
        })
    );
}
