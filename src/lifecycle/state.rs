//! Every state transition of activities and tasks, as pure functions from a snapshot to a plan.
//! The db layer applies a plan with compare-and-set updates in one transaction; a plan whose
//! expectations no longer hold is a conflict and changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::models::{ActivityChanges, ActivityRow, TaskChanges, TaskRow};
use crate::domain::{ActivityStatus, Step, TaskStatus};

/// An activity with all its tasks, in position order, read in the transaction that changes them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub activity: ActivityRow,
    pub tasks: Vec<TaskRow>,
}

/// The clock and the engine timings a transition needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub now: i64,
    pub poll_after_ms: i64,
    pub default_timeout_ms: i64,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub activity: Option<ActivityUpdate>,
    pub tasks: Vec<TaskUpdate>,
    /// Close the current lifecycle row of the product version and open one for this activity.
    pub promote_lifecycle: bool,
}

#[derive(Debug)]
pub struct ActivityUpdate {
    pub id: i64,
    pub expected: ActivityStatus,
    pub changes: ActivityChanges,
}

#[derive(Debug)]
pub struct TaskUpdate {
    pub id: i64,
    pub expected: TaskStatus,
    /// Set for engine steps: the update only applies while this claim still owns the task.
    pub expected_lease: Option<String>,
    pub changes: TaskChanges,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.activity.is_none() && self.tasks.is_empty() && !self.promote_lifecycle
    }

    /// True when the plan leaves a step for the engine to do now.
    pub fn schedules_work(&self) -> bool {
        self.tasks
            .iter()
            .any(|t| matches!(t.changes.step, Some(Some(_))))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 409 40901
    #[error("{0}")]
    ActivityConflict(String),
    /// 422 42201
    #[error("{0}")]
    NotStartable(String),
    /// 409 40911
    #[error("{0}")]
    TaskConflict(String),
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Processed { results: Option<Value> },
    Failed { errors: String },
    Aborted { reason: String },
}

/// What a callback said, kept as-is to recognise a replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub status: ReportedStatus,
    pub results: Option<Value>,
    pub errors: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReportedStatus {
    Processed,
    Failed,
}

impl Report {
    fn outcome(&self) -> Outcome {
        match self.status {
            ReportedStatus::Processed => Outcome::Processed {
                results: self.results.clone(),
            },
            ReportedStatus::Failed => Outcome::Failed {
                errors: self
                    .errors
                    .clone()
                    .unwrap_or_else(|| "the pipeline reported a failure".into()),
            },
        }
    }

    fn task_status(&self) -> TaskStatus {
        match self.status {
            ReportedStatus::Processed => TaskStatus::Processed,
            ReportedStatus::Failed => TaskStatus::Failed,
        }
    }
}

#[derive(Debug)]
pub enum CallbackDecision {
    Apply(Plan),
    /// The same callback was already recorded: answer with the task's status, change nothing.
    AlreadyRecorded(TaskStatus),
}

fn activity_status(s: &Snapshot) -> ActivityStatus {
    ActivityStatus::parse(&s.activity.status).unwrap_or(ActivityStatus::Failed)
}

fn task_status(t: &TaskRow) -> TaskStatus {
    TaskStatus::parse(&t.status).unwrap_or(TaskStatus::Failed)
}

impl Snapshot {
    pub fn task(&self, id: i64) -> Option<&TaskRow> {
        self.tasks.iter().find(|t| t.id == id)
    }
}

/// Releases whatever the engine held on a task.
fn released(mut c: TaskChanges) -> TaskChanges {
    c.step = Some(None);
    c.due_at = Some(None);
    c.lease_owner = Some(None);
    c.lease_until = Some(None);
    c
}

fn reschedule(mut c: TaskChanges, step: Step, due: i64) -> TaskChanges {
    c.step = Some(Some(step.as_str()));
    c.due_at = Some(Some(due));
    c.lease_owner = Some(None);
    c.lease_until = Some(None);
    c
}

/// The task's own timeout (`configurations.timeout`, seconds) or the default.
fn timeout_ms(task: &TaskRow, default_ms: i64) -> i64 {
    task.configurations
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|c| c.get("timeout").and_then(Value::as_f64))
        .filter(|secs| *secs > 0.0)
        .map(|secs| (secs * 1000.0) as i64)
        .unwrap_or(default_ms)
}

