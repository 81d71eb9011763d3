//! How a task runs beyond its pipeline (DESIGN §10): its own timeout and its retries of failed
//! runs. Read from `configurations` once, when the activity is created
//! (`lifecycle::run_settings::check`), and stored in columns of their own, so that no decision
//! ever parses a task's configurations.

/// No single wait between runs is longer than an hour.
pub const MAX_RETRY_DELAY_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSettings {
    /// `configurations.timeout`; `None`: the engine's default (`engine.task_timeout_secs`).
    pub timeout_ms: Option<i64>,
    /// `configurations.retry`; `None`: a failed run fails the task.
    pub retry: Option<RetryPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs allowed after the first one fails.
    pub max: u32,
    pub backoff_ms: i64,
}

impl RetryPolicy {
    /// The wait before the run that follows `failed_runs` failed ones.
    pub fn delay_ms(&self, failed_runs: i32) -> i64 {
        let doublings = failed_runs.saturating_sub(1).clamp(0, 20) as u32;
        self.backoff_ms
            .saturating_mul(1i64 << doublings)
            .min(MAX_RETRY_DELAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_backoff_and_is_capped() {
        let policy = RetryPolicy {
            max: 10,
            backoff_ms: 1000,
        };
        let waits: Vec<i64> = (1..=4).map(|n| policy.delay_ms(n)).collect();
        assert_eq!(waits, vec![1000, 2000, 4000, 8000]);
        assert_eq!(policy.delay_ms(40), MAX_RETRY_DELAY_MS);
    }
}
