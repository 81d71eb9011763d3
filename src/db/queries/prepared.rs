//! UPDATE statements kept prepared, for the hot path.
//!
//! diesel never keeps an UPDATE as a prepared statement: the SQL of a changeset with optional
//! fields varies with which are set, so its `UpdateStatement` marks itself unsafe to cache and
//! is prepared afresh on every execution (diesel's `statement_cache` module). On PostgreSQL
//! that is a parse and a plan each time — issue 15's profile (`pg_stat_statements` with
//! `track_planning`): every UPDATE planned on every call, planning 43 % on top of all
//! statements' execution time; on SQLite an `sqlite3_prepare` each time. The plans' updates
//! have few shapes (which columns a step sets), so `Update` writes the same SQL without that
//! mark and diesel caches it by its text, as it caches any other statement. No IN lists here:
//! on SQLite their SQL grows with the list.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// `UPDATE table SET set WHERE filter`, cached by its SQL text. `set` must not be empty
/// (callers fall back to diesel's `update`, which refuses an empty changeset).
#[derive(Debug, Clone, Copy)]
pub(super) struct Update<Table, Set, Filter> {
    pub table: Table,
    pub set: Set,
    pub filter: Filter,
}

impl<Table, Set, Filter> QueryId for Update<Table, Set, Filter> {
    type QueryId = ();
    // Cached by its SQL text, not by its type: the text varies with the columns set.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Table, Set, Filter, DB> QueryFragment<DB> for Update<Table, Set, Filter>
where
    DB: Backend,
    Table: QueryFragment<DB>,
    Set: QueryFragment<DB>,
    Filter: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE ");
        self.table.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.set.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE ");
        self.filter.walk_ast(out.reborrow())
    }
}

impl<Table, Set, Filter, Conn> RunQueryDsl<Conn> for Update<Table, Set, Filter> {}
