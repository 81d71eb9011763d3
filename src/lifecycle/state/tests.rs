use serde_json::json;

use super::*;

pub(super) const NOW: i64 = 1_000_000;

pub(super) fn timing() -> Timing {
    Timing {
        now: NOW,
        poll_after_ms: 300_000,
        default_timeout_ms: 3_600_000,
    }
}

pub(super) fn activity(status: ActivityStatus) -> ActivityRow {
    ActivityRow {
        id: 1,
        data_product_id: "p".into(),
        data_product_version: "1".into(),
        stage: "dev".into(),
        status: status.as_str().into(),
        results: None,
        errors: None,
        sealed_secrets: Some("sealed".into()),
        created_at: 0,
        started_at: None,
        finished_at: None,
    }
}

pub(super) fn task(id: i64, position: i32, status: TaskStatus) -> TaskRow {
    TaskRow {
        id,
        activity_id: 1,
        position,
        name: format!("t{position}"),
        description: None,
        executor_ref: Some("fake".into()),
        template: None,
        configurations: None,
        status: status.as_str().into(),
        results: None,
        errors: None,
        created_at: 0,
        started_at: None,
        finished_at: None,
        attempt: 1,
        run_ref: None,
        run_url: None,
        step: None,
        due_at: None,
        lease_owner: None,
        lease_until: None,
        deadline_at: None,
        step_attempts: 0,
        reported_outcome: None,
        runs_failed: 0,
        planned_configurations: None,
    }
}

pub(super) fn snapshot(status: ActivityStatus, tasks: Vec<TaskRow>) -> Snapshot {
    Snapshot {
        activity: activity(status),
        tasks,
    }
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
        .find(|t| t.id == id)
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
    assert_eq!(a.changes.status, Some("PROCESSING"));
    assert_eq!(a.changes.started_at, Some(Some(NOW)));
    assert_eq!(plan.tasks.len(), 1);
    let first = update_of(&plan, 10);
    assert_eq!(first.expected, TaskStatus::Planned);
    assert_eq!(first.changes.status, Some("PROCESSING"));
    assert_eq!(first.changes.step, Some(Some("dispatch")));
    assert_eq!(first.changes.due_at, Some(Some(NOW)));
    assert_eq!(first.changes.deadline_at, Some(Some(NOW + 3_600_000)));
    assert!(plan.schedules_work());
}

