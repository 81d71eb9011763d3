//! Every query the service runs. Functions take a connection so callers compose them inside
//! one `Db::write` transaction.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::models::*;
use super::schema::{activities, descriptors, lifecycles, service_meta, tasks};
use super::DbConnection;
use crate::domain::{ActivityStatus, Step};
use crate::lifecycle::state::{Plan, Snapshot};

type Conn = DbConnection;

#[derive(Debug, Default, Clone)]
pub struct ActivityFilter {
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
    pub stage: Option<String>,
    pub status: Option<ActivityStatus>,
}

#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    pub activity_id: Option<i64>,
    pub executor: Option<String>,
    pub status: Option<&'static str>,
}

pub fn insert_activity(
    conn: &mut Conn,
    activity: NewActivity<'_>,
    new_tasks: Vec<NewTask<'_>>,
) -> QueryResult<ActivityRow> {
    // MultiConnection supports neither `as_returning` nor batch inserts: one row at a time.
    let id: i64 = diesel::insert_into(activities::table)
        .values(&activity)
        .returning(activities::id)
        .get_result(conn)?;
    for task in new_tasks {
        diesel::insert_into(tasks::table)
            .values(&NewTask {
                activity_id: id,
                ..task
            })
            .execute(conn)?;
    }
    find_activity(conn, id)?.ok_or(DieselError::NotFound)
}

pub fn find_activity(conn: &mut Conn, id: i64) -> QueryResult<Option<ActivityRow>> {
    activities::table
        .find(id)
        .select(ActivityRow::as_select())
        .first(conn)
        .optional()
}

pub fn list_activities(conn: &mut Conn, filter: &ActivityFilter) -> QueryResult<Vec<ActivityRow>> {
    let mut query = activities::table.into_boxed();
    if let Some(v) = &filter.data_product_id {
        query = query.filter(activities::data_product_id.eq(v.clone()));
    }
    if let Some(v) = &filter.data_product_version {
        query = query.filter(activities::data_product_version.eq(v.clone()));
    }
    if let Some(v) = &filter.stage {
        query = query.filter(activities::stage.eq(v.clone()));
    }
    if let Some(v) = filter.status {
        query = query.filter(activities::status.eq(v.as_str()));
    }
    query
        .order(activities::id)
        .select(ActivityRow::as_select())
        .load(conn)
}

/// Deletes a PLANNED activity (its tasks go with it); `None` when it is not PLANNED anymore.
pub fn delete_planned_activity(conn: &mut Conn, id: i64) -> QueryResult<usize> {
    diesel::delete(
        activities::table
            .filter(activities::id.eq(id))
            .filter(activities::status.eq(ActivityStatus::Planned.as_str())),
    )
    .execute(conn)
}

pub fn set_sealed_secrets(conn: &mut Conn, id: i64, sealed: Option<&str>) -> QueryResult<usize> {
    diesel::update(activities::table.find(id))
        .set(activities::sealed_secrets.eq(sealed))
        .execute(conn)
}

