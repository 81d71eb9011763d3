//! A pipeline's callback (DESIGN §7): its token checked against the task as read in the
//! transaction that records it, and the outcome recorded there.

use super::error::CommandError;
use super::handoff::HandoffLease;
use super::plumbing::Applied;
use super::service::{apply, CallbackRules, LifecycleService};
use super::state::{self, CallbackDecision};
use crate::clock::now_ms;
use crate::db::{self, SnapshotOf};
use crate::domain::{Report, TaskId, TaskStatus};
use crate::metrics::CallbackAnswer;

/// A callback's task status after it, and what it changed (`None`: a replay, nothing).
type Recorded = (TaskStatus, Option<Applied>);

/// How many times a callback is tried again after PostgreSQL broke a deadlock with it.
const LOCK_CONFLICT_TRIES: u32 = 3;

impl LifecycleService {
    /// Records the outcome in one transaction and wakes the engine.
    pub async fn callback(
        &self,
        task_id: TaskId,
        token: Option<String>,
        report: Report,
    ) -> Result<TaskStatus, CommandError> {
        // Measured here, refused after the token is checked: a caller without one learns nothing.
        let too_large = report.results.as_ref().and_then(|results| {
            self.limits
                .check_results("the callback's", results)
                .err()
                .map(|e| e.0)
        });
        // On PostgreSQL, on the writer thread of the task's activity, rerunnable: it decides
        // afresh from what it reads, its snapshot maybe read ahead (`Db::write_callback`);
        // a write another replica's batch deadlocked with is tried again at once (a failed
        // callback would fail its pipeline's last step).
        // A callback that starts the next task hands its dispatch to this replica's engine.
        let reservation = self.waker.reserve();
        let lease = reservation.lease();
        let mut conflicts = 0;
        let recorded = loop {
            let write = self.record_callback(
                task_id,
                token.clone(),
                report.clone(),
                too_large.clone(),
                lease.clone(),
            );
            match self.db.write_callback(task_id, write).await {
                Err(CommandError::Db(e))
                    if e.is_lock_conflict() && conflicts < LOCK_CONFLICT_TRIES =>
                {
                    conflicts += 1;
                    tracing::warn!(task_id = task_id.get(), error = %crate::telemetry::error_chain(&e), "callback met another write; trying again");
                }
                recorded => break recorded,
            }
        };
        self.metrics.callback(callback_answer(&recorded));
        let handed = recorded
            .as_ref()
            .ok()
            .and_then(|(_, a)| a.as_ref()?.handed());
        reservation.deliver(handed);
        let (status, applied) = recorded?;
        applied
            .unwrap_or_default()
            .committed(&self.metrics, &self.waker);
        Ok(status)
    }

    /// Only the callback's token (and the task's existence, told apart from it by nobody): a
    /// callback whose body cannot be read is refused for its body only once its token is
    /// checked, so a caller without the callbackRef learns nothing from the route, not even
    /// how it reads bodies.
    pub async fn authenticate_callback(
        &self,
        task_id: TaskId,
        token: Option<String>,
    ) -> Result<(), CommandError> {
        let rules = self.callbacks.clone();
        if !rules.require_token {
            return Ok(());
        }
        let checked = self
            .db
            .read(move |conn| -> Result<(), CommandError> {
                let task = db::find_task(conn, task_id)?.map(|t| (t.id, t.attempt));
                rules.verify_token(task_id, task, token.as_deref())
            })
            .await;
        if let Err(refusal) = &checked {
            self.metrics.callback(refusal_answer(refusal));
        }
        checked
    }

