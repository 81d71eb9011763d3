//! `POST /{tenant}/oauth2/v2.0/token`: the client credentials grant of Microsoft Entra, with its
//! error shape (`error`, `error_description` starting with the AADSTS code). The client proves
//! itself with `client_secret`, or with a federated token (workload identity):
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and the JWT
//! as `client_assertion`, accepted when `federatedTokens` lists it.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::answer::{respond, take_fault, Answer};
use super::state::SimState;

pub(crate) async fn token(
    req: HttpRequest,
    tenant: web::Path<String>,
    body: web::Bytes,
    state: web::Data<SimState>,
) -> HttpResponse {
    state.lock().stats.token_requests += 1;
    let (fault, refusal) = take_fault(&state, &req);
    let answer = refusal.unwrap_or_else(|| grant(&state, &tenant, &body));
    respond(&state, &req, fault.as_ref(), answer).await
}

fn grant(state: &SimState, tenant: &str, body: &[u8]) -> Answer {
    let form = std::str::from_utf8(body)
        .ok()
        .and_then(|text| web::Query::<HashMap<String, String>>::from_query(text).ok())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let mut inner = state.lock();
    let config = &inner.config;
    let refusal = if tenant != config.tenant {
        Some((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        ))
    } else if field("grant_type") != "client_credentials" {
        Some((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!(
                "AADSTS70003: The app requested an unsupported grant type '{}'.",
                field("grant_type")
            ),
        ))
    } else if field("client_id") != config.client_id {
        Some((
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("AADSTS700016: Application with identifier '{}' was not found in the directory '{tenant}'.", field("client_id")),
        ))
    } else if let Some(refusal) = assertion_refusal(&form, &config.federated_tokens) {
        Some(refusal)
    } else if form.contains_key("client_assertion") {
        None
    } else if !form.contains_key("client_secret") {
        Some((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000216,
            "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".into(),
        ))
    } else if field("client_secret") != config.client_secret {
        Some((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", config.client_id),
        ))
    } else if field("scope") != config.scope {
        Some((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("AADSTS1002012: The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", field("scope")),
        ))
    } else {
        None
    };
    if let Some((status, error, code, description)) = refusal {
        if form.contains_key("client_assertion") {
            inner.stats.assertions_refused += 1;
        }
        return Answer::Json(
            status,
            json!({
                "error": error,
                "error_description": description,
                "error_codes": [code],
                "timestamp": super::state::now_text(),
                "trace_id": uuid::Uuid::new_v4().to_string(),
                "correlation_id": uuid::Uuid::new_v4().to_string(),
            }),
        );
    }
    if form.contains_key("client_assertion") {
        inner.stats.assertions_accepted += 1;
    }
    let (token, expires_in) = inner.issue_token();
    Answer::Json(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
               "access_token": token}),
    )
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

type Refusal = (StatusCode, &'static str, u32, String);

/// Why a client assertion is refused, as Entra says it; `None` when the form has none or it is
/// a federated token the app trusts.
fn assertion_refusal(form: &HashMap<String, String>, trusted: &[String]) -> Option<Refusal> {
    let assertion_type = form.get("client_assertion_type");
    let assertion = form.get("client_assertion");
    if assertion_type.is_none() && assertion.is_none() {
        return None;
    }
    if assertion_type.map(String::as_str) != Some(JWT_BEARER) {
        return Some((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50027,
            format!(
                "AADSTS50027: client_assertion_type must be '{JWT_BEARER}', got '{}'.",
                assertion_type.map_or("", String::as_str)
            ),
        ));
    }
    let assertion = assertion.map_or("", String::as_str);
    let is_jwt = assertion.split('.').count() == 3 && assertion.split('.').all(|p| !p.is_empty());
    if !is_jwt {
        return Some((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            50027,
            "AADSTS50027: JWT token is invalid or malformed.".into(),
        ));
    }
    if !trusted.iter().any(|t| t == assertion) {
        return Some((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            70021,
            "AADSTS70021: No matching federated identity record found for presented assertion."
                .into(),
        ));
    }
    None
}
