//! Evaluating one reference against the Context, and saying precisely what is missing.

use std::borrow::Cow;

use crate::json_kind;
use jsonpath_rust::parser::model::{self as jp, JpQuery, Selector};
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use super::parse::{render_path, Reference, Segment, TaskRef};
use super::{NameLookup, StageTaskNames};

/// The value `reference` points to in `context`, or why there is none.
pub(crate) fn evaluate<'c>(
    reference: &Reference,
    context: &'c Value,
    names: &StageTaskNames,
) -> Result<Cow<'c, Value>, String> {
    let stage_name = reference.stage.as_str();
    let Some(stage) = context.get(stage_name) else {
        return Err(format!(
            "no PROCESSED or RUNNING activity of stage {stage_name} in the context"
        ));
    };

    // For a task reference, check the task's results exist first: "no results for task3" is a
    // far better message than "results.task3 not found".
    let (task_key, base, base_label, rest) = match reference.task() {
        None => (
            None,
            stage,
            format!("stage {stage_name}"),
            &reference.path[..],
        ),
        Some(task) => {
            let (position, label) =
                locate_task(stage_name, task, |name| names.lookup(stage_name, name))?;
            let key = format!("task{position}");
            let results = stage.get("results").unwrap_or(&Value::Null);
            let Some(task_results) = results.get(&key) else {
                let why = if results.is_null() {
                    " (no task of the stage has returned results)"
                } else {
                    ""
                };
                return Err(format!(
                    "stage {stage_name} has no results for {label}{why}"
                ));
            };
            let base_label = format!("the results of {label} of stage {stage_name}");
            (Some(key), task_results, base_label, &reference.path[2..])
        }
    };

    let query = jsonpath_query(reference, task_key.as_deref());
    let not_found = |path: &[Segment]| match walk(base, path) {
        Err(why) => format!("{} not found in {base_label} ({why})", render_path(path)),
        Ok(_) => format!("{} not found in {base_label}", render_path(path)),
    };

    if let Some(wildcard) = rest.iter().position(|s| *s == Segment::Wildcard) {
        // A typo before the wildcard must not pass silently as an empty array.
        if walk(base, &rest[..wildcard]).is_err() {
            return Err(not_found(&rest[..wildcard]));
        }
        let matches = run(&query, context)?;
        return Ok(Cow::Owned(Value::Array(
            matches.into_iter().cloned().collect(),
        )));
    }
    match run(&query, context)?.as_slice() {
        [value] => Ok(Cow::Borrowed(*value)),
        [] => Err(not_found(rest)),
        // Not possible without a wildcard; an error rather than picking one if the library changes.
        several => Err(format!("the path matches {} values", several.len())),
    }
}

/// The position a task reference means and how messages name it.
pub(crate) fn locate_task(
    stage: &str,
    task: TaskRef<'_>,
    lookup: impl FnOnce(&str) -> NameLookup,
) -> Result<(usize, String), String> {
    match task {
        TaskRef::Position(n) => Ok((n, format!("task{n}"))),
        TaskRef::Name(name) => match lookup(name) {
            NameLookup::Position(n) => Ok((n, format!("task {name:?} (task{n})"))),
            NameLookup::Shared => Err(format!(
                "task name {name:?} is shared by several tasks of stage {stage}; \
                 refer to one by position (taskN)"
            )),
            NameLookup::Unknown => Err(format!("stage {stage} has no task named {name:?}")),
        },
    }
}

/// `$['stage']['results']['task2']…`, built as jsonpath-rust's model rather than as text: no
/// quoting of odd keys, and no JSONPath parsing on every dispatch.
fn jsonpath_query(reference: &Reference, task_key: Option<&str>) -> JpQuery {
    let name = |key: &str| jp::Segment::Selector(Selector::Name(key.to_owned()));
    let mut segments = vec![name(&reference.stage)];
    for (i, segment) in reference.path.iter().enumerate() {
        segments.push(match (segment, task_key) {
            (Segment::Key(_), Some(task_key)) if i == 1 => name(task_key),
            (Segment::Key(key), _) => name(key),
            (Segment::Index(n), _) => jp::Segment::Selector(Selector::Index(*n)),
            (Segment::Wildcard, _) => jp::Segment::Selector(Selector::Wildcard),
        });
    }
    JpQuery::new(segments)
}

/// The values `query` matches in `context`.
fn run<'c>(query: &JpQuery, context: &'c Value) -> Result<Vec<&'c Value>, String> {
    js_path_process(query, context)
        .map(|matches| matches.into_iter().map(|m| m.val()).collect())
        .map_err(|e| format!("internal error evaluating {query}: {e}"))
}

/// Follows `path` from `value` the way the JSONPath would, to name the step that failed.
fn walk<'v>(mut value: &'v Value, path: &[Segment]) -> Result<&'v Value, String> {
    for (i, segment) in path.iter().enumerate() {
        let subject = || match render_path(&path[..i]) {
            p if p.is_empty() => "the value".to_owned(),
            p => p,
        };
        value = match (segment, value) {
            (Segment::Key(key), Value::Object(members)) => match members.get(key) {
                Some(v) => v,
                None if i == 0 => return Err(format!("no key {key:?}")),
                None => return Err(format!("{} has no key {key:?}", subject())),
            },
            (Segment::Index(n), Value::Array(items)) => {
                let index = if *n < 0 { items.len() as i64 + n } else { *n };
                match usize::try_from(index).ok().and_then(|i| items.get(i)) {
                    Some(v) => v,
                    None => {
                        let (len, s) = (items.len(), if items.len() == 1 { "" } else { "s" });
                        return Err(format!("{} has {len} element{s}, no index {n}", subject()));
                    }
                }
            }
            (Segment::Key(_), other) => {
                return Err(format!(
                    "{} is {}, not an object",
                    subject(),
                    json_kind(other)
                ))
            }
            (Segment::Index(_), other) => {
                return Err(format!(
                    "{} is {}, not an array",
                    subject(),
                    json_kind(other)
                ))
            }
            (Segment::Wildcard, _) => return Ok(value),
        };
    }
    Ok(value)
}
