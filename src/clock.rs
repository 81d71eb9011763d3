//! Time as the service stores it (epoch milliseconds) and shows it (ODM's format, UTC).

use chrono::{TimeZone, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Seconds (from configuration) as milliseconds, saturating: no setting can wrap into a
/// negative or tiny duration.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A duration (possibly from outside: `Retry-After`) as milliseconds, saturating.
pub fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `yyyy-MM-dd'T'HH:mm:ss.SSS+00:00`
pub fn format_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn conversions_saturate() {
        assert_eq!(super::secs_to_ms(90), 90_000);
        assert_eq!(super::secs_to_ms(u64::MAX), i64::MAX);
        assert_eq!(super::secs_to_ms(u64::MAX / 1000), i64::MAX);
        assert_eq!(super::duration_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(super::duration_ms(Duration::MAX), i64::MAX);
        assert_eq!(super::duration_ms(Duration::from_secs(u64::MAX)), i64::MAX);
    }

    #[test]
    fn odm_timestamp_format() {
        assert_eq!(
            super::format_ms(1_700_749_920_000),
            "2023-11-23T14:32:00.000+00:00"
        );
        assert_eq!(super::format_ms(5), "1970-01-01T00:00:00.005+00:00");
    }
}
