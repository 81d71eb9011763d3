//! `GET /api/v1/pp/devops/board`: the promotion board the dashboard draws (computed by
//! `lifecycle::board`). Not in DESIGN §5: added for the dashboard, protected like every route.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::request::Query;
use super::ApiState;
use crate::clock::format_ms;
use crate::lifecycle::{BoardRow, StageCell};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BoardRowResource {
    id: i64,
    data_product_id: String,
    data_product_version: String,
    current_stage: Option<String>,
    stages: Vec<CellResource>,
    problem: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CellResource {
    stage: String,
    state: &'static str,
    in_descriptor: bool,
    activity_id: Option<i64>,
    activity_status: Option<String>,
    at: Option<String>,
    reached_at: Option<String>,
    current: bool,
    activities: usize,
}

impl From<StageCell> for CellResource {
    fn from(c: StageCell) -> Self {
        CellResource {
            stage: c.stage,
            state: c.state.name(),
            in_descriptor: c.in_descriptor,
            activity_id: c.activity.map(|(id, _)| id.get()),
            activity_status: c.activity.map(|(_, status)| status.to_string()),
            at: c.at.map(format_ms),
            reached_at: c.reached_at.map(format_ms),
            current: c.current,
            activities: c.activities,
        }
    }
}

impl From<BoardRow> for BoardRowResource {
    fn from(r: BoardRow) -> Self {
        BoardRowResource {
            id: r.id,
            data_product_id: r.data_product_id,
            data_product_version: r.data_product_version,
            current_stage: r.current_stage,
            stages: r.stages.into_iter().map(CellResource::from).collect(),
            problem: r.problem,
        }
    }
}

/// `?limit` (default `lifecycle::DEFAULT_ROWS`) and `?after=<id>` as the lists read them.
pub async fn board(req: HttpRequest, state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let rows = state.lifecycle.board(Query::of(&req)?.page()?).await?;
    Ok(HttpResponse::Ok().json(
        rows.into_iter()
            .map(BoardRowResource::from)
            .collect::<Vec<_>>(),
    ))
}
