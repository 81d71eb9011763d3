use serde_json::json;

use super::*;
use crate::domain::{
    ActivityId, ActivityState, ActivityStatus, Outcome, Plan, Recorded, Report, ReportedStatus,
    RunSettings, Snapshot, Step, TaskId, TaskState, TaskStatus, TaskUpdate,
};

pub(super) const NOW: i64 = 1_000_000;

pub(super) fn timing() -> Timing {
    Timing {
        now: NOW,
        poll_after_ms: 300_000,
        default_timeout_ms: 3_600_000,
    }
}

pub(super) fn activity(status: ActivityStatus) -> ActivityState {
    ActivityState {
        id: ActivityId(1),
        status,
        results: None,
        holds_secrets: true,
    }
}

pub(super) fn task(id: i64, position: i32, status: TaskStatus) -> TaskState {
    TaskState {
        id: TaskId(id),
        position,
        name: format!("t{position}"),
        executor: Some("fake".into()),
        status,
        attempt: 1,
        step: None,
        lease_owner: None,
        deadline_at: None,
        step_attempts: 0,
        runs_failed: 0,
        has_run: false,
        holds_callback: false,
        settings: RunSettings::default(),
    }
}

pub(super) fn snapshot(status: ActivityStatus, tasks: Vec<TaskState>) -> Snapshot {
    Snapshot {
        activity: activity(status),
        tasks,
        recorded: None,
    }
}

/// What task `id` recorded, in the snapshot its callback reads (nothing, until set).
pub(super) fn recorded(s: &mut Snapshot, id: i64) -> &mut Recorded {
    s.recorded.get_or_insert(Recorded {
        task: TaskId(id),
        results: None,
        errors: None,
        held: None,
    })
}

/// The decision on a callback of task 10 of a PROCESSING activity of `tasks`, nothing
/// recorded yet.
pub(super) fn callback_of_10(
    tasks: Vec<TaskState>,
    report: Report,
    confirm_first: bool,
) -> Result<CallbackDecision, Refusal> {
    let s = for_callback(snapshot(ActivityStatus::Processing, tasks), 10);
    callback(&s, TaskId(10), report, confirm_first, &timing())
}

/// The snapshot a callback of `id` reads, with nothing recorded yet.
pub(super) fn for_callback(mut s: Snapshot, id: i64) -> Snapshot {
    recorded(&mut s, id);
    s
}

pub(super) fn processed(results: serde_json::Value) -> Report {
    Report {
        status: ReportedStatus::Processed,
        results: Some(results),
        errors: None,
    }
}

pub(super) fn update_of(plan: &Plan, id: i64) -> &TaskUpdate {
    plan.tasks
        .iter()
        .find(|t| t.id == TaskId(id))
        .expect("task in plan")
}

#[test]
fn start_runs_the_first_task_only() {
    let s = snapshot(
        ActivityStatus::Planned,
        vec![
            task(10, 1, TaskStatus::Planned),
            task(11, 2, TaskStatus::Planned),
        ],
    );
    let plan = start(&s, &timing()).unwrap();
    let a = plan.activity.as_ref().unwrap();
    assert_eq!(a.changes.status, Some(ActivityStatus::Processing));
    assert_eq!(a.changes.started_at, Some(Some(NOW)));
    assert_eq!(plan.tasks.len(), 1);
    let first = update_of(&plan, 10);
    assert_eq!(first.expected, TaskStatus::Planned);
    assert_eq!(first.changes.status, Some(TaskStatus::Processing));
    assert_eq!(first.changes.step, Some(Some(Step::Dispatch)));
    assert_eq!(first.changes.due_at, Some(Some(NOW)));
    assert_eq!(first.changes.deadline_at, Some(Some(NOW + 3_600_000)));
    assert!(plan.schedules_work());
}

#[test]
fn a_task_timeout_in_configurations_sets_its_deadline() {
    let mut t = task(10, 1, TaskStatus::Planned);
    t.settings.timeout_ms = Some(90_000);
    let plan = start(&snapshot(ActivityStatus::Planned, vec![t]), &timing()).unwrap();
    assert_eq!(
        update_of(&plan, 10).changes.deadline_at,
        Some(Some(NOW + 90_000))
    );
}

