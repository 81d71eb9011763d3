//! `--independent N`: the control for `--replicas N` (issue 15). The same load, split evenly
//! across N deployments that share nothing but the host: each is a `bench` of its own (this
//! binary as a child process, all started at once) with its own database, simulator, server
//! and driver. Their task completions per second add up. What `--replicas N` loses against this
//! sum is the cost of sharing one database; what this sum loses against one deployment is the
//! cost of splitting the load on this host (README, *The control*). Their timed parts start
//! together: each deployment says when it is ready for its own (`--wait-for-go`), and all are
//! told to go once all are.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use anyhow::{bail, Context};

use super::BenchArgs;

/// What a deployment's bench prints when it is ready for its timed part (`wait_for_go`).
const READY: &str = "bench: ready for the timed part";

/// In a deployment's bench (`--wait-for-go`): says it is ready, then waits for the parent's go,
/// a line on stdin. Stdin ended instead means another deployment failed before its timed part:
/// this one stops too (its server, simulator and database cleaned up as on any error).
pub(super) async fn wait_for_go() -> anyhow::Result<()> {
    println!("{READY}");
    let read = actix_web::rt::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await
    .context("waiting for the go on stdin")?
    .context("reading the go from stdin")?;
    if read == 0 {
        bail!(
            "stdin ended before the go: another deployment of --independent did not reach its              timed part, so this one does not start its own"
        );
    }
    Ok(())
}

/// What the parent hears of a deployment, by its index.
pub(super) enum Heard {
    Ready,
    Ended(usize),
}

/// Runs the `--independent` control and prints each deployment's last line, then the sum.
/// The deployments set up (database, simulator, server, descriptors) at their own pace; their
/// timed parts start together once every one is ready.
pub fn run_cli(args: &BenchArgs, exe: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    args.check().map_err(anyhow::Error::msg)?;
    let shares = split(args);
    let count = shares.len();
    println!(
        "bench: {count} independent deployments started together, each with its own database, \
         simulator, server and driver; their timed parts start together"
    );
    let mut children = Vec::with_capacity(count);
    for share in &shares {
        match spawn(exe, config, share) {
            Ok(child) => children.push(child),
            Err(e) => {
                // Those started stop before their timed part once their stdin ends (killed, a
                // bench could not stop its server and simulator nor drop its database); their
                // output is set aside.
                for started in &mut children {
                    drop(started.stdin.take());
                    if let Some(mut output) = started.stdout.take() {
                        let _ = std::io::copy(&mut output, &mut std::io::sink());
                    }
                    let _ = started.wait();
                }
                return Err(e);
            }
        }
    }
    let (heard, hear) = mpsc::channel();
    // Each deployment's output as it comes, marked with its number; its last line kept.
    let followers: Vec<_> = children
        .iter_mut()
        .enumerate()
        .map(|(n, child)| {
            let stdout = child.stdout.take().expect("stdout is piped");
            let heard = heard.clone();
            std::thread::spawn(move || {
                let mut last = None;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with("bench: activities=") {
                        println!("bench: deployment {} of {count}: {line}", n + 1);
                        last = Some(line);
                    } else {
                        println!("[{}] {line}", n + 1);
                        if line == READY {
                            let _ = heard.send(Heard::Ready);
                        }
                    }
                }
                let _ = heard.send(Heard::Ended(n));
                last
            })
        })
        .collect();
    drop(heard);
    let mut stdins: Vec<_> = children.iter_mut().map(|c| c.stdin.take()).collect();
    if every_one_ready(&hear, count) {
        // One short write each: the timed parts start within a millisecond of each other.
        for stdin in stdins.iter_mut().flatten() {
            let _ = stdin.write_all(b"go\n");
        }
        println!("bench: all {count} deployments ready; their timed parts start now");
    }
    // A deployment still waiting (another one ended first) sees its stdin end and stops.
    drop(stdins);
    // Every deployment waited for before any is judged: none is left running.
    let ended: Vec<_> = children
        .into_iter()
        .zip(followers)
        .map(|(mut child, follower)| (child.wait(), follower.join().unwrap_or(None)))
        .collect();
    let mut lines = Vec::with_capacity(count);
    for (n, (status, last)) in ended.into_iter().enumerate() {
        let status = status.context("cannot wait for a deployment's bench")?;
        let Some(line) = last else {
            bail!(
                "deployment {} of {count} ended without its last line ({status}; its output is \
                 above)",
                n + 1
            );
        };
        lines.push(line);
    }
    let sum = Sum::of(&lines)?;
    println!("{}", sum.last_line(args, count));
    Ok(())
}

