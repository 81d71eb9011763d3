//! `odm-devops bench`: the service end to end under load, as a separate process, against the
//! Azure DevOps simulator (another process) answering and calling back at once.
//!
//! ```text
//! odm-devops bench --activities N --tasks T (--concurrency C | --rate R) [--database URL]
//!                  [--replicas N | --independent N]
//! ```
//!
//! 1. Starts `simulate-azure` and `serve` from this very binary (`current_exe`, so `cargo run
//!    --release -- bench` measures the release build) on free loopback ports: a temporary SQLite
//!    file, or a fresh database on the PostgreSQL server of `--database` (dropped after). The
//!    server's settings come from the environment (`ODM_DEVOPS__…`, log level `warn`, the
//!    executor pointed at the simulator); `--config FILE` and any other `ODM_DEVOPS__…` of the
//!    bench's environment reach it too. `--replicas N` (PostgreSQL only) starts N servers on
//!    the one database, each with its own `public_url`, so a pipeline calls back the replica
//!    that dispatched it; activities are created on each in turn. `--independent N`, their
//!    control, runs N such benches of one server each at once, the load split evenly, their
//!    timed parts started together, and adds up their last lines (`independent.rs`).
//! 2. Ready time: from spawning the server to its first 200 on `/health/ready`. Idle RSS: its
//!    VmRSS after a short settle, before any load.
//! 3. Stores one descriptor per activity (`dev` stage of T tasks on the simulator's pipeline).
//! 4. The timed part: creates activities with `startAfterCreation=true`, keeping C in flight
//!    (closed loop: throughput) or starting one every T/R seconds (open loop: latency at a
//!    steady R task completions per second). It sees them end by following the simulator's
//!    completed runs every 5 ms (the answer to a last task's callback), which costs the server
//!    nothing, and lists the server's PROCESSING activities once a second to catch any that
//!    ended otherwise. Prints a progress line every second.
//! 5. After it: peak RSS (VmHWM), the final state of every activity, and the simulator's runs,
//!    whose timestamps give the time from each callback's answer to the next task's run
//!    request (p50/p99).
//!
//! Commits per task (`commits.rs`): the server's commits during the timed part / tasks
//! processed; on PostgreSQL the run waits 10.5 s before the timed part for the counts to settle.
//!
//! Errors: non-2xx or failed requests, activities not PROCESSED or running past 60 s,
//! callbacks refused, tasks whose pipeline ran more than once (counted at the simulator). With
//! replicas, RSS is the largest server's and ready the first one's. The last line is exactly:
//!
//! ```text
//! bench: activities=N tasks=N concurrency=N rate=F replicas=N seconds=F tasks_per_s=F p50_ms=F p99_ms=F peak_rss_mib=F idle_rss_mib=F ready_ms=F commits_per_task=F errors=N
//! ```
//! (`concurrency=0` in a rate run, `rate=0` in a concurrency run).

mod args;
mod commits;
mod database;
mod independent;
mod latency;
mod load;
mod procs;
mod report;
mod rig;
mod runs;
#[cfg(test)]
mod tests;
mod workload;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;

pub use self::args::{BenchArgs, Load};
pub use self::report::{Errors, Report};
use self::rig::Rig;

/// How long the server idles after ready before its idle RSS is read.
const SETTLE: Duration = Duration::from_millis(500);
/// How long activities seen ended may take to show it in the final check.
const SETTLE_END: Duration = Duration::from_secs(10);

/// The command: runs the benchmark on this binary and prints the summary and the last line.
/// An error says why the run could not be carried out (errors *during* the load are counted
/// in the report instead).
pub fn run_cli(args: &BenchArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary to start it")?;
    if args.independent > 1 {
        return independent::run_cli(args, &exe, config);
    }
    let report = run(args, &exe, config)?;
    println!("{}", report.summary());
    println!("{}", report.last_line());
    Ok(())
}

/// Runs the benchmark with `exe` as the server and simulator binary (in its own actix System).
pub fn run(args: &BenchArgs, exe: &Path, config: Option<&Path>) -> anyhow::Result<Report> {
    actix_web::rt::System::new().block_on(run_in_system(args, exe, config))
}

