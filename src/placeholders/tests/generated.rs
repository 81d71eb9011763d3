//! Generated tests: thousands of arbitrary strings, references and JSON values from a small
//! deterministic PRNG (no dependency, same cases on every run; a failure prints its seed).
//!
//! The properties:
//! * splitting never panics and loses or invents nothing: the pieces cover the input in order,
//!   escapes being the only text that changes;
//! * resolving and checking never panic, whatever the text, the context or the mode;
//! * escaping every `${` and `$<` of any text (`$${`, `$$<`) makes it come back unchanged;
//! * a value built from literal text and references known to resolve comes back with the
//!   literal text unchanged and each reference replaced by what it points to, keys and
//!   non-string values untouched, and the result is valid JSON.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{context, names};
use crate::placeholders::parse::{split, Piece};
use crate::placeholders::OnMissing;
use crate::placeholders::{check_activity, resolve, StageTaskNames, TaskToCheck};

/// Cases per property; each is cheap (microseconds).
const CASES: u64 = 4000;

/// SplitMix64: tiny, fast, good enough to explore inputs.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Pieces of text that matter to the scanner and the parser, and some that do not.
const FRAGMENTS: &[&str] = &[
    "$",
    "$",
    "$$",
    "${",
    "$${",
    "$<",
    "$$<",
    "}",
    ">",
    "{",
    "<",
    ".",
    "..",
    "[",
    "]",
    "*",
    "'",
    "\"",
    "\\",
    "-",
    "0",
    "7",
    "dev",
    "test",
    "prod",
    "results",
    "task1",
    "task2",
    "task0",
    "task01",
    "vm",
    "ip",
    "status",
    "finishedAt",
    "vms",
    "['odd key']",
    "[\"a.b\"]",
    "['it\\'s']",
    "[0]",
    "[-1]",
    "[-9223372036854775808]",
    "[9223372036854775807]",
    "[99999999999999999999]",
    "[*]",
    ".*",
    " ",
    "é",
    "ü",
    "😀",
    "\u{0}",
    "\n",
    "\t",
    "${{ x }}",
    "$(pwd)",
    "${dev",
    "${dev.",
    "${dev.status}",
    "$<dev.status>",
    "${['my stage'].x}",
];

/// Arbitrary text, biased towards what the placeholder grammar is made of.
pub(crate) fn arbitrary_text(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(12) {
        if rng.chance(15) {
            // Any character at all, surrogates aside.
            let c = char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('\u{FFFD}');
            s.push(c);
        } else {
            s.push_str(rng.pick(FRAGMENTS));
        }
    }
    s
}