/// Whether all `count` deployments said they are ready before any ended.
pub(super) fn every_one_ready(hear: &mpsc::Receiver<Heard>, count: usize) -> bool {
    let mut ready = 0;
    while ready < count {
        match hear.recv() {
            Ok(Heard::Ready) => ready += 1,
            Ok(Heard::Ended(n)) => {
                println!(
                    "bench: deployment {} of {count} ended before its timed part; the others \
                     are told to stop",
                    n + 1
                );
                return false;
            }
            Err(_) => return false,
        }
    }
    true
}

/// A deployment's bench: `share` as its command line, stdin kept for the go.
fn spawn(
    exe: &Path,
    config: Option<&Path>,
    share: &BenchArgs,
) -> anyhow::Result<std::process::Child> {
    let mut command = Command::new(exe);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command
        .arg("bench")
        .args(share.to_command_line())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start a deployment's bench")
}

/// `args`' load split evenly into `args.independent` shares (the first ones take what does not
/// divide), each a single deployment.
pub(super) fn split(args: &BenchArgs) -> Vec<BenchArgs> {
    let n = args.independent.max(1);
    let share = |total: u32, i: u32| total / n + u32::from(i < total % n);
    (0..n)
        .map(|i| BenchArgs {
            activities: share(args.activities, i),
            concurrency: args.concurrency.map(|c| share(c, i)),
            rate: args.rate.map(|r| r / f64::from(n)),
            replicas: 1,
            independent: 1,
            wait_for_go: true,
            ..args.clone()
        })
        .collect()
}

/// The deployments' last lines added up. Their timed parts start together, so the load they
/// carried together is every task they processed over the longest timed part: the figure
/// `--replicas` gives for its one timed part.
#[derive(Debug, PartialEq)]
pub(super) struct Sum {
    /// The longest timed part.
    pub seconds: f64,
    /// The tasks processed by all, over the longest timed part.
    pub tasks_per_s: f64,
    /// Weighted by each deployment's tasks processed.
    pub commits_per_task: f64,
    pub errors: u64,
}

impl Sum {
    pub(super) fn of(lines: &[String]) -> anyhow::Result<Sum> {
        let mut sum = Sum {
            seconds: 0.0,
            tasks_per_s: 0.0,
            commits_per_task: 0.0,
            errors: 0,
        };
        let mut tasks = 0.0;
        for line in lines {
            let field = |name: &str| -> anyhow::Result<f64> {
                line.split_whitespace()
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|value| value.parse::<f64>().ok())
                    .with_context(|| format!("no number `{name}=` in a deployment's line: {line}"))
            };
            let seconds = field("seconds")?;
            let processed = field("tasks_per_s")? * seconds;
            sum.seconds = sum.seconds.max(seconds);
            sum.commits_per_task += field("commits_per_task")? * processed;
            // A count printed by this binary: whole and small.
            sum.errors = sum.errors.saturating_add(field("errors")? as u64);
            tasks += processed;
        }
        if tasks > 0.0 {
            sum.commits_per_task /= tasks;
        }
        if sum.seconds > 0.0 {
            sum.tasks_per_s = tasks / sum.seconds;
        }
        Ok(sum)
    }

    /// `bench: independent=N activities=N tasks=N concurrency=N rate=F seconds=F tasks_per_s=F
    /// commits_per_task=F errors=N`, totals over the deployments.
    pub(super) fn last_line(&self, args: &BenchArgs, deployments: usize) -> String {
        format!(
            "bench: independent={deployments} activities={} tasks={} concurrency={} rate={} \
             seconds={:.3} tasks_per_s={:.1} commits_per_task={:.2} errors={}",
            args.activities,
            args.tasks,
            args.concurrency.unwrap_or(0),
            args.rate.unwrap_or(0.0),
            self.seconds,
            self.tasks_per_s,
            self.commits_per_task,
            self.errors
        )
    }
}
