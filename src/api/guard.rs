//! Checks made before any handler: acceptable `Accept`, API token. Plus the error envelope and
//! the request log, applied to every response.

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{ACCEPT, AUTHORIZATION};
use actix_web::{HttpRequest, HttpResponse};

use super::error::ApiError;
use crate::secret::Secret;

const ACCEPTABLE: [&str; 6] = [
    "application/json",
    "application/vnd.odmp.v1+json",
    "application/vnd.odmp+json",
    "application/*",
    "*/*",
    "*",
];

pub fn check(req: &HttpRequest, api_tokens: &[Secret]) -> Result<(), ApiError> {
    if !req.path().starts_with("/api/") {
        return Ok(());
    }
    check_accept(req)?;
    if !api_tokens.is_empty() && !is_callback(req) {
        check_token(req, api_tokens)?;
    }
    Ok(())
}

fn check_accept(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(accept) = req.headers().get(ACCEPT).and_then(|a| a.to_str().ok()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|range| {
        let essence = range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        essence.is_empty() || ACCEPTABLE.contains(&essence.as_str())
    });
    if acceptable {
        Ok(())
    } else {
        Err(ApiError::new(
            406,
            "40601",
            "Not acceptable",
            format!("cannot answer with {accept}: this API answers application/json"),
        ))
    }
}

/// A pipeline's callback carries its own token in the callbackRef, not an API token.
fn is_callback(req: &HttpRequest) -> bool {
    req.path().starts_with("/api/v1/pp/devops/tasks/")
        && req.path().ends_with("/status")
        && req
            .query_string()
            .split('&')
            .any(|p| p.eq_ignore_ascii_case("action=STOP"))
}

fn check_token(req: &HttpRequest, api_tokens: &[Secret]) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized("an API token is required: Authorization: Bearer <token>")
        })?;
    // Compare every byte of every token so the time taken says nothing about the right one.
    let matched = api_tokens.iter().fold(false, |found, t| {
        constant_time_eq(t.expose().as_bytes(), given.as_bytes()) | found
    });
    if matched {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the API token is not valid"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Gives an `ApiError` response ODM's envelope, with the request path.
pub fn with_envelope(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let Some(error) = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .cloned()
    else {
        return res;
    };
    let (req, _) = res.into_parts();
    let response = error.response(req.path());
    ServiceResponse::new(req, response)
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        404,
        "40400",
        "Not found",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
