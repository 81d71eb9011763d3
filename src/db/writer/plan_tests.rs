//! The plans PostgreSQL keeps for the statements a batch runs ahead of and behind its writes,
//! and for those its writes run alone, in a batch's transaction (`batch.rs`,
//! `BEGIN_PLAN_BY_INDEX`).

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::behind_tests::{batch_of_plans, Callback};
use super::tests::{batch_of_hand_offs, batch_of_records, drop_database, postgres_connection};

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
/// tables empty, a writer's batches plan the statements they keep prepared (the records, a
/// record alone, the snapshots, the callbacks' plans with and without promotions, a
/// callback's plan alone, the hand-offs' read) with generic plans from their first run: each
/// looks its rows up by key, with neither a scan of a table or of a partial index nor a hash
/// or merge join, so that the plan stays right once the tables have grown; and so do the plans
/// made again in a batch once the tables have been analyzed with most tasks ended.
#[test]
fn a_writers_kept_plans_look_rows_up_by_key_however_young_the_tables() {
    let Some((mut pg, db, admin, name)) = postgres_connection() else {
        eprintln!("skipped on PostgreSQL: ODM_TEST_POSTGRES_URL is not set");
        return;
    };
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut pg)
        .unwrap();
    batch_of_records(&mut pg);
    use Callback::{Applies, AppliesNow, Promotes};
    batch_of_plans(&mut pg, [Applies; 5]);
    batch_of_plans(&mut pg, [Applies, Applies, Applies, AppliesNow, Promotes]);
    pg.batch_execute("DELETE FROM lifecycles; DELETE FROM tasks; DELETE FROM activities")
        .unwrap();
    batch_of_hand_offs(&mut pg);

    let crate::db::DbConnection::Pg(conn) = &mut pg else {
        unreachable!("a PostgreSQL connection")
    };
    // The tables as the batches left them, never analyzed; then as a service's are once most
    // tasks have ended (no step, an outcome) and autovacuum has analyzed them: the planner then
    // expects few tasks with a step, which `tasks_due` (a partial index on them) lists.
    kept_plans_look_rows_up_by_key(conn, "fresh tables");
    diesel::sql_query(
        "INSERT INTO activities (id, data_product_id, data_product_version, stage, status, \
         created_at) SELECT i, 'ended', i::text, 'dev', 'PROCESSED', 0 \
         FROM generate_series(1001, 3000) i",
    )
    .execute(conn)
    .unwrap();
    diesel::sql_query(
        "INSERT INTO tasks (id, activity_id, position, name, status, created_at, attempt, \
         reported_outcome) SELECT i, i, 0, 't', 'PROCESSED', 0, 1, 'SUCCEEDED' \
         FROM generate_series(1001, 3000) i",
    )
    .execute(conn)
    .unwrap();
    // ANALYZE also drops the plans kept: the next EXPLAIN EXECUTE plans on these statistics.
    diesel::sql_query("ANALYZE").execute(conn).unwrap();
    kept_plans_look_rows_up_by_key(conn, "most tasks ended, analyzed");

    drop((pg, db));
    drop_database(&admin, &name);
}

/// Checks the generic plan of each statement a batch keeps prepared on `conn`: every row it
/// reads or writes is found by a key's index (each index scan has its `Index Cond`), no table
/// is scanned, nothing joined by hash or merge, and no join filters rows: a plan that
/// walks a partial index's rows (`tasks_due`: every task with a step) and keeps those a batch
/// names costs each batch all the tasks in flight (issue 15: 0.9 ms for 8 records).
fn kept_plans_look_rows_up_by_key(conn: &mut diesel::PgConnection, tables: &str) {
    // A batch's transaction, where a plan dropped is made again.
    conn.batch_execute(super::batch::BEGIN_PLAN_BY_INDEX)
        .unwrap();
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
        ("a record alone", "UPDATE \"tasks\" SET \"configurations\""),
        ("the snapshots", "FOR UPDATE"),
        ("the callbacks' plans", "WITH a AS (UPDATE activities"),
        ("a callback's plan alone", "WITH u0 AS (UPDATE"),
        ("the hand-offs' read", "WITH handed("),
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
            let lines: Vec<&str> = plan.lines().collect();
            for (at, line) in lines.iter().enumerate() {
                if line.contains("Index Scan") || line.contains("Index Only Scan") {
                    let by_key = lines.get(at + 1).is_some_and(|l| l.contains("Index Cond"));
                    assert!(by_key, "{kind}, {tables}: {line} by a key\n{plan}");
                }
            }
            assert!(
                plan.contains("Index Cond"),
                "{kind}, {tables}: by key\n{plan}"
            );
            for refused in ["Seq Scan", "Hash Join", "Merge Join", "Join Filter"] {
                assert!(
                    !plan.contains(refused),
                    "{kind}, {tables}: {refused}\n{plan}"
                );
            }
        }
    }
    conn.batch_execute("ROLLBACK").unwrap();
}

fn names(prepared: &[Prepared]) -> Vec<&str> {
    prepared.iter().map(|p| p.statement.as_str()).collect()
}
