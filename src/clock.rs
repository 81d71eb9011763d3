//! Time as the service stores it (epoch milliseconds) and shows it (ODM's format, UTC).

use chrono::{TimeZone, Utc};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
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
    #[test]
    fn odm_timestamp_format() {
        assert_eq!(
            super::format_ms(1_700_749_920_000),
            "2023-11-23T14:32:00.000+00:00"
        );
        assert_eq!(super::format_ms(5), "1970-01-01T00:00:00.005+00:00");
    }
}
