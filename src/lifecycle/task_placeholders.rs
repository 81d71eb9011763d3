//! Where the lifecycle meets the placeholder resolver: the static check when an activity is
//! created, and resolution when a task is dispatched.

use std::collections::BTreeSet;

use serde_json::Value;

use super::context::TaskContext;
use super::error::CommandError;
use crate::config::LimitSettings;
use crate::descriptor::{LifecycleInfo, TaskDefinition};
use crate::limits::{json_size_within, over, over_with};
use crate::placeholders::{
    self, Checked, OnMissing, ResolveError, StageTaskNames, TaskToCheck, Unresolved,
};

/// The new activity's placeholders: at most `limits.placeholders_per_task` per task (422 42213),
/// then every bad reference in one message (422 42201), the first `limits.listed_errors` of
/// them listed.
pub fn check_new_activity(
    stage: &str,
    tasks: &[TaskDefinition],
    info: &LifecycleInfo,
    limits: &LimitSettings,
) -> Result<(), CommandError> {
    let checked = check_placeholders(stage, tasks, info, limits.listed_errors);
    let max = limits.placeholders_per_task;
    if let Some(&(position, count)) = checked.placeholders.iter().find(|(_, n)| *n > max) {
        let name = &tasks[position - 1].name;
        return Err(CommandError::OverLimit(too_many_placeholders(
            stage, position, name, count, max,
        )));
    }
    if checked.bad == 0 {
        return Ok(());
    }
    let list: Vec<String> = checked.listed.iter().map(ToString::to_string).collect();
    let unlisted = match checked.bad - checked.listed.len() {
        0 => String::new(),
        n => format!(
            "; and {n} more not listed (limits.listed_errors: {})",
            limits.listed_errors
        ),
    };
    Err(CommandError::InvalidActivity(format!(
        "{} bad placeholder reference{}: {}{unlisted}",
        checked.bad,
        if checked.bad == 1 { "" } else { "s" },
        list.join("; "),
    )))
}

/// The static check of the new activity's placeholders (`placeholders::check_activity`), the
/// first `max_listed` bad references listed.
pub fn check_placeholders(
    stage: &str,
    tasks: &[TaskDefinition],
    info: &LifecycleInfo,
    max_listed: usize,
) -> Checked {
    let known: BTreeSet<String> = info.stages.keys().cloned().collect();
    let mut names = StageTaskNames::new();
    for (name, defs) in &info.stages {
        names.add_stage(name.clone(), defs.iter().map(|d| d.name.as_str()));
    }
    let empty = Value::Object(Default::default());
    let to_check: Vec<TaskToCheck<'_>> = tasks
        .iter()
        .map(|d| TaskToCheck {
            position: d.position,
            name: &d.name,
            template: d.template.as_ref().unwrap_or(&empty),
            configurations: d.configurations.as_ref().unwrap_or(&empty),
        })
        .collect();
    placeholders::check_activity(stage, &to_check, &known, &names, max_listed)
}

/// The refusal of a task holding more than `limits.placeholders_per_task` placeholders.
pub fn too_many_placeholders(
    stage: &str,
    position: usize,
    name: &str,
    count: usize,
    max: usize,
) -> String {
    over(
        &format!("task {position} ({name}) of stage {stage}"),
        count,
        "placeholders",
        max,
        "limits.placeholders_per_task",
    )
    .0
}

/// What a dispatched task carries: its template and its configurations with placeholders
/// resolved, the context under `configurations.context`. Each is at most `max_bytes` of JSON
/// (`limits.configurations_bytes`), else the task fails before anything is sent, naming the
/// limit: a result referenced many times never multiplies into a huge row or request.
pub fn resolve_task(
    template: &Value,
    configurations: &Value,
    task_context: &TaskContext,
    on_missing: OnMissing,
    max_bytes: usize,
) -> Result<(Value, Value), String> {
    let template = resolve(template, task_context, on_missing, max_bytes)?;
    let authored = without_context(configurations);
    let mut configurations = resolve(&authored, task_context, on_missing, max_bytes)?;
    if let Value::Object(map) = &mut configurations {
        map.insert("context".into(), task_context.context.clone());
    }
    within_limit(&template, &configurations, max_bytes)?;
    Ok((template, configurations))
}

/// The configurations as their author wrote them, but for a `context` of their own: the
/// engine's Context replaces it when the task is sent, and its text is not read for
/// placeholders (DESIGN §4, "context excluded"; the creation's check skips it too), so a
/// `${…}` in it cannot fail a task the creation accepted.
fn without_context(configurations: &Value) -> std::borrow::Cow<'_, Value> {
    match configurations {
        Value::Object(map) if map.contains_key("context") => {
            let mut authored = map.clone();
            authored.remove("context");
            std::borrow::Cow::Owned(Value::Object(authored))
        }
        _ => std::borrow::Cow::Borrowed(configurations),
    }
}

