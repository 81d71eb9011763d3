//! The commands on activities and tasks (see `service.rs`); a pipeline's callback is in
//! `callbacks.rs`.

use super::creation::{
    insert_planned, insert_started, processing_conflict, refuse_duplicate, run_settings,
    stage_tasks, Planned,
};
use super::error::CommandError;
use super::handoff::{HandoffLease, Reservation};
use super::plumbing::Applied;
use super::service::{apply, snapshot, LifecycleService};
use super::state::{self, Timing};
use crate::clock::now_ms;
use crate::db::models::ActivityRow;
use crate::db::{self, DbConnection, SnapshotOf};
use crate::descriptor::{self, LifecycleInfo, TaskDefinition};
use crate::domain::{ActivityId, ActivityStatus, Event, TaskId, TaskState, TaskStatus};
use crate::keys::{ActivitySecrets, Keys};
use crate::notifications::{self, Listeners};

#[derive(Debug, Clone)]
pub struct NewActivityRequest {
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
}

impl LifecycleService {
    /// Creates the activity and its tasks from the descriptor (and starts it when asked).
    pub async fn create_activity(
        &self,
        request: NewActivityRequest,
        start: bool,
        secrets: ActivitySecrets,
    ) -> Result<ActivityRow, CommandError> {
        let (info, definitions) = self.stage_definitions(&request).await?;
        super::task_placeholders::check_new_activity(
            &request.stage,
            &definitions,
            &info,
            &self.limits,
        )?;
        let settings = run_settings(&request.stage, &definitions)?;
        // Gated: created first, so that the gates see the activity as it is, then started.
        let gated = start && self.policies.guards_start();
        let start_now = start && !gated;
        let (keys, timings) = (self.keys().clone(), self.timings);
        let listeners = self.listeners.clone();
        // Started now: its first dispatch is handed to this replica's engine.
        let reservation = if start_now {
            self.waker.reserve()
        } else {
            Reservation::default()
        };
        let lease = reservation.lease();
        // Rerunnable: its batch may roll it back and run it again (nothing it does outside
        // the database, sealing included, minds), which saves the batch a savepoint.
        let created = self
            .db
            .write_rerunnable(
                move |conn| -> Result<(ActivityRow, Applied), CommandError> {
                    let now = now_ms();
                    let new = Planned {
                        request: &request,
                        definitions: &definitions,
                        settings: &settings,
                    };
                    // Nobody to tell of its creation and no secrets to seal (both need the stored
                    // ids): started in its INSERT, which checks what is in the way itself.
                    if start_now && listeners.is_empty() && secrets.is_empty() {
                        let started = insert_started(conn, &new, lease.as_ref(), timings.at(now))?;
                        if let Some(started) = started {
                            return Ok(started);
                        }
                    }
                    let in_the_way = refuse_duplicate(conn, &request)?;
                    let (mut activity, tasks) = insert_planned(conn, &new, now)?;
                    if !listeners.is_empty() {
                        let ids: Vec<TaskId> = tasks.iter().map(|t| t.id).collect();
                        let created = Event::created(activity.id, &ids);
                        notifications::record(conn, &listeners, &created, now)?;
                    }
                    // Sealed once the id is known: it binds the secrets to this activity.
                    if !secrets.is_empty() {
                        let sealed = keys.seal(activity.id.get(), &secrets);
                        db::set_sealed_secrets(conn, activity.id, Some(&sealed))?;
                        activity.sealed_secrets = Some(sealed);
                    }
                    if !start_now {
                        return Ok((activity, Applied::default()));
                    }
                    let starting = Starting::Inserted {
                        activity: Box::new(activity),
                        tasks,
                        processing: in_the_way.processing,
                    };
                    let (applied, started) = start_in(
                        conn,
                        starting,
                        None,
                        None,
                        (&listeners, lease.as_ref()),
                        timings.at(now),
                    )?;
                    Ok((started, applied))
                },
            )
            .await;
        let (activity, applied) = delivered(reservation, created)?;
        applied.committed(&self.metrics, &self.waker);
        if !self.listeners.is_empty() {
            self.waker.outbox_due();
        }
        if !gated {
            return Ok(activity);
        }
        let id = activity.id;
        let seen = self.pass_start_gates(id, true).await?;
        let listeners = self.listeners.clone();
        let reservation = self.waker.reserve();
        let lease = reservation.lease();
        let started = self
            .db
            .write_for(
                id,
                move |conn| -> Result<(ActivityRow, Applied), CommandError> {
                    let starting = Starting::Stored(id);
                    let with = (&listeners, lease.as_ref());
                    let (applied, activity) =
                        start_in(conn, starting, None, seen, with, timings.at(now_ms()))?;
                    Ok((activity, applied))
                },
            )
            .await;
        let (activity, applied) = delivered(reservation, started)?;
        applied.committed(&self.metrics, &self.waker);
        Ok(activity)
    }

