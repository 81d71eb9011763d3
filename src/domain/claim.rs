//! The engine's claim on due steps (DESIGN §10): which due steps it may take, what the claim
//! does to them (decided by `lifecycle::state::claim`), and what it hands the engine.

use super::{ActivityId, Report, Step, TaskId};

/// A due step nobody holds (or whose holder's lease ran out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCandidate {
    pub task: TaskId,
    pub step: Step,
    /// The claim that held it and let its lease expire (it crashed or stalled mid-step).
    pub held_by: Option<String>,
}

/// What a claim does to its candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimDecision {
    /// Leased to this claim.
    pub leased: Vec<TaskId>,
    /// Dispatches that start a new attempt, and with it a new callback token.
    pub new_attempts: Vec<TaskId>,
    /// Taken over from a holder that let its lease expire.
    pub abandoned: Vec<TaskId>,
}

/// A step the engine now owns until its lease ends, with everything carrying it out needs:
/// nothing else is read before the step's decision.
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    pub claim: String,
    pub step: Step,
    /// See `ClaimDecision::abandoned`.
    pub abandoned: bool,
    pub task: ClaimedTask,
    pub activity: ActivityKeys,
}

/// The claimed task: its own row (template and configurations included, for a dispatch).
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub id: TaskId,
    pub activity_id: ActivityId,
    pub position: i32,
    pub name: String,
    pub executor: Option<String>,
    pub template: Option<String>,
    /// The configurations as created, with their placeholders: each run resolves these.
    pub planned_configurations: Option<String>,
    pub attempt: i32,
    pub step_attempts: i32,
    pub runs_failed: i32,
    pub due_at: Option<i64>,
    pub started_at: Option<i64>,
    pub deadline_at: Option<i64>,
    /// The provider's handle on the run (JSON), once sent.
    pub run_ref: Option<String>,
    /// A callback held until the provider confirms it.
    pub held: Option<Report>,
}

/// What a step needs of the claimed task's activity.
#[derive(Debug, Clone)]
pub struct ActivityKeys {
    pub id: ActivityId,
    pub data_product_id: String,
    pub data_product_version: String,
    pub stage: String,
    pub sealed_secrets: Option<String>,
}

/// What a decision taken on a step's claim relies on of the claimed task
/// (`state::submitted_on_claim`): small and `Copy`, so that a decision kept for the write does not
/// carry the task's template and configurations along.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimRead {
    pub id: TaskId,
    pub attempt: i32,
    pub deadline_at: Option<i64>,
    /// The claim found a callback held for confirmation.
    pub holds_callback: bool,
}

impl ClaimedTask {
    pub fn read(&self) -> ClaimRead {
        ClaimRead {
            id: self.id,
            attempt: self.attempt,
            deadline_at: self.deadline_at,
            holds_callback: self.held.is_some(),
        }
    }
}
