//! What a command can answer besides success. The API maps each variant to one ODM error code.

use crate::db::{ApplyError, DbError};
use crate::domain::{ActivityId, TaskId};
use crate::lifecycle::state::Refusal;
use crate::policy::PolicyError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// 422 42201
    #[error("{0}")]
    InvalidActivity(String),
    /// 422 42202
    #[error("{0}")]
    DuplicatePlanned(String),
    /// 422 42203
    #[error("{0}")]
    InvalidCallback(String),
    /// 422 42213: over a `limits.*` bound (the text names it, its value and its key).
    #[error("{0}")]
    OverLimit(String),
    /// 413 41301: a callback's results over `limits.results_bytes`.
    #[error("{0}")]
    ResultsTooLarge(String),
    #[error("activity {0} not found")]
    ActivityNotFound(ActivityId),
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    /// 409 40901
    #[error("{0}")]
    ActivityConflict(String),
    /// 409 40911
    #[error("{0}")]
    TaskConflict(String),
    /// 401 40101
    #[error("{0}")]
    Unauthorized(String),
    /// 422 42204: the stage order or a blocking policy refused; the text names each.
    #[error("{0}")]
    PolicyBlocked(String),
    /// 503 50071 / 502 50271
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// 503 50071 / 502 50271 at START: what the activity is left as (`kept`) is said too.
    #[error("{error}: {kept}")]
    PolicyUnanswered { error: PolicyError, kept: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for CommandError {
    fn from(e: diesel::result::Error) -> Self {
        CommandError::Db(DbError::Query(e))
    }
}

impl From<Refusal> for CommandError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::ActivityConflict(m) => CommandError::ActivityConflict(m),
            Refusal::NotStartable(m) => CommandError::InvalidActivity(m),
            Refusal::TaskConflict(m) => CommandError::TaskConflict(m),
        }
    }
}

impl From<ApplyError> for CommandError {
    fn from(e: ApplyError) -> Self {
        match e {
            // Someone changed the rows between our read and our write (another request or the
            // engine on another replica): the caller's view is stale.
            ApplyError::Conflict(m) => CommandError::ActivityConflict(format!(
                "the activity changed while the request was handled ({m}); read it again"
            )),
            ApplyError::Query(e) => e.into(),
        }
    }
}
