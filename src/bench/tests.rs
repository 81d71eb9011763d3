use clap::Parser;
use serde_json::json;

use super::args::{BenchArgs, Load};
use super::database::{with_database, BenchDb};
use super::latency::{failed_callbacks, gaps_ms, SimRun};
use super::report::{percentile, Errors, Report};
use super::runs::{runs_per_replica, tasks_run_twice};
use super::workload;
use crate::db::{transport, Db, DbConnection, DbError};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
}

#[test]
fn arguments_choose_exactly_one_load_shape() {
    let closed = parse(&[
        "--activities",
        "1000",
        "--tasks",
        "3",
        "--concurrency",
        "64",
    ])
    .unwrap();
    assert_eq!((closed.activities, closed.tasks), (1000, 3));
    assert_eq!(closed.load(), Load::Closed { concurrency: 64 });
    assert_eq!(closed.database, None);

    let open = parse(&[
        "--activities",
        "400",
        "--rate",
        "200",
        "--database",
        "postgres://postgres@127.0.0.1:5432/test",
    ])
    .unwrap();
    assert_eq!(open.load(), Load::Open { rate: 200.0 });
    assert_eq!(open.tasks, 3, "the default");
    assert_eq!(
        open.database.as_deref(),
        Some("postgres://postgres@127.0.0.1:5432/test")
    );

    for wrong in [
        &["--activities", "10"][..],
        &["--concurrency", "4", "--rate", "10"],
        &["--concurrency", "0"],
        &["--rate", "0"],
        &["--rate", "-5"],
        &["--rate", "inf"],
        &["--activities", "0", "--concurrency", "1"],
        &["--tasks", "0", "--concurrency", "1"],
        &["--concurrency", "1", "--database", "sqlite://x.db"],
    ] {
        assert!(parse(wrong).is_err(), "{wrong:?} was accepted");
    }
}

fn report(load: Load) -> Report {
    Report {
        activities: 1000,
        tasks: 3,
        load,
        replicas: 2,
        runs_per_replica: vec![1600, 1400],
        seconds: 2.5,
        tasks_processed: 3000,
        gaps_ms: (1..=100).map(f64::from).rev().collect(),
        peak_rss_mib: 41.25,
        idle_rss_mib: 11.0,
        ready_ms: 57.04,
        errors: Errors {
            create: 1,
            callbacks: 2,
            runs_twice: 1,
            ..Errors::default()
        },
        commits: Some(7_500),
        polls: 200,
        poll_ms: 3.5,
    }
}

#[test]
fn the_last_line_has_every_field_in_order() {
    assert_eq!(
        report(Load::Closed { concurrency: 64 }).last_line(),
        "bench: activities=1000 tasks=3 concurrency=64 rate=0 replicas=2 seconds=2.500 \
         tasks_per_s=1200.0 p50_ms=50.00 p99_ms=99.00 peak_rss_mib=41.2 idle_rss_mib=11.0 \
         ready_ms=57.0 commits_per_task=2.50 errors=4"
    );
    let line = report(Load::Open { rate: 200.0 }).last_line();
    assert!(
        line.contains(" concurrency=0 rate=200 replicas=2 seconds="),
        "{line}"
    );
    let fractional = report(Load::Open { rate: 66.5 }).last_line();
    assert!(fractional.contains(" rate=66.5 "), "{fractional}");
}

#[test]
fn percentiles_are_nearest_rank_and_zero_without_samples() {
    let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
    assert_eq!(percentile(&sorted, 50.0), 100.0);
    assert_eq!(percentile(&sorted, 99.0), 198.0);
    assert_eq!(percentile(&sorted, 100.0), 200.0);
    assert_eq!(percentile(&[7.0], 99.0), 7.0);
    assert_eq!(percentile(&[], 50.0), 0.0);
}