#[test]
fn start_refuses_running_and_terminal_activities() {
    let tasks = vec![task(10, 1, TaskStatus::Planned)];
    assert!(matches!(
        start(
            &snapshot(ActivityStatus::Processing, tasks.clone()),
            &timing()
        ),
        Err(Refusal::ActivityConflict(_))
    ));
    for terminal in [
        ActivityStatus::Processed,
        ActivityStatus::Failed,
        ActivityStatus::Aborted,
    ] {
        assert!(matches!(
            start(&snapshot(terminal, tasks.clone()), &timing()),
            Err(Refusal::NotStartable(_))
        ));
    }
}

#[test]
fn a_processed_task_starts_the_next_and_collects_results() {
    let s = snapshot(
        ActivityStatus::Processing,
        vec![
            task(10, 1, TaskStatus::Processing),
            task(11, 2, TaskStatus::Planned),
        ],
    );
    let plan = finish_task(
        &s,
        TaskId(10),
        Outcome::Processed {
            results: Some(json!({"ip": "1.2.3.4"})),
        },
        false,
        None,
        &timing(),
    );
    let done = update_of(&plan, 10);
    assert_eq!(done.changes.status, Some(TaskStatus::Processed));
    assert_eq!(
        done.changes.results,
        Some(Some(r#"{"ip":"1.2.3.4"}"#.into()))
    );
    assert_eq!(
        done.changes.step,
        Some(None),
        "nothing more owed on the finished task"
    );
    assert_eq!(
        update_of(&plan, 11).changes.step,
        Some(Some(Step::Dispatch))
    );
    let a = plan.activity.as_ref().unwrap();
    assert_eq!(a.changes.status, None, "activity keeps running");
    assert_eq!(
        a.changes.results,
        Some(Some(r#"{"task1":{"ip":"1.2.3.4"}}"#.into()))
    );
    assert!(!plan.promote_lifecycle);
}

#[test]
fn the_last_processed_task_completes_the_activity_and_promotes_once() {
    let first = task(10, 1, TaskStatus::Processed);
    let mut s = snapshot(
        ActivityStatus::Processing,
        vec![first, task(11, 2, TaskStatus::Processing)],
    );
    s.activity.results = Some(r#"{"task1":{"a":1}}"#.into());
    let plan = finish_task(
        &s,
        TaskId(11),
        Outcome::Processed { results: None },
        false,
        None,
        &timing(),
    );
    let a = plan.activity.as_ref().unwrap();
    assert_eq!(a.expected, ActivityStatus::Processing);
    assert_eq!(a.changes.status, Some(ActivityStatus::Processed));
    assert_eq!(
        a.changes.results,
        Some(Some(r#"{"task1":{"a":1}}"#.into())),
        "a task without results is left out"
    );
    assert!(
        a.changes.drop_secrets,
        "secrets dropped when the activity ends"
    );
    assert!(plan.promote_lifecycle);
    assert!(!plan.schedules_work());
}

#[test]
fn a_nul_in_a_providers_message_is_replaced_so_postgresql_can_store_it() {
    let s = snapshot(
        ActivityStatus::Processing,
        vec![task(10, 1, TaskStatus::Processing)],
    );
    for outcome in [
        Outcome::Failed {
            errors: "exit\u{0}1".into(),
        },
        Outcome::RunFailed {
            errors: "exit\u{0}1".into(),
        },
    ] {
        let plan = finish_task(&s, TaskId(10), outcome, false, None, &timing());
        let errors = update_of(&plan, 10)
            .changes
            .errors
            .clone()
            .flatten()
            .unwrap();
        assert!(errors.starts_with("exit\u{FFFD}1"), "{errors}");
        let activity_errors = plan.activity.as_ref().unwrap().changes.errors.clone();
        assert!(
            !format!("{activity_errors:?}").contains("\\0"),
            "{activity_errors:?}"
        );
    }
}

#[test]
fn a_failed_task_fails_the_activity_and_aborts_the_rest() {
    let s = snapshot(
        ActivityStatus::Processing,
        vec![
            task(10, 1, TaskStatus::Processed),
            task(11, 2, TaskStatus::Processing),
            task(12, 3, TaskStatus::Planned),
        ],
    );
    let plan = finish_task(
        &s,
        TaskId(11),
        Outcome::Failed {
            errors: "boom".into(),
        },
        false,
        None,
        &timing(),
    );
    assert_eq!(
        update_of(&plan, 11).changes.status,
        Some(TaskStatus::Failed)
    );
    assert_eq!(
        update_of(&plan, 11).changes.errors,
        Some(Some("boom".into()))
    );
    assert_eq!(
        update_of(&plan, 12).changes.status,
        Some(TaskStatus::Aborted)
    );
    assert_eq!(
        update_of(&plan, 12).changes.step,
        Some(None),
        "never dispatched"
    );
    assert!(
        plan.tasks.iter().all(|t| t.id != TaskId(10)),
        "finished tasks are left alone"
    );
    let a = plan.activity.as_ref().unwrap();
    assert_eq!(a.changes.status, Some(ActivityStatus::Failed));
    assert_eq!(
        a.changes.errors,
        Some(Some("Task 11 (t2) failed: boom".into()))
    );
    assert!(!plan.promote_lifecycle);
}

#[test]
fn abort_ends_open_tasks_and_cancels_started_runs() {
    let mut running = task(11, 2, TaskStatus::Processing);
    running.has_run = true;
    running.step = Some(Step::Await);
    let s = snapshot(
        ActivityStatus::Processing,
        vec![
            task(10, 1, TaskStatus::Processed),
            running,
            task(12, 3, TaskStatus::Planned),
        ],
    );
    let plan = abort(&s, &timing()).unwrap();
    assert_eq!(
        plan.activity.as_ref().unwrap().changes.status,
        Some(ActivityStatus::Aborted)
    );
    assert_eq!(
        update_of(&plan, 11).changes.status,
        Some(TaskStatus::Aborted)
    );
    assert_eq!(update_of(&plan, 11).changes.step, Some(Some(Step::Cancel)));
    assert_eq!(update_of(&plan, 12).changes.step, Some(None));
    assert!(
        !plan.activity.as_ref().unwrap().changes.drop_secrets,
        "secrets kept: the cancel may need them"
    );
    assert!(plan.schedules_work());
}

#[test]
fn terminal_activities_cannot_be_aborted() {
    for terminal in [
        ActivityStatus::Processed,
        ActivityStatus::Failed,
        ActivityStatus::Aborted,
    ] {
        assert!(matches!(
            abort(&snapshot(terminal, vec![]), &timing()),
            Err(Refusal::ActivityConflict(_))
        ));
    }
}

#[test]
fn aborting_a_task_aborts_its_activity_but_not_a_finished_task() {
    let s = snapshot(
        ActivityStatus::Processing,
        vec![
            task(10, 1, TaskStatus::Processed),
            task(11, 2, TaskStatus::Processing),
        ],
    );
    let plan = abort_task(&s, TaskId(11), &timing()).unwrap();
    assert_eq!(
        plan.activity.as_ref().unwrap().changes.status,
        Some(ActivityStatus::Aborted)
    );
    assert!(matches!(
        abort_task(&s, TaskId(10), &timing()),
        Err(Refusal::TaskConflict(_))
    ));
}

#[test]
fn callbacks_are_idempotent_and_refuse_other_outcomes() {
    let done = task(10, 1, TaskStatus::Processed);
    let mut s = snapshot(ActivityStatus::Processed, vec![done]);
    recorded(&mut s, 10).results = Some(r#"{"url":"x"}"#.into());
    assert!(matches!(
        callback(
            &s,
            TaskId(10),
            processed(json!({"url": "x"})),
            false,
            &timing()
        ),
        Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processed))
    ));
    assert!(matches!(
        callback(
            &s,
            TaskId(10),
            processed(json!({"url": "y"})),
            false,
            &timing()
        ),
        Err(Refusal::TaskConflict(_))
    ));
    let failed = Report {
        status: ReportedStatus::Failed,
        results: None,
        errors: Some("e".into()),
    };
    assert!(matches!(
        callback(&s, TaskId(10), failed, false, &timing()),
        Err(Refusal::TaskConflict(_))
    ));
}

#[test]
fn callbacks_for_aborted_or_planned_tasks_are_refused() {
    let s = snapshot(
        ActivityStatus::Aborted,
        vec![
            task(10, 1, TaskStatus::Aborted),
            task(11, 2, TaskStatus::Planned),
        ],
    );
    for id in [10, 11] {
        let s = for_callback(s.clone(), id);
        assert!(matches!(
            callback(&s, TaskId(id), processed(json!({})), false, &timing()),
            Err(Refusal::TaskConflict(_))
        ));
    }
}

#[test]
fn with_confirmation_a_callback_is_held_until_the_provider_agrees() {
    let report = processed(json!({"a": 1}));
    let Ok(CallbackDecision::Apply(plan)) = callback_of_10(
        vec![task(10, 1, TaskStatus::Processing)],
        report.clone(),
        true,
    ) else {
        panic!("expected a plan");
    };
    let held = update_of(&plan, 10);
    assert_eq!(held.changes.status, None, "still PROCESSING");
    assert_eq!(held.changes.step, Some(Some(Step::Confirm)));
    assert!(plan.activity.is_none());
    let mut waiting = task(10, 1, TaskStatus::Processing);
    waiting.holds_callback = true;
    let mut s = snapshot(ActivityStatus::Processing, vec![waiting]);
    recorded(&mut s, 10).held = Some(report.clone());
    assert!(matches!(
        callback(&s, TaskId(10), report, true, &timing()),
        Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processing))
    ));
    assert!(matches!(
        callback(&s, TaskId(10), processed(json!({"a": 2})), true, &timing()),
        Err(Refusal::TaskConflict(_))
    ));
}

/// DESIGN §7, the same callback twice changes nothing and is answered 200, also when what the
/// task stored says more than the callback did: its errors counted the runs (a retried task),
/// or the provider or a policy failed what the callback said succeeded.
#[test]
fn the_callback_that_finished_a_task_is_kept_to_recognise_its_replay() {
    let failed = Report {
        status: ReportedStatus::Failed,
        results: None,
        errors: Some("boom".into()),
    };
    // The second of two runs fails: the task ends FAILED, its errors say so, the callback kept.
    let mut last_run = task(10, 1, TaskStatus::Processing);
    last_run.runs_failed = 1;
    last_run.settings.retry = Some(crate::domain::RetryPolicy {
        max: 1,
        backoff_ms: 1_000,
    });
    let Ok(CallbackDecision::Apply(plan)) = callback_of_10(vec![last_run], failed.clone(), false)
    else {
        panic!("expected a plan");
    };
    let update = update_of(&plan, 10);
    assert_eq!(update.changes.status, Some(TaskStatus::Failed));
    assert_eq!(
        update.changes.errors,
        Some(Some("boom (all 2 runs failed)".into()))
    );
    assert_eq!(update.changes.reported_outcome, Some(Some(failed.clone())));

    // As stored: the replay is recognised, another outcome is not.
    let mut s = snapshot(
        ActivityStatus::Failed,
        vec![task(10, 1, TaskStatus::Failed)],
    );
    let stored = recorded(&mut s, 10);
    stored.errors = Some("boom (all 2 runs failed)".into());
    stored.held = Some(failed.clone());
    assert!(matches!(
        callback(&s, TaskId(10), failed, false, &timing()),
        Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Failed))
    ));
    let other = Report {
        status: ReportedStatus::Failed,
        results: None,
        errors: Some("boom (all 2 runs failed)".into()),
    };
    assert!(matches!(
        callback(&s, TaskId(10), other, false, &timing()),
        Err(Refusal::TaskConflict(_))
    ));

    // A held callback the provider or a policy refused stays with the task it finished.
    let mut holding = task(10, 1, TaskStatus::Processing);
    holding.holds_callback = true;
    let s = snapshot(ActivityStatus::Processing, vec![holding]);
    let blocked = Outcome::Failed {
        errors: "blocked by policy gdpr (id 7)".into(),
    };
    let plan = finish_task(&s, TaskId(10), blocked, false, None, &timing());
    assert_eq!(update_of(&plan, 10).changes.reported_outcome, None, "kept");
    let mut s = snapshot(
        ActivityStatus::Failed,
        vec![task(10, 1, TaskStatus::Failed)],
    );
    let said = processed(json!({"x": "v1"}));
    recorded(&mut s, 10).held = Some(said.clone());
    assert!(matches!(
        callback(&s, TaskId(10), said, false, &timing()),
        Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Failed))
    ));

    // A run retried keeps nothing of the callback that failed it (its token is an earlier
    // attempt's from then on).
    let mut first_run = task(10, 1, TaskStatus::Processing);
    first_run.settings.retry = Some(crate::domain::RetryPolicy {
        max: 1,
        backoff_ms: 1_000,
    });
    let failed = Report {
        status: ReportedStatus::Failed,
        results: None,
        errors: Some("boom".into()),
    };
    let Ok(CallbackDecision::Apply(plan)) = callback_of_10(vec![first_run], failed, false) else {
        panic!("expected a plan");
    };
    let update = update_of(&plan, 10);
    assert_eq!(update.changes.status, None, "still PROCESSING");
    assert_eq!(update.changes.reported_outcome, Some(None));
}
