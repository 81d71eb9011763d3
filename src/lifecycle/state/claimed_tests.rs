//! The engine's steps: what a claim does, and what a claimed step decides while its claim holds.

use serde_json::json;

use super::tests::{callback_of_10, processed, snapshot, task, timing, update_of, NOW};
use super::*;
use crate::domain::{
    ActivityId, ActivityStatus, ClaimCandidate, ClaimDecision, ClaimedTask, Outcome, Step, TaskId,
    TaskState, TaskStatus,
};

pub(super) fn claimed(mut t: TaskState, step: Step, lease: &str) -> TaskState {
    t.step = Some(step);
    t.lease_owner = Some(lease.into());
    t
}

pub(super) fn submittal() -> Submittal {
    Submittal {
        held: None,
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
    let plan = submitted(&s, TaskId(10), "me", submittal(), &timing());
    let u = update_of(&plan, 10);
    assert_eq!(u.expected_lease.as_deref(), Some("me"));
    assert_eq!(u.changes.step, Some(Some(Step::Await)));
    assert_eq!(
        u.changes.due_at,
        Some(Some(NOW + 60_000)),
        "the deadline comes before the poll time"
    );
    assert_eq!(u.changes.run_ref, Some(Some(r#"{"runId":7}"#.into())));
    assert_eq!(u.changes.lease_owner, Some(None));
}

/// The dispatch's task as its claim read it (`t`, claimed for a dispatch).
fn as_claimed(t: &TaskState) -> ClaimedTask {
    ClaimedTask {
        id: t.id,
        activity_id: ActivityId(1),
        position: t.position,
        name: t.name.clone(),
        executor: t.executor.clone(),
        template: None,
        planned_configurations: None,
        attempt: t.attempt,
        step_attempts: t.step_attempts,
        runs_failed: t.runs_failed,
        due_at: Some(NOW),
        started_at: Some(NOW),
        deadline_at: t.deadline_at,
        run_ref: None,
        held: None,
    }
}

#[test]
fn a_run_recorded_on_its_claim_is_what_the_snapshot_of_that_claim_decides() {
    for deadline in [
        None,
        Some(NOW + 60_000),
        Some(NOW + 3_600_000),
        Some(NOW - 1),
    ] {
        let mut t = claimed(task(10, 1, TaskStatus::Processing), Step::Dispatch, "me");
        t.deadline_at = deadline;
        t.attempt = 2;
        let run = Submittal {
            attempt: 2,
            ..submittal()
        };
        let s = snapshot(ActivityStatus::Processing, vec![t.clone()]);
        let on_snapshot = submitted(&s, TaskId(10), "me", run.clone(), &timing());
        let on_claim = submitted_on_claim(&as_claimed(&t).read(), "me", &run, &timing())
            .expect("a run that calls back is recorded on its claim");
        let expected = update_of(&on_snapshot, 10);
        assert_eq!(on_claim.update.changes, expected.changes, "{deadline:?}");
        assert_eq!(
            (
                on_claim.update.expected,
                on_claim.update.expected_lease.as_deref()
            ),
            (expected.expected, expected.expected_lease.as_deref())
        );
        // What the decision read of the row, for the database to check it still holds.
        assert_eq!((on_claim.step, on_claim.attempt), (Step::Dispatch, 2));
        // On PostgreSQL a batch's records go as one statement ahead of its writes: a record
        // that sets other columns would quietly take a round trip of its own again.
        assert!(crate::db::can_apply_ahead(&on_claim), "{on_claim:?}");
    }
}

#[test]
fn a_run_that_may_end_its_task_is_recorded_on_a_snapshot() {
    let t = claimed(task(10, 1, TaskStatus::Processing), Step::Dispatch, "me");
    let on_claim = |claimed: ClaimedTask, run: Submittal| {
        submitted_on_claim(&claimed.read(), "me", &run, &timing())
    };
    let immediate = Submittal {
        immediate: Some(Outcome::Processed { results: None }),
        ..submittal()
    };
    assert!(
        on_claim(as_claimed(&t), immediate).is_none(),
        "immediate outcome"
    );
    let held = Submittal {
        held: Some(processed(json!({}))),
        ..submittal()
    };
    assert!(
        on_claim(as_claimed(&t), held).is_none(),
        "result held for policy"
    );
    let claimed_holding = ClaimedTask {
        held: Some(processed(json!({}))),
        ..as_claimed(&t)
    };
    assert!(
        on_claim(claimed_holding, submittal()).is_none(),
        "the claim found a held callback"
    );
    let older = Submittal {
        attempt: 0,
        ..submittal()
    };
    assert!(
        on_claim(as_claimed(&t), older).is_none(),
        "another attempt's run"
    );
}

#[test]
fn a_run_started_for_a_task_aborted_meanwhile_is_cancelled() {
    let mut t = task(10, 1, TaskStatus::Aborted);
    t.step = None;
    let s = snapshot(ActivityStatus::Aborted, vec![t]);
    let plan = submitted(&s, TaskId(10), "me", submittal(), &timing());
    let u = update_of(&plan, 10);
    assert_eq!(u.expected, TaskStatus::Aborted);
    assert_eq!(u.changes.step, Some(Some(Step::Cancel)));
    assert_eq!(u.changes.run_ref, Some(Some(r#"{"runId":7}"#.into())));
}

#[test]
fn a_task_finished_by_a_fast_callback_only_records_its_run() {
    let s = snapshot(
        ActivityStatus::Processed,
        vec![task(10, 1, TaskStatus::Processed)],
    );
    let plan = submitted(&s, TaskId(10), "me", submittal(), &timing());
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
    assert!(retry_step(&s, TaskId(10), "me", Step::Await, NOW).is_empty());
    assert!(finish_step(
        &s,
        TaskId(10),
        "me",
        Step::Await,
        Outcome::Processed { results: None },
        false,
        &timing()
    )
    .is_empty());
    assert!(step_done(&s, TaskId(10), "me", Step::Await).is_empty());
}

#[test]
fn a_timed_out_task_fails_and_its_run_is_cancelled() {
    let mut t = claimed(task(10, 1, TaskStatus::Processing), Step::Await, "me");
    t.has_run = true;
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let plan = finish_step(
        &s,
        TaskId(10),
        "me",
        Step::Await,
        Outcome::Failed {
            errors: "timed out".into(),
        },
        true,
        &timing(),
    );
    let u = update_of(&plan, 10);
    assert_eq!(u.changes.status, Some(TaskStatus::Failed));
    assert_eq!(u.changes.step, Some(Some(Step::Cancel)));
    assert!(
        !plan.activity.as_ref().unwrap().changes.drop_secrets,
        "kept for the cancel"
    );
}

#[test]
fn a_callback_that_beats_the_run_answer_is_confirmed_once_the_run_is_known() {
    let sending = claimed(task(10, 1, TaskStatus::Processing), Step::Dispatch, "me");
    let report = processed(json!({"a": 1}));
    let Ok(CallbackDecision::Apply(plan)) =
        callback_of_10(vec![sending.clone()], report.clone(), true)
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
    answered.holds_callback = true;
    let s = snapshot(ActivityStatus::Processing, vec![answered.clone()]);
    let plan = submitted(&s, TaskId(10), "me", submittal(), &timing());
    assert_eq!(update_of(&plan, 10).changes.step, Some(Some(Step::Confirm)));
    assert_eq!(update_of(&plan, 10).changes.due_at, Some(Some(NOW)));

    let plan = await_unknown_dispatch(&s, TaskId(10), "me", 1, None, &timing());
    assert_eq!(
        update_of(&plan, 10).changes.step,
        Some(Some(Step::Confirm)),
        "with no run to ask, the held callback is taken as is"
    );
}

#[test]
fn the_last_cancel_of_an_ended_activity_drops_its_secrets() {
    let mut first = claimed(task(10, 1, TaskStatus::Aborted), Step::Cancel, "me");
    first.has_run = true;
    let mut second = task(11, 2, TaskStatus::Aborted);
    second.step = Some(Step::Cancel);
    let s = snapshot(ActivityStatus::Aborted, vec![first.clone(), second]);
    let plan = step_done(&s, TaskId(10), "me", Step::Cancel);
    assert!(plan.activity.is_none(), "another cancel still needs them");

    let s = snapshot(
        ActivityStatus::Aborted,
        vec![first, task(11, 2, TaskStatus::Aborted)],
    );
    let plan = step_done(&s, TaskId(10), "me", Step::Cancel);
    let activity = plan.activity.expect("secrets cleared");
    assert_eq!(activity.expected, ActivityStatus::Aborted);
    assert!(activity.changes.drop_secrets);
}

#[test]
fn a_claim_leases_every_candidate_and_starts_an_attempt_for_fresh_dispatches_only() {
    let candidate = |task: i64, step: Step, held_by: Option<&str>| ClaimCandidate {
        task: TaskId(task),
        step,
        held_by: held_by.map(str::to_owned),
    };
    let decision = claim(&[
        candidate(1, Step::Dispatch, None),
        candidate(2, Step::Dispatch, Some("crashed-replica-7")),
        candidate(3, Step::Await, None),
        candidate(4, Step::Cancel, Some("crashed-replica-7")),
    ]);
    assert_eq!(
        decision,
        ClaimDecision {
            leased: vec![TaskId(1), TaskId(2), TaskId(3), TaskId(4)],
            new_attempts: vec![TaskId(1)],
            abandoned: vec![TaskId(2), TaskId(4)],
        },
        "an abandoned dispatch keeps its attempt: the run it may have started calls back with it"
    );
    assert_eq!(claim(&[]), ClaimDecision::default());
}

#[test]
fn a_confirm_step_without_a_held_callback_goes_back_to_awaiting_one() {
    // It once stayed a confirm step under its claim (the retry was asked for the await step the
    // task was not in), so nothing happened until the lease ran out.
    let t = claimed(task(10, 1, TaskStatus::Processing), Step::Confirm, "me");
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let plan = requeue_step(&s, TaskId(10), "me", Step::Confirm, Step::Await, NOW + 5);
    let u = update_of(&plan, 10);
    assert_eq!(u.expected_lease.as_deref(), Some("me"));
    assert_eq!(u.changes.step, Some(Some(Step::Await)));
    assert_eq!(u.changes.due_at, Some(Some(NOW + 5)));
    assert_eq!(u.changes.step_attempts, Some(0));
    assert_eq!(u.changes.lease_owner, Some(None));
}

#[test]
fn a_blocked_activity_result_fails_the_activity_in_the_finishing_plan_without_promoting() {
    let t = claimed(task(10, 1, TaskStatus::Processing), Step::Confirm, "me");
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let done = Outcome::Processed {
        results: Some(json!({"ok": true})),
    };
    let finish = || {
        finish_step(
            &s,
            TaskId(10),
            "me",
            Step::Confirm,
            done.clone(),
            false,
            &timing(),
        )
    };
    assert!(
        finish().promote_lifecycle,
        "unblocked, the last success promotes"
    );
    let verdict = ResultVerdict {
        clear_wait_note: true,
        activity_blocked: Some("blocked by gdpr (id 1)".into()),
    };
    let plan = gated(finish(), TaskId(10), &verdict);
    assert!(!plan.promote_lifecycle, "the lifecycle stays");
    let activity = plan.activity.as_ref().unwrap();
    assert_eq!(activity.changes.status, Some(ActivityStatus::Failed));
    assert_eq!(
        activity.changes.errors,
        Some(Some("blocked by gdpr (id 1)".into()))
    );
    let own = update_of(&plan, 10);
    assert_eq!(own.changes.status, Some(TaskStatus::Processed));
    assert_eq!(
        own.changes.errors,
        Some(None),
        "the waiting note is cleared"
    );
}

#[test]
fn a_result_waiting_for_the_policy_service_keeps_its_step_and_says_why() {
    let t = claimed(task(10, 1, TaskStatus::Processing), Step::Confirm, "me");
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let plan = wait_for_policy(
        &s,
        TaskId(10),
        "me",
        Step::Confirm,
        NOW + 900,
        "waiting".into(),
    );
    let own = update_of(&plan, 10);
    assert_eq!(own.changes.step, Some(Some(Step::Confirm)));
    assert_eq!(own.changes.due_at, Some(Some(NOW + 900)));
    assert_eq!(own.changes.errors, Some(Some("waiting".into())));
    assert_eq!(own.changes.status, None, "still PROCESSING");
    let lost = wait_for_policy(&s, TaskId(10), "other", Step::Confirm, NOW, "w".into());
    assert!(lost.is_empty(), "only while the claim holds");
}

/// A callback that starts the next task hands its dispatch to the engine: the same lease and
/// new attempt a claim would give it, in the callback's own update of that task.
#[test]
fn a_dispatch_made_due_now_is_handed_off_as_a_claim_would_take_it() {
    let s = snapshot(
        ActivityStatus::Processing,
        vec![
            task(10, 1, TaskStatus::Processing),
            task(11, 2, TaskStatus::Planned),
            task(12, 3, TaskStatus::Planned),
        ],
    );
    let done = Outcome::Processed { results: None };
    let mut plan = finish_task(&s, TaskId(10), done, false, None, &timing());
    let handed = hand_off(&mut plan, &s, "me-h1", NOW + 30_000, NOW);
    assert_eq!(handed, Some(TaskId(11)));
    let next = update_of(&plan, 11);
    assert_eq!(next.changes.step, Some(Some(Step::Dispatch)));
    assert_eq!(next.changes.lease_owner, Some(Some("me-h1".into())));
    assert_eq!(next.changes.lease_until, Some(Some(NOW + 30_000)));
    // What `claim` decides for a dispatch nobody held: a new attempt (and callback token).
    let claimed = claim(&[ClaimCandidate {
        task: TaskId(11),
        step: Step::Dispatch,
        held_by: None,
    }]);
    assert_eq!(claimed.new_attempts, vec![TaskId(11)]);
    assert_eq!(next.changes.attempt, Some(2), "task 11 was at attempt 1");
    assert!(!plan.makes_work_due(NOW), "nobody else is woken for it");
    assert_eq!(update_of(&plan, 10).changes.lease_owner, Some(None));
}

/// A run retried later, a step other than a dispatch, or a plan without one: nothing is handed,
/// the claim takes it when due.
#[test]
fn only_a_dispatch_due_now_is_handed_off() {
    let mut t = task(10, 1, TaskStatus::Processing);
    t.settings.retry = Some(crate::domain::RetryPolicy {
        max: 2,
        backoff_ms: 5_000,
    });
    t.deadline_at = Some(NOW + 3_600_000);
    let s = snapshot(ActivityStatus::Processing, vec![t]);
    let failed = Outcome::RunFailed {
        errors: "boom".into(),
    };
    let mut retried = finish_task(&s, TaskId(10), failed, false, None, &timing());
    assert_eq!(
        update_of(&retried, 10).changes.step,
        Some(Some(Step::Dispatch))
    );
    assert_eq!(hand_off(&mut retried, &s, "me-h1", NOW + 30_000, NOW), None);
    assert_eq!(update_of(&retried, 10).changes.lease_owner, Some(None));

    let s = snapshot(
        ActivityStatus::Processing,
        vec![claimed(
            task(10, 1, TaskStatus::Processing),
            Step::Dispatch,
            "me",
        )],
    );
    let mut awaiting = submitted(&s, TaskId(10), "me", submittal(), &timing());
    assert_eq!(
        hand_off(&mut awaiting, &s, "me-h1", NOW + 30_000, NOW),
        None
    );
    assert_eq!(update_of(&awaiting, 10).changes.lease_owner, Some(None));
}
