//! `odm-devops bench` end to end on a tiny load: the real binary as server and simulator.

use std::path::Path;

use odm_devops::bench::{BenchArgs, Load};

use crate::helpers::POSTGRES_URL_VAR;

fn tiny(load: Load, database: Option<String>) -> BenchArgs {
    let (concurrency, rate) = match load {
        Load::Closed { concurrency } => (Some(concurrency), None),
        Load::Open { rate } => (None, Some(rate)),
    };
    BenchArgs {
        activities: 5,
        tasks: 2,
        concurrency,
        rate,
        database,
        replicas: 1,
        independent: 1,
    }
}

fn bench(load: Load, database: Option<String>) {
    let exe = Path::new(env!("CARGO_BIN_EXE_odm-devops"));
    let report = odm_devops::bench::run(&tiny(load, database), exe, None).unwrap();
    let line = report.last_line();
    assert_eq!(report.errors.total(), 0, "{}", report.summary());
    assert_eq!(report.tasks_processed, 10, "{}", report.summary());
    assert_eq!(report.gaps_ms.len(), 5, "one gap per activity: {line}");
    // A gap could be slightly negative if the next run request beat the callback's answer to
    // the simulator; it cannot be absent or absurd.
    assert!(
        report
            .gaps_ms
            .iter()
            .all(|g| g.is_finite() && g.abs() < 10_000.0),
        "{line}"
    );
    assert!(report.ready_ms > 0.0 && report.idle_rss_mib > 0.0, "{line}");
    assert!(report.peak_rss_mib >= report.idle_rss_mib, "{line}");
    // The server's commits during the timed part: at least one per callback, each recorded by
    // a commit (batched with others at most).
    let commits = report.commits.expect("commits counted");
    assert!(commits > 0, "{}", report.summary());
    let per_task = report.commits_per_task();
    assert!(per_task > 0.0 && per_task < 100.0, "{line}");
    assert!(
        line.contains(&format!(" commits_per_task={per_task:.2} errors=")),
        "{line}"
    );
    assert!(line.starts_with("bench: activities=5 tasks=2 "), "{line}");
    assert!(line.ends_with(" errors=0"), "{line}");
}

#[test]
fn a_tiny_closed_loop_run_on_sqlite() {
    bench(Load::Closed { concurrency: 2 }, None);
}

#[test]
fn a_tiny_open_loop_run_on_postgres() {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) => bench(Load::Open { rate: 50.0 }, Some(url)),
        Err(_) => {
            eprintln!("*** {POSTGRES_URL_VAR} is not set: the PostgreSQL bench run is SKIPPED ***")
        }
    }
}

#[test]
fn a_tiny_run_on_two_replicas_on_postgres_runs_each_task_once() {
    let Ok(url) = std::env::var(POSTGRES_URL_VAR) else {
        eprintln!("*** {POSTGRES_URL_VAR} is not set: the PostgreSQL bench run on two replicas is SKIPPED ***");
        return;
    };
    let args = BenchArgs {
        activities: 10,
        replicas: 2,
        ..tiny(Load::Closed { concurrency: 4 }, Some(url))
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_odm-devops"));
    let report = odm_devops::bench::run(&args, exe, None).unwrap();
    let line = report.last_line();
    assert_eq!(report.errors.total(), 0, "{}", report.summary());
    assert_eq!(report.errors.runs_twice, 0, "{}", report.summary());
    assert_eq!(report.tasks_processed, 20, "{}", report.summary());
    // Every run was sent by one of the two servers, and both took part.
    assert_eq!(
        report.runs_per_replica.iter().sum::<u64>(),
        20,
        "{}",
        report.summary()
    );
    assert!(
        report.runs_per_replica.iter().all(|n| *n > 0),
        "{}",
        report.summary()
    );
    assert!(line.contains(" replicas=2 "), "{line}");
}

#[test]
fn replicas_on_sqlite_are_refused_before_anything_starts() {
    let args = BenchArgs {
        replicas: 2,
        ..tiny(Load::Closed { concurrency: 1 }, None)
    };
    let exe = Path::new(env!("CARGO_BIN_EXE_odm-devops"));
    let refused = odm_devops::bench::run(&args, exe, None)
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("--replicas 2 needs --database"),
        "{refused}"
    );
}

/// `--independent 2`, the control for `--replicas 2`, as a user runs it: two deployments of
/// their own (SQLite files here), each with half the load, and the sum of their last lines.
#[test]
fn two_independent_deployments_each_run_half_and_add_up() {
    let exe = env!("CARGO_BIN_EXE_odm-devops");
    let output = std::process::Command::new(exe)
        .args([
            "bench",
            "--activities",
            "5",
            "--tasks",
            "2",
            "--concurrency",
            "3",
        ])
        .args(["--independent", "2"])
        .env_remove("ODM_DEVOPS_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deployments: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("bench: deployment "))
        .collect();
    assert_eq!(deployments.len(), 2, "{stdout}");
    // In the order they end; each names its number.
    let deployment = |n: u32| {
        let marked = format!("bench: deployment {n} of 2: bench: ");
        deployments.iter().find(|l| l.starts_with(&marked)).copied()
    };
    assert!(
        deployment(1).is_some_and(|l| l.contains("activities=3 tasks=2 concurrency=2 "))
            && deployment(2).is_some_and(|l| l.contains("activities=2 tasks=2 concurrency=1 ")),
        "the load split evenly: {stdout}"
    );
    assert!(
        deployments.iter().all(|l| l.ends_with(" errors=0")),
        "{stdout}"
    );
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("bench: independent=2 activities=5 tasks=2 concurrency=3 rate=0 ")
            && last.ends_with(" errors=0"),
        "{last}"
    );
    // Each deployment's task completions a second, added up.
    let rate = |line: &str| -> f64 {
        let value = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("tasks_per_s="));
        value.unwrap().parse().unwrap()
    };
    let sum: f64 = deployments.iter().map(|l| rate(l)).sum();
    assert!(
        (rate(last) - sum).abs() < 0.2,
        "{last} against {deployments:?}"
    );
}
