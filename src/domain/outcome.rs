//! How a task ends, and what a pipeline's callback said.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TaskStatus;

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Processed {
        results: Option<Value>,
    },
    /// The task cannot succeed (nothing sent, rejected, timed out): no retry.
    Failed {
        errors: String,
    },
    /// The provider's run failed: `configurations.retry` may run the task again.
    RunFailed {
        errors: String,
    },
    Aborted {
        reason: String,
    },
}

/// Text with NUL characters replaced by U+FFFD: providers' messages and pipelines' logs may
/// hold anything, and PostgreSQL cannot store NUL in text (the task would never finish).
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

impl Outcome {
    /// The outcome as it can be stored (see `without_nul`).
    pub fn without_nul(self) -> Outcome {
        match self {
            Outcome::Failed { errors } => Outcome::Failed {
                errors: without_nul(errors),
            },
            Outcome::RunFailed { errors } => Outcome::RunFailed {
                errors: without_nul(errors),
            },
            Outcome::Aborted { reason } => Outcome::Aborted {
                reason: without_nul(reason),
            },
            processed @ Outcome::Processed { .. } => processed,
        }
    }
}

/// What a callback said, kept as-is (JSON in `tasks.reported_outcome`) to recognise a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub status: ReportedStatus,
    pub results: Option<Value>,
    pub errors: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportedStatus {
    Processed,
    Failed,
}

impl Report {
    /// The report as it can be stored, so that a replay compares equal to what was recorded.
    pub fn without_nul(self) -> Report {
        Report {
            errors: self.errors.map(without_nul),
            ..self
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self.status {
            ReportedStatus::Processed => Outcome::Processed {
                results: self.results.clone(),
            },
            ReportedStatus::Failed => Outcome::RunFailed {
                errors: self
                    .errors
                    .clone()
                    .unwrap_or_else(|| "the pipeline reported a failure".into()),
            },
        }
    }

    pub fn task_status(&self) -> TaskStatus {
        match self.status {
            ReportedStatus::Processed => TaskStatus::Processed,
            ReportedStatus::Failed => TaskStatus::Failed,
        }
    }
}