#[test]
fn gaps_pair_a_callback_answer_with_the_next_task_of_the_same_activity() {
    let run =
        |activity: u32, task: u32, received: u64, answered: Option<u64>, status: u16| -> SimRun {
            serde_json::from_value(json!({
                "id": 1, "state": "completed",
                "templateParameters": {"activity": activity.to_string(), "task": task.to_string(),
                                       "callbackRef": "http://x"},
                "receivedAtUs": received,
                "callback": answered.map(|at| json!({"url": "http://x", "status": status,
                                                     "answeredAtUs": at, "error": null})),
            }))
            .unwrap()
        };
    let runs = vec![
        run(0, 1, 1_000, Some(2_000), 200),
        run(0, 2, 3_500, Some(4_000), 200),
        run(0, 3, 4_250, Some(9_000), 200),
        run(1, 1, 1_000, Some(10_000), 409),
        run(1, 2, 12_000, None, 200),
    ];
    let mut gaps = gaps_ms(&runs);
    gaps.sort_by(f64::total_cmp);
    assert_eq!(gaps, vec![0.25, 1.5, 2.0]);
    assert_eq!(
        failed_callbacks(&runs),
        2,
        "the 409 and the missing callback"
    );
}

/// The benchmark's first line tells how its servers reach PostgreSQL: it said "with TLS" for a
/// loopback URL that the servers reach without (its own connection skipped their rewrite).
#[actix_web::test]
async fn the_transport_told_is_the_one_the_servers_get() {
    let Ok(admin) = std::env::var("ODM_TEST_POSTGRES_URL") else {
        eprintln!("skipped on PostgreSQL: ODM_TEST_POSTGRES_URL is not set");
        return;
    };
    let bench_db = BenchDb::postgres(&admin).expect("the benchmark's database is created");
    let url = bench_db.url().to_owned();
    let server_db = actix_web::web::block(move || Db::connect(&url, 1))
        .await
        .unwrap()
        .expect("a server opens it");
    let served = server_db
        .read(|conn| {
            let DbConnection::Pg(pg) = conn else {
                unreachable!("a PostgreSQL URL")
            };
            Ok::<_, DbError>(transport(pg)?)
        })
        .await
        .unwrap();
    let told = bench_db.describe();
    assert!(
        told.starts_with(&format!("{served}, ")),
        "told {told:?}, the server has {served}"
    );
}

#[test]
fn the_database_name_is_replaced_and_the_query_kept() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "odm_bench_1"),
        "postgres://postgres@127.0.0.1:5432/odm_bench_1"
    );
    assert_eq!(
        with_database("postgresql://u:p@db/x?sslmode=disable", "b"),
        "postgresql://u:p@db/b?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://db:5432", "b"),
        "postgres://db:5432/b"
    );
}

#[test]
fn descriptors_chain_each_task_to_the_previous_result() {
    let descriptor = workload::descriptor(7, 3);
    let tasks = descriptor["internalComponents"]["lifecycleInfo"]["dev"]
        .as_array()
        .unwrap();
    assert_eq!(tasks.len(), 3);
    assert_eq!(
        tasks[0]["configurations"]["params"],
        json!({"activity": "7", "task": "1"})
    );
    assert_eq!(
        tasks[2]["configurations"]["params"]["previous"],
        "${dev.results.task2.run}"
    );
    let info = crate::descriptor::parse(&descriptor).unwrap();
    let stage = &info.stages[workload::STAGE];
    assert_eq!(stage[2].name, "step3");
    assert_eq!(stage[2].executor_ref.as_deref(), Some("azure-devops"));
}

