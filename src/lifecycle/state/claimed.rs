//! The engine's steps: what a claim does to the due steps it takes, and the transitions a
//! claimed step decides, each only while the step's claim still holds.

use super::*;
use crate::domain::{
    ActivityChanges, ActivityStatus, ActivityUpdate, ClaimCandidate, ClaimDecision, ClaimRead,
    Outcome, Report, Snapshot, TaskId, UpdateOnClaim,
};

/// Every candidate is leased. A dispatch nobody held starts a new attempt (and with it a new
/// callback token); one taken over from a holder whose lease ran out keeps its attempt: that
/// dispatch may have reached the provider, whose callback carries the attempt's token.
pub fn claim(candidates: &[ClaimCandidate]) -> ClaimDecision {
    let mut decision = ClaimDecision::default();
    for candidate in candidates {
        decision.leased.push(candidate.task);
        match (&candidate.held_by, candidate.step) {
            (Some(_), _) => decision.abandoned.push(candidate.task),
            (None, Step::Dispatch) => decision.new_attempts.push(candidate.task),
            (None, Step::Await | Step::Confirm | Step::Cancel) => {}
        }
    }
    decision
}

/// A write whose plan makes a dispatch due now may hand it to its own replica's engine at once
/// (`lifecycle::handoff`): the plan's update of that task also takes the lease a claim would
/// (for `claim` until `lease_until`) and starts the new attempt a claim starts for a dispatch
/// nobody held (see `claim`). No claim has to find it, nothing else is woken for it, and the task's
/// row changes once instead of twice. At most one dispatch is handed (the engine made room for
/// one); the one handed, if any. A task the snapshot does not hold is left for a claim.
pub fn hand_off(
    plan: &mut Plan,
    s: &Snapshot,
    claim: &str,
    lease_until: i64,
    now: i64,
) -> Option<TaskId> {
    let update = plan.tasks.iter_mut().find(|u| {
        let c = &u.changes;
        c.step == Some(Some(Step::Dispatch))
            && matches!(c.due_at, Some(Some(due)) if due <= now)
            && c.lease_owner == Some(None)
            && s.task(u.id).is_some()
    })?;
    let attempt = match update.changes.attempt {
        Some(attempt) => attempt,
        None => s.task(update.id)?.attempt,
    };
    update.changes.lease_owner = Some(Some(claim.to_owned()));
    update.changes.lease_until = Some(Some(lease_until));
    update.changes.attempt = Some(attempt.saturating_add(1));
    Some(update.id)
}

/// Is the engine's claim on this task for this step still valid?
pub fn still_owned(s: &Snapshot, task_id: TaskId, step: Step, lease: &str) -> bool {
    s.task(task_id)
        .is_some_and(|task| task.step == Some(step) && task.lease_owner.as_deref() == Some(lease))
}

/// After a successful submit. The task may meanwhile have been finished by a fast callback or
/// aborted; the run reference and resolved configurations are recorded in every case.
pub fn submitted(s: &Snapshot, task_id: TaskId, lease: &str, run: Submittal, t: &Timing) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if task.attempt != run.attempt {
        // A callback failed this run meanwhile and a new run is planned: nothing to record.
        return Plan::default();
    }
    let recorded = run_recorded(&run);
    let status = task.status;
    if status == TaskStatus::Aborted && task.step.is_none() && run.run_ref.is_some() {
        // Aborted while we were sending: the run we just started must be cancelled.
        return single(
            task,
            status,
            None,
            reschedule(recorded, Step::Cancel, t.now),
        );
    }
    if !still_owned(s, task_id, Step::Dispatch, lease) {
        return single(task, status, None, recorded);
    }
    if let Some(report) = run.held {
        // The executor answered at once, but its result waits for the policy service: held
        // like a callback, for the confirm step to decide.
        let changes = TaskChanges {
            reported_outcome: Some(Some(report)),
            step_attempts: Some(0),
            ..reschedule(recorded, Step::Confirm, t.now)
        };
        return single(task, status, Some(lease), changes);
    }
    if let Some(outcome) = run.immediate {
        let mut plan = finish_task(s, task_id, outcome, false, Some(lease), t);
        let own = &mut plan.tasks[0].changes;
        // A retry forgets the failed run; an ended task keeps it for the record.
        if own.step != Some(Some(Step::Dispatch)) {
            own.run_ref = recorded.run_ref;
            own.run_url = recorded.run_url;
        }
        own.configurations = recorded.configurations;
        return plan;
    }
    let changes = run_under_way(recorded, task.deadline_at, task.holds_callback, t);
    single(task, status, Some(lease), changes)
}

