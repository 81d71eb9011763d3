//! The embedded registry: `/api/v1/pp/registry/products/{product}/versions[/{version}]`.

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::body::{read_json_text, BodyRules};
use super::error::ApiError;
use super::request::path_text;
use super::ApiState;

pub async fn put(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (product, version) = (path_text(&req, "product")?, path_text(&req, "version")?);
    let rules = BodyRules {
        optional: false,
        any_content_type: false,
    };
    let (descriptor, text) = read_json_text(&req, payload, state.body_limit, rules)
        .await?
        .unwrap_or_default();
    let created = state
        .lifecycle
        .registry()
        .put(&product, &version, &descriptor, &text)
        .await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(descriptor))
}

pub async fn get(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let (product, version) = (path_text(&req, "product")?, path_text(&req, "version")?);
    match state
        .lifecycle
        .registry()
        .stored(&product, &version)
        .await?
    {
        Some(content) => Ok(HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(content)),
        None => Err(ApiError::new(
            404,
            "40421",
            "Descriptor not found",
            format!("version {version} of product {product} is not in the registry"),
        )),
    }
}

pub async fn versions(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let versions = state
        .lifecycle
        .registry()
        .versions(&path_text(&req, "product")?)
        .await?;
    Ok(HttpResponse::Ok().json(json!(versions)))
}
