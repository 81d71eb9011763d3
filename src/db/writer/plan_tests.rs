//! The plans PostgreSQL keeps for the statements a batch runs ahead of and behind its writes,
//! in a batch's transaction (`batch.rs`, `BEGIN_PLAN_BY_INDEX`).

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::behind_tests::{batch_of_plans, Callback};
use super::tests::{batch_of_records, drop_database, postgres_connection};

#[derive(QueryableByName)]
struct Prepared {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    statement: String,
    #[diesel(sql_type = Text)]
    parameters: String,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

/// PostgreSQL only (SQLite keeps no plan across a table's growth). On a fresh database, its
/// tables empty, a writer's batches plan the records, the snapshots and the callbacks' plans
/// of its batches (kept prepared) with generic plans from their first run: each looks its
/// rows up by index, with neither a scan of a table nor a hash or merge join, so that the plan
/// stays right once the tables have grown.
#[test]
fn a_writers_kept_plans_look_rows_up_by_index_however_young_the_tables() {
    let Some((mut pg, db, admin, name)) = postgres_connection() else {
        eprintln!("skipped on PostgreSQL: ODM_TEST_POSTGRES_URL is not set");
        return;
    };
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut pg)
        .unwrap();
    batch_of_records(&mut pg);
    batch_of_plans(&mut pg, [Callback::Applies; 5]);

    let crate::db::DbConnection::Pg(conn) = &mut pg else {
        unreachable!("a PostgreSQL connection")
    };
    let prepared: Vec<Prepared> = diesel::sql_query(
        "SELECT name, statement, parameter_types::text AS parameters FROM pg_prepared_statements",
    )
    .load(conn)
    .unwrap();
    let kinds = [
        (
            "the records",
            "UPDATE tasks SET configurations = v.configurations",
        ),
        ("the snapshots", "FOR UPDATE"),
        ("the callbacks' plans", "WITH a AS (UPDATE activities"),
    ];
    for (kind, marker) in kinds {
        let found: Vec<&Prepared> = prepared
            .iter()
            .filter(|p| p.statement.contains(marker))
            .collect();
        assert!(
            !found.is_empty(),
            "{kind} kept prepared: {:?}",
            names(&prepared)
        );
        for statement in found {
            let arguments = statement.parameters.trim_matches(['{', '}']).split(',');
            let nulls: Vec<&str> = arguments.map(|_| "NULL").collect();
            let explain = format!("EXPLAIN EXECUTE {}({})", statement.name, nulls.join(", "));
            let plan: Vec<PlanLine> = diesel::sql_query(explain).load(conn).unwrap();
            let plan: Vec<String> = plan.into_iter().map(|l| l.line).collect();
            let plan = plan.join("\n");
            assert!(plan.contains("Index"), "{kind} by index:\n{plan}");
            for refused in ["Seq Scan", "Hash Join", "Merge Join"] {
                assert!(!plan.contains(refused), "{kind}: {refused}\n{plan}");
            }
        }
    }

    drop((pg, db));
    drop_database(&admin, &name);
}

fn names(prepared: &[Prepared]) -> Vec<&str> {
    prepared.iter().map(|p| p.statement.as_str()).collect()
}
