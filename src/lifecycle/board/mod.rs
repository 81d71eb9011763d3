//! The promotion board (`GET /board`, a departure from DESIGN §5: the dashboard needs each
//! version's stage order, which only its descriptor knows): one row per product version, its
//! stages as columns in descriptor order, each reached / running / failed / planned / not yet.

mod cells;
mod stages;

use futures_util::stream::{self, StreamExt};

pub use self::cells::{CellState, StageCell};
use super::error::CommandError;
use super::service::LifecycleService;
use crate::db::{self, Page};
use crate::registry::RegistryError;
pub use stages::stages_in_order;

/// Rows when `?limit` is not given: each row reads a descriptor (a remote registry: one request).
pub const DEFAULT_ROWS: i64 = 100;
/// Descriptors read at once from the registry.
const READS_AT_ONCE: usize = 8;

#[derive(Debug, Clone)]
pub struct BoardRow {
    /// The id of the version's first activity: the board's order and its `?after` cursor.
    pub id: i64,
    pub data_product_id: String,
    pub data_product_version: String,
    pub current_stage: Option<String>,
    pub stages: Vec<StageCell>,
    /// Why the stage order is not the descriptor's (it could not be read): the columns are
    /// then the stages in the order the version first met them.
    pub problem: Option<String>,
}

impl LifecycleService {
    /// A page of the board: versions in the order of their first activity.
    pub async fn board(&self, page: Page) -> Result<Vec<BoardRow>, CommandError> {
        let page = Page {
            limit: Some(page.limit.unwrap_or(DEFAULT_ROWS)),
            ..page
        };
        let versions = self
            .db
            .read(move |conn| {
                let versions = db::board_versions(conn, page)?;
                let rows = db::board_rows(conn, &versions)?;
                Ok::<_, CommandError>(
                    versions
                        .into_iter()
                        .zip(rows)
                        .map(|(v, (activities, lifecycles))| (v, activities, lifecycles))
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        let rows = stream::iter(versions)
            .map(|(version, activities, lifecycles)| async move {
                let order = self
                    .stage_order(&version.data_product_id, &version.data_product_version)
                    .await;
                let (order, problem) = match order {
                    Ok(order) => (order, None),
                    Err(problem) => (Vec::new(), Some(problem)),
                };
                let (stages, current_stage) = cells::cells(&order, &activities, &lifecycles);
                BoardRow {
                    id: version.first_activity.unwrap_or_default(),
                    data_product_id: version.data_product_id,
                    data_product_version: version.data_product_version,
                    current_stage,
                    stages,
                    problem,
                }
            })
            .buffered(READS_AT_ONCE)
            .collect()
            .await;
        Ok(rows)
    }

    /// The version's stages in descriptor order; why not, as text fit for callers (a registry's
    /// failure says which service failed, never its URL or its answer).
    async fn stage_order(&self, product: &str, version: &str) -> Result<Vec<String>, String> {
        let text = self
            .registry
            .descriptor_text(product, version)
            .await
            .map_err(|e| {
                let detail = match &e {
                    RegistryError::Unreachable(f) | RegistryError::Failed(f) => f.detail.clone(),
                    other => crate::telemetry::error_chain(other).to_string(),
                };
                tracing::warn!(product, version, error = %detail, "the board could not read a descriptor");
                match e {
                    RegistryError::Db(_) => "the descriptor could not be read from the database".into(),
                    other => other.to_string(),
                }
            })?;
        stages_in_order(&text)
    }
}
