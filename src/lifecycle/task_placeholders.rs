//! Where the lifecycle meets the placeholder resolver: the static check when an activity is
//! created, and resolution when a task is dispatched.

use std::collections::BTreeSet;

use serde_json::Value;

use super::context::TaskContext;
use crate::descriptor::{LifecycleInfo, TaskDefinition};
use crate::placeholders::OnMissing;
use crate::placeholders::{self, StageTaskNames, TaskToCheck};

/// Every bad reference of the new activity's tasks, in one message.
pub fn check_new_activity(
    stage: &str,
    tasks: &[TaskDefinition],
    info: &LifecycleInfo,
) -> Result<(), String> {
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
    let bad = placeholders::check_activity(stage, &to_check, &known, &names);
    if bad.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = bad.iter().map(ToString::to_string).collect();
    Err(format!(
        "{} bad placeholder reference{}: {}",
        bad.len(),
        if bad.len() == 1 { "" } else { "s" },
        list.join("; ")
    ))
}

pub fn resolve(
    value: &Value,
    task_context: &TaskContext,
    on_missing: OnMissing,
) -> Result<Value, String> {
    placeholders::resolve(
        value,
        &task_context.context,
        &task_context.names,
        on_missing,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::placeholders::tests::generated::{arbitrary_text, arbitrary_value, escape, Rng};

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
                let _ = check_new_activity(stage, tasks, &info);
                for value in tasks.iter().flat_map(|t| [&t.template, &t.configurations]) {
                    for on_missing in [OnMissing::Fail, OnMissing::Keep] {
                        let _ = resolve(
                            value.as_ref().unwrap_or(&Value::Null),
                            &task_context,
                            on_missing,
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
                let checked = check_new_activity(stage, tasks, &escaped);
                assert_eq!(checked, Ok(()), "case {case}");
                for (task, original) in tasks.iter().zip(&written.stages[stage]) {
                    let Some(configurations) = &task.configurations else {
                        continue;
                    };
                    let resolved = resolve(configurations, &task_context, OnMissing::Fail);
                    assert_eq!(
                        resolved.as_ref(),
                        Ok(original.configurations.as_ref().unwrap()),
                        "case {case}"
                    );
                }
            }
        }
    }
}
