//! Lifecycle rows: which stage each product version reached, and when.

use diesel::prelude::*;

use super::{Conn, Page};
use crate::db::models::*;
use crate::db::schema::lifecycles;

#[derive(Debug, Default, Clone)]
pub struct LifecycleFilter {
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
    pub page: Page,
}

pub fn list_lifecycles(
    conn: &mut Conn,
    filter: &LifecycleFilter,
) -> QueryResult<Vec<LifecycleRow>> {
    let mut query = lifecycles::table.into_boxed();
    if let Some(v) = &filter.data_product_id {
        query = query.filter(lifecycles::data_product_id.eq(v.clone()));
    }
    if let Some(v) = &filter.data_product_version {
        query = query.filter(lifecycles::data_product_version.eq(v.clone()));
    }
    if let Some(after) = filter.page.after {
        query = query.filter(lifecycles::id.gt(after));
    }
    if let Some(limit) = filter.page.limit {
        query = query.limit(limit);
    }
    query
        .order(lifecycles::id)
        .select(LifecycleRow::as_select())
        .load(conn)
}

pub fn current_lifecycle(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Option<LifecycleRow>> {
    lifecycles::table
        .filter(lifecycles::data_product_id.eq(product))
        .filter(lifecycles::data_product_version.eq(version))
        .filter(lifecycles::finished_at.is_null())
        .select(LifecycleRow::as_select())
        .first(conn)
        .optional()
}