#[test]
fn a_task_timeout_in_configurations_sets_its_deadline() {
    let mut t = task(10, 1, TaskStatus::Planned);
    t.configurations = Some(json!({"timeout": 90}).to_string());
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
        10,
        Outcome::Processed {
            results: Some(json!({"ip": "1.2.3.4"})),
        },
        false,
        None,
        &timing(),
    );
    let done = update_of(&plan, 10);
    assert_eq!(done.changes.status, Some("PROCESSED"));
    assert_eq!(
        done.changes.results,
        Some(Some(r#"{"ip":"1.2.3.4"}"#.into()))
    );
    assert_eq!(
        done.changes.step,
        Some(None),
        "nothing more owed on the finished task"
    );
    assert_eq!(update_of(&plan, 11).changes.step, Some(Some("dispatch")));
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
    let mut first = task(10, 1, TaskStatus::Processed);
    first.results = Some(r#"{"a":1}"#.into());
    let mut s = snapshot(
        ActivityStatus::Processing,
        vec![first, task(11, 2, TaskStatus::Processing)],
    );
    s.activity.results = Some(r#"{"task1":{"a":1}}"#.into());
    let plan = finish_task(
        &s,
        11,
        Outcome::Processed { results: None },
        false,
        None,
        &timing(),
    );
    let a = plan.activity.as_ref().unwrap();
    assert_eq!(a.expected, ActivityStatus::Processing);
    assert_eq!(a.changes.status, Some("PROCESSED"));
    assert_eq!(
        a.changes.results,
        Some(Some(r#"{"task1":{"a":1}}"#.into())),
        "a task without results is left out"
    );
    assert_eq!(
        a.changes.sealed_secrets,
        Some(None),
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
        let plan = finish_task(&s, 10, outcome, false, None, &timing());
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
        11,
        Outcome::Failed {
            errors: "boom".into(),
        },
        false,
        None,
        &timing(),
    );
    assert_eq!(update_of(&plan, 11).changes.status, Some("FAILED"));
    assert_eq!(
        update_of(&plan, 11).changes.errors,
        Some(Some("boom".into()))
    );
    assert_eq!(update_of(&plan, 12).changes.status, Some("ABORTED"));
    assert_eq!(
        update_of(&plan, 12).changes.step,
        Some(None),
        "never dispatched"
    );
    assert!(
        plan.tasks.iter().all(|t| t.id != 10),
        "finished tasks are left alone"
    );
    let a = plan.activity.as_ref().unwrap();
    assert_eq!(a.changes.status, Some("FAILED"));
    assert_eq!(
        a.changes.errors,
        Some(Some("Task 11 (t2) failed: boom".into()))
    );
    assert!(!plan.promote_lifecycle);
}

#[test]
fn abort_ends_open_tasks_and_cancels_started_runs() {
    let mut running = task(11, 2, TaskStatus::Processing);
    running.run_ref = Some(r#"{"runId":5}"#.into());
    running.step = Some("await".into());
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
        Some("ABORTED")
    );
    assert_eq!(update_of(&plan, 11).changes.status, Some("ABORTED"));
    assert_eq!(update_of(&plan, 11).changes.step, Some(Some("cancel")));
    assert_eq!(update_of(&plan, 12).changes.step, Some(None));
    assert_eq!(
        plan.activity.as_ref().unwrap().changes.sealed_secrets,
        None,
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
    let plan = abort_task(&s, 11, &timing()).unwrap();
    assert_eq!(
        plan.activity.as_ref().unwrap().changes.status,
        Some("ABORTED")
    );
    assert!(matches!(
        abort_task(&s, 10, &timing()),
        Err(Refusal::TaskConflict(_))
    ));
}

#[test]
fn callbacks_are_idempotent_and_refuse_other_outcomes() {
    let mut done = task(10, 1, TaskStatus::Processed);
    done.results = Some(r#"{"url":"x"}"#.into());
    let s = snapshot(ActivityStatus::Processed, vec![done]);
    assert!(matches!(
        callback(&s, 10, processed(json!({"url": "x"})), false, &timing()),
        Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processed))
    ));
    assert!(matches!(
        callback(&s, 10, processed(json!({"url": "y"})), false, &timing()),
        Err(Refusal::TaskConflict(_))
    ));
    let failed = Report {
        status: ReportedStatus::Failed,
        results: None,
        errors: Some("e".into()),
    };
    assert!(matches!(
        callback(&s, 10, failed, false, &timing()),
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
        assert!(matches!(
            callback(&s, id, processed(json!({})), false, &timing()),
            Err(Refusal::TaskConflict(_))
        ));
    }
}

#[test]
fn with_confirmation_a_callback_is_held_until_the_provider_agrees() {
    let s = snapshot(
        ActivityStatus::Processing,
        vec![task(10, 1, TaskStatus::Processing)],
    );
    let report = processed(json!({"a": 1}));
    let Ok(CallbackDecision::Apply(plan)) = callback(&s, 10, report.clone(), true, &timing())
    else {
        panic!("expected a plan");
    };
    let held = update_of(&plan, 10);
    assert_eq!(held.changes.status, None, "still PROCESSING");
    assert_eq!(held.changes.step, Some(Some("confirm")));
    assert!(plan.activity.is_none());
    let mut waiting = task(10, 1, TaskStatus::Processing);
    waiting.reported_outcome = Some(serde_json::to_string(&report).unwrap());
    let s = snapshot(ActivityStatus::Processing, vec![waiting]);
    assert!(matches!(
        callback(&s, 10, report, true, &timing()),
        Ok(CallbackDecision::AlreadyRecorded(TaskStatus::Processing))
    ));
    assert!(matches!(
        callback(&s, 10, processed(json!({"a": 2})), true, &timing()),
        Err(Refusal::TaskConflict(_))
    ));
}

pub(super) fn claimed(mut t: TaskRow, step: Step, lease: &str) -> TaskRow {
    t.step = Some(step.as_str().into());
    t.lease_owner = Some(lease.into());
    t
}

pub(super) fn submittal() -> Submittal {
    Submittal {
        attempt: 1,
        run_ref: Some(r#"{"runId":7}"#.into()),
        run_url: Some("https://run/7".into()),
        configurations: r#"{"context":{}}"#.into(),
        immediate: None,
    }
}

#[test]
fn a_submitted_task_awaits_its_callback_until_the_poll_time() {
    let mut t = claimed(task(10, 1, TaskStatus::Processing), Step::Dispatch, "me");
    t.deadline_at = Some(NOW + 60_000);
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let plan = submitted(&s, 10, "me", submittal(), &timing());
    let u = update_of(&plan, 10);
    assert_eq!(u.expected_lease.as_deref(), Some("me"));
    assert_eq!(u.changes.step, Some(Some("await")));
    assert_eq!(
        u.changes.due_at,
        Some(Some(NOW + 60_000)),
        "the deadline comes before the poll time"
    );
    assert_eq!(u.changes.run_ref, Some(Some(r#"{"runId":7}"#.into())));
    assert_eq!(u.changes.lease_owner, Some(None));
}

#[test]
fn a_run_started_for_a_task_aborted_meanwhile_is_cancelled() {
    let mut t = task(10, 1, TaskStatus::Aborted);
    t.step = None;
    let s = snapshot(ActivityStatus::Aborted, vec![t]);
    let plan = submitted(&s, 10, "me", submittal(), &timing());
    let u = update_of(&plan, 10);
    assert_eq!(u.expected, TaskStatus::Aborted);
    assert_eq!(u.changes.step, Some(Some("cancel")));
    assert_eq!(u.changes.run_ref, Some(Some(r#"{"runId":7}"#.into())));
}

#[test]
fn a_task_finished_by_a_fast_callback_only_records_its_run() {
    let s = snapshot(
        ActivityStatus::Processed,
        vec![task(10, 1, TaskStatus::Processed)],
    );
    let plan = submitted(&s, 10, "me", submittal(), &timing());
    let u = update_of(&plan, 10);
    assert_eq!(u.expected, TaskStatus::Processed);
    assert_eq!(u.changes.status, None);
    assert_eq!(u.changes.step, None, "no step touched");
    assert!(plan.activity.is_none());
}

#[test]
fn engine_steps_do_nothing_once_their_claim_is_lost() {
    let t = claimed(
        task(10, 1, TaskStatus::Processing),
        Step::Await,
        "someone-else",
    );
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    assert!(retry_step(&s, 10, "me", Step::Await, NOW).is_empty());
    assert!(finish_step(
        &s,
        10,
        "me",
        Step::Await,
        Outcome::Processed { results: None },
        false,
        &timing()
    )
    .is_empty());
    assert!(step_done(&s, 10, "me", Step::Await).is_empty());
}

#[test]
fn a_timed_out_task_fails_and_its_run_is_cancelled() {
    let mut t = claimed(task(10, 1, TaskStatus::Processing), Step::Await, "me");
    t.run_ref = Some("{}".into());
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let plan = finish_step(
        &s,
        10,
        "me",
        Step::Await,
        Outcome::Failed {
            errors: "timed out".into(),
        },
        true,
        &timing(),
    );
    let u = update_of(&plan, 10);
    assert_eq!(u.changes.status, Some("FAILED"));
    assert_eq!(u.changes.step, Some(Some("cancel")));
    assert_eq!(
        plan.activity.as_ref().unwrap().changes.sealed_secrets,
        None,
        "kept for the cancel"
    );
}

#[test]
fn a_callback_that_beats_the_run_answer_is_confirmed_once_the_run_is_known() {
    let sending = claimed(task(10, 1, TaskStatus::Processing), Step::Dispatch, "me");
    let s = snapshot(ActivityStatus::Processing, vec![sending.clone()]);
    let report = processed(json!({"a": 1}));
    let Ok(CallbackDecision::Apply(plan)) = callback(&s, 10, report.clone(), true, &timing())
    else {
        panic!("expected a plan");
    };
    let held = update_of(&plan, 10);
    assert_eq!(
        held.changes.step, None,
        "the dispatch keeps its step and claim"
    );
    assert_eq!(held.changes.lease_owner, None);
    assert!(held.changes.reported_outcome.is_some());

    let mut answered = sending;
    answered.reported_outcome = Some(serde_json::to_string(&report).unwrap());
    let s = snapshot(ActivityStatus::Processing, vec![answered.clone()]);
    let plan = submitted(&s, 10, "me", submittal(), &timing());
    assert_eq!(update_of(&plan, 10).changes.step, Some(Some("confirm")));
    assert_eq!(update_of(&plan, 10).changes.due_at, Some(Some(NOW)));

    let plan = await_unknown_dispatch(&s, 10, "me", 1, None, &timing());
    assert_eq!(
        update_of(&plan, 10).changes.step,
        Some(Some("confirm")),
        "with no run to ask, the held callback is taken as is"
    );
}

#[test]
fn the_last_cancel_of_an_ended_activity_drops_its_secrets() {
    let mut first = claimed(task(10, 1, TaskStatus::Aborted), Step::Cancel, "me");
    first.run_ref = Some("{}".into());
    let mut second = task(11, 2, TaskStatus::Aborted);
    second.step = Some("cancel".into());
    let s = snapshot(ActivityStatus::Aborted, vec![first.clone(), second]);
    let plan = step_done(&s, 10, "me", Step::Cancel);
    assert!(plan.activity.is_none(), "another cancel still needs them");

    let s = snapshot(
        ActivityStatus::Aborted,
        vec![first, task(11, 2, TaskStatus::Aborted)],
    );
    let plan = step_done(&s, 10, "me", Step::Cancel);
    let activity = plan.activity.expect("secrets cleared");
    assert_eq!(activity.expected, ActivityStatus::Aborted);
    assert_eq!(activity.changes.sealed_secrets, Some(None));
}
