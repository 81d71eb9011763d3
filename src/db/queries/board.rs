//! What the promotion board reads (`GET /board`): the product versions that have activities,
//! a page at a time, and the light columns of their activities and lifecycle rows (never
//! `results`, `errors` or secrets: a board of many versions must stay cheap).

use std::collections::HashMap;

use diesel::dsl::min;
use diesel::prelude::*;

use super::{Conn, Page};
use crate::db::schema::{activities, lifecycles};
use crate::domain::{ActivityId, ActivityStatus};

/// A product version on the board; `first_activity` (the id of its first activity) orders the
/// board and is the `?after` cursor.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct BoardVersion {
    pub data_product_id: String,
    pub data_product_version: String,
    pub first_activity: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct BoardActivity {
    pub id: ActivityId,
    pub stage: String,
    pub status: ActivityStatus,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct BoardLifecycle {
    pub id: i64,
    pub stage: String,
    pub activity_id: Option<ActivityId>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// The versions whose first activity comes after `page.after`, in that order, `page.limit` of them.
pub fn board_versions(conn: &mut Conn, page: Page) -> QueryResult<Vec<BoardVersion>> {
    let first = min(activities::id);
    let mut query = activities::table
        .group_by((
            activities::data_product_id,
            activities::data_product_version,
        ))
        .select((
            activities::data_product_id,
            activities::data_product_version,
            first,
        ))
        .order(first)
        .into_boxed();
    if let Some(after) = page.after {
        query = query.having(first.gt(after));
    }
    if let Some(limit) = page.limit {
        query = query.limit(limit);
    }
    query.load(conn)
}

/// The activities and lifecycle rows of `versions`, each version's by id: two statements for
/// the whole page (not two per version). Rows are selected by product and by version, then
/// matched to their pair here.
pub fn board_rows(
    conn: &mut Conn,
    versions: &[BoardVersion],
) -> QueryResult<Vec<(Vec<BoardActivity>, Vec<BoardLifecycle>)>> {
    let products: Vec<&str> = versions
        .iter()
        .map(|v| v.data_product_id.as_str())
        .collect();
    let numbers: Vec<&str> = versions
        .iter()
        .map(|v| v.data_product_version.as_str())
        .collect();
    let activities: Vec<((String, String), BoardActivity)> = activities::table
        .filter(activities::data_product_id.eq_any(&products))
        .filter(activities::data_product_version.eq_any(&numbers))
        .order(activities::id)
        .select((
            (
                activities::data_product_id,
                activities::data_product_version,
            ),
            (
                activities::id,
                activities::stage,
                activities::status,
                activities::created_at,
                activities::started_at,
                activities::finished_at,
            ),
        ))
        .load(conn)?;
    let lifecycles: Vec<((String, String), BoardLifecycle)> = lifecycles::table
        .filter(lifecycles::data_product_id.eq_any(&products))
        .filter(lifecycles::data_product_version.eq_any(&numbers))
        .order(lifecycles::id)
        .select((
            (
                lifecycles::data_product_id,
                lifecycles::data_product_version,
            ),
            (
                lifecycles::id,
                lifecycles::stage,
                lifecycles::activity_id,
                lifecycles::started_at,
                lifecycles::finished_at,
            ),
        ))
        .load(conn)?;
    // Each version's place in the page.
    let place: HashMap<(&str, &str), usize> = versions
        .iter()
        .enumerate()
        .map(|(n, v)| {
            (
                (v.data_product_id.as_str(), v.data_product_version.as_str()),
                n,
            )
        })
        .collect();
    let mut rows: Vec<(Vec<BoardActivity>, Vec<BoardLifecycle>)> =
        versions.iter().map(|_| Default::default()).collect();
    for ((product, version), activity) in activities {
        if let Some(&n) = place.get(&(product.as_str(), version.as_str())) {
            rows[n].0.push(activity);
        }
    }
    for ((product, version), lifecycle) in lifecycles {
        if let Some(&n) = place.get(&(product.as_str(), version.as_str())) {
            rows[n].1.push(lifecycle);
        }
    }
    Ok(rows)
}
