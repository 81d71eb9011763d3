//! Sending one outbox row to its listener: the event completed (its id; the descriptor, for the
//! events that carry it, read from the registry now), its body made for the listener, POSTed.
//! 2xx is delivered; anything else is an error the engine tries again later.

use std::time::Duration;

use serde_json::Value;

use super::Listener;
use crate::domain::EventType;
use crate::registry::{Registry, RegistryError};
use crate::telemetry::error_chain;

/// One row to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub event_type: EventType,
    /// The event as stored (`event_body`).
    pub payload: String,
}

/// Sends `delivery` to `listener`; the error says why it was not delivered (no secret, no
/// answer body: those may hold anything).
pub async fn deliver(
    listener: &Listener,
    registry: &Registry,
    delivery: &Delivery,
    timeout: Duration,
) -> Result<(), String> {
    let mut event: Value = serde_json::from_str(&delivery.payload)
        .map_err(|e| format!("the stored event is not JSON: {e}"))?;
    event["id"] = Value::from(delivery.id);
    if delivery.event_type.carries_descriptor() {
        event["afterState"]["dataProductVersion"] = descriptor(registry, &event).await?;
    }
    let body = listener.body(&event)?;
    let mut request = crate::http_client::client()
        .post(&listener.endpoint)
        .timeout(timeout)
        .insert_header(("Content-Type", "application/json"));
    for (name, value) in listener.headers() {
        request = request.insert_header((name, value.expose()));
    }
    let answer = request
        .send_body(body)
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered HTTP {status}"))
    }
}

/// The product version's descriptor as the registry has it now; null once it is gone.
async fn descriptor(registry: &Registry, event: &Value) -> Result<Value, String> {
    let activity = &event["afterState"]["activity"];
    let (Some(product), Some(version)) = (
        activity["dataProductId"].as_str(),
        activity["dataProductVersion"].as_str(),
    ) else {
        return Ok(Value::Null);
    };
    match registry.descriptor(product, version).await {
        Ok(descriptor) => Ok(descriptor),
        Err(RegistryError::NotFound { .. }) => Ok(Value::Null),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "notification: the registry could not give the descriptor");
            Err("the registry could not give the product version's descriptor".into())
        }
    }
}
