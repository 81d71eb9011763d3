//! The engine's share of the notifications (DESIGN §9): it claims the outbox rows that are due
//! and first of their entity, per listener, with a lease (as for steps: replicas never send one
//! row at the same time), sends them, and marks each delivered or due again after a backoff.
//! Each listener has its own bound on the rows under way, so a slow or dead one holds back only
//! its own rows, never a step or another listener. Also the engine's housekeeping: delivered
//! rows pruned after `notifications.keep_days`, and the deletions an ODM observer event asked
//! for carried out once the runs they cancel are cancelled.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;

use super::Engine;
use crate::clock::now_ms;
use crate::config::NotificationSettings;
use crate::db::{self, DbError, NotificationRow, SendOutcome};
use crate::domain::EventType;
use crate::notifications::{deliver, Delivery, Listeners};
use crate::registry::Registry;
use crate::telemetry::error_chain as chain;

/// Rows one listener may have under way at once (per replica).
const IN_FLIGHT_PER_LISTENER: usize = 32;
/// How often delivered rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What the engine needs to send notifications.
pub struct Notifier {
    listeners: Listeners,
    registry: Registry,
    retry_first_ms: i64,
    retry_max_ms: i64,
    timeout: Duration,
    keep_ms: i64,
    /// One per listener, in the order of `listeners`.
    in_flight: Vec<Arc<Semaphore>>,
    last_claim: Cell<Option<Instant>>,
    last_prune: Cell<Option<Instant>>,
}

impl Notifier {
    pub fn new(
        listeners: Listeners,
        registry: Registry,
        settings: &NotificationSettings,
    ) -> Notifier {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Notifier {
            in_flight: listeners
                .iter()
                .map(|_| Arc::new(Semaphore::new(IN_FLIGHT_PER_LISTENER)))
                .collect(),
            listeners,
            registry,
            retry_first_ms: ms(settings.retry_first_ms),
            retry_max_ms: ms(settings.retry_max_ms),
            timeout: Duration::from_millis(settings.timeout_ms),
            keep_ms: i64::from(settings.keep_days).saturating_mul(DAY_MS),
            last_claim: Cell::new(None),
            last_prune: Cell::new(None),
        }
    }
}

/// The wait before the next try of a row that failed `attempts` times (this one included):
/// doubled each time from `first_ms`, capped at `max_ms`, with jitter (half to all of it).
fn retry_wait_ms(first_ms: i64, max_ms: i64, attempts: i32) -> i64 {
    let exp = first_ms
        .saturating_mul(1i64 << (attempts - 1).clamp(0, 30))
        .min(max_ms);
    exp / 2 + rand::thread_rng().gen_range(0..=exp - exp / 2)
}

impl Notifier {
    pub fn listeners(&self) -> Listeners {
        self.listeners.clone()
    }
}

impl Engine {
    /// Sends notifications through `notifier` (without one, nothing is sent).
    pub fn with_notifications(mut self, notifier: Notifier) -> Engine {
        self.notifier = (!notifier.listeners.is_empty()).then_some(notifier);
        self
    }

