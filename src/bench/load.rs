//! The timed part: creates activities (started at creation) closed-loop or open-loop, and
//! learns which ended by listing the PROCESSING ones — one light request every few
//! milliseconds, whatever the number in flight.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::args::Load;
use super::report::Errors;
use super::{workload, BenchError};

/// An activity still running after this long counts as an error and stops being waited for.
const ACTIVITY_DEADLINE: Duration = Duration::from_secs(60);

pub(crate) struct Outcome {
    pub seconds: f64,
    /// Activity ids, in creation order.
    pub created: Vec<i64>,
    pub timed_out: HashSet<i64>,
    pub errors: Errors,
    pub polls: u64,
}

#[derive(Deserialize)]
pub(crate) struct ActivityId {
    pub id: i64,
}

pub(crate) struct Driver<'a> {
    pub client: &'a awc::Client,
    pub base: &'a str,
    pub activities: u32,
    pub tasks: u32,
    pub load: Load,
}

type Created = (u32, Result<i64, String>);
type Polled = (Instant, Result<HashSet<i64>, String>);

impl Driver<'_> {
    pub async fn run(&self) -> Result<Outcome, BenchError> {
        let (poll_every, start_every) = match self.load {
            // Listing often keeps the loop full; it costs the service one read per poll.
            Load::Closed { .. } => (Duration::from_millis(10), Duration::ZERO),
            Load::Open { rate } => (
                Duration::from_millis(50),
                Duration::from_secs_f64(f64::from(self.tasks) / rate),
            ),
        };
        let total = self.activities;
        let mut next = 0u32;
        let mut creating: FuturesUnordered<LocalBoxFuture<'_, Created>> = FuturesUnordered::new();
        let mut in_flight: HashMap<i64, Instant> = HashMap::new();
        let mut polling: Option<LocalBoxFuture<'_, Polled>> = None;
        let mut out = Outcome {
            seconds: 0.0,
            created: Vec::with_capacity(total as usize),
            timed_out: HashSet::new(),
            errors: Errors::default(),
            polls: 0,
        };
        let mut ended = 0u64;
        let mut first_error: Option<String> = None;
        let mut interrupted = Box::pin(actix_web::rt::signal::ctrl_c());

        let start = Instant::now();
        let mut last_end = start;
        let mut next_poll = start;
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
            if polling.is_none() && !in_flight.is_empty() && now >= next_poll {
                polling = Some(Box::pin(self.processing()));
                out.polls += 1;
                next_poll = now + poll_every;
            }
            let mut wake = next_progress;
            if polling.is_none() && !in_flight.is_empty() {
                wake = wake.min(next_poll);
            }
            if let (Load::Open { .. }, true) = (self.load, next < total) {
                wake = wake.min(start + start_every * next);
            }

            tokio::select! {
                Some((index, created)) = creating.next(), if !creating.is_empty() => match created {
                    Ok(id) => {
                        in_flight.insert(id, Instant::now());
                        out.created.push(id);
                    }
                    Err(e) => {
                        out.errors.create += 1;
                        ended += 1;
                        first_error.get_or_insert(format!("creating activity {index}: {e}"));
                    }
                },
                (sent, listed) = async { polling.as_mut().expect("guarded").await }, if polling.is_some() => {
                    polling = None;
                    match listed {
                        // Only activities created before the list was asked for can be missing
                        // from it because they ended.
                        Ok(processing) => in_flight.retain(|id, since| {
                            let running = *since > sent || processing.contains(id);
                            if !running {
                                ended += 1;
                                last_end = Instant::now();
                            }
                            running
                        }),
                        Err(e) => {
                            out.errors.poll += 1;
                            first_error.get_or_insert(format!("listing PROCESSING activities: {e}"));
                        }
                    }
                },
                _ = actix_web::rt::time::sleep_until(wake.into()) => {}
                _ = &mut interrupted => return Err(BenchError("interrupted".into())),
            }

            let now = Instant::now();
            in_flight.retain(|id, since| {
                let late = now.duration_since(*since) > ACTIVITY_DEADLINE;
                if late {
                    out.timed_out.insert(*id);
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

    async fn create(&self, index: u32) -> Created {
        let url = format!(
            "{}/api/v1/pp/devops/activities?startAfterCreation=true",
            self.base
        );
        let body = json!({"dataProductId": workload::PRODUCT,
                          "dataProductVersion": workload::version(index),
                          "stage": workload::STAGE});
        let created = async {
            let mut response = self
                .client
                .post(url)
                .send_json(&body)
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                let text = response.body().await.unwrap_or_default();
                return Err(format!(
                    "{}: {}",
                    response.status(),
                    String::from_utf8_lossy(&text)
                ));
            }
            let activity: ActivityId = response.json().await.map_err(|e| e.to_string())?;
            Ok(activity.id)
        };
        (index, created.await)
    }

    async fn processing(&self) -> Polled {
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

/// A JSON list from the service (large lists allowed).
pub(crate) async fn list<T: serde::de::DeserializeOwned>(
    client: &awc::Client,
    url: &str,
) -> Result<Vec<T>, String> {
    let mut response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    response
        .json::<Vec<T>>()
        .limit(512 * 1024 * 1024)
        .await
        .map_err(|e| format!("{url}: {e}"))
}