    /// The write that records a callback.
    fn record_callback(
        &self,
        task_id: TaskId,
        token: Option<String>,
        report: Report,
        too_large: Option<String>,
        handoff: Option<HandoffLease>,
    ) -> impl FnOnce(&mut db::DbConnection) -> Result<Recorded, CommandError> + Clone + Send + 'static
    {
        let rules = self.callbacks.clone();
        let (timings, listeners) = (self.timings, self.listeners.clone());
        move |conn: &mut db::DbConnection| -> Result<Recorded, CommandError> {
            // The activity is locked before its tasks are read: the token is checked against
            // the attempt as it is, not as it was before a concurrent change.
            let snapshot = db::load_snapshot(conn, SnapshotOf::CallbackTask(task_id))?;
            let task = snapshot.as_ref().and_then(|s| s.task(task_id));
            if rules.require_token {
                let attempt = task.map(|t| (t.id, t.attempt));
                rules.verify_token(task_id, attempt, token.as_deref())?;
            }
            if let Some(refusal) = too_large {
                tracing::warn!(task_id = task_id.get(), reason = %refusal, "callback refused");
                return Err(CommandError::ResultsTooLarge(refusal));
            }
            let snapshot = snapshot.ok_or(CommandError::TaskNotFound(task_id))?;
            let task = snapshot.task(task_id).expect("the snapshot of its task");
            let confirm_first = rules.hold_for_policy
                || rules.catalog.check_after_callback(task.executor.as_deref());
            let timing = timings.at(now_ms());
            match state::callback(&snapshot, task_id, report, confirm_first, &timing) {
                Ok(CallbackDecision::AlreadyRecorded(status)) => Ok((status, None)),
                Ok(CallbackDecision::Apply(mut plan)) => {
                    let handed = handoff
                        .as_ref()
                        .and_then(|lease| lease.take(&mut plan, &snapshot, timing.now));
                    let applied =
                        apply(conn, &plan, snapshot.activity.id, &listeners)?.handing(handed);
                    Ok((
                        plan.task_status_after(task_id, TaskStatus::Processing),
                        Some(applied),
                    ))
                }
                Err(refusal) => {
                    tracing::warn!(task_id = task_id.get(), reason = %refusal, "callback refused");
                    Err(refusal.into())
                }
            }
        }
    }
}

impl CallbackRules {
    /// An unknown task is refused like a wrong token: a callback cannot probe which ids exist.
    fn verify_token(
        &self,
        task_id: TaskId,
        task: Option<(TaskId, i32)>,
        token: Option<&str>,
    ) -> Result<(), CommandError> {
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            CommandError::Unauthorized(
                "the callback has no token: use the callbackRef exactly as it was given".into(),
            )
        })?;
        let invalid = || {
            CommandError::Unauthorized(format!(
                "the callback token is not valid for task {task_id} (wrong or from an earlier attempt)"
            ))
        };
        let Some((id, attempt)) = task else {
            tracing::warn!(
                task_id = task_id.get(),
                "callback for an unknown task refused"
            );
            return Err(invalid());
        };
        let id = id.get();
        if self.keys.verify_callback_token(id, attempt, token) {
            Ok(())
        } else if (1..attempt).any(|earlier| self.keys.verify_callback_token(id, earlier, token)) {
            tracing::warn!(task_id = id, "callback of an earlier run refused");
            Err(CommandError::TaskConflict(format!(
                "this callback belongs to an earlier run of task {id}, which was dispatched again since: it changes nothing"
            )))
        } else {
            tracing::warn!(
                task_id = id,
                "callback with an invalid or outdated token refused"
            );
            Err(invalid())
        }
    }
}

fn callback_answer(recorded: &Result<Recorded, CommandError>) -> CallbackAnswer {
    match recorded {
        Ok((_, Some(_))) => CallbackAnswer::Accepted,
        Ok((_, None)) => CallbackAnswer::Replay,
        Err(refusal) => refusal_answer(refusal),
    }
}

fn refusal_answer(refusal: &CommandError) -> CallbackAnswer {
    match refusal {
        CommandError::Unauthorized(_) => CallbackAnswer::Unauthorized,
        CommandError::TaskConflict(_) | CommandError::ActivityConflict(_) => {
            CallbackAnswer::Refused
        }
        CommandError::TaskNotFound(_)
        | CommandError::InvalidCallback(_)
        | CommandError::ResultsTooLarge(_) => CallbackAnswer::Invalid,
        _ => CallbackAnswer::Error,
    }
}