    /// Claims the rows due for each listener (when rows were written or delivered since the last
    /// claim, or a tick has passed) and starts sending them.
    pub(super) async fn claim_notifications(self: &Rc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(notifier) = &self.notifier else {
            return Vec::new();
        };
        let written = self.waker.take_outbox_due();
        let ticked = notifier
            .last_claim
            .get()
            .is_none_or(|at| at.elapsed() >= self.config.tick);
        if !(written || ticked) {
            return Vec::new();
        }
        notifier.last_claim.set(Some(Instant::now()));
        let mut under_way = Vec::new();
        for (index, listener) in notifier.listeners.iter().enumerate() {
            let room = notifier.in_flight[index].available_permits();
            if room == 0 {
                continue;
            }
            let claim = self.handoffs.next_claim();
            let (name, lease_ms, owner) =
                (listener.name.clone(), self.config.lease_ms, claim.clone());
            let claimed = self
                .db
                .write(move |conn| {
                    let now = now_ms();
                    let lease_until = now.saturating_add(lease_ms);
                    Ok::<_, DbError>(db::claim_notifications(
                        conn,
                        &name,
                        &owner,
                        now,
                        lease_until,
                        room as i64,
                    )?)
                })
                .await;
            let rows = match claimed {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(listener = %listener.name, error = %chain(&e), "claiming notifications failed; trying again at the next tick");
                    continue;
                }
            };
            for row in rows {
                let permit = notifier.in_flight[index]
                    .clone()
                    .try_acquire_owned()
                    .expect("room was counted");
                let (engine, claim) = (self.clone(), claim.clone());
                under_way.push(actix_web::rt::spawn(async move {
                    engine.send_notification(index, row, claim).await;
                    drop(permit);
                }));
            }
        }
        under_way
    }

    async fn send_notification(&self, index: usize, row: NotificationRow, claim: String) {
        let notifier = self.notifier.as_ref().expect("claimed with a notifier");
        let listener = notifier.listeners.iter().nth(index).expect("its listener");
        let Some(event_type) = EventType::parse(&row.event_type) else {
            tracing::error!(id = row.id, event_type = %row.event_type, "an outbox row of an unknown event type is left undelivered");
            return;
        };
        let delivery = Delivery {
            id: row.id,
            event_type,
            payload: row.payload,
        };
        let sent = deliver(listener, &notifier.registry, &delivery, notifier.timeout).await;
        self.metrics.notification_sent(&listener.name, sent.is_ok());
        let (id, attempts) = (row.id, row.attempts.saturating_add(1));
        let failure = sent.as_ref().err().map(|error| {
            tracing::warn!(listener = %listener.name, id, attempts, %error, "notification not delivered; trying again later");
            let wait = retry_wait_ms(notifier.retry_first_ms, notifier.retry_max_ms, attempts);
            (error.clone(), now_ms().saturating_add(wait))
        });
        let marked = self
            .db
            .write(move |conn| {
                let outcome = match &failure {
                    None => SendOutcome::Delivered { at: now_ms() },
                    Some((error, due_at)) => SendOutcome::Failed {
                        error,
                        due_at: *due_at,
                    },
                };
                Ok::<_, DbError>(db::record_send(conn, id, &claim, outcome)?)
            })
            .await;
        match marked {
            // The entity's next row may go now.
            Ok(true) => self.waker.outbox_due(),
            Ok(false) => tracing::debug!(id, "notification taken over by another claim meanwhile"),
            // Its lease runs out and it is sent again: at least once.
            Err(e) => {
                tracing::error!(id, error = %chain(&e), "recording a notification's delivery failed")
            }
        }
    }

    /// Deletions an ODM observer asked for (once their runs are cancelled), and delivered rows
    /// older than `keep_days`. Failures are logged: the next tick tries again.
    pub(super) async fn housekeeping(&self) {
        if self.deletions_pending.get() || self.waker.take_deletions_due() {
            let done = self
                .db
                .write(|conn| {
                    let deleted = db::carry_out_activity_deletions(conn)?;
                    Ok::<_, DbError>((deleted, db::activity_deletions_pending(conn)?))
                })
                .await;
            match done {
                Ok((deleted, pending)) => {
                    if deleted > 0 {
                        tracing::info!(
                            deleted,
                            "activities deleted as an ODM observer event asked"
                        );
                    }
                    self.deletions_pending.set(pending);
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "deleting activities failed; trying again at the next tick")
                }
            }
        }
        let Some(notifier) = &self.notifier else {
            return;
        };
        if notifier
            .last_prune
            .get()
            .is_some_and(|at| at.elapsed() < PRUNE_EVERY)
        {
            return;
        }
        notifier.last_prune.set(Some(Instant::now()));
        let before = now_ms().saturating_sub(notifier.keep_ms);
        match self
            .db
            .write(move |conn| Ok::<_, DbError>(db::prune_notifications(conn, before)?))
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "delivered notifications pruned"),
            Err(e) => tracing::warn!(error = %chain(&e), "pruning notifications failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_first_is_capped_and_jittered() {
        for attempts in 1..40 {
            let exp = (100i64 << (attempts - 1).min(30)).min(1000);
            let wait = retry_wait_ms(100, 1000, attempts);
            assert!(wait >= exp / 2 && wait <= exp, "attempt {attempts}: {wait}");
        }
        assert!(retry_wait_ms(i64::MAX, i64::MAX, 1000) > 0);
    }
}