/// A resolved template and configurations (context included) are each at most `max_bytes`.
fn within_limit(template: &Value, configurations: &Value, max_bytes: usize) -> Result<(), String> {
    for (what, value) in [
        ("template is", template),
        ("configurations (context included) are", configurations),
    ] {
        if json_size_within(value, max_bytes).is_none() {
            return Err(over_with(
                &format!("the task's resolved {what}"),
                format!("more than {max_bytes}"),
                "bytes",
                max_bytes,
                "limits.configurations_bytes",
            )
            .0);
        }
    }
    Ok(())
}

/// A task of a new activity of `own_stage` as it would be dispatched now (a dry run):
/// `resolve_task`, except that references to the activity's own results stay as written
/// (listed in `at_run_time`) and those that do not resolve are listed rather than fatal.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub template: Value,
    /// With the context under `context`, as sent.
    pub configurations: Value,
    pub at_run_time: Vec<String>,
    /// Each placeholder that did not resolve, and why (its text is what a failed dispatch
    /// would give).
    pub unresolved: Vec<Unresolved>,
}

pub fn plan_task(
    template: &Value,
    configurations: &Value,
    task_context: &TaskContext,
    own_stage: &str,
    max_bytes: usize,
) -> Result<PlannedTask, String> {
    let plan = |value: &Value| {
        placeholders::resolve_planned(
            value,
            &task_context.context,
            &task_context.names,
            own_stage,
            max_bytes,
        )
        .map_err(resolve_error)
    };
    let authored = without_context(configurations);
    let (template, mut configurations) = (plan(template)?, plan(&authored)?);
    if let Value::Object(map) = &mut configurations.value {
        map.insert("context".into(), task_context.context.clone());
    }
    within_limit(&template.value, &configurations.value, max_bytes)?;
    let unresolved = template.unresolved.iter().chain(&configurations.unresolved);
    Ok(PlannedTask {
        unresolved: unresolved.cloned().collect(),
        at_run_time: [template.at_run_time, configurations.at_run_time].concat(),
        template: template.value,
        configurations: configurations.value,
    })
}

/// `value` with its placeholders resolved; what they insert may add up to `max_bytes`.
pub fn resolve(
    value: &Value,
    task_context: &TaskContext,
    on_missing: OnMissing,
    max_bytes: usize,
) -> Result<Value, String> {
    placeholders::resolve(
        value,
        &task_context.context,
        &task_context.names,
        on_missing,
        max_bytes,
    )
    .map_err(resolve_error)
}