/// `submitted` decided on what the dispatch's claim read, for its common case: a run that will
/// call back (no immediate outcome), for a task whose claim found no held callback. The update
/// applies only while the task's row still shows that claim (`UpdateOnClaim`): a callback, an
/// abort or another claim meanwhile makes the engine decide again with `submitted` on a
/// snapshot. `None`: this submittal needs the snapshot (it may end the task and start the next).
/// A task's deadline is set once, when it begins, so the claim's is the row's.
pub fn submitted_on_claim(
    task: &ClaimRead,
    lease: &str,
    run: &Submittal,
    t: &Timing,
) -> Option<UpdateOnClaim> {
    let common = run.immediate.is_none()
        && run.held.is_none()
        && !task.holds_callback
        && task.attempt == run.attempt;
    if !common {
        return None;
    }
    let changes = run_under_way(run_recorded(run), task.deadline_at, false, t);
    Some(UpdateOnClaim {
        update: TaskUpdate {
            id: task.id,
            expected: TaskStatus::Processing,
            expected_lease: Some(lease.to_owned()),
            changes,
        },
        step: Step::Dispatch,
        attempt: task.attempt,
    })
}

/// The run's reference and what it was sent with, recorded whatever else the submittal does.
fn run_recorded(run: &Submittal) -> TaskChanges {
    TaskChanges {
        run_ref: Some(run.run_ref.clone()),
        run_url: Some(run.run_url.clone()),
        configurations: Some(Some(run.configurations.clone())),
        ..TaskChanges::default()
    }
}

/// A run is under way: await its callback (polling by the deadline), or confirm the callback
/// that came while it was being sent.
fn run_under_way(
    recorded: TaskChanges,
    deadline_at: Option<i64>,
    holds_callback: bool,
    t: &Timing,
) -> TaskChanges {
    let (step, due) = if holds_callback {
        // Its callback came while we were sending: confirm it now that the run is known.
        (Step::Confirm, t.now)
    } else {
        let deadline = deadline_at.unwrap_or(i64::MAX);
        (
            Step::Await,
            t.now.saturating_add(t.poll_after_ms).min(deadline),
        )
    };
    TaskChanges {
        step_attempts: Some(0),
        ..reschedule(recorded, step, due)
    }
}

/// What a dispatch produced, for `submitted`.
#[derive(Debug, Clone)]
pub struct Submittal {
    /// The dispatch attempt that started the run.
    pub attempt: i32,
    pub run_ref: Option<String>,
    pub run_url: Option<String>,
    /// As sent: placeholders resolved, Context included.
    pub configurations: String,
    pub immediate: Option<Outcome>,
    /// An immediate success held for the policy service instead (`immediate` is then `None`).
    pub held: Option<Report>,
}

/// The engine will try the same step again at `due` (a transient failure, a run still going).
pub fn retry_step(s: &Snapshot, task_id: TaskId, lease: &str, step: Step, due: i64) -> Plan {
    requeue_step(s, task_id, lease, step, step, due)
}

/// The claimed `owned` step gives way to `next` at `due`, while the claim still holds (a
/// confirm step that finds no held callback goes back to awaiting one).
pub fn requeue_step(
    s: &Snapshot,
    task_id: TaskId,
    lease: &str,
    owned: Step,
    next: Step,
    due: i64,
) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if !still_owned(s, task_id, owned, lease) {
        return Plan::default();
    }
    let attempts = if owned == next {
        task.step_attempts.saturating_add(1)
    } else {
        0
    };
    let changes = TaskChanges {
        step_attempts: Some(attempts),
        ..reschedule(TaskChanges::default(), next, due)
    };
    single(task, task.status, Some(lease), changes)
}

