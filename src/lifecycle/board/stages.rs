//! A descriptor's stages in the order its author wrote them (DESIGN §3 shapes). Read from the
//! descriptor's text: a `serde_json::Value` keeps an object's keys sorted, and the stage map's
//! order is the order of its keys.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The stage names of `internalComponents.lifecycleInfo`: normalized (`tasksInfo` present),
/// `stageNames` then the `stageName` of each task in order of first appearance; else the stage
/// map's keys as written. Each name once; an error says why the text could not be read.
pub fn stages_in_order(text: &str) -> Result<Vec<String>, String> {
    let descriptor: Descriptor =
        serde_json::from_str(text).map_err(|e| format!("the descriptor cannot be read: {e}"))?;
    let info = descriptor
        .internal_components
        .and_then(|c| c.lifecycle_info)
        .ok_or("the descriptor has no internalComponents.lifecycleInfo")?;
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !name.trim().is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    };
    match info.tasks_info {
        Some(tasks) => {
            let listed = info.stage_names.as_ref().and_then(Value::as_array);
            for name in listed.into_iter().flatten().filter_map(Value::as_str) {
                add(name);
            }
            let tasks = tasks.as_array().map(Vec::as_slice).unwrap_or_default();
            for name in tasks.iter().filter_map(|t| t.get("stageName")?.as_str()) {
                add(name);
            }
        }
        None => info.keys.iter().for_each(|k| add(k)),
    }
    Ok(names)
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "internalComponents")]
    internal_components: Option<Components>,
}

#[derive(Deserialize)]
struct Components {
    #[serde(rename = "lifecycleInfo")]
    lifecycle_info: Option<LifecycleKeys>,
}

/// `lifecycleInfo` with its keys in text order; the two normalized fields kept as values.
struct LifecycleKeys {
    keys: Vec<String>,
    stage_names: Option<Value>,
    tasks_info: Option<Value>,
}

impl<'de> Deserialize<'de> for LifecycleKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = LifecycleKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lifecycleInfo as an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LifecycleKeys, A::Error> {
        let mut found = LifecycleKeys {
            keys: Vec::new(),
            stage_names: None,
            tasks_info: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "stageNames" => found.stage_names = Some(map.next_value()?),
                "tasksInfo" => found.tasks_info = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            found.keys.push(key);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::stages_in_order;

    #[test]
    fn a_stage_map_keeps_the_order_it_was_written_in() {
        let text = r#"{"info": {}, "internalComponents": {"lifecycleInfo":
            {"dev": [], "test": [{"template": {}}], "prod": [], "acceptance": []}}}"#;
        assert_eq!(
            stages_in_order(text).unwrap(),
            ["dev", "test", "prod", "acceptance"]
        );
    }

    #[test]
    fn the_normalized_shape_lists_stage_names_then_the_tasks_stages() {
        let text = r#"{"internalComponents": {"lifecycleInfo": {
            "tasksInfo": [{"stageName": "qa"}, {"stageName": "prod"}, {"stageName": "dev"}, {"stageName": "qa"}],
            "stageNames": ["dev", "prod"]}}}"#;
        assert_eq!(stages_in_order(text).unwrap(), ["dev", "prod", "qa"]);
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        for (text, says) in [
            ("{", "cannot be read"),
            (
                r#"{"internalComponents": {}}"#,
                "no internalComponents.lifecycleInfo",
            ),
            (
                r#"{"internalComponents": {"lifecycleInfo": []}}"#,
                "cannot be read",
            ),
        ] {
            let error = stages_in_order(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
