//! `internalComponents.lifecycleInfo` of a Data Product Descriptor → the tasks of each stage.
//! Both shapes are read (DESIGN §3): the stage map of the ODM documentation and the normalized
//! `tasksInfo` list the ODM registry returns.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::json_kind;

/// One task as the descriptor defines it, before it becomes a row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDefinition {
    /// 1-based, in descriptor order within the stage.
    pub position: usize,
    pub name: String,
    pub description: Option<String>,
    pub executor_ref: Option<String>,
    pub template: Option<Value>,
    /// The `$ref` of a template given by reference, as written; resolved through the registry
    /// into `template` when an activity is created. Never set together with `template`.
    pub template_ref: Option<String>,
    pub configurations: Option<Value>,
}

/// Stage name → its tasks in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleInfo {
    pub stages: BTreeMap<String, Vec<TaskDefinition>>,
}

impl LifecycleInfo {
    pub fn stage_list(&self) -> String {
        if self.stages.is_empty() {
            return "none".into();
        }
        self.stages.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DescriptorError(pub String);

const ROOT: &str = "internalComponents.lifecycleInfo";

pub fn parse(descriptor: &Value) -> Result<LifecycleInfo, DescriptorError> {
    let descriptor = descriptor
        .as_object()
        .ok_or_else(|| err("the descriptor must be a JSON object".into()))?;
    let info = descriptor
        .get("internalComponents")
        .and_then(|c| c.get("lifecycleInfo"))
        .ok_or_else(|| {
            err(format!(
                "{ROOT} is missing: the descriptor defines no stages"
            ))
        })?;
    let info = info.as_object().ok_or_else(|| {
        err(format!(
            "{ROOT} must be an object, found {}",
            json_kind(info)
        ))
    })?;
    let parsed = match info.get("tasksInfo") {
        Some(tasks) => parse_normalized(info, tasks),
        None => parse_stage_map(info),
    }?;
    without_nul(&parsed)?;
    Ok(parsed)
}

/// Stage and task names, descriptions and executors become text columns, and PostgreSQL cannot
/// store a NUL character in text: refused here, the same on both backends.
fn without_nul(info: &LifecycleInfo) -> Result<(), DescriptorError> {
    for (stage, tasks) in &info.stages {
        let at = |what: &str| err(format!("{ROOT}: {what} contains a NUL character (\\u0000)"));
        if stage.contains('\0') {
            return Err(at(&format!("stage name {stage:?}")));
        }
        for task in tasks {
            let fields = [
                ("name", Some(&task.name)),
                ("description", task.description.as_ref()),
                ("service", task.executor_ref.as_ref()),
            ];
            for (field, text) in fields {
                if text.is_some_and(|t| t.contains('\0')) {
                    return Err(at(&format!(
                        "the {field} of task {} of stage {stage}",
                        task.position
                    )));
                }
            }
        }
    }
    Ok(())
}

fn err(message: String) -> DescriptorError {
    DescriptorError(message)
}

fn parse_stage_map(info: &Map<String, Value>) -> Result<LifecycleInfo, DescriptorError> {
    let mut stages = BTreeMap::new();
    for (stage, tasks) in info {
        let at = format!("{ROOT}.{stage}");
        let tasks = tasks.as_array().ok_or_else(|| {
            err(format!(
                "{at} must be a list of tasks, found {}",
                json_kind(tasks)
            ))
        })?;
        let defs = tasks
            .iter()
            .enumerate()
            .map(|(i, task)| task_definition(task, i + 1, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        stages.insert(stage.clone(), defs);
    }
    Ok(LifecycleInfo { stages })
}

fn parse_normalized(
    info: &Map<String, Value>,
    tasks: &Value,
) -> Result<LifecycleInfo, DescriptorError> {
    let mut stages: BTreeMap<String, Vec<(i64, usize, Value, String)>> = BTreeMap::new();
    if let Some(names) = info.get("stageNames").and_then(Value::as_array) {
        for name in names.iter().filter_map(Value::as_str) {
            stages.entry(name.to_owned()).or_default();
        }
    }
    let tasks = tasks.as_array().ok_or_else(|| {
        err(format!(
            "{ROOT}.tasksInfo must be a list, found {}",
            json_kind(tasks)
        ))
    })?;
    for (i, entry) in tasks.iter().enumerate() {
        let at = format!("{ROOT}.tasksInfo[{i}]");
        let stage = entry
            .get("stageName")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err(format!("{at}.stageName is missing")))?;
        let order = entry
            .get("order")
            .and_then(Value::as_i64)
            .unwrap_or(i as i64);
        // rawContent is the task as the author wrote it; the normalized fields around it may
        // have lost the inline definition, so it wins.
        let task = match entry.get("rawContent") {
            Some(Value::String(raw)) => merged_with_raw(entry, raw, &at)?,
            Some(other) => {
                return Err(err(format!(
                    "{at}.rawContent must be a string, found {}",
                    json_kind(other)
                )))
            }
            None => entry.clone(),
        };
        stages
            .entry(stage.to_owned())
            .or_default()
            .push((order, i, task, at));
    }
    let mut parsed = BTreeMap::new();
    for (stage, mut entries) in stages {
        entries.sort_by_key(|(order, index, _, _)| (*order, *index));
        let defs = entries
            .iter()
            .enumerate()
            .map(|(i, (_, _, task, at))| task_definition(task, i + 1, at))
            .collect::<Result<Vec<_>, _>>()?;
        parsed.insert(stage, defs);
    }
    Ok(LifecycleInfo { stages: parsed })
}

/// The entry's own fields, with `template.definition` and `configurations` from its rawContent.
fn merged_with_raw(entry: &Value, raw: &str, at: &str) -> Result<Value, DescriptorError> {
    let raw: Value = serde_json::from_str(raw)
        .map_err(|e| err(format!("{at}.rawContent is not valid JSON: {e}")))?;
    let mut task = entry.as_object().cloned().unwrap_or_default();
    if let Some(configurations) = raw.get("configurations") {
        task.insert("configurations".into(), configurations.clone());
    }
    let has_definition = task
        .get("template")
        .and_then(|t| t.get("definition"))
        .is_some_and(|d| !d.is_null());
    // An authored `$ref` points where the descriptor was uploaded from; the registry's own
    // definition (resolved, or pointed at its templates endpoint) is the one to follow then.
    if let Some(definition) = raw
        .get("template")
        .and_then(|t| t.get("definition"))
        .filter(|d| !(is_reference(d) && has_definition))
    {
        let mut template = task
            .get("template")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        template.insert("definition".into(), definition.clone());
        task.insert("template".into(), Value::Object(template));
    }
    if task.get("service").is_none() {
        if let Some(service) = raw.get("service") {
            task.insert("service".into(), service.clone());
        }
    }
    Ok(Value::Object(task))
}

fn task_definition(
    task: &Value,
    position: usize,
    at: &str,
) -> Result<TaskDefinition, DescriptorError> {
    let task = task
        .as_object()
        .ok_or_else(|| err(format!("{at} must be an object, found {}", json_kind(task))))?;
    let executor_ref = executor_of(task.get("service"), at)?;
    let template = task.get("template").filter(|t| !t.is_null());
    if let Some(t) = template {
        if !t.is_object() {
            return Err(err(format!(
                "{at}.template must be an object, found {}",
                json_kind(t)
            )));
        }
    }
    let (definition, template_ref) = match template {
        None => (None, None),
        Some(t) => template_source(t, &format!("{at}.template"))?,
    };
    let configurations = match task.get("configurations") {
        None | Some(Value::Null) => None,
        Some(c) => Some(unwrap_raw_content(c, &format!("{at}.configurations"))?),
    };
    let text = |key: &str| -> Result<Option<&str>, DescriptorError> {
        match template.and_then(|t| t.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.trim()).filter(|s| !s.is_empty())),
            Some(other) => Err(err(format!(
                "{at}.template.{key} must be a string, found {}",
                json_kind(other)
            ))),
        }
    };
    let name = text("name")?
        .filter(|n| !looks_like_uuid(n))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("task{position}"));
    let description = text("description")?.map(str::to_owned);
    Ok(TaskDefinition {
        position,
        name,
        description,
        executor_ref,
        template: definition,
        template_ref,
        configurations,
    })
}