/// Arbitrary JSON whose strings are arbitrary text.
pub(crate) fn arbitrary_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => json!(rng.next() as i64),
        3 => json!((rng.next() % 10_000) as f64 / 7.0),
        4 => Value::String(arbitrary_text(rng)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| arbitrary_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|_| (arbitrary_text(rng), arbitrary_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// Every `${` and `$<` written as its escape: text that must come back exactly as it is.
pub(crate) fn escape(s: &str) -> String {
    s.replace("${", "$${").replace("$<", "$$<")
}

/// The pieces of `s` cover it in order: placeholders as written, text as written except that
/// an escape (`$${`, `$$<`) is its literal two characters.
fn assert_covers(s: &str, pieces: &[Piece<'_>]) {
    let mut at = 0;
    for piece in pieces {
        let rest = &s[at..];
        match piece {
            Piece::Placeholder { text, .. } => {
                assert!(
                    rest.starts_with(text) && (text.starts_with("${") || text.starts_with("$<")),
                    "{s:?}: placeholder {text:?} is not at byte {at}"
                );
                at += text.len();
            }
            Piece::Text(text @ ("${" | "$<"))
                if rest.starts_with('$') && !rest.starts_with(text) =>
            {
                assert!(rest[1..].starts_with(text), "{s:?}: escape at byte {at}");
                at += 3;
            }
            Piece::Text(text) => {
                assert!(
                    !text.is_empty() && rest.starts_with(text),
                    "{s:?}: text {text:?} is not at byte {at}"
                );
                at += text.len();
            }
        }
    }
    assert_eq!(at, s.len(), "{s:?}: the pieces stop at byte {at}");
}

#[test]
fn splitting_arbitrary_text_loses_and_invents_nothing() {
    let mut rng = Rng::new(1);
    for _ in 0..CASES * 4 {
        let s = arbitrary_text(&mut rng);
        assert_covers(&s, &split(&s));
    }
}

#[test]
fn resolving_and_checking_arbitrary_values_never_panics() {
    let (context, names) = (context(), names());
    let known: BTreeSet<String> = ["dev", "test", "prod"].map(String::from).into();
    let mut rng = Rng::new(2);
    for case in 0..CASES {
        let value = arbitrary_value(&mut rng, 4);
        for on_missing in [OnMissing::Fail, OnMissing::Keep] {
            if let Ok(resolved) = resolve(&value, &context, &names, on_missing, usize::MAX) {
                let text = serde_json::to_string(&resolved).unwrap();
                let back: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(back, resolved, "case {case}: {value}");
            } else {
                assert!(
                    matches!(on_missing, OnMissing::Fail),
                    "case {case}: keep failed on {value}"
                );
            }
        }
        let tasks = [TaskToCheck {
            position: 1 + rng.below(3),
            name: "t",
            template: &value,
            configurations: &value,
        }];
        let stage = rng.pick(&["dev", "test", "qa"]);
        let _ = check_activity(stage, &tasks, &known, &names, usize::MAX);
    }
}

#[test]
fn escaped_text_is_always_literal() {
    let (context, names) = (context(), names());
    let known: BTreeSet<String> = ["dev"].map(String::from).into();
    let mut rng = Rng::new(3);
    for _ in 0..CASES * 2 {
        let s = arbitrary_text(&mut rng);
        let escaped = Value::String(escape(&s));
        let resolved = resolve(&escaped, &context, &names, OnMissing::Fail, usize::MAX);
        assert_eq!(
            resolved,
            Ok(Value::String(s.clone())),
            "{s:?} escaped as {escaped}"
        );
        let tasks = [TaskToCheck {
            position: 1,
            name: "t",
            template: &escaped,
            configurations: &escaped,
        }];
        assert_eq!(
            check_activity("dev", &tasks, &known, &names, usize::MAX).bad,
            0,
            "{s:?}"
        );
    }
}

/// A context of random results, and what a reference to each of its values looks like.
struct Generated {
    context: Value,
    names: StageTaskNames,
}

/// Stage names that are plain names or need quoting.
const STAGES: &[&str] = &[
    "dev",
    "test-1",
    "pré_prod:x",
    "my stage",
    "it's",
    "a\"b",
    "$x",
];
const KEYS: &[&str] = &[
    "ip",
    "vm",
    "a.b",
    "odd key",
    "it's",
    "back\\slash",
    "q\"uote",
    "}",
    ">",
    "$",
    "${x}",
    "",
    "ünï",
    "1",
    "-",
    "*",
    "[0]",
];

fn generated_context(rng: &mut Rng) -> Generated {
    let mut context = Map::new();
    let mut names = StageTaskNames::new();
    for &stage in STAGES {
        if rng.chance(20) {
            continue;
        }
        let tasks = 1 + rng.below(3);
        let mut results = Map::new();
        for n in 1..=tasks {
            if rng.chance(80) {
                results.insert(format!("task{n}"), generated_results(rng, 3));
            }
        }
        names.add_stage(stage, (1..=tasks).map(|n| format!("step-{n}")));
        context.insert(
            stage.to_string(),
            json!({"status": "PROCESSED", "finishedAt": null, "results": results}),
        );
    }
    Generated {
        context: Value::Object(context),
        names,
    }
}

fn generated_results(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 4 } else { 6 }) {
        0 => Value::Null,
        1 => json!(rng.next() as i32),
        2 => Value::String(arbitrary_text(rng)),
        3 => Value::Bool(true),
        4 => Value::Array(
            (0..rng.below(4))
                .map(|_| generated_results(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..1 + rng.below(3))
                .map(|_| {
                    (
                        rng.pick(KEYS).to_string(),
                        generated_results(rng, depth - 1),
                    )
                })
                .collect(),
        ),
    }
}

/// `key` as a path segment: `.key` when it is a plain name, else quoted (either quote).
fn key_segment(rng: &mut Rng, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':'));
    if plain && rng.chance(70) {
        return format!(".{key}");
    }
    let quote = if rng.chance(50) { '\'' } else { '"' };
    let mut out = format!("[{quote}");
    for c in key.chars() {
        if c == '\\' || c == quote {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(quote);
    out.push(']');
    out
}

/// A reference to some value of the context that exists, and that value.
fn existing_reference(rng: &mut Rng, g: &Generated) -> Option<(String, Value)> {
    let stages = g.context.as_object()?;
    let (stage, entry) = stages.iter().nth(rng.below(stages.len().max(1)))?;
    let results = entry["results"].as_object()?;
    let (task, mut value) = results.iter().nth(rng.below(results.len().max(1)))?;
    let stage_text = match key_segment(rng, stage) {
        dotted if dotted.starts_with('.') => dotted[1..].to_owned(),
        quoted => quoted,
    };
    let position: usize = task["task".len()..].parse().ok()?;
    let task_text = if rng.chance(30) {
        key_segment(rng, &format!("step-{position}"))
    } else {
        key_segment(rng, task)
    };
    let mut text = format!("{stage_text}.results{task_text}");
    while rng.chance(60) {
        match value {
            Value::Object(members) if !members.is_empty() => {
                let (key, member) = members.iter().nth(rng.below(members.len()))?;
                text.push_str(&key_segment(rng, key));
                value = member;
            }
            Value::Array(items) if !items.is_empty() => {
                let i = rng.below(items.len());
                if rng.chance(50) {
                    text.push_str(&format!("[{i}]"));
                } else {
                    text.push_str(&format!("[-{}]", items.len() - i));
                }
                value = &items[i];
            }
            _ => break,
        }
    }
    let (open, close) = if rng.chance(80) {
        ("${", "}")
    } else {
        ("$<", ">")
    };
    Some((format!("{open}{text}{close}"), value.clone()))
}

/// One part of a generated string.
enum Part {
    Literal(String),
    Reference(String, Value),
}

/// A string of literal text (escaped) and existing references, with what it must resolve to.
fn template_string(rng: &mut Rng, g: &Generated) -> (Value, Value) {
    let mut parts: Vec<Part> = Vec::new();
    for _ in 0..rng.below(5) {
        match existing_reference(rng, g) {
            Some((reference, value)) if rng.chance(50) => {
                parts.push(Part::Reference(reference, value))
            }
            _ => {
                let literal = arbitrary_text(rng);
                // Adjacent literals are one text: escaped together, or `$` + `{x` would open one.
                match parts.last_mut() {
                    Some(Part::Literal(previous)) => previous.push_str(&literal),
                    _ => parts.push(Part::Literal(literal)),
                }
            }
        }
    }
    parts.retain(|p| !matches!(p, Part::Literal(l) if l.is_empty()));
    if let [Part::Reference(reference, value)] = parts.as_slice() {
        // Exactly one placeholder: the string becomes the value itself.
        return (Value::String(reference.clone()), value.clone());
    }
    let (mut written, mut expected) = (String::new(), String::new());
    for i in 0..parts.len() {
        match &parts[i] {
            Part::Literal(literal) => {
                let mut literal = literal.clone();
                // A `$` right before a placeholder would escape it (`$${`): a literal `$` cannot
                // touch a placeholder, so keep them apart.
                if literal.ends_with('$') && i + 1 < parts.len() {
                    literal.push(' ');
                }
                written.push_str(&escape(&literal));
                expected.push_str(&literal);
            }
            Part::Reference(reference, value) => {
                written.push_str(reference);
                match value {
                    Value::String(s) => expected.push_str(s),
                    other => expected.push_str(&other.to_string()),
                }
            }
        }
    }
    (Value::String(written), Value::String(expected))
}

/// A configurations-like object and what it must resolve to.
fn template_value(rng: &mut Rng, g: &Generated, depth: usize) -> (Value, Value) {
    match rng.below(if depth == 0 { 3 } else { 5 }) {
        0 => {
            let v = json!(rng.next() as i64);
            (v.clone(), v)
        }
        1 | 2 => template_string(rng, g),
        3 => {
            let (written, expected) = (0..rng.below(4))
                .map(|_| template_value(rng, g, depth - 1))
                .unzip();
            (Value::Array(written), Value::Array(expected))
        }
        _ => {
            let (mut written, mut expected) = (Map::new(), Map::new());
            for _ in 0..rng.below(4) {
                // Keys are never resolved, placeholders or not.
                let key = arbitrary_text(rng);
                let (w, e) = template_value(rng, g, depth - 1);
                written.insert(key.clone(), w);
                expected.insert(key, e);
            }
            (Value::Object(written), Value::Object(expected))
        }
    }
}

#[test]
fn literal_text_is_unchanged_and_references_become_their_values() {
    let mut rng = Rng::new(4);
    for case in 0..CASES {
        let g = generated_context(&mut rng);
        let (written, expected) = template_value(&mut rng, &g, 3);
        let resolved = resolve(&written, &g.context, &g.names, OnMissing::Fail, usize::MAX)
            .unwrap_or_else(|e| panic!("case {case}: {written}\ncontext {}\n{e}", g.context));
        assert_eq!(
            resolved, expected,
            "case {case}: {written}\ncontext {}",
            g.context
        );
        let text = serde_json::to_string(&resolved).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), resolved);
    }
}

