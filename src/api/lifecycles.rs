//! `/api/v1/pp/devops/lifecycles`

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::request::{path_text, Query};
use super::resources::LifecycleResource;
use super::ApiState;
use crate::db::LifecycleFilter;

async fn rows(state: &ApiState, filter: LifecycleFilter) -> Result<HttpResponse, ApiError> {
    let rows = state.lifecycle.lifecycles(filter).await?;
    Ok(HttpResponse::Ok().json(
        rows.into_iter()
            .map(LifecycleResource::from)
            .collect::<Vec<_>>(),
    ))
}

pub async fn all(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let filter = LifecycleFilter {
        page: Query::of(&req)?.page()?,
        ..LifecycleFilter::default()
    };
    rows(&state, filter).await
}

pub async fn of_product(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let filter = LifecycleFilter {
        data_product_id: Some(path_text(&req, "product")?),
        data_product_version: None,
        page: Query::of(&req)?.page()?,
    };
    rows(&state, filter).await
}

pub async fn of_version(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let filter = LifecycleFilter {
        data_product_id: Some(path_text(&req, "product")?),
        data_product_version: Some(path_text(&req, "version")?),
        page: Query::of(&req)?.page()?,
    };
    rows(&state, filter).await
}

/// The current row, or 200 with an empty body when the version never completed a stage (ODM).
pub async fn current(
    req: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let current = state
        .lifecycle
        .current_lifecycle(path_text(&req, "product")?, path_text(&req, "version")?)
        .await?;
    Ok(match current {
        Some(row) => HttpResponse::Ok().json(LifecycleResource::from(row)),
        None => HttpResponse::Ok().finish(),
    })
}
