//! The timed part: creates activities (started at creation) closed-loop or open-loop, and sees
//! them end by following the simulator's completed runs (`/_sim/runs?completedAfter=`): the
//! answer to a last task's callback means its activity is PROCESSED. That costs the service
//! nothing; a status list from the service once a second catches activities that ended any
//! other way (a failed task, no callback).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::args::Load;
use super::latency::SimRun;
use super::report::Errors;
use super::workload;

/// An activity still running after this long counts as an error and stops being waited for.
const ACTIVITY_DEADLINE: Duration = Duration::from_secs(60);
/// How often the simulator is asked which runs completed.
const WATCH_EVERY: Duration = Duration::from_millis(5);
/// How often the service is asked which activities are still PROCESSING.
const LIST_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Outcome {
    pub seconds: f64,
    /// Activity ids, in creation order.
    pub created: Vec<i64>,
    pub timed_out: HashSet<i64>,
    pub errors: Errors,
    /// Status lists asked of the service during the timed part.
    pub polls: u64,
    /// Their round trips, summed.
    pub polls_seconds: f64,
}

#[derive(Deserialize)]
pub(crate) struct ActivityId {
    pub id: i64,
}

pub(crate) struct Driver<'a> {
    pub client: &'a awc::Client,
    /// The server asked for the lists.
    pub base: &'a str,
    /// Every server (`--replicas`): activities are created on each in turn.
    pub servers: &'a [String],
    pub simulator: &'a str,
    pub activities: u32,
    pub tasks: u32,
    pub load: Load,
}

struct Flight {
    id: i64,
    since: Instant,
}

type Created = (u32, anyhow::Result<i64>);
type Listed = (Instant, anyhow::Result<HashSet<i64>>);
type Watched = anyhow::Result<Vec<SimRun>>;