#[test]
fn references_into_generated_contexts_never_panic() {
    // Arbitrary text after a stage that exists, so evaluation really runs on odd paths.
    let mut rng = Rng::new(5);
    for _ in 0..CASES {
        let g = generated_context(&mut rng);
        let mut s = format!(
            "${{{}",
            rng.pick(&["dev.results.task1", "dev.results.step-2", "dev"])
        );
        for _ in 0..rng.below(4) {
            s.push_str(rng.pick(FRAGMENTS));
        }
        s.push('}');
        for on_missing in [OnMissing::Fail, OnMissing::Keep] {
            let _ = resolve(
                &Value::String(s.clone()),
                &g.context,
                &g.names,
                on_missing,
                usize::MAX,
            );
        }
    }
}

#[test]
fn hand_picked_edge_cases_never_panic() {
    let (context, names) = (context(), names());
    let known: BTreeSet<String> = ["dev", "test", "prod"].map(String::from).into();
    for s in [
        "${dev.results.task1.vms[-9223372036854775808]}",
        "${dev.results.task1.vms[-9223372036854775807]}",
        "${dev.results.task1.vms[9223372036854775807]}",
        "${dev.results.task1.vms[-0]}",
        "${dev.results.task1.vms[-]}",
        "${dev.results.task1.vms[*][-9223372036854775807]}",
        "${dev.results.task1.vm.*.*[*]}",
        "${dev.results['task1']['']}",
        "${['']['']}",
        "${dev.results.task99999999999999999999999.x}",
        "${dev.results.task18446744073709551616.x}",
        "$<dev.results.task1.vms[-9223372036854775808]>",
        "${",
        "$<",
        "$",
        "$$",
        "$${",
        "${dev.results['\\",
        "${dev.results[\"\u{0}\"]}",
        "${😀.x}",
        "${dev.status}${dev.status}$${dev.status}$$${dev.status}",
    ] {
        let value = json!({"a": s, "b": [s, format!("x{s}x")]});
        assert_covers(s, &split(s));
        for on_missing in [OnMissing::Fail, OnMissing::Keep] {
            let _ = resolve(&value, &context, &names, on_missing, usize::MAX);
        }
        let tasks = [TaskToCheck {
            position: 2,
            name: "t",
            template: &value,
            configurations: &value,
        }];
        let _ = check_activity("test", &tasks, &known, &names, usize::MAX);
    }
}
