//! `configurations.retry`: a failed run is followed by another while the policy allows it.

use super::claimed_tests::{claimed, submittal};
use super::tests::{callback_of_10, snapshot, task, timing, update_of, NOW};
use super::*;
use crate::domain::{
    ActivityStatus, Outcome, Plan, Report, ReportedStatus, RetryPolicy, Step, TaskId, TaskState,
    TaskStatus,
};
use crate::lifecycle::Applied;
use crate::metrics::{TaskOutcome, TaskOutcomes};

fn failed(errors: &str) -> Report {
    Report {
        status: ReportedStatus::Failed,
        results: None,
        errors: Some(errors.into()),
    }
}

/// A task whose configurations said `"retry": {"max": 2, "backoff": 10}`.
fn retrying_task(runs_failed: i32) -> TaskState {
    let mut t = task(10, 1, TaskStatus::Processing);
    t.settings.retry = Some(RetryPolicy {
        max: 2,
        backoff_ms: 10_000,
    });
    t.runs_failed = runs_failed;
    t.attempt = 3;
    t.has_run = true;
    t.deadline_at = Some(NOW + 3_600_000);
    t
}

fn applied(decision: Result<CallbackDecision, Refusal>) -> Plan {
    match decision {
        Ok(CallbackDecision::Apply(plan)) => plan,
        other => panic!("expected a plan, got {other:?}"),
    }
}

#[test]
fn a_failed_run_is_followed_by_a_new_one_after_the_backoff() {
    let plan = applied(callback_of_10(
        vec![retrying_task(0), task(11, 2, TaskStatus::Planned)],
        failed("disk full"),
        false,
    ));
    assert!(plan.activity.is_none(), "the activity goes on: {plan:?}");
    assert_eq!(plan.tasks.len(), 1, "the next task stays PLANNED");
    let retry = update_of(&plan, 10);
    assert_eq!(retry.expected, TaskStatus::Processing);
    assert_eq!(retry.changes.status, None, "still PROCESSING");
    assert_eq!(retry.changes.step, Some(Some(Step::Dispatch)));
    assert_eq!(retry.changes.due_at, Some(Some(NOW + 10_000)));
    assert_eq!(retry.changes.runs_failed, Some(1));
    assert_eq!(
        retry.changes.attempt,
        Some(4),
        "the failed run's token dies"
    );
    assert_eq!(retry.changes.run_ref, Some(None));
    assert_eq!(retry.changes.run_url, Some(None));
    let errors = retry.changes.errors.clone().flatten().unwrap();
    assert!(
        errors.starts_with("run 1 of 3 failed: disk full; run 2 starts at "),
        "{errors}"
    );
    let mut retried = TaskOutcomes::default();
    retried.add(TaskOutcome::Retried);
    assert_eq!(
        Applied::of(&plan, NOW).outcomes(),
        retried,
        "counted as retried, not ended"
    );
}

#[test]
fn the_wait_doubles_with_each_failed_run() {
    let s = snapshot(ActivityStatus::Processing, vec![retrying_task(1)]);
    let plan = finish_task(
        &s,
        TaskId(10),
        Outcome::RunFailed { errors: "x".into() },
        false,
        None,
        &timing(),
    );
    assert_eq!(
        update_of(&plan, 10).changes.due_at,
        Some(Some(NOW + 20_000))
    );
    assert_eq!(update_of(&plan, 10).changes.runs_failed, Some(2));
}

#[test]
fn when_every_run_failed_the_task_and_activity_fail() {
    let plan = applied(callback_of_10(
        vec![retrying_task(2), task(11, 2, TaskStatus::Planned)],
        failed("disk full"),
        false,
    ));
    assert_eq!(
        update_of(&plan, 10).changes.status,
        Some(TaskStatus::Failed)
    );
    assert_eq!(
        update_of(&plan, 10).changes.errors,
        Some(Some("disk full (all 3 runs failed)".into()))
    );
    assert_eq!(
        update_of(&plan, 11).changes.status,
        Some(TaskStatus::Aborted)
    );
    let mut ended = TaskOutcomes::default();
    ended.add(TaskOutcome::Failed);
    ended.add(TaskOutcome::Aborted);
    assert_eq!(Applied::of(&plan, NOW).outcomes(), ended);
    let activity = plan.activity.unwrap();
    assert_eq!(activity.changes.status, Some(ActivityStatus::Failed));
}

#[test]
fn failures_that_are_not_run_failures_are_never_retried() {
    let s = snapshot(ActivityStatus::Processing, vec![retrying_task(0)]);
    let plan = finish_task(
        &s,
        TaskId(10),
        Outcome::Failed {
            errors: "timed out".into(),
        },
        true,
        None,
        &timing(),
    );
    assert_eq!(
        update_of(&plan, 10).changes.status,
        Some(TaskStatus::Failed)
    );
    assert_eq!(
        update_of(&plan, 10).changes.errors,
        Some(Some("timed out".into()))
    );
}

#[test]
fn no_new_run_when_it_could_not_start_before_the_deadline() {
    let mut t = retrying_task(0);
    t.deadline_at = Some(NOW + 5_000);
    let plan = applied(callback_of_10(vec![t], failed("boom"), false));
    assert_eq!(
        update_of(&plan, 10).changes.status,
        Some(TaskStatus::Failed)
    );
}

#[test]
fn without_a_retry_policy_a_failed_run_fails_the_task() {
    let mut t = retrying_task(0);
    t.settings.retry = None;
    let plan = applied(callback_of_10(vec![t], failed("boom"), false));
    assert_eq!(
        update_of(&plan, 10).changes.status,
        Some(TaskStatus::Failed)
    );
    assert_eq!(
        update_of(&plan, 10).changes.errors,
        Some(Some("boom".into()))
    );
}

#[test]
fn a_run_that_failed_at_once_is_retried_and_forgotten() {
    let mut t = claimed(retrying_task(0), Step::Dispatch, "me");
    t.attempt = 1;
    t.has_run = false;
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let mut run = submittal();
    run.immediate = Some(Outcome::RunFailed {
        errors: "rejected".into(),
    });
    let plan = submitted(&s, TaskId(10), "me", run, &timing());
    let own = &update_of(&plan, 10).changes;
    assert_eq!(own.step, Some(Some(Step::Dispatch)));
    assert_eq!(
        own.run_ref,
        Some(None),
        "the failed run is not the task's run"
    );
    assert_eq!(
        own.configurations,
        Some(Some(r#"{"context":{}}"#.into())),
        "the run's resolved configurations are recorded"
    );
}

#[test]
fn the_answer_of_an_earlier_run_records_nothing() {
    // A callback failed attempt 1 and planned attempt 2 while attempt 1's run request was out.
    let mut t = claimed(retrying_task(1), Step::Dispatch, "me");
    t.attempt = 2;
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    assert!(submitted(&s, TaskId(10), "me", submittal(), &timing()).is_empty());
    assert!(await_unknown_dispatch(&s, TaskId(10), "me", 1, None, &timing()).is_empty());
}