fn begin(task: &TaskRow, t: &Timing) -> TaskUpdate {
    let changes = TaskChanges {
        status: Some(TaskStatus::Processing.as_str()),
        started_at: Some(Some(t.now)),
        deadline_at: Some(Some(t.now + timeout_ms(task, t.default_timeout_ms))),
        step_attempts: Some(0),
        ..reschedule(TaskChanges::default(), Step::Dispatch, t.now)
    };
    TaskUpdate {
        id: task.id,
        expected: TaskStatus::Planned,
        expected_lease: None,
        changes,
    }
}

/// PLANNED → PROCESSING, and the first task is due for dispatch.
pub fn start(s: &Snapshot, t: &Timing) -> Result<Plan, Refusal> {
    match activity_status(s) {
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
                status: Some(ActivityStatus::Processing.as_str()),
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
        .filter(|task| !task_status(task).is_terminal())
        .map(|task| abort_one(task, t))
        .collect();
    Plan {
        activity: Some(ActivityUpdate {
            id: s.activity.id,
            expected: activity_status(s),
            changes: ActivityChanges {
                status: Some(status.as_str()),
                errors: errors.map(Some),
                finished_at: Some(Some(t.now)),
                sealed_secrets: secrets_after_end(cancel_needs_secrets(s)),
                ..Default::default()
            },
        }),
        tasks,
        promote_lifecycle: false,
    }
}

/// A run may exist for a task that has a run reference, or whose dispatch is in flight.
fn run_may_exist(task: &TaskRow) -> bool {
    task.run_ref.is_some()
}

/// Secrets are dropped when the activity ends, unless a cancel still has to authenticate.
fn secrets_after_end(cancel_pending: bool) -> Option<Option<String>> {
    if cancel_pending {
        None
    } else {
        Some(None)
    }
}

fn cancel_needs_secrets(s: &Snapshot) -> bool {
    s.tasks
        .iter()
        .any(|task| !task_status(task).is_terminal() && run_may_exist(task))
}

fn abort_one(task: &TaskRow, t: &Timing) -> TaskUpdate {
    let changes = TaskChanges {
        status: Some(TaskStatus::Aborted.as_str()),
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
        expected: task_status(task),
        expected_lease: None,
        changes,
    }
}

/// PLANNED or PROCESSING → ABORTED.
pub fn abort(s: &Snapshot, t: &Timing) -> Result<Plan, Refusal> {
    let status = activity_status(s);
    if status.is_terminal() {
        return Err(Refusal::ActivityConflict(format!(
            "activity {} is {status} and cannot be aborted",
            s.activity.id
        )));
    }
    Ok(end_activity(s, ActivityStatus::Aborted, None, t))
}

/// Aborting one task aborts its activity: the remaining tasks could never run in order.
pub fn abort_task(s: &Snapshot, task_id: i64, t: &Timing) -> Result<Plan, Refusal> {
    let task = s.task(task_id).expect("snapshot holds the task");
    let status = task_status(task);
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
    task_id: i64,
    outcome: Outcome,
    cancel_run: bool,
    lease: Option<&str>,
    t: &Timing,
) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    let mut changes = TaskChanges {
        finished_at: Some(Some(t.now)),
        reported_outcome: Some(None),
        ..TaskChanges::default()
    };
    let mut plan = Plan::default();
    match &outcome {
        Outcome::Processed { results } => {
            changes.status = Some(TaskStatus::Processed.as_str());
            changes.results = Some(results.as_ref().map(Value::to_string));
            let activity_results = merge_results(&s.activity, task.position, results.as_ref());
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
                            status: Some(ActivityStatus::Processed.as_str()),
                            results: Some(activity_results),
                            finished_at: Some(Some(t.now)),
                            sealed_secrets: Some(None),
                            ..Default::default()
                        },
                    });
                    plan.promote_lifecycle = true;
                }
            }
        }
        Outcome::Failed { errors } => {
            changes.status = Some(TaskStatus::Failed.as_str());
            changes.errors = Some(Some(errors.clone()));
            let why = format!("Task {} ({}) failed: {errors}", task.id, task.name);
            plan = rest_ended(s, task, ActivityStatus::Failed, why, cancel_run, t);
        }
        Outcome::Aborted { reason } => {
            changes.status = Some(TaskStatus::Aborted.as_str());
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

/// The activity ends because `task` did; the tasks after it will never run.
fn rest_ended(
    s: &Snapshot,
    task: &TaskRow,
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
                status: Some(status.as_str()),
                errors: Some(Some(errors)),
                finished_at: Some(Some(t.now)),
                sealed_secrets: secrets_after_end(cancel_run && run_may_exist(task)),
                ..Default::default()
            },
        }),
        ..Plan::default()
    };
    plan.tasks = s
        .tasks
        .iter()
        .filter(|other| other.id != task.id && task_status(other) == TaskStatus::Planned)
        .map(|other| abort_one(other, t))
        .collect();
    plan
}