async fn run_in_system(
    args: &BenchArgs,
    exe: &Path,
    config: Option<&Path>,
) -> anyhow::Result<Report> {
    args.check().map_err(anyhow::Error::msg)?;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut rig = Rig::start(args, exe, config, &client).await?;
    println!(
        "bench: server {} (pid {}, {}), simulator {} (pid {})",
        rig.server_url,
        rig.server.pid(),
        rig.database.describe(),
        rig.simulator_url,
        rig.simulator.pid()
    );
    for replica in &rig.others {
        println!(
            "bench: replica {} (pid {}), same database",
            replica.url,
            replica.server.pid()
        );
    }
    let servers = rig.server_urls();
    actix_web::rt::time::sleep(SETTLE).await;
    let idle_rss_mib = largest(rig.servers_mut().map(|s| s.memory().map(|m| m.rss_mib)))?;
    println!(
        "bench: ready in {:.1} ms, idle RSS {:.1} MiB",
        rig.ready_ms, idle_rss_mib
    );

    let stored = Instant::now();
    store_descriptors(&client, &rig.server_url, args).await?;
    println!(
        "bench: stored {} descriptors of {} tasks in {:.1} s; load starts",
        args.activities,
        args.tasks,
        stored.elapsed().as_secs_f64()
    );

    let commits = commits::Commits::before(&rig.database, &rig.server_url, &client).await?;
    if args.wait_for_go {
        independent::wait_for_go().await?;
    }

    let outcome = load::Driver {
        client: &client,
        base: &rig.server_url,
        servers: &servers,
        simulator: &rig.simulator_url,
        activities: args.activities,
        tasks: args.tasks,
        load: args.load(),
    }
    .run()
    .await?;
    let sqlite_commits = commits.sqlite_after(&client).await?;
    for server in rig.servers_mut() {
        server.check_alive()?;
    }
    rig.simulator.check_alive()?;
    let peak_rss_mib = largest(rig.servers_mut().map(|s| s.memory().map(|m| m.peak_mib)))?;

    // After the timed part: what became of each activity, and the simulator's records.
    let mut errors = outcome.errors;
    let processed = count_processed(&client, &rig.server_url, &outcome).await?;
    errors.not_processed = (outcome.created.len() - outcome.timed_out.len()) as u64 - processed;
    let runs: Vec<latency::SimRun> =
        load::list(&client, &format!("{}/_sim/runs", rig.simulator_url))
            .await
            .context("reading the simulator's runs")?;
    errors.callbacks = latency::failed_callbacks(&runs);
    errors.runs_twice = runs::tasks_run_twice(&runs);
    if errors.total() > 0 {
        println!(
            "bench: {} errors: the servers' and the simulator's logs are kept in {}",
            errors.total(),
            rig.dir.keep().display()
        );
    }
    let ready_ms = rig.ready_ms;
    // Every replica's backends publish their counts as they exit.
    for server in rig.servers_mut() {
        server.stop();
    }
    let commits = match sqlite_commits {
        Some(n) => Some(n),
        None => commits.postgres_after().await?,
    };
    drop(rig);

    Ok(Report {
        activities: args.activities,
        tasks: args.tasks,
        load: args.load(),
        replicas: args.replicas,
        runs_per_replica: runs::runs_per_replica(&runs, &servers),
        seconds: outcome.seconds,
        tasks_processed: processed * u64::from(args.tasks),
        gaps_ms: latency::gaps_ms(&runs),
        peak_rss_mib,
        idle_rss_mib,
        ready_ms,
        errors,
        commits,
        polls: outcome.polls,
        poll_ms: if outcome.polls > 0 {
            outcome.polls_seconds * 1000.0 / outcome.polls as f64
        } else {
            0.0
        },
    })
}

/// The largest of the servers' values (one per replica).
fn largest(mut values: impl Iterator<Item = anyhow::Result<f64>>) -> anyhow::Result<f64> {
    values.try_fold(0.0, |max: f64, v| Ok(max.max(v?)))
}

/// One descriptor per activity, a few PUTs at a time.
async fn store_descriptors(
    client: &awc::Client,
    base: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let puts = (0..args.activities).map(|index| async move {
        let url = format!(
            "{base}/api/v1/pp/registry/products/{}/versions/{}",
            workload::PRODUCT,
            workload::version(index)
        );
        let response = client
            .put(&url)
            .send_json(&workload::descriptor(index, args.tasks))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("storing a descriptor at {url}"))?;
        if !response.status().is_success() {
            bail!("storing a descriptor: {url} answered {}", response.status());
        }
        Ok(())
    });
    let mut puts = stream::iter(puts).buffer_unordered(16);
    while let Some(stored) = puts.next().await {
        stored?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct ActivityStatus {
    id: i64,
    status: String,
}

/// How many of the activities created (and not given up on) ended PROCESSED.
/// Waits (up to `SETTLE_END`) for activities still finishing — with `check_after_callback`
/// an activity ends a moment after its last callback was answered.
async fn count_processed(
    client: &awc::Client,
    base: &str,
    outcome: &load::Outcome,
) -> anyhow::Result<u64> {
    let url = format!(
        "{base}/api/v1/pp/devops/activities?dataProductId={}",
        workload::PRODUCT
    );
    let created: HashSet<i64> = outcome
        .created
        .iter()
        .filter(|id| !outcome.timed_out.contains(id))
        .copied()
        .collect();
    let deadline = Instant::now() + SETTLE_END;
    loop {
        let all: Vec<ActivityStatus> = load::list(client, &url)
            .await
            .context("listing the activities after the load")?;
        let ours = || all.iter().filter(|a| created.contains(&a.id));
        let running = ours().any(|a| a.status == "PROCESSING" || a.status == "PLANNED");
        if !running || Instant::now() > deadline {
            return Ok(ours().filter(|a| a.status == "PROCESSED").count() as u64);
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}
