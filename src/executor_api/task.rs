//! ODM's `TaskResource` as ODM's DevOps server sends it to an executor: `id` a number,
//! `activityId` a string, `callbackRef`, `template` and `configurations` as **JSON text**, dates
//! as epoch milliseconds (Jackson's default for `java.util.Date`) or ISO text; `executorRef` is
//! never sent (ODM marks it `@JsonIgnore`) and unknown fields are ignored.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A task as read from the request, before anything is resolved.
#[derive(Debug, Clone)]
pub struct OdmTask {
    pub id: i64,
    pub activity_id: Option<i64>,
    pub callback_ref: String,
    /// The template (a JSON object), as sent.
    pub template: Value,
    /// The configurations (a JSON object; none sent = `{}`) without `context`.
    pub configurations: Value,
    /// `configurations.context` (`{}` when absent): what leftover placeholders resolve against.
    /// Never sent to Azure.
    pub context: Value,
    /// The request body, every field as sent: what the answer echoes.
    pub echo: Map<String, Value>,
    /// Identifies the run request: the same again is a replay.
    pub fingerprint: String,
}

const DATES: [&str; 3] = ["createdAt", "startedAt", "finishedAt"];

/// The task, or every problem found (each naming its field).
pub fn parse(body: Value) -> Result<OdmTask, Vec<String>> {
    let Value::Object(echo) = body else {
        return Err(vec![format!(
            "the body must be ODM's TaskResource (a JSON object), got {}",
            kind(&body)
        )]);
    };
    let mut problems = Vec::new();
    let id = match echo.get("id") {
        None | Some(Value::Null) => {
            problems.push("id is missing: expected the task id (a positive number)".into());
            None
        }
        Some(value) => positive(value).or_else(|| {
            problems.push(format!("id must be a positive number, got {}", kind(value)));
            None
        }),
    };
    let callback_ref = match echo.get("callbackRef") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        None | Some(Value::Null) => {
            problems.push(
                "callbackRef is missing: expected the URL the pipeline calls back (the \
                 pipeline's callbackRef parameter)"
                    .into(),
            );
            None
        }
        Some(other) => {
            problems.push(format!(
                "callbackRef must be a non-blank URL, got {}",
                kind(other)
            ));
            None
        }
    };
    let template = match json_text(&echo, "template", &mut problems) {
        Some(Value::Object(map)) => {
            let missing: Vec<&str> = ["organization", "project", "pipelineId"]
                .into_iter()
                .filter(|key| map.get(*key).is_none_or(Value::is_null))
                .collect();
            if !missing.is_empty() {
                problems.push(format!(
                    "template lacks {}: an Azure DevOps task names its organization, project \
                     and pipelineId",
                    missing.join(", ")
                ));
            }
            Some(Value::Object(map))
        }
        None => {
            if echo.get("template").is_none_or(Value::is_null) {
                problems.push(
                    "template is missing: expected JSON text of {organization, project, \
                     pipelineId, branch}"
                        .into(),
                );
            }
            None
        }
        Some(other) => {
            problems.push(format!(
                "template must hold a JSON object (organization, project, pipelineId, \
                 branch), got {}",
                kind(&other)
            ));
            None
        }
    };
    let (configurations, context) = match json_text(&echo, "configurations", &mut problems) {
        None => (Value::Object(Map::new()), Value::Object(Map::new())),
        Some(Value::Object(mut map)) => {
            let context = match map.remove("context") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                // ODM's older servers put the context in as text.
                Some(Value::String(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                    problems.push(format!("configurations.context is not JSON: {e}"));
                    Value::Null
                }),
                Some(context) => context,
            };
            (Value::Object(map), context)
        }
        Some(other) => {
            problems.push(format!(
                "configurations must hold a JSON object (params, stagesToSkip, variables), got {}",
                kind(&other)
            ));
            (Value::Null, Value::Null)
        }
    };
    for key in DATES {
        if let Some(value) = echo.get(key) {
            if !is_date(value) {
                problems.push(format!(
                    "{key} must be a date: epoch milliseconds or ISO 8601 text, got {}",
                    kind(value)
                ));
            }
        }
    }
    let activity_id = match echo.get("activityId") {
        None | Some(Value::Null) => None,
        Some(value) => match positive(value) {
            Some(id) => Some(id),
            None if value.is_string() => None,
            None => {
                problems.push(format!("activityId must be a string, got {}", kind(value)));
                None
            }
        },
    };
    match (id, callback_ref, template) {
        (Some(id), Some(callback_ref), Some(template)) if problems.is_empty() => {
            let fingerprint = fingerprint(&echo);
            Ok(OdmTask {
                id,
                activity_id,
                callback_ref,
                template,
                configurations,
                context,
                echo,
                fingerprint,
            })
        }
        _ => Err(problems),
    }
}

