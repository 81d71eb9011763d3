//! What a decision of the state machine returns: the changes to make, each with what the row
//! must still be for the change to apply (compare-and-set; the database applies a plan in one
//! transaction, `db::apply_plan`, and a broken expectation is a conflict that changes nothing).

use super::{ActivityId, ActivityStatus, Report, Step, TaskId, TaskStatus};

#[derive(Debug, Default)]
pub struct Plan {
    pub activity: Option<ActivityUpdate>,
    pub tasks: Vec<TaskUpdate>,
    /// Close the current lifecycle row of the product version and open one for this activity.
    pub promote_lifecycle: bool,
}

#[derive(Debug)]
pub struct ActivityUpdate {
    pub id: ActivityId,
    pub expected: ActivityStatus,
    pub changes: ActivityChanges,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskUpdate {
    pub id: TaskId,
    pub expected: TaskStatus,
    /// Set for engine steps: the update only applies while this claim still owns the task.
    pub expected_lease: Option<String>,
    pub changes: TaskChanges,
}

/// An engine step's update of its own task decided on what the step's claim read, without a
/// snapshot (one statement instead of two; issue 15). It applies only while the task's row still
/// shows what the decision read: the update's status and lease, as any engine update, and also
/// the claimed `step` and `attempt` and no held callback (`db::apply_on_claim`). When the row
/// moved on, nothing is written and the step decides again on a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateOnClaim {
    pub update: TaskUpdate,
    pub step: Step,
    pub attempt: i32,
}

impl UpdateOnClaim {
    /// The update as a plan of its own, for what follows a plan's commit.
    pub fn into_plan(self) -> Plan {
        Plan {
            tasks: vec![self.update],
            ..Plan::default()
        }
    }
}

/// A partial update of an activity: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityChanges {
    pub status: Option<ActivityStatus>,
    pub results: Option<Option<String>>,
    pub errors: Option<Option<String>>,
    /// The sealed executor secrets are no longer needed: erase them.
    pub drop_secrets: bool,
    pub started_at: Option<Option<i64>>,
    pub finished_at: Option<Option<i64>>,
}

/// A partial update of a task: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskChanges {
    pub status: Option<TaskStatus>,
    pub results: Option<Option<String>>,
    pub errors: Option<Option<String>>,
    /// The configurations a run was sent with (resolved, with its Context).
    pub configurations: Option<Option<String>>,
    pub started_at: Option<Option<i64>>,
    pub finished_at: Option<Option<i64>>,
    pub run_ref: Option<Option<String>>,
    pub run_url: Option<Option<String>>,
    pub step: Option<Option<Step>>,
    pub due_at: Option<Option<i64>>,
    pub lease_owner: Option<Option<String>>,
    pub lease_until: Option<Option<i64>>,
    pub deadline_at: Option<Option<i64>>,
    pub step_attempts: Option<i32>,
    pub reported_outcome: Option<Option<Report>>,
    pub attempt: Option<i32>,
    pub runs_failed: Option<i32>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.activity.is_none() && self.tasks.is_empty() && !self.promote_lifecycle
    }

    /// The status `task_id` has once the plan is applied (`current` when the plan leaves it).
    pub fn task_status_after(&self, task_id: TaskId, current: TaskStatus) -> TaskStatus {
        self.tasks
            .iter()
            .find(|t| t.id == task_id)
            .and_then(|t| t.changes.status)
            .unwrap_or(current)
    }

    /// True when the plan leaves a step for the engine to claim. A step the plan leases itself
    /// (handed to the engine at once, `state::hand_off`) is nobody else's to claim.
    pub fn schedules_work(&self) -> bool {
        self.steps_to_claim()
            .any(|t| matches!(t.changes.step, Some(Some(_))))
    }

    /// True when the plan leaves a step due by `now` (a dispatch, a cancel, a confirmation) for a
    /// claim: what other replicas are woken for (a step due later waits for their tick).
    pub fn makes_work_due(&self, now: i64) -> bool {
        self.tasks.iter().any(|t| t.makes_work_due(now))
    }

    fn steps_to_claim(&self) -> impl Iterator<Item = &TaskUpdate> {
        self.tasks.iter().filter(|t| !t.leases_itself())
    }
}

impl TaskUpdate {
    /// The update leases the task's step itself (`state::hand_off`): nobody else's to claim.
    fn leases_itself(&self) -> bool {
        matches!(self.changes.lease_owner, Some(Some(_)))
    }

    /// `Plan::makes_work_due` for this update alone.
    pub fn makes_work_due(&self, now: i64) -> bool {
        !self.leases_itself()
            && match (self.changes.step, self.changes.due_at) {
                (Some(Some(_)), Some(Some(due))) => due <= now,
                // A step given without its due time: assume it may be due.
                (Some(Some(_)), _) => true,
                _ => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(changes: TaskChanges) -> Plan {
        Plan {
            tasks: vec![TaskUpdate {
                id: TaskId(1),
                expected: TaskStatus::Processing,
                expected_lease: None,
                changes,
            }],
            ..Plan::default()
        }
    }

    /// Other replicas are woken (NOTIFY) only for work they could claim now.
    #[test]
    fn work_is_due_when_a_step_is_due_by_now() {
        let due = |step: Option<Option<Step>>, due_at: Option<Option<i64>>| {
            plan_with(TaskChanges {
                step,
                due_at,
                ..TaskChanges::default()
            })
            .makes_work_due(100)
        };
        assert!(due(Some(Some(Step::Dispatch)), Some(Some(100))));
        assert!(due(Some(Some(Step::Cancel)), Some(Some(40))));
        assert!(
            !due(Some(Some(Step::Await)), Some(Some(101))),
            "later: the tick"
        );
        assert!(!due(Some(None), Some(None)), "released");
        assert!(!due(None, None), "no step given");
        assert!(
            due(Some(Some(Step::Dispatch)), None),
            "no due time: maybe due"
        );
        assert!(!Plan::default().makes_work_due(100));
    }

    /// A dispatch the plan leases itself is handed to its engine: no replica is woken for it,
    /// not even the local engine's claim.
    #[test]
    fn a_step_the_plan_leases_is_nobody_elses_work() {
        let handed = plan_with(TaskChanges {
            step: Some(Some(Step::Dispatch)),
            due_at: Some(Some(100)),
            lease_owner: Some(Some("replica-1".into())),
            ..TaskChanges::default()
        });
        assert!(!handed.makes_work_due(100));
        assert!(!handed.schedules_work());
        let released = plan_with(TaskChanges {
            step: Some(Some(Step::Dispatch)),
            due_at: Some(Some(100)),
            lease_owner: Some(None),
            ..TaskChanges::default()
        });
        assert!(released.makes_work_due(100));
        assert!(released.schedules_work());
    }
}
