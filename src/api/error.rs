//! Error policy: typed errors inside, one `ApiError` at the edge carrying ODM's code. A 500
//! tells the caller nothing internal; the log gets the whole cause chain.

use actix_web::http::header::RETRY_AFTER;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::clock::now_ms;
use crate::db::DbError;
use crate::lifecycle::CommandError;
use crate::policy::PolicyError;
use crate::registry::RegistryError;
use crate::telemetry::error_chain as chain;

/// ODM's error body, fields in ODM's order.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub status: u16,
    pub code: &'a str,
    pub description: &'a str,
    pub message: &'a str,
    pub path: &'a str,
    pub timestamp: i64,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (a 503 the client may simply repeat).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(
        status: u16,
        code: &'static str,
        description: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).expect("valid status"),
            code,
            description,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "40000", "Bad request", message)
    }

    /// A query parameter given twice, or one with a value it cannot have.
    pub fn bad_query(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "40001", "Bad query parameter", message)
    }

    /// The same refusal, as a query parameter's.
    pub fn into_bad_query(self) -> ApiError {
        ApiError::bad_query(self.message)
    }

    pub fn invalid_activity(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "42201", "Activity is invalid", message)
    }

    pub fn invalid_callback(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "42203", "Task status update is invalid", message)
    }

    /// 422 42213: over a `limits.*` bound.
    pub fn over_limit(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "42213", "Over a limit", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "40101", "Unauthorized", message)
    }

    /// For a failure the caller cannot act on: logged in full, answered generically.
    pub fn internal(cause: &dyn std::error::Error) -> ApiError {
        tracing::error!(error = %chain(cause), "request failed");
        ApiError::new(
            500,
            "50001",
            "Internal server error",
            "the service could not complete the request; see its log",
        )
    }

    /// A database error: 503 50301 with `Retry-After` when the database is overloaded (the
    /// message names the limit and its config key), else a generic 500.
    pub fn database(e: DbError) -> ApiError {
        match e {
            DbError::Overloaded(overload) => ApiError {
                retry_after: Some(overload.retry_after().as_secs().max(1)),
                ..ApiError::new(503, "50301", "Service overloaded", overload.to_string())
            },
            other => ApiError::internal(&other),
        }
    }

    /// The HTTP answer: ODM's envelope for `path`, and `Retry-After` when given.
    pub fn response(&self, path: &str) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((RETRY_AFTER, seconds));
        }
        response.json(self.envelope(path))
    }

    /// ODM's error envelope.
    pub fn envelope<'a>(&'a self, path: &'a str) -> Envelope<'a> {
        Envelope {
            status: self.status.as_u16(),
            code: self.code,
            description: self.description,
            message: &self.message,
            path,
            timestamp: now_ms(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.description, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    /// The path is unknown here; the envelope middleware rewrites the body with it.
    fn error_response(&self) -> HttpResponse {
        self.response("")
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let message = e.to_string();
        match e {
            CommandError::InvalidActivity(_) => ApiError::invalid_activity(message),
            CommandError::DuplicatePlanned(_) => {
                ApiError::new(422, "42202", "Activity already exists", message)
            }
            CommandError::InvalidCallback(_) => ApiError::invalid_callback(message),
            CommandError::OverLimit(_) => ApiError::over_limit(message),
            CommandError::ResultsTooLarge(_) => {
                ApiError::new(413, "41301", "Payload too large", message)
            }
            CommandError::ActivityNotFound(_) => {
                ApiError::new(404, "40401", "Activity not found", message)
            }
            CommandError::TaskNotFound(_) => ApiError::new(404, "40411", "Task not found", message),
            CommandError::ActivityConflict(_) => {
                ApiError::new(409, "40901", "Activity conflict", message)
            }
            CommandError::TaskConflict(_) => ApiError::new(409, "40911", "Task conflict", message),
            CommandError::Unauthorized(_) => ApiError::unauthorized(message),
            CommandError::PolicyBlocked(_) => {
                ApiError::new(422, "42204", "Blocked by a policy", message)
            }
            CommandError::Policy(e) => e.into(),
            CommandError::PolicyUnanswered { error, kept } => {
                ApiError::policy_unanswered(error, &format!("{kept}; start it again later"))
            }
            CommandError::Registry(e) => e.into(),
            CommandError::Db(e) => ApiError::database(e),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        let message = e.to_string();
        match e {
            RegistryError::NotFound { .. } | RegistryError::NoTemplates => {
                ApiError::invalid_activity(message)
            }
            RegistryError::Unreachable(failure) => {
                tracing::warn!(error = %failure.detail, "registry unreachable");
                ApiError::new(503, "50050", "Registry unreachable", message)
            }
            RegistryError::Failed(failure) => {
                tracing::warn!(error = %failure.detail, "registry error");
                ApiError::new(502, "50250", "Registry error", message)
            }
            RegistryError::Invalid(_) => {
                ApiError::new(422, "42211", "Descriptor is invalid", message)
            }
            RegistryError::OverLimit(_) => ApiError::over_limit(message),
            RegistryError::Db(e) => ApiError::database(e),
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> ApiError {
        ApiError::policy_unanswered(e, "the activity was not started, try again later")
    }
}

impl ApiError {
    /// The policy service did not give a verdict; `outcome` says what became of the request.
    fn policy_unanswered(e: PolicyError, outcome: &str) -> ApiError {
        let message = format!("{e}: {outcome}");
        match e {
            PolicyError::Unreachable(failure) => {
                tracing::warn!(error = %failure.detail, "policy service unreachable");
                ApiError::new(503, "50071", "Policy service unreachable", message)
            }
            PolicyError::Failed(failure) => {
                tracing::warn!(error = %failure.detail, "policy service error");
                ApiError::new(502, "50271", "Policy service error", message)
            }
        }
    }
}
