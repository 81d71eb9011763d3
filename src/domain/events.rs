//! The events a change announces to listeners (DESIGN §9). A plan implies its events: they
//! follow from the transitions the state machine decided, so the state machine stays the one
//! owner of what happened, and the outbox rows are written in the plan's transaction.

use super::{stored_enum, ActivityId, ActivityStatus, Plan, TaskId, TaskStatus};

stored_enum!(EventType {
    ActivityCreated => "DATA_PRODUCT_ACTIVITY_CREATED",
    ActivityStarted => "DATA_PRODUCT_ACTIVITY_STARTED",
    ActivityCompleted => "DATA_PRODUCT_ACTIVITY_COMPLETED",
    TaskCreated => "DATA_PRODUCT_TASK_CREATED",
    TaskStarted => "DATA_PRODUCT_TASK_STARTED",
    TaskCompleted => "DATA_PRODUCT_TASK_COMPLETED",
    TaskResults => "DATA_PRODUCT_TASK_RESULTS",
    ActivityResults => "DATA_PRODUCT_ACTIVITY_RESULTS",
    StageTransition => "DATA_PRODUCT_STAGE_TRANSITION",
});

impl EventType {
    /// Its `entityId` is a task's id (else its activity's).
    pub fn is_about_a_task(self) -> bool {
        matches!(
            self,
            EventType::TaskCreated
                | EventType::TaskStarted
                | EventType::TaskCompleted
                | EventType::TaskResults
        )
    }

    /// Its `afterState` carries the product version's descriptor (`dataProductVersion`).
    pub fn carries_descriptor(self) -> bool {
        matches!(
            self,
            EventType::ActivityCreated | EventType::ActivityStarted | EventType::ActivityCompleted
        )
    }
}

/// One event of one activity (or of one of its tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub event_type: EventType,
    pub activity: ActivityId,
    /// For task events.
    pub task: Option<TaskId>,
}

impl Event {
    pub fn of_activity(event_type: EventType, activity: ActivityId) -> Event {
        Event {
            event_type,
            activity,
            task: None,
        }
    }

    pub fn of_task(event_type: EventType, activity: ActivityId, task: TaskId) -> Event {
        Event {
            event_type,
            activity,
            task: Some(task),
        }
    }

    /// An activity created with its tasks (in position order).
    pub fn created(activity: ActivityId, tasks: &[TaskId]) -> Vec<Event> {
        std::iter::once(Event::of_activity(EventType::ActivityCreated, activity))
            .chain(
                tasks
                    .iter()
                    .map(|&task| Event::of_task(EventType::TaskCreated, activity, task)),
            )
            .collect()
    }
}

impl Plan {
    /// The events the plan announces, in the order they happened: the activity's start, then
    /// each task's end and the next one's start (in the plan's order), then the activity's end
    /// and the lifecycle's move. A task's results event follows its completion when it
    /// recorded results or errors.
    pub fn events(&self, activity: ActivityId) -> Vec<Event> {
        let mut events = Vec::new();
        let activity_status = self.activity.as_ref().and_then(|a| a.changes.status);
        if activity_status == Some(ActivityStatus::Processing) {
            events.push(Event::of_activity(EventType::ActivityStarted, activity));
        }
        for update in &self.tasks {
            let task = |t| Event::of_task(t, activity, update.id);
            match update.changes.status {
                Some(TaskStatus::Processing) if update.expected == TaskStatus::Planned => {
                    events.push(task(EventType::TaskStarted))
                }
                Some(TaskStatus::Processed | TaskStatus::Failed | TaskStatus::Aborted) => {
                    events.push(task(EventType::TaskCompleted));
                    let reports = matches!(update.changes.results, Some(Some(_)))
                        || matches!(update.changes.errors, Some(Some(_)));
                    if reports {
                        events.push(task(EventType::TaskResults));
                    }
                }
                _ => {}
            }
        }
        if activity_status.is_some_and(ActivityStatus::is_terminal) {
            events.push(Event::of_activity(EventType::ActivityCompleted, activity));
            events.push(Event::of_activity(EventType::ActivityResults, activity));
        }
        if self.promote_lifecycle {
            events.push(Event::of_activity(EventType::StageTransition, activity));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActivityChanges, ActivityUpdate, TaskChanges, TaskUpdate};

    fn task(id: i64, expected: TaskStatus, changes: TaskChanges) -> TaskUpdate {
        TaskUpdate {
            id: TaskId(id),
            expected,
            expected_lease: None,
            changes,
        }
    }

    fn activity(expected: ActivityStatus, status: Option<ActivityStatus>) -> ActivityUpdate {
        ActivityUpdate {
            id: ActivityId(1),
            expected,
            changes: ActivityChanges {
                status,
                ..Default::default()
            },
        }
    }

    fn types(plan: &Plan) -> Vec<(EventType, Option<i64>)> {
        plan.events(ActivityId(1))
            .into_iter()
            .map(|e| (e.event_type, e.task.map(|t| t.get())))
            .collect()
    }

    #[test]
    fn a_plan_announces_what_it_changes_in_the_order_it_happened() {
        let processing = |results: Option<&str>| TaskChanges {
            status: Some(TaskStatus::Processed),
            results: Some(results.map(str::to_owned)),
            ..Default::default()
        };
        let next = TaskChanges {
            status: Some(TaskStatus::Processing),
            ..Default::default()
        };
        let last_done = Plan {
            activity: Some(activity(
                ActivityStatus::Processing,
                Some(ActivityStatus::Processed),
            )),
            tasks: vec![task(2, TaskStatus::Processing, processing(None))],
            promote_lifecycle: true,
        };
        assert_eq!(
            types(&last_done),
            [
                (EventType::TaskCompleted, Some(2)),
                (EventType::ActivityCompleted, None),
                (EventType::ActivityResults, None),
                (EventType::StageTransition, None),
            ]
        );
        let one_done = Plan {
            activity: Some(activity(ActivityStatus::Processing, None)),
            tasks: vec![
                task(1, TaskStatus::Processing, processing(Some("{}"))),
                task(2, TaskStatus::Planned, next.clone()),
            ],
            promote_lifecycle: false,
        };
        assert_eq!(
            types(&one_done),
            [
                (EventType::TaskCompleted, Some(1)),
                (EventType::TaskResults, Some(1)),
                (EventType::TaskStarted, Some(2)),
            ]
        );
        let started = Plan {
            activity: Some(activity(
                ActivityStatus::Planned,
                Some(ActivityStatus::Processing),
            )),
            tasks: vec![task(1, TaskStatus::Planned, next)],
            promote_lifecycle: false,
        };
        assert_eq!(
            types(&started),
            [
                (EventType::ActivityStarted, None),
                (EventType::TaskStarted, Some(1))
            ]
        );
        // A retried run, a held callback, a reschedule: no status moves, nothing to announce.
        let retried = Plan {
            tasks: vec![task(
                1,
                TaskStatus::Processing,
                TaskChanges {
                    attempt: Some(2),
                    ..Default::default()
                },
            )],
            ..Plan::default()
        };
        assert!(types(&retried).is_empty());
    }
}