impl Driver<'_> {
    pub async fn run(&self) -> anyhow::Result<Outcome> {
        let start_every = match self.load {
            Load::Closed { .. } => Duration::ZERO,
            Load::Open { rate } => Duration::from_secs_f64(f64::from(self.tasks) / rate),
        };
        let total = self.activities;
        let mut next = 0u32;
        let mut creating: FuturesUnordered<LocalBoxFuture<'_, Created>> = FuturesUnordered::new();
        let mut in_flight: HashMap<u32, Flight> = HashMap::new();
        // Seen ending before their creation was answered.
        let mut ended_early: HashSet<u32> = HashSet::new();
        let mut watching: Option<LocalBoxFuture<'_, Watched>> = None;
        let mut listing: Option<LocalBoxFuture<'_, Listed>> = None;
        let mut cursor = 0u64;
        let mut out = Outcome {
            seconds: 0.0,
            created: Vec::with_capacity(total as usize),
            timed_out: HashSet::new(),
            errors: Errors::default(),
            polls: 0,
            polls_seconds: 0.0,
        };
        let mut ended = 0u64;
        let mut first_error: Option<String> = None;
        let mut interrupted = Box::pin(actix_web::rt::signal::ctrl_c());

        let start = Instant::now();
        let mut last_end = start;
        let mut next_watch = start;
        let mut next_list = start + LIST_EVERY;
        let mut next_progress = start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            while next < total {
                let admit = match self.load {
                    Load::Closed { concurrency } => {
                        creating.len() + in_flight.len() < concurrency as usize
                    }
                    Load::Open { .. } => start + start_every * next <= now,
                };
                if !admit {
                    break;
                }
                creating.push(Box::pin(self.create(next)));
                next += 1;
            }
            if next == total && creating.is_empty() && in_flight.is_empty() {
                break;
            }
            let busy = !in_flight.is_empty() || !creating.is_empty();
            if watching.is_none() && busy && now >= next_watch {
                watching = Some(Box::pin(self.completed_runs(cursor)));
                next_watch = now + WATCH_EVERY;
            }
            if listing.is_none() && !in_flight.is_empty() && now >= next_list {
                listing = Some(Box::pin(self.processing()));
                out.polls += 1;
                next_list = now + LIST_EVERY;
            }
            let mut wake = next_progress.min(next_list);
            if watching.is_none() && busy {
                wake = wake.min(next_watch);
            }
            if let (Load::Open { .. }, true) = (self.load, next < total) {
                wake = wake.min(start + start_every * next);
            }

            tokio::select! {
                Some((index, created)) = creating.next(), if !creating.is_empty() => match created {
                    Ok(id) => {
                        out.created.push(id);
                        if ended_early.remove(&index) {
                            ended += 1;
                            last_end = Instant::now();
                        } else {
                            in_flight.insert(index, Flight { id, since: Instant::now() });
                        }
                    }
                    Err(e) => {
                        out.errors.create += 1;
                        ended += 1;
                        first_error.get_or_insert(format!("creating activity {index}: {e:#}"));
                    }
                },
                watched = async { watching.as_mut().expect("guarded").await }, if watching.is_some() => {
                    watching = None;
                    match watched {
                        Ok(runs) => {
                            for run in runs {
                                cursor = cursor.max(run.completion_seq.unwrap_or(0));
                                let Some(index) = self.last_task_answered(&run) else { continue };
                                if in_flight.remove(&index).is_some() {
                                    ended += 1;
                                    last_end = Instant::now();
                                } else {
                                    ended_early.insert(index);
                                }
                            }
                        }
                        Err(e) => {
                            out.errors.poll += 1;
                            first_error.get_or_insert(format!("following the simulator's runs: {e:#}"));
                        }
                    }
                },
                (sent, listed) = async { listing.as_mut().expect("guarded").await }, if listing.is_some() => {
                    listing = None;
                    out.polls_seconds += sent.elapsed().as_secs_f64();
                    match listed {
                        // Only activities created before the list was asked for can be missing
                        // from it because they ended.
                        Ok(processing) => in_flight.retain(|_, f| {
                            let running = f.since > sent || processing.contains(&f.id);
                            if !running {
                                ended += 1;
                                last_end = Instant::now();
                            }
                            running
                        }),
                        Err(e) => {
                            out.errors.poll += 1;
                            first_error.get_or_insert(format!("listing PROCESSING activities: {e:#}"));
                        }
                    }
                },
                _ = actix_web::rt::time::sleep_until(wake.into()) => {}
                _ = &mut interrupted => bail!("interrupted"),
            }

            let now = Instant::now();
            in_flight.retain(|_, f| {
                let late = now.duration_since(f.since) > ACTIVITY_DEADLINE;
                if late {
                    out.timed_out.insert(f.id);
                    ended += 1;
                }
                !late
            });
            if now >= next_progress {
                println!(
                    "bench: {:>5.1}s ended={ended} activities ({} tasks) in_flight={} errors={}",
                    now.duration_since(start).as_secs_f64(),
                    ended * u64::from(self.tasks),
                    in_flight.len() + creating.len(),
                    out.errors.create + out.errors.poll + out.timed_out.len() as u64,
                );
                next_progress += Duration::from_secs(1);
            }
        }
        out.errors.timeouts = out.timed_out.len() as u64;
        out.seconds = last_end.duration_since(start).as_secs_f64();
        if let Some(e) = first_error {
            println!("bench: first error: {e}");
        }
        Ok(out)
    }

    /// The activity index of a last task's run whose callback the service accepted: with the
    /// executor's default `check_after_callback: false`, the activity is PROCESSED by then.
    fn last_task_answered(&self, run: &SimRun) -> Option<u32> {
        let number = |name: &str| run.template_parameters.get(name)?.parse::<u32>().ok();
        let accepted = run
            .callback
            .as_ref()
            .and_then(|c| c.status)
            .is_some_and(|s| (200..300).contains(&s));
        (accepted && number("task")? == self.tasks)
            .then(|| number("activity"))
            .flatten()
    }

    async fn create(&self, index: u32) -> Created {
        let server = &self.servers[index as usize % self.servers.len()];
        let url = format!("{server}/api/v1/pp/devops/activities?startAfterCreation=true");
        let body = json!({"dataProductId": workload::PRODUCT,
                          "dataProductVersion": workload::version(index),
                          "stage": workload::STAGE});
        let created = async {
            let mut response = self
                .client
                .post(url)
                .send_json(&body)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            if !response.status().is_success() {
                let text = response.body().await.unwrap_or_default();
                bail!("{}: {}", response.status(), String::from_utf8_lossy(&text));
            }
            let activity: ActivityId = response.json().await.context("the answer")?;
            Ok(activity.id)
        };
        (index, created.await)
    }

    async fn completed_runs(&self, after: u64) -> Watched {
        let url = format!("{}/_sim/runs?completedAfter={after}", self.simulator);
        list::<SimRun>(self.client, &url).await
    }

    async fn processing(&self) -> Listed {
        let sent = Instant::now();
        let url = format!(
            "{}/api/v1/pp/devops/activities?status=PROCESSING",
            self.base
        );
        let listed = list::<ActivityId>(self.client, &url).await;
        (
            sent,
            listed.map(|ids| ids.into_iter().map(|a| a.id).collect()),
        )
    }
}

/// A JSON list from the service or the simulator (large lists allowed).
pub(crate) async fn list<T: serde::de::DeserializeOwned>(
    client: &awc::Client,
    url: &str,
) -> anyhow::Result<Vec<T>> {
    let body = get(client, url, 512 * 1024 * 1024, "").await?;
    serde_json::from_slice(&body).with_context(|| format!("{url}: not the JSON list expected"))
}

/// The body of a successful GET of `url`, at most `limit` bytes; a refusal names the status,
/// followed by `hint`.
pub(crate) async fn get(
    client: &awc::Client,
    url: &str,
    limit: usize,
    hint: &str,
) -> anyhow::Result<actix_web::web::Bytes> {
    // awc's send error is not `Send`: keep its text.
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow!("{url}: {e}"))?;
    if !response.status().is_success() {
        bail!("{url}: {}{hint}", response.status());
    }
    response
        .body()
        .limit(limit)
        .await
        .with_context(|| format!("{url}: no body"))
}