/// `key` read as JSON text (ODM) or, leniently, as the JSON value itself; `None` when absent.
fn json_text(fields: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> Option<Value> {
    match fields.get(key)? {
        Value::Null => None,
        Value::String(text) => match serde_json::from_str(text) {
            Ok(value) => Some(value),
            Err(e) => {
                problems.push(format!("{key} is not JSON text: {e}"));
                None
            }
        },
        other => Some(other.clone()),
    }
}

fn positive(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|id| *id > 0)
}

/// Epoch milliseconds, or ISO 8601 text with or without an offset (Jackson writes both).
fn is_date(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => {
            let s = s.trim();
            chrono::DateTime::parse_from_rfc3339(s).is_ok()
                || chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").is_ok()
                || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        }
        _ => false,
    }
}

/// SHA-256 of what decides the run (callbackRef, template, configurations with context),
/// parsed, so whitespace, key order and JSON-text-versus-object do not make it another task.
fn fingerprint(fields: &Map<String, Value>) -> String {
    let mut hash = Sha256::new();
    for key in ["callbackRef", "template", "configurations"] {
        let value = match fields.get(key) {
            Some(Value::String(text)) if key != "callbackRef" => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
            Some(value) => value.clone(),
            None => Value::Null,
        };
        hash.update(key.as_bytes());
        hash.update([0]);
        canonical(&value, &mut hash);
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Objects with their keys sorted, whatever order the JSON map keeps.
fn canonical(value: &Value, hash: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hash.update(b"{");
            for key in keys {
                hash.update(Value::String(key.clone()).to_string().as_bytes());
                hash.update(b":");
                canonical(&map[key], hash);
                hash.update(b",");
            }
            hash.update(b"}");
        }
        Value::Array(items) => {
            hash.update(b"[");
            for item in items {
                canonical(item, hash);
                hash.update(b",");
            }
            hash.update(b"]");
        }
        scalar => hash.update(scalar.to_string().as_bytes()),
    }
}

fn kind(value: &Value) -> String {
    crate::executor::azure_devops::describe_value(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn odm_body() -> Value {
        json!({
            "id": 7, "activityId": "3", "callbackRef": "http://odm/tasks/7/status?action=STOP",
            "template": "{\"organization\":\"o\",\"project\":\"p\",\"pipelineId\":\"3\",\"branch\":\"main\"}",
            "configurations": "{\"stagesToSkip\":[],\"params\":{\"a\":1},\"context\":{\"dev\":{\"status\":\"PROCESSED\"}}}",
            "status": "PROCESSING", "results": null, "errors": null,
            "createdAt": 1714558530000u64, "startedAt": "2024-05-01T10:15:30.000+00:00",
            "finishedAt": null, "somethingNew": {"x": 1}
        })
    }

    #[test]
    fn odm_json_text_fields_and_dates_are_read_and_context_set_apart() {
        let task = parse(odm_body()).unwrap();
        assert_eq!((task.id, task.activity_id), (7, Some(3)));
        assert_eq!(task.template["pipelineId"], "3");
        assert_eq!(
            task.configurations,
            json!({"stagesToSkip": [], "params": {"a": 1}})
        );
        assert_eq!(task.context, json!({"dev": {"status": "PROCESSED"}}));
        assert_eq!(task.echo["somethingNew"], json!({"x": 1}));
        for date in [
            "2024-05-01T10:15:30Z",
            "2024-05-01T10:15:30.123",
            "2024-05-01T10:15:30.000+0000",
        ] {
            let mut body = odm_body();
            body["createdAt"] = json!(date);
            assert!(parse(body).is_ok(), "{date}");
        }
    }

    #[test]
    fn the_fingerprint_ignores_layout_and_other_fields_but_not_the_run() {
        let mut other_layout = odm_body();
        other_layout["template"] =
            json!({"branch": "main", "pipelineId": "3", "project": "p", "organization": "o"});
        other_layout["status"] = json!("PLANNED");
        other_layout["createdAt"] = json!("2024-05-01T10:15:30Z");
        let same = parse(odm_body()).unwrap().fingerprint;
        assert_eq!(parse(other_layout).unwrap().fingerprint, same);
        let mut other_run = odm_body();
        other_run["callbackRef"] = json!("http://odm/tasks/8/status?action=STOP");
        assert_ne!(parse(other_run).unwrap().fingerprint, same);
    }

    #[test]
    fn every_problem_is_named() {
        let problems = parse(json!({
            "activityId": [1], "template": "{\"organization\": \"o\"}",
            "configurations": "[1]", "createdAt": "yesterday"
        }))
        .unwrap_err()
        .join("; ");
        for expected in [
            "id is missing",
            "callbackRef is missing",
            "template lacks project, pipelineId",
            "configurations must hold a JSON object",
            "createdAt must be a date",
            "activityId must be a string",
        ] {
            assert!(problems.contains(expected), "{expected}: {problems}");
        }
        let problems = parse(json!({"id": 1, "callbackRef": "x", "template": "{oops"}))
            .unwrap_err()
            .join("; ");
        assert!(problems.contains("template is not JSON text"), "{problems}");
        assert!(parse(json!([1])).is_err());
    }
}