#[test]
fn replicas_need_postgres_and_are_bounded() {
    let two = parse(&["--concurrency", "4", "--replicas", "2"]).unwrap();
    assert_eq!(two.replicas, 2);
    let refused = two.check().unwrap_err();
    assert!(
        refused.contains("--database") && refused.contains("SQLite"),
        "{refused}"
    );
    let on_postgres = parse(&[
        "--concurrency",
        "4",
        "--replicas",
        "2",
        "--database",
        "postgres://postgres@127.0.0.1:5432/test",
    ])
    .unwrap();
    assert_eq!(on_postgres.check(), Ok(()));
    let one = parse(&["--concurrency", "4"]).unwrap();
    assert_eq!(
        (one.replicas, one.check()),
        (1, Ok(())),
        "the default: one, on SQLite too"
    );
    for wrong in [
        &["--concurrency", "1", "--replicas", "0"][..],
        &["--concurrency", "1", "--replicas", "17"],
    ] {
        assert!(parse(wrong).is_err(), "{wrong:?} was accepted");
    }
}

#[test]
fn a_task_run_twice_is_counted_and_runs_are_told_apart_by_replica() {
    let run = |activity: u32, task: u32, server: &str| -> SimRun {
        serde_json::from_value(json!({
            "templateParameters": {"activity": activity.to_string(), "task": task.to_string(),
                                   "callbackRef": format!("{server}/api/v1/pp/devops/tasks/1/status?token=t")},
            "receivedAtUs": 1,
            "callback": null,
        }))
        .unwrap()
    };
    let (a, b) = ("http://127.0.0.1:8001", "http://127.0.0.1:800");
    let runs = vec![
        run(0, 1, a),
        run(0, 2, b),
        run(1, 1, b),
        run(1, 1, a),
        run(2, 1, a),
        run(2, 1, a),
    ];
    assert_eq!(tasks_run_twice(&runs), 2, "activity 1 and 2's first tasks");
    assert_eq!(tasks_run_twice(&runs[..3]), 0);
    // 8001 is not 800 followed by a 1: the base URL ends at the path.
    assert_eq!(
        runs_per_replica(&runs, &[a.to_owned(), b.to_owned()]),
        vec![4, 2]
    );
}

#[test]
fn the_run_s_folder_is_removed_unless_kept() {
    use super::procs::TempDir;
    let removed = TempDir::new().unwrap();
    let path = removed.0.clone();
    drop(removed);
    assert!(!path.exists(), "{} is removed", path.display());

    let mut kept = TempDir::new().unwrap();
    let path = kept.keep().to_path_buf();
    std::fs::write(path.join("server.log"), "why").unwrap();
    drop(kept);
    assert_eq!(
        std::fs::read_to_string(path.join("server.log")).unwrap(),
        "why"
    );
    std::fs::remove_dir_all(path).unwrap();
}

#[test]
fn independent_deployments_share_the_load_evenly_and_are_not_replicas() {
    let args = parse(&[
        "--activities",
        "3001",
        "--concurrency",
        "65",
        "--independent",
        "2",
        "--database",
        "postgres://postgres@127.0.0.1:5432/test",
    ])
    .unwrap();
    assert_eq!(args.check(), Ok(()));
    let shares = super::independent::split(&args);
    let loads: Vec<_> = shares
        .iter()
        .map(|s| (s.activities, s.concurrency, s.replicas, s.independent))
        .collect();
    assert_eq!(loads, [(1501, Some(33), 1, 1), (1500, Some(32), 1, 1)]);
    assert!(shares
        .iter()
        .all(|s| s.database == args.database && s.tasks == args.tasks && s.check().is_ok()));

    let rated = parse(&["--activities", "10", "--rate", "200", "--independent", "4"]).unwrap();
    let shares = super::independent::split(&rated);
    let loads: Vec<_> = shares.iter().map(|s| (s.activities, s.rate)).collect();
    assert_eq!(
        loads,
        [
            (3, Some(50.0)),
            (3, Some(50.0)),
            (2, Some(50.0)),
            (2, Some(50.0))
        ]
    );

    let refused = |args: &[&str]| parse(args).unwrap().check().unwrap_err();
    let with_replicas = refused(&[
        "--concurrency",
        "4",
        "--independent",
        "2",
        "--replicas",
        "2",
        "--database",
        "postgres://postgres@127.0.0.1:5432/test",
    ]);
    assert!(
        with_replicas.contains("cannot be combined"),
        "{with_replicas}"
    );
    let too_few_in_flight = refused(&["--concurrency", "1", "--independent", "2"]);
    assert!(
        too_few_in_flight.contains("--concurrency of at least 2 (got 1)"),
        "{too_few_in_flight}"
    );
    let too_few = refused(&[
        "--activities",
        "2",
        "--concurrency",
        "8",
        "--independent",
        "3",
    ]);
    assert!(
        too_few.contains("--activities of at least 3 (got 2)"),
        "{too_few}"
    );
    assert!(parse(&["--concurrency", "64", "--independent", "17"]).is_err());
}

