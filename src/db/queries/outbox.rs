//! The notification outbox (DESIGN §9): rows written with the change they report, claimed by the
//! engine with a lease, one entity's rows in id order per listener.

use diesel::dsl::{count_star, exists, min, not};
use diesel::prelude::*;

use super::{Conn, Page};
use crate::db::schema::{
    activities, activity_deletions, lifecycles, notification_outbox as outbox,
};
use crate::db::DbConnection;
use crate::domain::ActivityId;

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewNotification<'a> {
    pub listener: &'a str,
    pub event_type: &'a str,
    pub entity_id: i64,
    pub activity_id: i64,
    pub payload: &'a str,
    pub created_at: i64,
    pub due_at: i64,
}

/// A row as the engine sends it and `GET /notifications` lists it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct NotificationRow {
    pub id: i64,
    pub listener: String,
    pub event_type: String,
    pub entity_id: i64,
    pub activity_id: i64,
    pub payload: String,
    pub created_at: i64,
    pub due_at: i64,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

pub fn insert_notification(conn: &mut Conn, row: &NewNotification<'_>) -> QueryResult<()> {
    diesel::insert_into(outbox::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

/// Leases to `claim`, until `lease_until`, up to `limit` rows of `listener` that are due and
/// first of their entity: no earlier row of the same activity waits for this listener, so an
/// entity's rows go out one at a time, in order. On PostgreSQL, rows another replica is claiming
/// are passed by (as for the engine's steps).
pub fn claim_notifications(
    conn: &mut Conn,
    listener: &str,
    claim: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> QueryResult<Vec<NotificationRow>> {
    let earlier = diesel::alias!(outbox as earlier);
    let waits_behind = exists(
        earlier
            .filter(earlier.field(outbox::listener).eq(outbox::listener))
            .filter(earlier.field(outbox::activity_id).eq(outbox::activity_id))
            .filter(earlier.field(outbox::delivered_at).is_null())
            .filter(earlier.field(outbox::id).lt(outbox::id)),
    );
    let due = outbox::table
        .filter(outbox::listener.eq(listener))
        .filter(outbox::delivered_at.is_null())
        .filter(outbox::due_at.le(now))
        .filter(
            outbox::lease_until
                .is_null()
                .or(outbox::lease_until.lt(now)),
        )
        .filter(not(waits_behind))
        .order(outbox::id)
        .limit(limit)
        .select(outbox::id);
    let ids: Vec<i64> = match conn {
        DbConnection::Pg(pg) => due.for_update().skip_locked().load(pg)?,
        DbConnection::Sqlite(_) => due.load(conn)?,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
        .set((
            outbox::lease_owner.eq(claim),
            outbox::lease_until.eq(lease_until),
        ))
        .execute(conn)?;
    outbox::table
        .filter(outbox::id.eq_any(&ids))
        .order(outbox::id)
        .select(NotificationRow::as_select())
        .load(conn)
}

/// How a try to send a row ended.
#[derive(Debug, Clone, Copy)]
pub enum SendOutcome<'a> {
    Delivered {
        at: i64,
    },
    /// Tried again at `due_at`; the error is kept for `GET /notifications`.
    Failed {
        error: &'a str,
        due_at: i64,
    },
}

/// Records a try of row `id` by `claim`; `false` when the claim no longer held the row (its
/// lease ran out and another claim took it over: that one's word stands).
pub fn record_send(
    conn: &mut Conn,
    id: i64,
    claim: &str,
    outcome: SendOutcome<'_>,
) -> QueryResult<bool> {
    let held = outbox::table
        .filter(outbox::id.eq(id))
        .filter(outbox::lease_owner.eq(claim));
    let released = (
        outbox::attempts.eq(outbox::attempts + 1),
        outbox::lease_owner.eq(None::<String>),
        outbox::lease_until.eq(None::<i64>),
    );
    let changed = match outcome {
        SendOutcome::Delivered { at } => diesel::update(held)
            .set((
                released,
                outbox::delivered_at.eq(at),
                outbox::last_error.eq(None::<String>),
            ))
            .execute(conn)?,
        SendOutcome::Failed { error, due_at } => diesel::update(held)
            .set((
                released,
                outbox::due_at.eq(due_at),
                outbox::last_error.eq(error),
            ))
            .execute(conn)?,
    };
    Ok(changed == 1)
}

/// Deletes the rows delivered before `before`; how many.
pub fn prune_notifications(conn: &mut Conn, before: i64) -> QueryResult<usize> {
    diesel::delete(outbox::table.filter(outbox::delivered_at.lt(before))).execute(conn)
}

/// Which rows `GET /notifications?status=` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationState {
    /// Not delivered yet and never failed.
    Pending,
    Delivered,
    /// Not delivered yet, and at least one try failed.
    Failing,
}

#[derive(Debug, Default, Clone)]
pub struct NotificationFilter {
    pub state: Option<NotificationState>,
    pub listener: Option<String>,
    pub page: Page,
}

pub fn list_notifications(
    conn: &mut Conn,
    filter: &NotificationFilter,
) -> QueryResult<Vec<NotificationRow>> {
    let mut query = outbox::table.into_boxed();
    match filter.state {
        Some(NotificationState::Pending) => {
            query = query
                .filter(outbox::delivered_at.is_null())
                .filter(outbox::last_error.is_null())
        }
        Some(NotificationState::Failing) => {
            query = query
                .filter(outbox::delivered_at.is_null())
                .filter(outbox::last_error.is_not_null())
        }
        Some(NotificationState::Delivered) => {
            query = query.filter(outbox::delivered_at.is_not_null())
        }
        None => {}
    }
    if let Some(listener) = &filter.listener {
        query = query.filter(outbox::listener.eq(listener.clone()));
    }
    if let Some(after) = filter.page.after {
        query = query.filter(outbox::id.gt(after));
    }
    if let Some(limit) = filter.page.limit {
        query = query.limit(limit);
    }
    query
        .order(outbox::id)
        .select(NotificationRow::as_select())
        .load(conn)
}

/// Undelivered rows of one listener, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerBacklog {
    pub listener: String,
    pub pending: i64,
    /// Undelivered rows whose last try failed.
    pub failing: i64,
    pub oldest_created_at: Option<i64>,
}

/// Through the partial index of undelivered rows: a backlog costs what it holds.
pub fn listener_backlogs(conn: &mut Conn) -> QueryResult<Vec<ListenerBacklog>> {
    let rows: Vec<(String, i64, Option<i64>)> = outbox::table
        .filter(outbox::delivered_at.is_null())
        .group_by(outbox::listener)
        .select((outbox::listener, count_star(), min(outbox::created_at)))
        .load(conn)?;
    let failing: Vec<(String, i64)> = outbox::table
        .filter(outbox::delivered_at.is_null())
        .filter(outbox::last_error.is_not_null())
        .group_by(outbox::listener)
        .select((outbox::listener, count_star()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(listener, pending, oldest_created_at)| ListenerBacklog {
            failing: failing
                .iter()
                .find(|(l, _)| *l == listener)
                .map_or(0, |(_, n)| *n),
            listener,
            pending,
            oldest_created_at,
        })
        .collect())
}

/// The row the promotion of `activity` closed (the version's previous current row), if any.
pub fn lifecycle_before(
    conn: &mut Conn,
    activity: ActivityId,
) -> QueryResult<
    Option<(
        crate::db::models::LifecycleRow,
        Option<crate::db::models::LifecycleRow>,
    )>,
> {
    use crate::db::models::LifecycleRow;
    let Some(new) = lifecycles::table
        .filter(lifecycles::activity_id.eq(activity))
        .select(LifecycleRow::as_select())
        .first(conn)
        .optional()?
    else {
        return Ok(None);
    };
    let previous = lifecycles::table
        .filter(lifecycles::data_product_id.eq(&new.data_product_id))
        .filter(lifecycles::data_product_version.eq(&new.data_product_version))
        .filter(lifecycles::id.lt(new.id))
        .order(lifecycles::id.desc())
        .select(LifecycleRow::as_select())
        .first(conn)
        .optional()?;
    Ok(Some((new, previous)))
}

/// Activities of a product (one version, or all when `None`) created so far, by status: what
/// an observer's deletion must abort and delete.
pub fn activities_of(
    conn: &mut Conn,
    product: &str,
    version: Option<&str>,
) -> QueryResult<Vec<(ActivityId, crate::domain::ActivityStatus)>> {
    let mut query = activities::table
        .filter(activities::data_product_id.eq(product))
        .into_boxed();
    if let Some(version) = version {
        query = query.filter(activities::data_product_version.eq(version));
    }
    query
        .order(activities::id)
        .select((activities::id, activities::status))
        .load(conn)
}

pub fn insert_activity_deletion(
    conn: &mut Conn,
    product: &str,
    version: Option<&str>,
    up_to_activity: ActivityId,
    now: i64,
) -> QueryResult<()> {
    diesel::insert_into(activity_deletions::table)
        .values((
            activity_deletions::data_product_id.eq(product),
            activity_deletions::data_product_version.eq(version),
            activity_deletions::up_to_activity.eq(up_to_activity.get()),
            activity_deletions::requested_at.eq(now),
        ))
        .execute(conn)
        .map(drop)
}

/// Carries out the deletions asked for: deletes each one's activities (tasks go with them) that
/// owe the engine nothing any more, and forgets a deletion with nothing left. How many
/// activities were deleted.
pub fn carry_out_activity_deletions(conn: &mut Conn) -> QueryResult<usize> {
    use crate::db::schema::tasks;
    let asked: Vec<(i64, String, Option<String>, i64)> = activity_deletions::table
        .select((
            activity_deletions::id,
            activity_deletions::data_product_id,
            activity_deletions::data_product_version,
            activity_deletions::up_to_activity,
        ))
        .load(conn)?;
    let mut deleted = 0;
    for (id, product, version, up_to) in asked {
        let mut of_it = activities::table
            .filter(activities::data_product_id.eq(product.clone()))
            .filter(activities::id.le(up_to))
            .into_boxed();
        if let Some(version) = &version {
            of_it = of_it.filter(activities::data_product_version.eq(version.clone()));
        }
        let ids: Vec<ActivityId> = of_it.select(activities::id).load(conn)?;
        if ids.is_empty() {
            diesel::delete(activity_deletions::table.find(id)).execute(conn)?;
            continue;
        }
        let busy: Vec<ActivityId> = tasks::table
            .filter(tasks::activity_id.eq_any(&ids))
            .filter(tasks::step.is_not_null())
            .select(tasks::activity_id)
            .distinct()
            .load(conn)?;
        let done: Vec<ActivityId> = ids.into_iter().filter(|a| !busy.contains(a)).collect();
        if done.is_empty() {
            continue;
        }
        diesel::delete(tasks::table.filter(tasks::activity_id.eq_any(&done))).execute(conn)?;
        deleted +=
            diesel::delete(activities::table.filter(activities::id.eq_any(&done))).execute(conn)?;
        if busy.is_empty() {
            diesel::delete(activity_deletions::table.find(id)).execute(conn)?;
        }
    }
    Ok(deleted)
}

/// Some deletion waits for runs to be cancelled.
pub fn activity_deletions_pending(conn: &mut Conn) -> QueryResult<bool> {
    diesel::select(exists(
        activity_deletions::table.select(activity_deletions::id),
    ))
    .get_result(conn)
}
