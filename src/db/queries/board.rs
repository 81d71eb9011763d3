//! What the promotion board reads (`GET /board`): the product versions that have activities,
//! a page at a time, and the light columns of their activities and lifecycle rows (never
//! `results`, `errors` or secrets: a board of many versions must stay cheap).

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

/// A version's activities, by id.
pub fn board_activities(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Vec<BoardActivity>> {
    activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .order(activities::id)
        .select((
            activities::id,
            activities::stage,
            activities::status,
            activities::created_at,
            activities::started_at,
            activities::finished_at,
        ))
        .load(conn)
}

/// A version's lifecycle rows, by id (the last one without `finished_at` is the current stage).
pub fn board_lifecycles(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Vec<BoardLifecycle>> {
    lifecycles::table
        .filter(lifecycles::data_product_id.eq(product))
        .filter(lifecycles::data_product_version.eq(version))
        .order(lifecycles::id)
        .select((
            lifecycles::id,
            lifecycles::stage,
            lifecycles::activity_id,
            lifecycles::started_at,
            lifecycles::finished_at,
        ))
        .load(conn)
}