#[test]
fn independent_deployments_add_up_from_their_last_lines() {
    let first = report(Load::Closed { concurrency: 32 });
    let second = Report {
        activities: 500,
        seconds: 3.0,
        tasks_processed: 1500,
        commits: Some(1500),
        errors: Errors::default(),
        ..report(Load::Closed { concurrency: 32 })
    };
    let lines = [first.last_line(), second.last_line()];
    let sum = super::independent::Sum::of(&lines).unwrap();
    assert_eq!(
        sum,
        super::independent::Sum {
            seconds: 3.0,
            // 3,000 tasks in 2.5 s and 1,500 in 3 s: 4,500 tasks in the 3 s they ran together
            // (not 1,200 + 500 a second: the first one's host was shared only 2.5 s).
            tasks_per_s: 1500.0,
            // 2.50 a task over 3,000 tasks and 1.00 over 1,500.
            commits_per_task: 2.0,
            errors: 4,
        }
    );
    let args = parse(&[
        "--activities",
        "1500",
        "--concurrency",
        "64",
        "--independent",
        "2",
    ])
    .unwrap();
    assert_eq!(
        sum.last_line(&args, 2),
        "bench: independent=2 activities=1500 tasks=3 concurrency=64 rate=0 seconds=3.000 \
         tasks_per_s=1500.0 commits_per_task=2.00 errors=4"
    );
    let broken = ["bench: activities=1 tasks=3 seconds=x".to_owned()];
    let refused = super::independent::Sum::of(&broken)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("`seconds=`"), "{refused}");
}

#[test]
fn arguments_given_back_as_a_command_line_parse_to_the_same() {
    let every_field = parse(&[
        "--activities",
        "7",
        "--tasks",
        "4",
        "--rate",
        "66.5",
        "--database",
        "postgres://postgres@127.0.0.1:5432/test",
        "--replicas",
        "3",
        "--independent",
        "2",
        "--wait-for-go",
    ])
    .unwrap();
    let closed = parse(&["--concurrency", "9"]).unwrap();
    for args in [every_field, closed] {
        let line = args.to_command_line();
        let again = parse(&line.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again, args, "{line:?}");
    }
}

#[test]
fn the_timed_parts_start_only_once_every_deployment_is_ready() {
    use super::independent::{every_one_ready, Heard};
    let (heard, hear) = std::sync::mpsc::channel();
    for said in [Heard::Ready, Heard::Ready, Heard::Ready] {
        heard.send(said).unwrap();
    }
    assert!(every_one_ready(&hear, 3));

    // One ended before its timed part (its database could not be made, say): no go for the
    // others, whichever came first.
    let (heard, hear) = std::sync::mpsc::channel();
    for said in [Heard::Ready, Heard::Ended(1), Heard::Ready] {
        heard.send(said).unwrap();
    }
    assert!(!every_one_ready(&hear, 3));

    // Every follower gone without a word (all ended): no go, no wait for ever.
    let (heard, hear) = std::sync::mpsc::channel::<Heard>();
    heard.send(Heard::Ready).unwrap();
    drop(heard);
    assert!(!every_one_ready(&hear, 2));
}
