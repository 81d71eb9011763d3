//! The executor API's mapping of an ODM task to the Azure DevOps run it started (DESIGN §6).

use diesel::prelude::*;

use super::Conn;
use crate::db::schema::executor_runs;
use crate::db::DbConnection;

/// State of a mapping whose run request is under way.
pub const SUBMITTING: &str = "submitting";

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = executor_runs)]
pub struct ExecutorRunRow {
    pub task_id: i64,
    pub fingerprint: String,
    pub organization: String,
    pub project: String,
    pub pipeline_id: i32,
    pub run_id: Option<i32>,
    pub run_url: Option<String>,
    pub state: String,
    pub result: Option<String>,
    pub errors: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// What a run request's submission left: the run (or none) and Azure's word on it.
#[derive(Debug, Clone, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = executor_runs, treat_none_as_null = true)]
pub struct ExecutorRunUpdate {
    pub run_id: Option<i32>,
    pub run_url: Option<String>,
    pub state: String,
    pub result: Option<String>,
    pub errors: Option<String>,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// Inserts `row` unless its task already has a mapping; the mapping that stands either way,
/// and whether it is `row` (the caller then owns the submission).
pub fn claim_executor_run(
    conn: &mut Conn,
    row: &ExecutorRunRow,
) -> QueryResult<(ExecutorRunRow, bool)> {
    let insert = diesel::insert_into(executor_runs::table)
        .values(row)
        .on_conflict_do_nothing();
    let inserted = match conn {
        DbConnection::Pg(pg) => insert.execute(pg)?,
        DbConnection::Sqlite(sqlite) => insert.execute(sqlite)?,
    };
    let standing = find_executor_run(conn, row.task_id)?.ok_or(diesel::result::Error::NotFound)?;
    Ok((standing, inserted == 1))
}

pub fn find_executor_run(conn: &mut Conn, task_id: i64) -> QueryResult<Option<ExecutorRunRow>> {
    executor_runs::table
        .find(task_id)
        .select(ExecutorRunRow::as_select())
        .first(conn)
        .optional()
}

/// Records what the submission or a status read found; false when the row is gone.
pub fn update_executor_run(
    conn: &mut Conn,
    task_id: i64,
    update: &ExecutorRunUpdate,
) -> QueryResult<bool> {
    diesel::update(executor_runs::table.find(task_id))
        .set(update)
        .execute(conn)
        .map(|n| n == 1)
}

/// Forgets a claim whose run request created nothing (Azure unreachable, throttled), so the
/// same task may be sent again.
pub fn release_executor_run(conn: &mut Conn, task_id: i64) -> QueryResult<()> {
    diesel::delete(
        executor_runs::table
            .find(task_id)
            .filter(executor_runs::state.eq(SUBMITTING)),
    )
    .execute(conn)
    .map(drop)
}