/// The activity's `results`: `{"task1": …, "task2": …}`, the tasks that returned results.
fn merge_results(activity: &ActivityRow, position: i32, results: Option<&Value>) -> Option<String> {
    let mut merged = activity
        .results
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Map<String, Value>>(r).ok())
        .unwrap_or_default();
    if let Some(results) = results {
        merged.insert(format!("task{position}"), results.clone());
    }
    (!merged.is_empty()).then(|| Value::Object(merged).to_string())
}

/// A pipeline called back. With `confirm_first` the outcome is held until the provider agrees.
pub fn callback(
    s: &Snapshot,
    task_id: i64,
    report: Report,
    confirm_first: bool,
    t: &Timing,
) -> Result<CallbackDecision, Refusal> {
    let task = s.task(task_id).expect("snapshot holds the task");
    match task_status(task) {
        TaskStatus::Planned => Err(Refusal::TaskConflict(format!(
            "task {task_id} is not running (PLANNED): no callback is expected yet"
        ))),
        TaskStatus::Aborted => Err(Refusal::TaskConflict(format!(
            "task {task_id} was aborted; its callback is refused"
        ))),
        finished @ (TaskStatus::Processed | TaskStatus::Failed) => {
            if same_as_recorded(task, &report) {
                Ok(CallbackDecision::AlreadyRecorded(finished))
            } else {
                Err(Refusal::TaskConflict(format!(
                    "task {task_id} already finished as {finished} with another outcome"
                )))
            }
        }
        TaskStatus::Processing => {
            let pending = task
                .reported_outcome
                .as_deref()
                .and_then(|r| serde_json::from_str::<Report>(r).ok());
            match pending {
                Some(previous) if previous == report => {
                    Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processing))
                }
                Some(_) => Err(Refusal::TaskConflict(format!(
                    "task {task_id} already received a different callback, still being confirmed"
                ))),
                None if confirm_first => {
                    let changes = TaskChanges {
                        reported_outcome: Some(Some(
                            serde_json::to_string(&report).expect("report serializes"),
                        )),
                        step_attempts: Some(0),
                        ..reschedule(TaskChanges::default(), Step::Confirm, t.now)
                    };
                    Ok(CallbackDecision::Apply(Plan {
                        tasks: vec![TaskUpdate {
                            id: task.id,
                            expected: TaskStatus::Processing,
                            expected_lease: None,
                            changes,
                        }],
                        ..Plan::default()
                    }))
                }
                None => Ok(CallbackDecision::Apply(finish_task(
                    s,
                    task_id,
                    report.outcome(),
                    false,
                    None,
                    t,
                ))),
            }
        }
    }
}

fn same_as_recorded(task: &TaskRow, report: &Report) -> bool {
    if task_status(task) != report.task_status() {
        return false;
    }
    match report.status {
        ReportedStatus::Processed => {
            let recorded = task
                .results
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok());
            recorded == report.results
        }
        ReportedStatus::Failed => match &report.errors {
            Some(errors) => task.errors.as_deref() == Some(errors.as_str()),
            None => true,
        },
    }
}