    /// The descriptor's lifecycle and the tasks of the request's stage (templates resolved),
    /// or why no activity can be made of them (the request, the descriptor, the stage).
    pub(super) async fn stage_definitions(
        &self,
        request: &NewActivityRequest,
    ) -> Result<(LifecycleInfo, Vec<TaskDefinition>), CommandError> {
        let over = |e: crate::limits::OverLimit| CommandError::OverLimit(e.0);
        for (field, name) in [
            ("dataProductId", &request.data_product_id),
            ("dataProductVersion", &request.data_product_version),
            ("stage", &request.stage),
        ] {
            self.limits.check_name(field, name).map_err(over)?;
        }
        let descriptor = self
            .registry
            .descriptor(&request.data_product_id, &request.data_product_version)
            .await?;
        let info = descriptor::parse(&descriptor).map_err(|e| {
            CommandError::InvalidActivity(format!(
                "the descriptor of version {} of product {} is invalid: {e}",
                request.data_product_version, request.data_product_id
            ))
        })?;
        self.limits.check_lifecycle(&info).map_err(over)?;
        let definitions = stage_tasks(&info, request)?;
        let definitions =
            super::task_templates::resolve(&self.registry, &request.stage, definitions).await?;
        Ok((info, definitions))
    }

    pub async fn start_activity(
        &self,
        id: ActivityId,
        secrets: ActivitySecrets,
    ) -> Result<ActivityStatus, CommandError> {
        let seen = self.pass_start_gates(id, false).await?;
        let keys = self.keys().clone();
        let (timings, listeners) = (self.timings, self.listeners.clone());
        let reservation = self.waker.reserve();
        let lease = reservation.lease();
        let started = self
            .db
            .write_for(id, move |conn| {
                let fresh = (!secrets.is_empty()).then_some((keys, secrets));
                let starting = Starting::Stored(id);
                let with = (&listeners, lease.as_ref());
                let (applied, a) =
                    start_in(conn, starting, fresh, seen, with, timings.at(now_ms()))?;
                Ok((a, applied))
            })
            .await;
        let (_, applied) = delivered(reservation, started)?;
        applied.committed(&self.metrics, &self.waker);
        Ok(ActivityStatus::Processing)
    }

    pub async fn abort_activity(&self, id: ActivityId) -> Result<ActivityStatus, CommandError> {
        let (timings, listeners) = (self.timings, self.listeners.clone());
        let applied = self
            .db
            .write_for(id, move |conn| {
                let snapshot = snapshot(conn, SnapshotOf::Activity(id), || {
                    CommandError::ActivityNotFound(id)
                })?;
                let plan = state::abort(&snapshot, &timings.at(now_ms()))?;
                apply(conn, &plan, id, &listeners)
            })
            .await?;
        applied.committed(&self.metrics, &self.waker);
        Ok(ActivityStatus::Aborted)
    }

    /// Deletes a PLANNED activity; returns it as it was.
    pub async fn delete_activity(&self, id: ActivityId) -> Result<ActivityRow, CommandError> {
        self.db
            .write_for(id, move |conn| {
                let activity =
                    db::find_activity(conn, id)?.ok_or(CommandError::ActivityNotFound(id))?;
                if db::delete_planned_activity(conn, id)? == 0 {
                    return Err(CommandError::InvalidActivity(format!(
                        "activity {id} is {}: only a PLANNED activity can be deleted",
                        activity.status
                    )));
                }
                Ok(activity)
            })
            .await
    }

    pub async fn abort_task(&self, task_id: TaskId) -> Result<TaskStatus, CommandError> {
        let (timings, listeners) = (self.timings, self.listeners.clone());
        // A write of the task's activity: on PostgreSQL it waits for that activity's write
        // under way rather than run beside it on another writer thread.
        let applied = self
            .db
            .write_for_task(task_id, move |conn| {
                let snapshot = snapshot(conn, SnapshotOf::TaskActivity(task_id), || {
                    CommandError::TaskNotFound(task_id)
                })?;
                let plan = state::abort_task(&snapshot, task_id, &timings.at(now_ms()))?;
                apply(conn, &plan, snapshot.activity.id, &listeners)
            })
            .await?;
        applied.committed(&self.metrics, &self.waker);
        Ok(TaskStatus::Aborted)
    }
}

