//! Starting, aborting and finishing: how an activity moves as its tasks end.

use serde_json::Value;

use super::*;
use crate::domain::{
    ActivityChanges, ActivityStatus, ActivityUpdate, Outcome, Snapshot, TaskId, TaskState,
};

/// PLANNED → PROCESSING, and the first task is due for dispatch.
pub fn start(s: &Snapshot, t: &Timing) -> Result<Plan, Refusal> {
    match s.activity.status {
        ActivityStatus::Planned => {}
        ActivityStatus::Processing => {
            return Err(Refusal::ActivityConflict(format!(
                "activity {} is already started",
                s.activity.id
            )))
        }
        terminal @ (ActivityStatus::Processed
        | ActivityStatus::Failed
        | ActivityStatus::Aborted) => {
            return Err(Refusal::NotStartable(format!(
                "activity {} is {terminal} and cannot be started again; create a new activity",
                s.activity.id
            )))
        }
    }
    let first = s
        .tasks
        .first()
        .ok_or_else(|| Refusal::NotStartable(format!("activity {} has no tasks", s.activity.id)))?;
    Ok(Plan {
        activity: Some(ActivityUpdate {
            id: s.activity.id,
            expected: ActivityStatus::Planned,
            changes: ActivityChanges {
                status: Some(ActivityStatus::Processing),
                started_at: Some(Some(t.now)),
                ..Default::default()
            },
        }),
        tasks: vec![begin(first, t)],
        promote_lifecycle: false,
    })
}

/// Ends the activity and every unfinished task; runs already started are cancelled.
fn end_activity(s: &Snapshot, status: ActivityStatus, errors: Option<String>, t: &Timing) -> Plan {
    let tasks = s
        .tasks
        .iter()
        .filter(|task| !task.status.is_terminal())
        .map(|task| abort_one(task, t))
        .collect();
    Plan {
        activity: Some(ActivityUpdate {
            id: s.activity.id,
            expected: s.activity.status,
            changes: ActivityChanges {
                status: Some(status),
                errors: errors.map(Some),
                finished_at: Some(Some(t.now)),
                drop_secrets: !cancel_needs_secrets(s),
                ..Default::default()
            },
        }),
        tasks,
        promote_lifecycle: false,
    }
}

/// A run to cancel exists for a task with a run reference. A dispatch still in flight has none
/// yet: `submitted` cancels its run when it finds the task aborted meanwhile.
fn run_may_exist(task: &TaskState) -> bool {
    task.has_run
}

/// Secrets are dropped when the activity ends, unless a cancel still has to authenticate.
fn cancel_needs_secrets(s: &Snapshot) -> bool {
    s.tasks
        .iter()
        .any(|task| !task.status.is_terminal() && run_may_exist(task))
}

fn abort_one(task: &TaskState, t: &Timing) -> TaskUpdate {
    let changes = TaskChanges {
        status: Some(TaskStatus::Aborted),
        finished_at: Some(Some(t.now)),
        ..TaskChanges::default()
    };
    let changes = if run_may_exist(task) {
        TaskChanges {
            step_attempts: Some(0),
            ..reschedule(changes, Step::Cancel, t.now)
        }
    } else {
        released(changes)
    };
    TaskUpdate {
        id: task.id,
        expected: task.status,
        expected_lease: None,
        changes,
    }
}

/// PLANNED or PROCESSING → ABORTED.
pub fn abort(s: &Snapshot, t: &Timing) -> Result<Plan, Refusal> {
    let status = s.activity.status;
    if status.is_terminal() {
        return Err(Refusal::ActivityConflict(format!(
            "activity {} is {status} and cannot be aborted",
            s.activity.id
        )));
    }
    Ok(end_activity(s, ActivityStatus::Aborted, None, t))
}

/// Aborting one task aborts its activity: the remaining tasks could never run in order.
pub fn abort_task(s: &Snapshot, task_id: TaskId, t: &Timing) -> Result<Plan, Refusal> {
    let task = s.task(task_id).expect("snapshot holds the task");
    let status = task.status;
    if status.is_terminal() {
        return Err(Refusal::TaskConflict(format!(
            "task {task_id} is {status} and cannot be aborted"
        )));
    }
    Ok(end_activity(
        s,
        ActivityStatus::Aborted,
        Some(format!("Task {task_id} ({}) was aborted", task.name)),
        t,
    ))
}

