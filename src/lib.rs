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
pub mod executor_api;
pub mod http_client;
pub mod keys;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod notifications;
pub mod placeholders;
pub mod policy;
pub mod registry;
pub mod resources;
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

/// The size of `value`'s compact JSON (what is stored and sent), or `None` when it is larger
/// than `max` (measured up to `max + 1` bytes only, never built). Here, beside `json_kind`,
/// because both the pure placeholder language and the limits (which read the configuration)
/// measure with it.
pub fn json_size_within(value: &serde_json::Value, max: usize) -> Option<usize> {
    let mut counter = JsonSizeCounter { count: 0, max };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.count)
}

/// Counts bytes written, failing past `max`.
struct JsonSizeCounter {
    count: usize,
    max: usize,
}

impl std::io::Write for JsonSizeCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.count = self.count.saturating_add(buf.len());
        if self.count > self.max {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
