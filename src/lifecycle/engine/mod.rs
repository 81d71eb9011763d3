//! The engine: claims due steps from the database with a lease and carries them out (DESIGN §10).
//! Nothing it needs lives only in memory: a step is a row (`tasks.step`, `due_at`), so a restart
//! or another replica picks up where this one stopped.
//!
//! One `tick` claims what is due and starts carrying it out; the loop (`spawn`) ticks when woken
//! and every `engine.tick_ms`, and tests tick it themselves (`tick().await?.finished()`).
//!
//! It runs on one actix System thread (executors use awc, which is `!Send`); the database work
//! goes through `Db`, on the blocking pool.

mod dispatch;
mod gates;
mod handed;
mod notify;
mod steps;

pub use notify::Notifier;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, watch, Semaphore};

use super::context::TaskContext;
use super::handoff::{Handed, HandoffLease, Handoffs};
use super::plumbing::{Applied, EngineTimings, Waker};
use super::state::{self, Timing};
use crate::clock::now_ms;
use crate::config::LimitSettings;
use crate::db::{self, ApplyError, Db, DbConnection, DbError, SnapshotOf};
use crate::domain::{ActivityId, ClaimedStep, Plan, Snapshot, Step, TaskId, UpdateOnClaim};
use crate::executor::Executors;
use crate::keys::Keys;
use crate::metrics::{Metrics, StepResult};
use crate::notifications::{self, Listeners};
use crate::placeholders::OnMissing;
use crate::telemetry::error_chain as chain;

pub use gates::ResultGates;

/// How long a stopping engine waits for the steps under way (an executor call is bounded by
/// its own timeouts).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait before a dispatch or a cancel is tried again.
const RETRY_CAP_MS: i64 = 60_000;
/// Longest wait before the provider is asked again to confirm a callback.
const CONFIRM_CAP_MS: i64 = 30_000;
const MAX_CANCEL_ATTEMPTS: i32 = 10;
/// Longest a step keeps trying its database work (bounded by half its lease as well).
const DATABASE_RETRY_BUDGET: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub tick: Duration,
    pub lease_ms: i64,
    pub max_dispatch_attempts: u32,
    pub on_missing: OnMissing,
    /// `configurations_bytes` and `results_bytes` bound what a task carries.
    pub limits: LimitSettings,
    pub public_url: String,
    /// Steps claimed per database round trip.
    pub batch: usize,
    /// Steps carried out at once by this replica.
    pub max_in_flight: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("activity {0} disappeared")]
    Gone(ActivityId),
    /// Someone else changed the task first; their word stands.
    #[error("superseded: {0}")]
    Superseded(String),
}

impl From<diesel::result::Error> for EngineError {
    fn from(e: diesel::result::Error) -> Self {
        EngineError::Db(DbError::Query(e))
    }
}

impl From<ApplyError> for EngineError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Conflict(m) => EngineError::Superseded(m),
            ApplyError::Query(e) => e.into(),
        }
    }
}

pub struct Engine {
    db: Db,
    executors: Executors,
    keys: Keys,
    timings: EngineTimings,
    config: EngineConfig,
    waker: Waker,
    metrics: Arc<Metrics>,
    replica: String,
    /// One permit per step under way: bounds the steps this replica carries out at once.
    in_flight: Arc<Semaphore>,
    /// Names claims; reserves room for the dispatches writes hand this engine (`handoff.rs`).
    handoffs: Arc<Handoffs>,
    /// The dispatches handed over, once their writes committed.
    /// (A tokio mutex: the loop holds it while it waits; `tick` never runs during that wait.)
    handed: tokio::sync::Mutex<mpsc::UnboundedReceiver<Handed>>,
    /// Sends notifications, when listeners are configured (`with_notifications`).
    notifier: Option<Notifier>,
    /// Deletions asked by an ODM observer may wait (true at start: they are looked for once).
    deletions_pending: Cell<bool>,
    /// ODM's policy service, asked before results are accepted (`gates.rs`).
    gates: Option<ResultGates>,
}

/// Stops the engine's loop; steps already under way finish (or their leases expire).
pub struct EngineHandle {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

impl EngineHandle {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.join.await;
    }
}

/// What one tick did: the steps and notifications it claimed, carried out in the background.
pub struct Tick {
    /// Claimed as many as there was room for: more may be due already.
    saturated: bool,
    under_way: Vec<tokio::task::JoinHandle<StepReport>>,
    deliveries: Vec<tokio::task::JoinHandle<()>>,
}

/// What carrying out one claimed step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    pub task: TaskId,
    pub step: Step,
    pub result: StepResult,
}

impl Tick {
    /// How many steps and notifications the tick claimed.
    pub fn claimed(&self) -> usize {
        self.under_way.len() + self.deliveries.len()
    }

