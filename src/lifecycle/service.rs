//! The lifecycle service: what the REST API asks of activities, tasks and lifecycles. Each
//! command is one short transaction: it reads a snapshot, asks the state machine for a plan,
//! applies it, and wakes the engine when work is due (`commands.rs`, `callbacks.rs`); reads
//! are in `queries.rs`.

use std::sync::Arc;

use super::error::CommandError;
use super::plumbing::{Applied, EngineTimings, Waker};
use crate::clock::now_ms;
use crate::config::LimitSettings;
use crate::db::{self, Db, DbConnection, SnapshotOf};
use crate::domain::{ActivityId, Plan, Snapshot};
use crate::executor::ExecutorCatalog;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::notifications::{self, Listeners};
use crate::policy::Policies;
use crate::registry::Registry;

#[derive(Clone)]
pub struct LifecycleService {
    pub(super) db: Db,
    pub(super) registry: Registry,
    pub(super) timings: EngineTimings,
    pub(super) limits: LimitSettings,
    pub(super) waker: Waker,
    pub(super) metrics: Arc<Metrics>,
    /// The gates of START (`policy_gates.rs`).
    pub(super) policies: Policies,
    /// Shared with the transactions that check callbacks (one reference moves there).
    pub(super) callbacks: Arc<CallbackRules>,
    /// Whom the events of each change are recorded for (in its transaction).
    pub(super) listeners: Listeners,
}

/// What checking a callback needs inside its transaction.
pub(super) struct CallbackRules {
    pub(super) keys: Keys,
    pub(super) require_token: bool,
    pub(super) catalog: ExecutorCatalog,
    /// ODM's policy service checks results: every callback is held for the engine to ask it.
    pub(super) hold_for_policy: bool,
}

/// What the service is built from (`app.rs`).
pub struct LifecycleParts {
    pub db: Db,
    pub registry: Registry,
    pub keys: Keys,
    pub catalog: ExecutorCatalog,
    pub timings: EngineTimings,
    pub limits: LimitSettings,
    /// `callbacks.require_token`
    pub require_token: bool,
    pub waker: Waker,
    pub metrics: Arc<Metrics>,
    pub listeners: Listeners,
    pub policies: Policies,
}

impl LifecycleService {
    pub fn new(parts: LifecycleParts) -> LifecycleService {
        LifecycleService {
            db: parts.db,
            registry: parts.registry,
            timings: parts.timings,
            limits: parts.limits,
            waker: parts.waker,
            metrics: parts.metrics,
            listeners: parts.listeners,
            callbacks: Arc::new(CallbackRules {
                keys: parts.keys,
                require_token: parts.require_token,
                catalog: parts.catalog,
                hold_for_policy: parts.policies.is_remote(),
            }),
            policies: parts.policies,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn keys(&self) -> &Keys {
        &self.callbacks.keys
    }
}

/// The snapshot a command decides on; `missing` when there is no such activity or task.
pub(super) fn snapshot(
    conn: &mut DbConnection,
    of: SnapshotOf,
    missing: impl FnOnce() -> CommandError,
) -> Result<Snapshot, CommandError> {
    db::load_snapshot(conn, of)?.ok_or_else(missing)
}

/// Applies `plan` (of `activity`) with the outbox rows of the events it implies.
pub(super) fn apply(
    conn: &mut DbConnection,
    plan: &Plan,
    activity: ActivityId,
    listeners: &Listeners,
) -> Result<Applied, CommandError> {
    let now = now_ms();
    let events = plan.events(activity);
    // An event's outbox row is built from the rows as the plan leaves them (read back): a plan
    // kept for its batch to apply later (a callback's, `apply_plan_or_keep`) is not there yet.
    match notifications::wanted(listeners, &events) {
        true => db::apply_plan(conn, plan, now)?,
        false => db::apply_plan_or_keep(conn, plan, now)?,
    }
    let announced = notifications::record(conn, listeners, &events, now)?;
    Ok(Applied::of(plan, now).announcing(announced))
}
