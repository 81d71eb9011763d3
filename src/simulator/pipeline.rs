//! A run behaves like the example pipelines: it works for a while, then its last step PATCHes
//! the `callbackRef` parameter with the outcome, then the run completes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::config::{Behaviour, CallbackMode, SimResult};
use super::state::{now_us, CallbackRecord, SimState};

thread_local! {
    // awc clients are !Send: one per worker thread, reused for its connection pool.
    static CLIENT: awc::Client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
}

/// Starts the run's clock (on the calling worker's runtime, so the server never waits for it).
pub(crate) fn schedule(state: Arc<SimState>, run_id: i32, behaviour: Behaviour, default_ms: u64) {
    if behaviour.manual {
        return;
    }
    let delay = Duration::from_millis(behaviour.delay_ms.unwrap_or(default_ms));
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(delay).await;
        finish(&state, run_id, &behaviour).await;
    });
}

/// Calls back (unless the run was cancelled meanwhile or calls back never), then completes the
/// run with the behaviour's result. Returns false when the run had already ended.
pub(crate) async fn finish(state: &SimState, run_id: i32, behaviour: &Behaviour) -> bool {
    let (callback_ref, parameters) = {
        let inner = state.lock();
        match inner.runs.get(&run_id) {
            Some(run) if run.state != "completed" => (
                run.template_parameters.get("callbackRef").cloned(),
                run.template_parameters.clone(),
            ),
            _ => return false,
        }
    };
    let body = match (behaviour.callback, behaviour.result) {
        (CallbackMode::None, _) => None,
        (CallbackMode::Empty, _) => Some(None),
        (CallbackMode::Body, SimResult::Succeeded) => {
            let mut body = json!({"status": "PROCESSED"});
            if !behaviour.results.is_null() {
                body["results"] = substitute(&behaviour.results, &parameters, run_id);
            }
            Some(Some(body))
        }
        (CallbackMode::Body, SimResult::Failed) => Some(Some(json!({
            "status": "FAILED",
            "errors": substitute(&Value::String(behaviour.errors.clone()), &parameters, run_id),
        }))),
    };
    if let Some(body) = body {
        let record = match callback_ref {
            Some(url) => call_back(url, body).await,
            None => CallbackRecord {
                url: String::new(),
                body,
                status: None,
                answered_at_us: None,
                error: Some("the run has no callbackRef parameter".into()),
            },
        };
        let mut inner = state.lock();
        inner.stats.callbacks_sent += u64::from(record.status.is_some());
        if let Some(run) = inner.runs.get_mut(&run_id) {
            run.callback = Some(record);
        }
    }
    let completed = state.lock().complete(run_id, behaviour.result.as_str());
    if completed {
        super::hooks::announce(state, run_id).await;
    }
    completed
}

async fn call_back(url: String, body: Option<Value>) -> CallbackRecord {
    let request = CLIENT.with(|client| client.patch(&url));
    let sent = match &body {
        Some(json) => request.send_json(json).await,
        None => request.send().await,
    };
    let answered_at_us = sent.is_ok().then(now_us);
    let (status, error) = match sent {
        Ok(mut response) => {
            // Read the answer so the connection can be reused.
            let _ = response.body().await;
            (Some(response.status().as_u16()), None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    if let Some(error) = &error {
        tracing::warn!(%error, "simulated pipeline could not call back");
    }
    CallbackRecord {
        url,
        body,
        status,
        answered_at_us,
        error,
    }
}

/// `${{ parameters.name }}` and `${{ run.id }}` inside strings, at any depth.
pub(crate) fn substitute(
    value: &Value,
    parameters: &BTreeMap<String, String>,
    run_id: i32,
) -> Value {
    match value {
        Value::String(text) => Value::String(expand(text, parameters, run_id)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| substitute(v, parameters, run_id))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, parameters, run_id)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn expand(text: &str, parameters: &BTreeMap<String, String>, run_id: i32) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        let expression = rest[start + 3..start + len].trim();
        let value = match expression.strip_prefix("parameters.") {
            Some(name) => parameters.get(name).cloned(),
            None if expression == "run.id" => Some(run_id.to_string()),
            None => None,
        };
        out.push_str(&rest[..start]);
        match value {
            Some(value) => out.push_str(&value),
            // Unknown expressions stay visible, as a YAML template would fail loudly on them.
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_run_id_are_replaced_at_any_depth() {
        let parameters = BTreeMap::from([("vm".to_owned(), "vm-dev".to_owned())]);
        let results = json!({"vm": {"name": "${{ parameters.vm }}", "ids": ["run-${{run.id}}"]},
                             "other": "${{ parameters.missing }} and ${{ x", "n": 3});
        assert_eq!(
            substitute(&results, &parameters, 42),
            json!({"vm": {"name": "vm-dev", "ids": ["run-42"]},
                   "other": "${{ parameters.missing }} and ${{ x", "n": 3})
        );
    }
}