    /// Waits until the tick's steps are carried out and its notifications sent (or not); what
    /// each step did.
    pub async fn finished(self) -> Vec<StepReport> {
        let mut reports = Vec::with_capacity(self.under_way.len());
        for step in self.under_way {
            if let Ok(report) = step.await {
                reports.push(report);
            }
        }
        for delivery in self.deliveries {
            let _ = delivery.await;
        }
        reports
    }
}

impl Engine {
    pub fn new(
        db: Db,
        executors: Executors,
        keys: Keys,
        timings: EngineTimings,
        config: EngineConfig,
        waker: Waker,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let replica = uuid::Uuid::new_v4().simple().to_string();
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        let (handoffs, handed) = Handoffs::new(replica.clone(), config.lease_ms, in_flight.clone());
        Engine {
            db,
            executors,
            keys,
            timings,
            in_flight,
            handoffs: Arc::new(handoffs),
            handed: tokio::sync::Mutex::new(handed),
            config,
            waker,
            metrics,
            replica,
            notifier: None,
            deletions_pending: Cell::new(true),
            gates: None,
        }
    }

    /// Results are accepted only once ODM's policy service agrees (when it is active).
    pub fn with_result_gates(mut self, gates: ResultGates) -> Engine {
        self.gates = gates.policies.is_remote().then_some(gates);
        self
    }

    /// Writes of this replica hand the dispatches they make due to this engine from now on
    /// (`handoff.rs`): its loop takes them at once, a stepped engine at its next `tick`. Until
    /// then (and for an engine that never runs) they are left to claims, any replica's.
    pub fn accept_handoffs(&self) {
        self.waker.accept_handoffs(self.handoffs.clone());
    }

    /// Starts the loop on the current actix System thread.
    pub fn spawn(self) -> EngineHandle {
        self.accept_handoffs();
        let (stop, stopped) = watch::channel(false);
        let join = actix_web::rt::spawn(Rc::new(self).run(stopped));
        EngineHandle { stop, join }
    }

    /// Claims what is due, as much as the steps under way leave room for, and starts carrying
    /// it out on the current actix System thread.
    pub async fn tick(self: &Rc<Self>) -> Result<Tick, DbError> {
        self.housekeeping().await;
        let deliveries = self.claim_notifications().await;
        let mut under_way = self.start_handed(self.arrived(None)).await;
        let room = self.in_flight.available_permits().min(self.config.batch);
        if room == 0 {
            return Ok(Tick {
                saturated: false,
                under_way,
                deliveries,
            });
        }
        let steps = self.claim(room).await?;
        let saturated = steps.len() == room;
        under_way.extend(steps.into_iter().map(|step| {
            let permit = self
                .in_flight
                .clone()
                .try_acquire_owned()
                .expect("room was counted");
            self.start(step, None, permit)
        }));
        Ok(Tick {
            saturated,
            under_way,
            deliveries,
        })
    }

