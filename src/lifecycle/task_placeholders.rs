//! Where the lifecycle meets the placeholder resolver: the static check when an activity is
//! created, and resolution when a task is dispatched.

use std::collections::BTreeSet;

use serde_json::Value;

use super::context::TaskContext;
use crate::config::OnMissing;
use crate::descriptor::{LifecycleInfo, TaskDefinition};
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