/// Records how a task ended and moves the activity on: next task, completion or failure.
/// `lease` is the engine's claim when the engine decided it; `None` for callbacks.
pub fn finish_task(
    s: &Snapshot,
    task_id: TaskId,
    outcome: Outcome,
    cancel_run: bool,
    lease: Option<&str>,
    t: &Timing,
) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    let outcome = match outcome.without_nul() {
        Outcome::RunFailed { errors } => match retry_run(task, &errors, lease, t) {
            Some(retry) => return retry,
            None => Outcome::Failed {
                errors: with_run_count(task, errors),
            },
        },
        other => other,
    };
    let mut changes = TaskChanges {
        finished_at: Some(Some(t.now)),
        // A held callback stays with the task it finished (confirmed, refused by the provider
        // or by a policy): its replay is then recognised (`state::callback`, DESIGN §7).
        reported_outcome: if task.holds_callback {
            None
        } else {
            Some(None)
        },
        ..TaskChanges::default()
    };
    let mut plan = Plan::default();
    match &outcome {
        Outcome::Processed { results } => {
            changes.status = Some(TaskStatus::Processed);
            changes.results = Some(results.as_ref().map(Value::to_string));
            let activity_results = merge_results(
                s.activity.results.as_deref(),
                task.position,
                results.as_ref(),
            );
            match s.tasks.iter().find(|next| next.position > task.position) {
                Some(next) => {
                    plan.tasks.push(begin(next, t));
                    plan.activity = Some(ActivityUpdate {
                        id: s.activity.id,
                        expected: ActivityStatus::Processing,
                        changes: ActivityChanges {
                            results: Some(activity_results),
                            ..Default::default()
                        },
                    });
                }
                None => {
                    plan.activity = Some(ActivityUpdate {
                        id: s.activity.id,
                        expected: ActivityStatus::Processing,
                        changes: ActivityChanges {
                            status: Some(ActivityStatus::Processed),
                            results: Some(activity_results),
                            finished_at: Some(Some(t.now)),
                            drop_secrets: true,
                            ..Default::default()
                        },
                    });
                    plan.promote_lifecycle = true;
                }
            }
        }
        Outcome::Failed { errors } | Outcome::RunFailed { errors } => {
            changes.status = Some(TaskStatus::Failed);
            changes.errors = Some(Some(errors.clone()));
            let why = format!("Task {} ({}) failed: {errors}", task.id, task.name);
            plan = rest_ended(s, task, ActivityStatus::Failed, why, cancel_run, t);
        }
        Outcome::Aborted { reason } => {
            changes.status = Some(TaskStatus::Aborted);
            changes.errors = Some(Some(reason.clone()));
            let why = format!("Task {} ({}) was aborted: {reason}", task.id, task.name);
            plan = rest_ended(s, task, ActivityStatus::Aborted, why, cancel_run, t);
        }
    }
    let changes = if cancel_run && run_may_exist(task) {
        TaskChanges {
            step_attempts: Some(0),
            ..reschedule(changes, Step::Cancel, t.now)
        }
    } else {
        released(changes)
    };
    plan.tasks.insert(
        0,
        TaskUpdate {
            id: task.id,
            expected: TaskStatus::Processing,
            expected_lease: lease.map(str::to_owned),
            changes,
        },
    );
    plan
}

/// The run failed and `configurations.retry` allows another: the task stays PROCESSING and is
/// dispatched again after the backoff, as a new attempt (the failed run's callback token is
/// no longer valid). No retry when the next run could not start before the task's deadline.
fn retry_run(task: &TaskState, errors: &str, lease: Option<&str>, t: &Timing) -> Option<Plan> {
    let policy = task.settings.retry?;
    let failed_runs = task.runs_failed + 1;
    if failed_runs > policy.max as i32 {
        return None;
    }
    let due = t.now.saturating_add(policy.delay_ms(failed_runs));
    if task.deadline_at.is_some_and(|deadline| due >= deadline) {
        return None;
    }
    let runs = policy.max + 1;
    let changes = TaskChanges {
        errors: Some(Some(format!(
            "run {failed_runs} of {runs} failed: {errors}; run {} starts at {}",
            failed_runs + 1,
            crate::clock::format_ms(due)
        ))),
        run_ref: Some(None),
        run_url: Some(None),
        reported_outcome: Some(None),
        runs_failed: Some(failed_runs),
        attempt: Some(task.attempt + 1),
        step_attempts: Some(0),
        ..reschedule(TaskChanges::default(), Step::Dispatch, due)
    };
    Some(single(task, TaskStatus::Processing, lease, changes))
}

/// A run failure's text, saying how many runs there were when the task was retried.
fn with_run_count(task: &TaskState, errors: String) -> String {
    match task.runs_failed {
        0 => errors,
        earlier => format!("{errors} (all {} runs failed)", earlier + 1),
    }
}

/// The activity ends because `task` did; the tasks after it will never run.
fn rest_ended(
    s: &Snapshot,
    task: &TaskState,
    status: ActivityStatus,
    errors: String,
    cancel_run: bool,
    t: &Timing,
) -> Plan {
    let mut plan = Plan {
        activity: Some(ActivityUpdate {
            id: s.activity.id,
            expected: ActivityStatus::Processing,
            changes: ActivityChanges {
                status: Some(status),
                errors: Some(Some(errors)),
                finished_at: Some(Some(t.now)),
                drop_secrets: !(cancel_run && run_may_exist(task)),
                ..Default::default()
            },
        }),
        ..Plan::default()
    };
    plan.tasks = s
        .tasks
        .iter()
        .filter(|other| other.id != task.id && other.status == TaskStatus::Planned)
        .map(|other| abort_one(other, t))
        .collect();
    plan
}

/// The activity's `results`: `{"task1": …, "task2": …}`, the tasks that returned results.
pub fn merge_results(
    activity_results: Option<&str>,
    position: i32,
    results: Option<&Value>,
) -> Option<String> {
    let mut merged = activity_results
        .and_then(|r| serde_json::from_str::<serde_json::Map<String, Value>>(r).ok())
        .unwrap_or_default();
    if let Some(results) = results {
        merged.insert(format!("task{position}"), results.clone());
    }
    (!merged.is_empty()).then(|| Value::Object(merged).to_string())
}
