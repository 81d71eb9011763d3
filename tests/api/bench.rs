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
        wait_for_go: false,
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
    // Their timed parts started together, once both were ready.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with("] bench: ready for the timed part"))
            .count(),
        2,
        "{stdout}"
    );
    let go = stdout
        .find("bench: all 2 deployments ready; their timed parts start now")
        .expect("the go is told");
    assert!(
        !stdout[..go].contains("bench: deployment "),
        "no deployment ended before the go: {stdout}"
    );
    // The tasks both processed, over the longer of their timed parts.
    let field = |line: &str, name: &str| -> f64 {
        let value = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='));
        value.unwrap().parse().unwrap()
    };
    let tasks: f64 = deployments
        .iter()
        .map(|l| field(l, "tasks_per_s") * field(l, "seconds"))
        .sum();
    let longest = deployments
        .iter()
        .map(|l| field(l, "seconds"))
        .fold(0.0, f64::max);
    assert!((tasks - 10.0).abs() < 0.1, "{deployments:?}");
    assert!(
        (field(last, "tasks_per_s") - tasks / longest).abs() < 0.2,
        "{last} against {deployments:?}"
    );
}

/// A deployment of `--independent` whose go never comes (the parent gone, or another
/// deployment failed) stops before its timed part instead of waiting for ever or running alone.
#[test]
fn a_deployment_whose_stdin_ends_before_the_go_stops_before_its_timed_part() {
    let exe = env!("CARGO_BIN_EXE_odm-devops");
    let output = std::process::Command::new(exe)
        .args(["bench", "--activities", "2", "--tasks", "1"])
        .args(["--concurrency", "1", "--wait-for-go"])
        .env_remove("ODM_DEVOPS_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("bench: ready for the timed part"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("bench: activities=") && !stdout.contains(" ended="),
        "no timed part: {stdout}"
    );
    assert!(stderr.contains("stdin ended before the go"), "{stderr}");
}