fn resolve_error(e: ResolveError) -> String {
    match e {
        ResolveError::Unresolved(unresolved) => unresolved.to_string(),
        ResolveError::TooLarge { max } => {
            over_with(
                "the task's placeholders insert",
                format!("more than {max}"),
                "bytes",
                max,
                "limits.configurations_bytes",
            )
            .0
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::placeholders::tests::generated::{arbitrary_text, arbitrary_value, escape, Rng};

    fn limits() -> LimitSettings {
        crate::config::Settings::load_with_env(None, Vec::<(String, String)>::new())
            .unwrap()
            .limits
    }

    /// A descriptor's lifecycle of arbitrary stages and tasks (names, templates, configurations).
    fn arbitrary_lifecycle(rng: &mut Rng) -> LifecycleInfo {
        let mut stages = BTreeMap::new();
        for _ in 0..1 + rng.below(3) {
            let stage = rng
                .pick(&["dev", "test", "prod", "my stage", ""])
                .to_owned();
            let tasks = (1..=1 + rng.below(3))
                .map(|position| TaskDefinition {
                    position,
                    name: arbitrary_text(rng),
                    description: None,
                    executor_ref: None,
                    template: rng.chance(80).then(|| arbitrary_value(rng, 3)),
                    template_ref: None,
                    configurations: rng.chance(80).then(|| arbitrary_value(rng, 3)),
                })
                .collect();
            stages.insert(stage, tasks);
        }
        LifecycleInfo { stages }
    }

    /// Every string of `value` escaped, so none holds a placeholder.
    fn escape_strings(value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(escape(s)),
            Value::Array(items) => Value::Array(items.iter().map(escape_strings).collect()),
            Value::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), escape_strings(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    #[test]
    fn checking_and_resolving_arbitrary_descriptors_never_panics() {
        let mut rng = Rng::new(6);
        for _ in 0..2000 {
            let info = arbitrary_lifecycle(&mut rng);
            let task_context = TaskContext {
                context: arbitrary_value(&mut rng, 3),
                names: StageTaskNames::new(),
            };
            for (stage, tasks) in &info.stages {
                let _ = check_new_activity(stage, tasks, &info, &limits());
                for value in tasks.iter().flat_map(|t| [&t.template, &t.configurations]) {
                    for on_missing in [OnMissing::Fail, OnMissing::Keep] {
                        let _ = resolve(
                            value.as_ref().unwrap_or(&Value::Null),
                            &task_context,
                            on_missing,
                            usize::MAX,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn escaped_descriptors_pass_the_check_and_resolve_to_their_literal_text() {
        let mut rng = Rng::new(7);
        for case in 0..2000 {
            let written = arbitrary_lifecycle(&mut rng);
            let mut escaped = written.clone();
            for task in escaped.stages.values_mut().flatten() {
                task.template = task.template.as_ref().map(escape_strings);
                task.configurations = task.configurations.as_ref().map(escape_strings);
            }
            let task_context = TaskContext {
                context: arbitrary_value(&mut rng, 3),
                names: StageTaskNames::new(),
            };
            for (stage, tasks) in &escaped.stages {
                let checked = check_new_activity(stage, tasks, &escaped, &limits());
                assert!(checked.is_ok(), "case {case}: {checked:?}");
                for (task, original) in tasks.iter().zip(&written.stages[stage]) {
                    let Some(configurations) = &task.configurations else {
                        continue;
                    };
                    let resolved =
                        resolve(configurations, &task_context, OnMissing::Fail, usize::MAX);
                    assert_eq!(
                        resolved.as_ref(),
                        Ok(original.configurations.as_ref().unwrap()),
                        "case {case}"
                    );
                }
            }
        }
    }

    fn blob_context() -> TaskContext {
        let mut names = StageTaskNames::new();
        names.add_stage("dev", ["make"]);
        TaskContext {
            context: serde_json::json!({"dev": {"status": "RUNNING", "finishedAt": null,
                "results": {"task1": {"blob": "b".repeat(100)}}}}),
            names,
        }
    }

    /// What a task carries is at most `limits.configurations_bytes`, context included: exactly
    /// the limit passes, one byte more fails, naming the limit.
    #[test]
    fn resolved_configurations_just_under_and_just_over_the_limit() {
        let task_context = blob_context();
        let configurations = serde_json::json!({"a": "${dev.results.task1.blob}"});
        let template = serde_json::json!({"pipeline": "p"});
        let (_, sent) = resolve_task(
            &template,
            &configurations,
            &task_context,
            OnMissing::Fail,
            usize::MAX,
        )
        .unwrap();
        let size = sent.to_string().len();
        assert!(sent["context"]["dev"].is_object());
        assert!(resolve_task(
            &template,
            &configurations,
            &task_context,
            OnMissing::Fail,
            size
        )
        .is_ok());
        let error = resolve_task(
            &template,
            &configurations,
            &task_context,
            OnMissing::Fail,
            size - 1,
        )
        .unwrap_err();
        assert_eq!(
            error,
            format!(
                "the task's resolved configurations (context included) are more than {0} bytes; \
                 at most {0} are allowed (limits.configurations_bytes)",
                size - 1
            )
        );
        let big_template = serde_json::json!({"x": "t".repeat(size)});
        let error = resolve_task(
            &big_template,
            &configurations,
            &task_context,
            OnMissing::Fail,
            size,
        )
        .unwrap_err();
        assert!(
            error.starts_with("the task's resolved template is more than"),
            "{error}"
        );
    }

    /// A `context` the author wrote is neither resolved nor sent: the engine's replaces it
    /// (DESIGN §4, "context excluded"), so `${HOME}` or an unknown stage in it cannot fail a
    /// task the creation's check accepted. The dry run plans the same.
    #[test]
    fn an_authored_context_is_replaced_not_resolved() {
        let task_context = blob_context();
        let configurations = serde_json::json!({
            "a": "${dev.results.task1.blob}",
            "context": {"note": "uses ${HOME}", "x": "${nonexistent.x}"}
        });
        let template = serde_json::json!({"pipeline": "p"});
        let (_, sent) = resolve_task(
            &template,
            &configurations,
            &task_context,
            OnMissing::Fail,
            usize::MAX,
        )
        .unwrap();
        assert_eq!(sent["a"], "b".repeat(100));
        assert_eq!(sent["context"], task_context.context);
        let planned = plan_task(
            &template,
            &configurations,
            &task_context,
            "test",
            usize::MAX,
        )
        .unwrap();
        assert!(planned.unresolved.is_empty(), "{:?}", planned.unresolved);
        assert_eq!(planned.configurations["context"], task_context.context);
    }

    /// Resolution stops as soon as what placeholders insert passes the limit, before building
    /// the rest: a result referenced many times never multiplies in memory.
    #[test]
    fn placeholders_stop_inserting_at_the_limit() {
        let task_context = blob_context();
        let many = serde_json::json!({"a": "${dev.results.task1.blob}".repeat(1000)});
        let error = resolve(&many, &task_context, OnMissing::Fail, 1000).unwrap_err();
        assert_eq!(
            error,
            "the task's placeholders insert more than 1000 bytes; at most 1000 are allowed \
             (limits.configurations_bytes)"
        );
        let whole = Value::Array(vec![serde_json::json!("${dev.results.task1}"); 20]);
        assert!(resolve(&whole, &task_context, OnMissing::Keep, 1000).is_err());
        assert!(resolve(&whole, &task_context, OnMissing::Keep, 20 * 111).is_ok());
        let ten = serde_json::json!({"a": "${dev.results.task1.blob}".repeat(10)});
        assert_eq!(
            resolve(&ten, &task_context, OnMissing::Fail, 1000).unwrap()["a"],
            "b".repeat(1000)
        );
    }
}
