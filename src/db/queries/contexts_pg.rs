//! PostgreSQL: the Context rows of several activities in one statement (`engine::contexts_of`).
//!
//! Written first with `data_product_id = ANY($1) AND data_product_version = ANY($2)`: once
//! PostgreSQL kept a generic plan for it (after five runs of a prepared statement), the index
//! was searched by the product alone and every activity of the product read and filtered by
//! version (measured mid-benchmark, one product with 1,800 activities: 1.4 ms a statement
//! against 0.2 ms with a plan for the values; `pg_stat_statements` put it at a fifth of all
//! statement time). Here each (product, version, current) comes from `unnest` and the
//! activities are joined by both columns, which the generic plan finds through the index: the
//! cost no longer grows with the product's other versions. (On tables never analyzed yet, a
//! fresh database's first minute, PostgreSQL plans sequential scans for this as for any read of
//! several rows; the next ANALYZE makes it plan again: README, "the benchmark's young database".)

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Text};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

use super::engine::{ContextRow, ContextSql};
use crate::domain::{ActivityKeys, ActivityStatus};

/// The Context rows of each of `currents`: its version's PROCESSED activities and itself, and
/// their tasks' names.
pub(super) fn context_rows_of(
    pg: &mut PgConnection,
    currents: &[ActivityKeys],
) -> QueryResult<Vec<ContextRow>> {
    ContextsOf {
        products: currents
            .iter()
            .map(|c| c.data_product_id.as_str())
            .collect(),
        versions: currents
            .iter()
            .map(|c| c.data_product_version.as_str())
            .collect(),
        ids: currents.iter().map(|c| c.id.get()).collect(),
    }
    .load(pg)
}

/// `(SELECT … FROM unnest($products, $versions, $ids) AS k(p, v, cur) JOIN activities …)
/// UNION ALL (… JOIN tasks …)`, kept prepared by its text (which does not vary).
struct ContextsOf<'a> {
    products: Vec<&'a str>,
    versions: Vec<&'a str>,
    ids: Vec<i64>,
}

impl QueryId for ContextsOf<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for ContextsOf<'_> {
    type SqlType = ContextSql;
}

impl QueryFragment<Pg> for ContextsOf<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // The activities of each key: its version's PROCESSED ones, and the current one.
        let keyed = |out: &mut AstPass<'_, 'b, Pg>| -> QueryResult<()> {
            out.push_sql(" FROM unnest(");
            out.push_bind_param::<Array<Text>, _>(&self.products)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<Text>, _>(&self.versions)?;
            out.push_sql(", ");
            out.push_bind_param::<Array<BigInt>, _>(&self.ids)?;
            out.push_sql(
                ") AS k(p, v, cur) JOIN activities a ON a.data_product_id = k.p \
                 AND a.data_product_version = k.v",
            );
            Ok(())
        };
        let wanted = format!(
            " WHERE (a.status = '{}' OR a.id = k.cur)",
            ActivityStatus::Processed.as_str()
        );
        out.push_sql(
            "(SELECT a.data_product_id, a.data_product_version, a.id, a.stage, a.status, \
             a.finished_at, a.results, NULL::integer",
        );
        keyed(&mut out)?;
        out.push_sql(&wanted);
        out.push_sql(
            ") UNION ALL (SELECT a.data_product_id, a.data_product_version, t.activity_id, \
             t.name, NULL::text, NULL::bigint, NULL::text, t.position",
        );
        keyed(&mut out)?;
        out.push_sql(" JOIN tasks t ON t.activity_id = a.id");
        out.push_sql(&wanted);
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for ContextsOf<'_> {}