    /// Carries `step` out in the background (with its Context when it was read already),
    /// holding `permit` until it is done.
    fn start(
        self: &Rc<Self>,
        step: ClaimedStep,
        context: Option<TaskContext>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> tokio::task::JoinHandle<StepReport> {
        let engine = self.clone();
        actix_web::rt::spawn(async move {
            let report = engine.carry_out(step, context).await;
            drop(permit);
            report
        })
    }

    async fn run(self: Rc<Self>, mut stopped: watch::Receiver<bool>) {
        tracing::info!(replica = %self.replica, "engine started");
        'ticks: loop {
            if *stopped.borrow() {
                break;
            }
            let saturated = match self.tick().await {
                // The steps go on in the background; the loop does not wait for them.
                Ok(tick) => tick.saturated,
                Err(e) => {
                    if e.is_transient() {
                        tracing::warn!(error = %chain(&e), "claiming due steps refused: the database is overloaded; trying again at the next tick");
                    } else {
                        tracing::error!(error = %chain(&e), "claiming due steps failed");
                    }
                    false
                }
            };
            if saturated {
                // More may be due right now: claim again before sleeping.
                actix_web::rt::task::yield_now().await;
                continue;
            }
            let next_tick = actix_web::rt::time::Instant::now() + self.config.tick;
            loop {
                // Dispatches handed over are started without a tick (which would claim).
                let handed = tokio::select! {
                    handed = self.next_handed() => handed,
                    _ = self.waker.woken() => continue 'ticks,
                    _ = actix_web::rt::time::sleep_until(next_tick) => continue 'ticks,
                    _ = stopped.changed() => continue 'ticks,
                };
                // Read and started beside the loop, which goes back to waiting at once.
                let (engine, handed) = (self.clone(), self.arrived(Some(handed)));
                actix_web::rt::spawn(async move { engine.start_handed(handed).await });
            }
        }
        // A step cut between its claim and its send would leave its task waiting for a callback
        // that never comes (it is not sent again blindly): let the steps under way finish, and
        // the dispatches handed over before the close (their writes hold permits) start.
        self.handoffs.close();
        let all = self.config.max_in_flight as u32;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            loop {
                tokio::select! {
                    _ = self.in_flight.acquire_many(all) => break,
                    handed = self.next_handed() => {
                        drop(self.start_handed(vec![handed]).await)
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(replica = %self.replica, "engine stopped with steps still under way; their leases will expire");
        }
        tracing::info!(replica = %self.replica, "engine stopped");
    }

    /// The listeners a decision's events are recorded for.
    fn listeners(&self) -> Listeners {
        self.notifier
            .as_ref()
            .map(Notifier::listeners)
            .unwrap_or_default()
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedStep>, DbError> {
        let claim = self.handoffs.next_claim();
        let lease_ms = self.config.lease_ms;
        self.db
            .write(move |conn| {
                let now = now_ms();
                Ok(claim_due_steps(
                    conn,
                    &claim,
                    now,
                    now.saturating_add(lease_ms),
                    limit as i64,
                )?)
            })
            .await
            .inspect(|claimed: &Vec<ClaimedStep>| {
                // Their callbacks then find their writer thread without a read.
                let tasks = claimed.iter().map(|c| (c.task.id, c.task.activity_id));
                self.db.remember_activities(tasks);
            })
    }

    async fn carry_out(&self, claimed: ClaimedStep, context: Option<TaskContext>) -> StepReport {
        let (task, step) = (claimed.task.id, claimed.step);
        let started = Instant::now();
        let result = self.run_step(claimed, context).await.unwrap_or_else(|e| {
            // The lease runs out and the step is claimed again (a dispatch then waits for its
            // callback rather than risk starting a second run).
            tracing::error!(task_id = task.get(), error = %chain(&e), "engine step failed");
            StepResult::Error
        });
        self.metrics.step_run(step, result, started.elapsed());
        StepReport { task, step, result }
    }

    /// Applies the plan `decide` makes from a fresh snapshot, in one transaction; wakes the
    /// loop when the plan leaves more work due. `Done`, for the step that decided.
    async fn decide<F>(&self, activity_id: ActivityId, decide: F) -> Result<StepResult, EngineError>
    where
        F: FnOnce(&Snapshot, &Timing) -> Plan + Clone + Send + 'static,
    {
        self.decide_on_claim(activity_id, None::<NothingOnClaim>, decide)
            .await
    }

    /// `decide`, trying `on_claim` first: the step's update decided on what its claim read,
    /// applied without a snapshot while the task's row still shows that claim (`UpdateOnClaim`).
    async fn decide_on_claim<C, F>(
        &self,
        activity_id: ActivityId,
        on_claim: Option<C>,
        decide: F,
    ) -> Result<StepResult, EngineError>
    where
        C: Fn(&Timing) -> Option<UpdateOnClaim> + Clone + Send + 'static,
        F: FnOnce(&Snapshot, &Timing) -> Plan + Clone + Send + 'static,
    {
        let (timings, listeners) = (self.timings, self.listeners());
        let reservation = self.handoffs.reserve();
        let lease = reservation.lease();
        let decided = self
            .while_database_fails(|| {
                let (decide, listeners, lease) = (decide.clone(), listeners.clone(), lease.clone());
                // Decided before it is queued, so that its batch may apply it ahead with other
                // steps' (`Db::write_on_claim`).
                let update = on_claim.as_ref().and_then(|c| c(&timings.at(now_ms())));
                let ahead = update.clone();
                self.db.write_on_claim(activity_id, ahead, move |conn| {
                    let decision = Decision {
                        timings,
                        listeners: &listeners,
                        handoff: lease.as_ref(),
                        on_claim: update,
                    };
                    apply_decision(conn, activity_id, decision, decide)
                })
            })
            .await;
        let handed = decided.as_ref().ok().and_then(Applied::handed);
        reservation.deliver(handed);
        match decided {
            Ok(applied) => applied.committed(&self.metrics, &self.waker),
            // Someone else (a callback, an abort, a claim) moved the task first: their word stands.
            Err(EngineError::Superseded(reason)) => {
                tracing::debug!(activity_id = activity_id.get(), %reason, "engine decision superseded")
            }
            Err(e) => return Err(e),
        }
        Ok(StepResult::Done)
    }

    /// Database work of a step, tried again while the database fails and the step's lease has
    /// time left. A failed transaction rolled back whole and every decision is taken again on a
    /// fresh snapshot, so trying again is safe; giving up at once would leave the step to expire
    /// under its lease, and a dispatch that expires is never sent again (it might have been).
    async fn while_database_fails<T, Work, Fut>(&self, mut work: Work) -> Result<T, EngineError>
    where
        Work: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, EngineError>>,
    {
        let budget = Duration::from_millis(u64::try_from(self.config.lease_ms / 2).unwrap_or(0))
            .min(DATABASE_RETRY_BUDGET);
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        loop {
            match work().await {
                Err(EngineError::Db(e)) if started.elapsed() + wait < budget => {
                    tracing::warn!(error = %chain(&e), retry_in_ms = wait.as_millis() as u64, "engine step's database work failed; trying again");
                    actix_web::rt::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    fn callback_ref(&self, task_id: TaskId, attempt: i32) -> String {
        format!(
            "{}/api/v1/pp/devops/tasks/{task_id}/status?action=STOP&token={}",
            self.config.public_url.trim_end_matches('/'),
            self.keys.callback_token(task_id.get(), attempt)
        )
    }
}

/// The claim's transaction: up to `limit` due steps, what the state machine decides a claim does
/// to them (`state::claim`) applied for `claim` until `lease_until`, and what carrying them out
/// needs.
pub fn claim_due_steps(
    conn: &mut DbConnection,
    claim: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> diesel::QueryResult<Vec<ClaimedStep>> {
    let candidates = db::due_steps(conn, now, limit)?;
    let decision = state::claim(&candidates);
    db::take_claimed(conn, claim, &candidates, &decision, now, lease_until)
}

/// What an engine decision is taken with.
pub struct Decision<'a> {
    pub timings: EngineTimings,
    /// Whom its events are recorded for.
    pub listeners: &'a Listeners,
    /// Room the engine reserved for a dispatch the decision makes due now (`handoff.rs`).
    pub handoff: Option<&'a HandoffLease>,
    /// The step's update decided on its claim, tried before a snapshot is read.
    pub on_claim: Option<UpdateOnClaim>,
}

/// `decide` has nothing to try on the claim.
type NothingOnClaim = fn(&Timing) -> Option<UpdateOnClaim>;

/// The engine's transaction: the plan `decide` makes from the activity's snapshot, applied in
/// full with the outbox rows of its events; what it did, to report once committed. A plan that
/// no longer fits (someone moved first) is `Superseded`, an error so that the caller's
/// transaction rolls back: the updates applied before the conflict must not stay without the
/// rest.
pub fn apply_decision<F>(
    conn: &mut DbConnection,
    activity_id: ActivityId,
    with: Decision<'_>,
    decide: F,
) -> Result<Applied, EngineError>
where
    F: FnOnce(&Snapshot, &Timing) -> Plan,
{
    let now = now_ms();
    if let Some(update) = with.on_claim {
        if db::apply_on_claim(conn, &update, now)? {
            let plan = update.into_plan();
            let events = plan.events(activity_id);
            let announced = notifications::record(conn, with.listeners, &events, now)?;
            return Ok(Applied::of(&plan, now).announcing(announced));
        }
        // The row moved on since the claim (a callback, an abort): decide on a snapshot.
    }
    let snapshot = db::load_snapshot(conn, SnapshotOf::Activity(activity_id))?
        .ok_or(EngineError::Gone(activity_id))?;
    let mut plan = decide(&snapshot, &with.timings.at(now));
    if plan.is_empty() {
        return Ok(Applied::default());
    }
    let handed = with
        .handoff
        .and_then(|lease| lease.take(&mut plan, &snapshot, now));
    db::apply_plan(conn, &plan, now)?;
    let announced = notifications::record(conn, with.listeners, &plan.events(activity_id), now)?;
    Ok(Applied::of(&plan, now)
        .announcing(announced)
        .handing(handed))
}

/// Exponential backoff with jitter from 1 s, capped, never shorter than the provider asked.
fn backoff_ms(attempts: i32, cap_ms: i64, retry_after: Option<Duration>) -> i64 {
    let exp = 1000i64
        .saturating_mul(1 << attempts.clamp(0, 20))
        .min(cap_ms);
    let jittered = exp / 2 + rand::thread_rng().gen_range(0..=exp / 2);
    let asked = retry_after.map(crate::clock::duration_ms).unwrap_or(0);
    jittered.max(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        for attempts in 0..30 {
            let b = backoff_ms(attempts, 60_000, None);
            let exp = (1000i64 << attempts.min(20)).min(60_000);
            assert!(b >= exp / 2 && b <= exp, "attempt {attempts}: {b}");
        }
        assert!(backoff_ms(0, 60_000, Some(Duration::from_secs(7))) >= 7_000);
        // A Retry-After of u64::MAX seconds once wrapped into a negative wait.
        assert_eq!(
            backoff_ms(0, 60_000, Some(Duration::from_secs(u64::MAX))),
            i64::MAX
        );
    }
}
