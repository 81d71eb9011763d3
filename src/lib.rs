//! odm-devops: the DevOps lifecycle of data products (see README.md and DESIGN.md).

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod descriptor;
pub mod domain;
pub mod executor;
pub mod http_client;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod placeholders;
pub mod registry;
pub mod secret;
pub mod simulator;
pub mod telemetry;

/// "an object", "a string"…: a JSON value's kind, for error messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
