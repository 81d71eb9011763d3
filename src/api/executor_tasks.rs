//! ODM's executor protocol (`/api/v1/up/executor`, outside the base path): a stock ODM DevOps
//! server sends its Azure DevOps tasks here (DESIGN §6). The work is `crate::executor_api`'s.

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::{read_json, BodyRules};
use super::error::ApiError;
use super::request::path_id;
use crate::executor::Secrets;
use crate::executor_api::{ExecutorApi, ExecutorApiError};
use crate::secret::Secret;

use super::ApiState;

/// `POST /api/v1/up/executor/tasks`: 201 with the task echoed (PROCESSING, or FAILED with
/// Azure's refusal in `errors`).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
    api: web::Data<ExecutorApi>,
) -> Result<HttpResponse, ApiError> {
    let body = read_json(&req, payload, state.body_limit, BodyRules::REQUIRED).await?;
    let task = api.create(body.unwrap_or_default(), secrets(&req)).await?;
    Ok(HttpResponse::Created().json(task))
}

/// `GET /api/v1/up/executor/tasks/{id}/status`: a bare JSON string, ODM's `TaskStatus`.
pub async fn status(
    req: HttpRequest,
    api: web::Data<ExecutorApi>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&req, "task")?;
    let status = api.status(id, secrets(&req)).await?;
    Ok(HttpResponse::Ok().json(status))
}

/// `x-odm-pat` / `x-odm-token`: what ODM's server forwards of the activity's secrets; they
/// authenticate this request to Azure DevOps instead of the executor's own identity. Held for
/// the request only (never stored or logged); blank ones are ignored.
fn secrets(req: &HttpRequest) -> Secrets {
    ["pat", "token"]
        .into_iter()
        .filter_map(|kind| {
            let value = req.headers().get(format!("x-odm-{kind}"))?.to_str().ok()?;
            let value = value.trim();
            (!value.is_empty()).then(|| (kind.to_owned(), Secret::new(value)))
        })
        .collect()
}

impl From<ExecutorApiError> for ApiError {
    fn from(e: ExecutorApiError) -> ApiError {
        match e {
            ExecutorApiError::InvalidTask(message) => {
                ApiError::new(422, "42201", "Task is invalid", message)
            }
            ExecutorApiError::Conflict(message) => {
                ApiError::new(409, "40901", "Task already has a run", message)
            }
            not_found @ ExecutorApiError::NotFound(_) => {
                ApiError::new(404, "40401", "Task not found", not_found.to_string())
            }
            ExecutorApiError::AzureUnavailable {
                message,
                retry_after,
            } => ApiError {
                retry_after: Some(retry_after.map_or(1, |d| d.as_secs().max(1))),
                ..ApiError::new(503, "50061", "Azure DevOps unavailable", message)
            },
            ExecutorApiError::AzureRefused(message) => {
                ApiError::new(502, "50261", "Azure DevOps refused the request", message)
            }
            ExecutorApiError::Db(e) => ApiError::database(e),
        }
    }
}