/// The executor a task's `service` names: none when it is absent or null (a task without an
/// executor, PROCESSED at once), else `{"$href": "{name}"}` (braces optional). Anything else is
/// refused: a `service` mistyped as a string, or a `$href` misspelt, would otherwise make a
/// task that should deploy count as done without running anything.
fn executor_of(service: Option<&Value>, at: &str) -> Result<Option<String>, DescriptorError> {
    let service = match service {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(service)) => service,
        Some(other) => {
            return Err(err(format!(
                "{at}.service must be an object naming the executor, as {{\"$href\": \
                 \"{{azure-devops}}\"}}, found {}",
                json_kind(other)
            )))
        }
    };
    match service.get("$href") {
        // `{}` or `{"$href": null}`: written out for "no executor" by some serializers.
        None if service.is_empty() => Ok(None),
        Some(Value::Null) => Ok(None),
        None => Err(err(format!(
            "{at}.service has no `$href` naming the executor (it has {}); write {{\"$href\": \
             \"{{azure-devops}}\"}}, or leave `service` out for a task without an executor",
            service
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Some(Value::String(href)) => {
            let name = href
                .trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim();
            if name.is_empty() {
                return Err(err(format!(
                    "{at}.service.$href names no executor (found {href:?}); write \
                     \"{{azure-devops}}\", or leave `service` out for a task without an executor"
                )));
            }
            Ok(Some(name.to_owned()))
        }
        Some(other) => Err(err(format!(
            "{at}.service.$href must be a string, found {}",
            json_kind(other)
        ))),
    }
}

/// A template's inline definition, or the reference to resolve: `definition: {"$ref": …}` (ODM's
/// definition reference) or, without a definition, `{"$ref": …}` as the whole template.
fn template_source(
    template: &Value,
    at: &str,
) -> Result<(Option<Value>, Option<String>), DescriptorError> {
    match template.get("definition").filter(|d| !d.is_null()) {
        Some(d) => {
            let at = format!("{at}.definition");
            match reference(d, &at)? {
                Some(r) => Ok((None, Some(r))),
                None => Ok((Some(unwrap_raw_content(d, &at)?), None)),
            }
        }
        None => Ok((None, reference(template, at)?)),
    }
}

/// An object holding `$ref` and no `rawContent` (with it, the registry already resolved it).
fn is_reference(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("$ref") && !o.contains_key("rawContent"))
}

fn reference(value: &Value, at: &str) -> Result<Option<String>, DescriptorError> {
    if !is_reference(value) {
        return Ok(None);
    }
    match &value["$ref"] {
        Value::String(r) if !r.trim().is_empty() => Ok(Some(r.trim().to_owned())),
        other => Err(err(format!(
            "{at}.$ref must be a non-blank string, found {}",
            json_kind(other)
        ))),
    }
}

/// The registry's id of the template a `$ref` names: the id itself, or the last segment of a
/// URL or path `…/templates/{id}` (where ODM's registry points the templates it stores).
pub fn template_id(reference: &str) -> Option<&str> {
    let reference = reference.trim();
    let id = match reference.rsplit_once("/templates/") {
        Some((_, rest)) => rest
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_end_matches('/'),
        None => reference,
    };
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The definition in the registry's answer to `GET …/templates/{id}`: a JSON text in `definition`
/// (ODM's ExternalComponentResource) or in `content` (its older DefinitionResource).
pub fn registry_template_definition(answer: &Value) -> Result<Value, String> {
    let (key, value) = ["definition", "content"]
        .into_iter()
        .find_map(|key| answer.get(key).filter(|v| !v.is_null()).map(|v| (key, v)))
        .ok_or("the registry's answer holds no definition (neither `definition` nor `content`)")?;
    let definition = match value {
        Value::String(text) => {
            serde_json::from_str(text).map_err(|e| format!("its `{key}` is not valid JSON: {e}"))?
        }
        other => other.clone(),
    };
    if definition.is_object() {
        Ok(definition)
    } else {
        Err(format!(
            "its `{key}` must hold a JSON object, found {}",
            json_kind(&definition)
        ))
    }
}

/// An object, or an object whose only meaningful content is a `rawContent` JSON string.
fn unwrap_raw_content(value: &Value, at: &str) -> Result<Value, DescriptorError> {
    let object = value.as_object().ok_or_else(|| {
        err(format!(
            "{at} must be an object, found {}",
            json_kind(value)
        ))
    })?;
    match object.get("rawContent") {
        Some(Value::String(raw)) => {
            let parsed: Value = serde_json::from_str(raw)
                .map_err(|e| err(format!("{at}.rawContent is not valid JSON: {e}")))?;
            if parsed.is_object() {
                Ok(parsed)
            } else {
                Err(err(format!(
                    "{at}.rawContent must hold an object, found {}",
                    json_kind(&parsed)
                )))
            }
        }
        _ => Ok(value.clone()),
    }
}

fn looks_like_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
#[path = "descriptor_tests.rs"]
mod tests;