/// The activity `start_in` starts.
enum Starting {
    /// Stored by an earlier transaction: read once locked, and the version's PROCESSING
    /// activity looked for.
    Stored(ActivityId),
    /// Inserted by this transaction, as it is (its tasks as they came back from their INSERT),
    /// with the version's PROCESSING activity found just before the insert.
    Inserted {
        activity: Box<ActivityRow>,
        tasks: Vec<TaskState>,
        processing: Option<ActivityId>,
    },
}

/// Starts an activity inside the caller's transaction, adding freshly given secrets. When its
/// gates were passed, `gated_on` is the lifecycle row (its id) their answer was based on: the
/// start is refused if the version's lifecycle moved since. Its events are recorded for the
/// listeners, and its first dispatch handed to the engine when room was reserved for it.
/// Returns what it did and the activity as it left it.
fn start_in(
    conn: &mut DbConnection,
    starting: Starting,
    fresh_secrets: Option<(Keys, ActivitySecrets)>,
    gated_on: Option<Option<i64>>,
    (listeners, handoff): (&Listeners, Option<&HandoffLease>),
    timing: Timing,
) -> Result<(Applied, ActivityRow), CommandError> {
    let id = match &starting {
        Starting::Stored(id) => *id,
        Starting::Inserted { activity, .. } => activity.id,
    };
    let missing = || CommandError::ActivityNotFound(id);
    let snapshot = match &starting {
        Starting::Stored(_) => snapshot(conn, SnapshotOf::Activity(id), missing)?,
        // Its own transaction inserted it: nothing to read, nothing anyone else can lock.
        Starting::Inserted {
            activity, tasks, ..
        } => db::inserted_snapshot(activity, tasks.clone()),
    };
    let mut plan = state::start(&snapshot, &timing)?;
    let (mut a, processing) = match starting {
        // Read after the snapshot, which locked it: its keys and secrets for what follows.
        Starting::Stored(id) => {
            let a = db::find_activity(conn, id)?.ok_or_else(missing)?;
            let processing = db::activities_in_the_way(
                conn,
                &a.data_product_id,
                &a.data_product_version,
                &a.stage,
            )?
            .processing;
            (a, processing)
        }
        Starting::Inserted {
            activity,
            processing,
            ..
        } => (*activity, processing),
    };
    if let Some(seen) = gated_on {
        let now = db::current_lifecycle(conn, &a.data_product_id, &a.data_product_version)?;
        if now.map(|l| l.id) != seen {
            return Err(CommandError::ActivityConflict(format!(
                "the lifecycle of product {}, version {} moved while the policies were asked: \
                 start activity {id} again",
                a.data_product_id, a.data_product_version
            )));
        }
    }
    if let Some(other) = processing {
        return Err(processing_conflict(
            other,
            &a.data_product_id,
            &a.data_product_version,
        ));
    }
    let handed = handoff.and_then(|lease| lease.take(&mut plan, &snapshot, timing.now));
    let applied = apply(conn, &plan, id, listeners)
        .map_err(|e| match e {
            CommandError::Db(db) if db.is_unique_violation() => {
                CommandError::ActivityConflict(format!(
                "another activity of product {}, version {} became PROCESSING at the same time: \
                 only one activity of a product version runs at a time",
                a.data_product_id, a.data_product_version
            ))
            }
            other => other,
        })?
        .handing(handed);
    if let Some(update) = &plan.activity {
        a = a.changed_by(&update.changes);
    }
    if let Some((keys, fresh)) = fresh_secrets {
        let mut secrets = match &a.sealed_secrets {
            Some(sealed) => keys
                .unseal(id.get(), sealed)
                .map_err(CommandError::InvalidActivity)?,
            None => ActivitySecrets::new(),
        };
        for (executor, given) in fresh {
            secrets.entry(executor).or_default().extend(given);
        }
        let sealed = keys.seal(id.get(), &secrets);
        db::set_sealed_secrets(conn, id, Some(&sealed))?;
        a.sealed_secrets = Some(sealed);
    }
    Ok((applied, a))
}

/// A start's outcome, once its write is over: the dispatch it handed goes to the engine (or the
/// reserved room back).
fn delivered<T>(
    reservation: Reservation,
    started: Result<(T, Applied), CommandError>,
) -> Result<(T, Applied), CommandError> {
    reservation.deliver(started.as_ref().ok().and_then(|(_, a)| a.handed()));
    started
}
