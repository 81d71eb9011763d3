//! The service's own vocabulary, owned here and imported by everyone else: ids, statuses and
//! steps, a task's run settings, what a decision of the state machine reads (`Snapshot`) and
//! returns (`Plan`), what a claim hands the engine (`ClaimedStep`), and how a task ends
//! (`Outcome`, `Report`).
//!
//! Nothing here knows the database, the API, the executors or the configuration: `db` maps its
//! rows to and from these types (`db/types.rs` stores the enums and ids), `lifecycle::state`
//! decides on them.

mod claim;
mod events;
mod ids;
mod outcome;
mod plan;
mod run_settings;
mod snapshot;
mod status;

pub use claim::{ActivityKeys, ClaimCandidate, ClaimDecision, ClaimRead, ClaimedStep, ClaimedTask};
pub use events::{Event, EventType};
pub use ids::{ActivityId, TaskId};
pub use outcome::{without_nul, Outcome, Report, ReportedStatus};
pub use plan::{ActivityChanges, ActivityUpdate, Plan, TaskChanges, TaskUpdate, UpdateOnClaim};
pub use run_settings::{RetryPolicy, RunSettings, MAX_RETRY_DELAY_MS};
pub use snapshot::{ActivityState, Recorded, Snapshot, TaskState};
pub(crate) use status::stored_enum;
pub use status::{ActivityStatus, Step, TaskStatus};
