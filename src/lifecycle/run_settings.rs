//! What a task's `configurations` say about how it runs (DESIGN §10): `timeout` (seconds) and
//! `retry: {max, backoff}` (runs after a failed one; seconds before the first of them, doubling).
//!
//! Checked strictly when an activity is created, so a typo is a 422 and not a surprise hours
//! later, and stored with the task as `RunSettings` (its own columns): the state machine never
//! reads configurations.

use serde_json::Value;

use crate::config::MAX_TASK_TIMEOUT_SECS;
use crate::domain::{RetryPolicy, RunSettings, MAX_RETRY_DELAY_MS};

/// Runs after the first one: enough for flaky pipelines, not a loop that hides a broken one.
pub const MAX_RETRIES: u64 = 10;
const DEFAULT_BACKOFF_SECS: f64 = 30.0;

/// The run settings of a task's configurations, or what is wrong with them (the field, what
/// was expected and what was found).
pub fn check(configurations: &Value) -> Result<RunSettings, String> {
    let Value::Object(map) = configurations else {
        return Ok(RunSettings::default());
    };
    let timeout_ms = match map.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(seconds(
            v,
            "timeout",
            false,
            MAX_TASK_TIMEOUT_SECS,
            "30 days",
        )?),
    };
    let retry = match map.get("retry") {
        None | Some(Value::Null) => None,
        Some(Value::Object(retry)) => {
            if let Some(unknown) = retry.keys().find(|k| *k != "max" && *k != "backoff") {
                return Err(format!(
                    "configurations.retry.{unknown} is not a retry setting (expected max and backoff)"
                ));
            }
            let max = match retry.get("max") {
                Some(Value::Number(n)) if n.as_u64().is_some_and(|m| m <= MAX_RETRIES) => {
                    n.as_u64().unwrap_or_default() as u32
                }
                Some(other) => {
                    return Err(format!(
                        "configurations.retry.max must be a whole number from 0 to {MAX_RETRIES}, found {other}"
                    ))
                }
                None => {
                    return Err(
                        "configurations.retry.max is missing: how many runs may follow a failed one"
                            .into(),
                    )
                }
            };
            let backoff_ms = match retry.get("backoff") {
                None | Some(Value::Null) => (DEFAULT_BACKOFF_SECS * 1000.0) as i64,
                Some(v) => seconds(v, "retry.backoff", true, MAX_RETRY_DELAY_MS as u64 / 1000, "an hour")?,
            };
            Some(RetryPolicy { max, backoff_ms })
        }
        Some(other) => {
            return Err(format!(
                "configurations.retry must be an object like {{\"max\": 2, \"backoff\": 30}}, found {other}"
            ))
        }
    };
    Ok(RunSettings { timeout_ms, retry })
}

/// A duration in seconds, as milliseconds; at most `max_secs` (`max_text` says it in words), so
/// a huge number is refused, never wrapped or saturated into something else.
fn seconds(
    value: &Value,
    field: &str,
    zero_allowed: bool,
    max_secs: u64,
    max_text: &str,
) -> Result<i64, String> {
    let secs = value.as_f64().filter(|s| s.is_finite());
    match secs {
        Some(s) if s > max_secs as f64 => Err(format!(
            "configurations.{field} must be at most {max_secs} seconds ({max_text}), found {value}"
        )),
        Some(s) if s > 0.0 || (zero_allowed && s == 0.0) => Ok((s * 1000.0) as i64),
        _ => Err(format!(
            "configurations.{field} must be a {} number of seconds, found {value}",
            if zero_allowed {
                "non-negative"
            } else {
                "positive"
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_timeout_and_retry() {
        let settings = check(&json!({"timeout": 90, "retry": {"max": 2, "backoff": 1.5}})).unwrap();
        assert_eq!(settings.timeout_ms, Some(90_000));
        assert_eq!(
            settings.retry,
            Some(RetryPolicy {
                max: 2,
                backoff_ms: 1500
            })
        );
        assert_eq!(
            check(&json!({"params": {}})).unwrap(),
            RunSettings::default()
        );
        assert_eq!(
            check(&json!({"retry": {"max": 1}})).unwrap().retry,
            Some(RetryPolicy {
                max: 1,
                backoff_ms: 30_000
            })
        );
    }

    #[test]
    fn bad_values_name_the_field_and_what_was_expected() {
        let cases = [
            (
                json!({"timeout": 0}),
                "configurations.timeout must be a positive number",
            ),
            (
                json!({"timeout": "1h"}),
                "configurations.timeout must be a positive number",
            ),
            (
                json!({"retry": 3}),
                "configurations.retry must be an object",
            ),
            (json!({"retry": {}}), "configurations.retry.max is missing"),
            (
                json!({"retry": {"max": -1}}),
                "configurations.retry.max must be a whole number",
            ),
            (json!({"retry": {"max": 11}}), "from 0 to 10, found 11"),
            (
                json!({"retry": {"max": 1.5}}),
                "configurations.retry.max must be a whole number",
            ),
            (
                json!({"retry": {"max": 1, "backoff": -2}}),
                "configurations.retry.backoff must be a non-negative number",
            ),
            (
                json!({"retry": {"max": 1, "delay": 2}}),
                "configurations.retry.delay is not a retry setting",
            ),
            (
                json!({"timeout": 1e300}),
                "configurations.timeout must be at most 2592000 seconds (30 days), found 1e+300",
            ),
            (
                json!({"timeout": 2_592_000.001}),
                "configurations.timeout must be at most 2592000 seconds",
            ),
            (
                json!({"timeout": u64::MAX}),
                "configurations.timeout must be at most 2592000 seconds",
            ),
            (
                json!({"retry": {"max": 1, "backoff": 1e300}}),
                "configurations.retry.backoff must be at most 3600 seconds (an hour), found 1e+300",
            ),
        ];
        for (configurations, expected) in cases {
            let error = check(&configurations).unwrap_err();
            assert!(error.contains(expected), "{configurations}: {error}");
        }
    }

    /// `1e300` once became a deadline in the past (the task timed out at once). A stored value
    /// over the cap (written before it existed) is ignored by the upgrade that moved run
    /// settings into columns: `tests/api/storage.rs`.
    #[test]
    fn the_longest_timeout_and_backoff_are_accepted_exactly() {
        let settings =
            check(&json!({"timeout": 2_592_000, "retry": {"max": 1, "backoff": 3600}})).unwrap();
        assert_eq!(settings.timeout_ms, Some(2_592_000_000));
        assert_eq!(settings.retry.unwrap().backoff_ms, 3_600_000);
    }
}