/// Is the engine's claim on this task for this step still valid?
pub fn still_owned(s: &Snapshot, task_id: i64, step: Step, lease: &str) -> bool {
    s.task(task_id).is_some_and(|task| {
        task.step.as_deref() == Some(step.as_str()) && task.lease_owner.as_deref() == Some(lease)
    })
}

/// After a successful submit. The task may meanwhile have been finished by a fast callback or
/// aborted; the run reference and resolved configurations are recorded in every case.
pub fn submitted(s: &Snapshot, task_id: i64, lease: &str, run: Submittal, t: &Timing) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    let recorded = TaskChanges {
        run_ref: Some(run.run_ref.clone()),
        run_url: Some(run.run_url.clone()),
        configurations: Some(Some(run.configurations.clone())),
        ..TaskChanges::default()
    };
    let status = task_status(task);
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
    if let Some(outcome) = run.immediate {
        let mut plan = finish_task(s, task_id, outcome, false, Some(lease), t);
        let own = &mut plan.tasks[0].changes;
        own.run_ref = recorded.run_ref;
        own.run_url = recorded.run_url;
        own.configurations = recorded.configurations;
        return plan;
    }
    let deadline = task.deadline_at.unwrap_or(i64::MAX);
    let changes = TaskChanges {
        step_attempts: Some(0),
        ..reschedule(
            recorded,
            Step::Await,
            (t.now + t.poll_after_ms).min(deadline),
        )
    };
    single(task, status, Some(lease), changes)
}

/// What a dispatch produced, for `submitted`.
#[derive(Debug, Clone)]
pub struct Submittal {
    pub run_ref: Option<String>,
    pub run_url: Option<String>,
    pub configurations: String,
    pub immediate: Option<Outcome>,
}

fn single(task: &TaskRow, expected: TaskStatus, lease: Option<&str>, changes: TaskChanges) -> Plan {
    Plan {
        tasks: vec![TaskUpdate {
            id: task.id,
            expected,
            expected_lease: lease.map(str::to_owned),
            changes,
        }],
        ..Plan::default()
    }
}

/// The engine will try the same step again at `due` (a transient failure, a run still going).
pub fn retry_step(s: &Snapshot, task_id: i64, lease: &str, step: Step, due: i64) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if !still_owned(s, task_id, step, lease) {
        return Plan::default();
    }
    let changes = TaskChanges {
        step_attempts: Some(task.step_attempts + 1),
        ..reschedule(TaskChanges::default(), step, due)
    };
    single(task, task_status(task), Some(lease), changes)
}

/// The dispatch may have reached the provider but we cannot know: wait for the callback (the
/// attempt's token stays valid) until the task's deadline instead of sending it twice.
pub fn await_unknown_dispatch(
    s: &Snapshot,
    task_id: i64,
    lease: &str,
    configurations: Option<String>,
) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if task_status(task) != TaskStatus::Processing {
        return Plan::default();
    }
    let due = task.deadline_at.unwrap_or(i64::MAX);
    let changes = TaskChanges {
        configurations: configurations.map(Some),
        ..reschedule(TaskChanges::default(), Step::Await, due)
    };
    single(task, TaskStatus::Processing, Some(lease), changes)
}

/// The engine's step on a task is done and nothing more is owed (a cancel went through).
pub fn step_done(s: &Snapshot, task_id: i64, lease: &str, step: Step) -> Plan {
    let task = s.task(task_id).expect("snapshot holds the task");
    if !still_owned(s, task_id, step, lease) {
        return Plan::default();
    }
    single(
        task,
        task_status(task),
        Some(lease),
        released(TaskChanges::default()),
    )
}

/// `finish_task` for an engine step, only while the step's claim still holds.
pub fn finish_step(
    s: &Snapshot,
    task_id: i64,
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
    if task_status(task) != TaskStatus::Processing {
        // A cancel or confirm step outliving its task's end: only release it.
        return step_done(s, task_id, lease, step);
    }
    finish_task(s, task_id, outcome, cancel_run, Some(lease), t)
}

/// The held callback is confirmed by the provider: apply it.
pub fn reported_outcome(task: &TaskRow) -> Option<Outcome> {
    task.reported_outcome
        .as_deref()
        .and_then(|r| serde_json::from_str::<Report>(r).ok())
        .map(|r| r.outcome())
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
