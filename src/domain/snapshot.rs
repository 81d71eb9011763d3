//! What a decision of the state machine reads: an activity and its tasks as they are in the
//! transaction that applies the decision (the database reads it, `db::load_snapshot`).
//!
//! Tasks are light rows: no template, configurations or results. A decision about one task of a
//! stage of thousands never pays for the size of the others (DESIGN §14); what it needs of its
//! own task's large columns comes apart, in `recorded`, and only for a callback.

use super::{ActivityId, ActivityStatus, Report, RunSettings, Step, TaskId, TaskStatus};

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub activity: ActivityState,
    /// In position order.
    pub tasks: Vec<TaskState>,
    /// What the callback's task recorded so far, read for a callback only.
    pub recorded: Option<Recorded>,
}

#[derive(Debug, Clone)]
pub struct ActivityState {
    pub id: ActivityId,
    pub status: ActivityStatus,
    /// `{"task1": …}`: the activity's merged results, which a processed task adds to.
    pub results: Option<String>,
    /// Sealed executor secrets are still kept (a started run may need them to be cancelled).
    pub holds_secrets: bool,
}

#[derive(Debug, Clone)]
pub struct TaskState {
    pub id: TaskId,
    /// 1-based, in descriptor order.
    pub position: i32,
    pub name: String,
    pub executor: Option<String>,
    pub status: TaskStatus,
    /// The dispatch attempt whose callback token is valid.
    pub attempt: i32,
    /// What the engine owes this task, if anything.
    pub step: Option<Step>,
    /// The claim that holds the step, if any (expired or not).
    pub lease_owner: Option<String>,
    pub deadline_at: Option<i64>,
    /// Tries of the current step (transient failures, polls).
    pub step_attempts: i32,
    /// Runs that failed and were followed by another (`configurations.retry`).
    pub runs_failed: i32,
    /// The provider started a run for it (its reference is stored): a cancel may be owed.
    pub has_run: bool,
    /// A callback waits for the provider's confirmation (`check_after_callback`).
    pub holds_callback: bool,
    pub settings: RunSettings,
}

/// What a task recorded, to tell a replayed callback from another one.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub task: TaskId,
    pub results: Option<String>,
    pub errors: Option<String>,
    /// A callback held until the provider confirms it.
    pub held: Option<Report>,
}

impl Snapshot {
    pub fn task(&self, id: TaskId) -> Option<&TaskState> {
        self.tasks.iter().find(|t| t.id == id)
    }
}
