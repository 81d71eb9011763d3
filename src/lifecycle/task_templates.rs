//! Templates given by reference (DESIGN §3): resolved through the remote ODM registry when the
//! activity is created, so the activity keeps the definition as it was then.

use std::collections::HashMap;

use serde_json::Value;

use super::error::CommandError;
use crate::descriptor::{self, TaskDefinition};
use crate::registry::{Registry, RegistryError};

/// The stage's tasks with every template reference replaced by the definition it names (one
/// request per template, however many tasks share it).
pub async fn resolve(
    registry: &Registry,
    stage: &str,
    mut tasks: Vec<TaskDefinition>,
) -> Result<Vec<TaskDefinition>, CommandError> {
    let mut fetched: HashMap<String, Value> = HashMap::new();
    for task in &mut tasks {
        let Some(reference) = task.template_ref.take() else {
            continue;
        };
        let at = format!(
            "the template `{reference}` of task {} ({}) of stage {stage}",
            task.position, task.name
        );
        let id = descriptor::template_id(&reference).ok_or_else(|| {
            CommandError::InvalidActivity(format!(
                "{at} does not name a template of the registry: give its id or its URL …/templates/{{id}}"
            ))
        })?;
        let definition = match fetched.get(id) {
            Some(definition) => definition.clone(),
            None => {
                let definition = fetch(registry, id, &at).await?;
                fetched.insert(id.to_owned(), definition.clone());
                definition
            }
        };
        task.template = Some(definition);
    }
    Ok(tasks)
}

async fn fetch(registry: &Registry, id: &str, at: &str) -> Result<Value, CommandError> {
    let answer = registry
        .template(id)
        .await
        .map_err(|e| in_context(e, at))?
        .ok_or_else(|| {
            CommandError::InvalidActivity(format!(
                "{at} does not exist: the registry has no template {id}"
            ))
        })?;
    descriptor::registry_template_definition(&answer)
        .map_err(|e| CommandError::InvalidActivity(format!("{at} is not usable: {e}")))
}

/// The registry's error, saying which task's template it was about.
fn in_context(e: RegistryError, at: &str) -> CommandError {
    match e {
        RegistryError::Unreachable(f) => RegistryError::Unreachable(f.resolving(at)).into(),
        RegistryError::Failed(f) => RegistryError::Failed(f.resolving(at)).into(),
        RegistryError::NoTemplates => {
            CommandError::InvalidActivity(format!("{at} cannot be resolved: {e}"))
        }
        other => other.into(),
    }
}