/// The dispatch may have reached the provider but we cannot know: wait for the callback (the
/// attempt's token stays valid) until the task's deadline instead of sending it twice.
pub fn await_unknown_dispatch(
    s: &Snapshot,
    task_id: TaskId,
    lease: &str,
    attempt: i32,
    configurations: Option<String>,
    t: &Timing,
) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if task.status != TaskStatus::Processing || task.attempt != attempt {
        return Plan::default();
    }
    let (step, due) = if task.holds_callback {
        // A held callback is all we will learn: there is no run to confirm it with.
        (Step::Confirm, t.now)
    } else {
        (Step::Await, task.deadline_at.unwrap_or(i64::MAX))
    };
    let recorded = TaskChanges {
        configurations: configurations.map(Some),
        ..TaskChanges::default()
    };
    single(
        task,
        TaskStatus::Processing,
        Some(lease),
        reschedule(recorded, step, due),
    )
}

/// The engine's step on a task is done and nothing more is owed (a cancel went through).
pub fn step_done(s: &Snapshot, task_id: TaskId, lease: &str, step: Step) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if !still_owned(s, task_id, step, lease) {
        return Plan::default();
    }
    let mut plan = single(
        task,
        task.status,
        Some(lease),
        released(TaskChanges::default()),
    );
    // An ended activity kept its secrets only for cancels: the last one done, they go.
    let status = s.activity.status;
    let cancels_left = s
        .tasks
        .iter()
        .any(|t| t.id != task_id && t.step == Some(Step::Cancel));
    if status.is_terminal() && !cancels_left && s.activity.holds_secrets {
        plan.activity = Some(ActivityUpdate {
            id: s.activity.id,
            expected: status,
            changes: ActivityChanges {
                drop_secrets: true,
                ..ActivityChanges::default()
            },
        });
    }
    plan
}

/// `finish_task` for an engine step, only while the step's claim still holds.
pub fn finish_step(
    s: &Snapshot,
    task_id: TaskId,
    lease: &str,
    step: Step,
    outcome: Outcome,
    cancel_run: bool,
    t: &Timing,
) -> Plan {
    if !still_owned(s, task_id, step, lease) {
        return Plan::default();
    }
    let task = s.task(task_id).expect("snapshot holds the task");
    if task.status != TaskStatus::Processing {
        // A cancel or confirm step outliving its task's end: only release it.
        return step_done(s, task_id, lease, step);
    }
    finish_task(s, task_id, outcome, cancel_run, Some(lease), t)
}

/// What the policy service said of a result the engine is about to accept (engine-side gates).
#[derive(Debug, Clone, Default)]
pub struct ResultVerdict {
    /// The task's `errors` hold the note of an earlier wait for the policy service: cleared on
    /// success.
    pub clear_wait_note: bool,
    /// `ACTIVITY_EXECUTION_RESULT` blocked: the activity FAILS with this text instead of being
    /// PROCESSED, and the lifecycle stays where it is.
    pub activity_blocked: Option<String>,
}

/// A finishing plan (`finish_step`) with the policy service's verdict on the result applied to
/// it: one transaction, so a blocked activity is never half-promoted.
pub fn gated(mut plan: Plan, task_id: TaskId, verdict: &ResultVerdict) -> Plan {
    if verdict.clear_wait_note {
        plan.tasks
            .iter_mut()
            .filter(|u| u.id == task_id && u.changes.status == Some(TaskStatus::Processed))
            .for_each(|u| u.changes.errors = Some(None));
    }
    if let (Some(why), true) = (&verdict.activity_blocked, plan.promote_lifecycle) {
        plan.promote_lifecycle = false;
        if let Some(activity) = plan.activity.as_mut() {
            activity.changes.status = Some(ActivityStatus::Failed);
            activity.changes.errors = Some(Some(why.clone()));
        }
    }
    plan
}

/// A result waits for the policy service: the same step again at `due`, and the task's
/// `errors` say what it waits for.
pub fn wait_for_policy(
    s: &Snapshot,
    task_id: TaskId,
    lease: &str,
    step: Step,
    due: i64,
    why: String,
) -> Plan {
    let mut plan = retry_step(s, task_id, lease, step, due);
    if let Some(own) = plan.tasks.first_mut() {
        own.changes.errors = Some(Some(why));
    }
    plan
}