/// The PROCESSING activity of a product version, if any.
pub fn processing_activity(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Option<i64>> {
    activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .filter(activities::status.eq(ActivityStatus::Processing.as_str()))
        .select(activities::id)
        .first(conn)
        .optional()
}

/// The PLANNED activity of a product version's stage, if any.
pub fn planned_activity(
    conn: &mut Conn,
    product: &str,
    version: &str,
    stage: &str,
) -> QueryResult<Option<i64>> {
    activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .filter(activities::stage.eq(stage))
        .filter(activities::status.eq(ActivityStatus::Planned.as_str()))
        .select(activities::id)
        .first(conn)
        .optional()
}

pub fn find_task(conn: &mut Conn, id: i64) -> QueryResult<Option<TaskRow>> {
    tasks::table
        .find(id)
        .select(TaskRow::as_select())
        .first(conn)
        .optional()
}

pub fn tasks_of(conn: &mut Conn, activity_id: i64) -> QueryResult<Vec<TaskRow>> {
    tasks::table
        .filter(tasks::activity_id.eq(activity_id))
        .order(tasks::position)
        .select(TaskRow::as_select())
        .load(conn)
}

pub fn list_tasks(conn: &mut Conn, filter: &TaskFilter) -> QueryResult<Vec<TaskRow>> {
    let mut query = tasks::table.into_boxed();
    if let Some(v) = filter.activity_id {
        query = query.filter(tasks::activity_id.eq(v));
    }
    if let Some(v) = &filter.executor {
        query = query.filter(tasks::executor_ref.eq(v.clone()));
    }
    if let Some(v) = filter.status {
        query = query.filter(tasks::status.eq(v));
    }
    query
        .order(tasks::id)
        .select(TaskRow::as_select())
        .load(conn)
}

/// Reads an activity and its tasks to change them. On PostgreSQL the activity row is locked
/// until the transaction ends, so writers of one activity queue instead of conflicting (SQLite's
/// `BEGIN IMMEDIATE` already serializes every writer).
pub fn load_snapshot(conn: &mut Conn, activity_id: i64) -> QueryResult<Option<Snapshot>> {
    if let DbConnection::Pg(pg) = conn {
        diesel::sql_query("SELECT id FROM activities WHERE id = $1 FOR UPDATE")
            .bind::<diesel::sql_types::BigInt, _>(activity_id)
            .execute(pg)?;
    }
    let Some(activity) = find_activity(conn, activity_id)? else {
        return Ok(None);
    };
    let tasks = tasks_of(conn, activity_id)?;
    Ok(Some(Snapshot { activity, tasks }))
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An expectation of the plan no longer holds: someone else changed the rows first.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Query(#[from] DieselError),
}

/// Applies a state-machine plan with compare-and-set updates. Call inside `Db::write`.
pub fn apply_plan(conn: &mut Conn, plan: &Plan, now: i64) -> Result<(), ApplyError> {
    if let Some(update) = &plan.activity {
        let changed = diesel::update(
            activities::table
                .filter(activities::id.eq(update.id))
                .filter(activities::status.eq(update.expected.as_str())),
        )
        .set(&update.changes)
        .execute(conn)?;
        if changed == 0 {
            return Err(ApplyError::Conflict(format!(
                "activity {} is no longer {}",
                update.id, update.expected
            )));
        }
    }
    for update in &plan.tasks {
        let target = tasks::table
            .filter(tasks::id.eq(update.id))
            .filter(tasks::status.eq(update.expected.as_str()));
        let changed = match &update.expected_lease {
            Some(lease) => diesel::update(target.filter(tasks::lease_owner.eq(lease)))
                .set(&update.changes)
                .execute(conn)?,
            None => diesel::update(target).set(&update.changes).execute(conn)?,
        };
        if changed == 0 {
            return Err(ApplyError::Conflict(format!(
                "task {} is no longer {}",
                update.id, update.expected
            )));
        }
    }
    if plan.promote_lifecycle {
        let id = plan
            .activity
            .as_ref()
            .map(|a| a.id)
            .expect("a promotion comes with its activity");
        promote_lifecycle(conn, id, now)?;
    }
    Ok(())
}

/// Closes the current lifecycle row of the product version and opens the activity's stage.
/// The unique index on `activity_id` makes a second promotion of the same activity fail.
fn promote_lifecycle(conn: &mut Conn, activity_id: i64, now: i64) -> QueryResult<()> {
    let activity = find_activity(conn, activity_id)?.ok_or(DieselError::NotFound)?;
    diesel::update(
        lifecycles::table
            .filter(lifecycles::data_product_id.eq(&activity.data_product_id))
            .filter(lifecycles::data_product_version.eq(&activity.data_product_version))
            .filter(lifecycles::finished_at.is_null()),
    )
    .set(lifecycles::finished_at.eq(now))
    .execute(conn)?;
    diesel::insert_into(lifecycles::table)
        .values((
            lifecycles::data_product_id.eq(&activity.data_product_id),
            lifecycles::data_product_version.eq(&activity.data_product_version),
            lifecycles::stage.eq(&activity.stage),
            lifecycles::activity_id.eq(activity.id),
            lifecycles::results.eq(&activity.results),
            lifecycles::started_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

#[derive(Debug, Default, Clone)]
pub struct LifecycleFilter {
    pub data_product_id: Option<String>,
    pub data_product_version: Option<String>,
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

/// A step the engine now owns until `lease_until`.
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    pub task: TaskRow,
    pub claim: String,
    /// Another owner held it and let its lease expire (it crashed or stalled mid-step).
    pub abandoned: bool,
}

/// Claims up to `limit` due steps for `claim`. A fresh dispatch starts a new attempt (and with
/// it a new callback token); an abandoned one keeps its attempt, whose callback may still come.
pub fn claim_due_steps(
    conn: &mut Conn,
    claim: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> QueryResult<Vec<ClaimedStep>> {
    let free = || tasks::lease_owner.is_null().or(tasks::lease_until.lt(now));
    let candidates: Vec<(i64, Option<String>, Option<String>)> = tasks::table
        .filter(tasks::step.is_not_null())
        .filter(tasks::due_at.le(now))
        .filter(free())
        .order(tasks::due_at)
        .limit(limit)
        .select((tasks::id, tasks::step, tasks::lease_owner))
        .load(conn)?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = candidates.iter().map(|c| c.0).collect();
    diesel::update(tasks::table.filter(tasks::id.eq_any(&ids)).filter(free()))
        .set((
            tasks::lease_owner.eq(claim),
            tasks::lease_until.eq(lease_until),
        ))
        .execute(conn)?;
    let fresh_dispatches: Vec<i64> = candidates
        .iter()
        .filter(|(_, step, owner)| {
            step.as_deref() == Some(Step::Dispatch.as_str()) && owner.is_none()
        })
        .map(|c| c.0)
        .collect();
    if !fresh_dispatches.is_empty() {
        diesel::update(
            tasks::table
                .filter(tasks::id.eq_any(&fresh_dispatches))
                .filter(tasks::lease_owner.eq(claim)),
        )
        .set(tasks::attempt.eq(tasks::attempt + 1))
        .execute(conn)?;
    }
    let claimed: Vec<TaskRow> = tasks::table
        .filter(tasks::id.eq_any(&ids))
        .filter(tasks::lease_owner.eq(claim))
        .select(TaskRow::as_select())
        .load(conn)?;
    Ok(claimed
        .into_iter()
        .map(|task| {
            let abandoned = candidates
                .iter()
                .any(|(id, _, owner)| *id == task.id && owner.is_some());
            ClaimedStep {
                task,
                claim: claim.to_owned(),
                abandoned,
            }
        })
        .collect())
}

/// When the next step falls due, for an engine that wants to sleep exactly until then.
pub fn next_due_at(conn: &mut Conn) -> QueryResult<Option<i64>> {
    tasks::table
        .filter(tasks::step.is_not_null())
        .select(diesel::dsl::min(tasks::due_at))
        .first::<Option<i64>>(conn)
}

/// One entry per stage for the Context: every PROCESSED activity of the product version, and of `current`, oldest first.
pub fn context_activities(
    conn: &mut Conn,
    product: &str,
    version: &str,
    current: i64,
) -> QueryResult<Vec<StageActivity>> {
    activities::table
        .filter(activities::data_product_id.eq(product))
        .filter(activities::data_product_version.eq(version))
        .filter(
            activities::status
                .eq(ActivityStatus::Processed.as_str())
                .or(activities::id.eq(current)),
        )
        .order(activities::id)
        .select((
            activities::id,
            activities::stage,
            activities::status,
            activities::finished_at,
            activities::results,
        ))
        .load(conn)
}

/// `(activity id, position, name)` of the tasks of the given activities.
pub fn task_names(conn: &mut Conn, activity_ids: &[i64]) -> QueryResult<Vec<(i64, i32, String)>> {
    tasks::table
        .filter(tasks::activity_id.eq_any(activity_ids))
        .select((tasks::activity_id, tasks::position, tasks::name))
        .load(conn)
}

/// Stores a descriptor; true when it was new.
pub fn put_descriptor(
    conn: &mut Conn,
    product: &str,
    version: &str,
    content: &str,
    now: i64,
) -> QueryResult<bool> {
    let updated = diesel::update(descriptors::table.find((product, version)))
        .set((
            descriptors::content.eq(content),
            descriptors::updated_at.eq(now),
        ))
        .execute(conn)?;
    if updated > 0 {
        return Ok(false);
    }
    diesel::insert_into(descriptors::table)
        .values((
            descriptors::data_product_id.eq(product),
            descriptors::version.eq(version),
            descriptors::content.eq(content),
            descriptors::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(true)
}

pub fn get_descriptor(
    conn: &mut Conn,
    product: &str,
    version: &str,
) -> QueryResult<Option<String>> {
    descriptors::table
        .find((product, version))
        .select(descriptors::content)
        .first(conn)
        .optional()
}

pub fn descriptor_versions(conn: &mut Conn, product: &str) -> QueryResult<Vec<String>> {
    descriptors::table
        .filter(descriptors::data_product_id.eq(product))
        .order(descriptors::version)
        .select(descriptors::version)
        .load(conn)
}

/// A value kept once for all replicas (e.g. the generated callback secret): the first writer wins.
pub fn meta_get_or_insert(conn: &mut Conn, name: &str, candidate: &str) -> QueryResult<String> {
    let existing: Option<String> = service_meta::table
        .find(name)
        .select(service_meta::value)
        .first(conn)
        .optional()?;
    if let Some(value) = existing {
        return Ok(value);
    }
    diesel::insert_into(service_meta::table)
        .values((
            service_meta::name.eq(name),
            service_meta::value.eq(candidate),
        ))
        .execute(conn)?;
    Ok(candidate.to_owned())
}
