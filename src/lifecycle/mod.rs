//! The lifecycle of activities and tasks: the command service the API calls
//! (`LifecycleService`), the state machine that decides every transition (`state`), and the
//! engine that carries out the steps it leaves due (`engine`).

mod board;
mod callbacks;
mod commands;
mod context;
mod creation;
mod dry_run;
mod dry_run_executors;
pub mod engine;
mod error;
mod handoff;
mod observer;
mod plumbing;
mod policy_gates;
mod queries;
pub mod run_settings;
mod runs;
mod service;
pub mod state;
mod task_placeholders;
mod task_templates;

pub use board::{stages_in_order, BoardRow, CellState, StageCell, DEFAULT_ROWS};
pub use commands::NewActivityRequest;
pub use dry_run::{DryRun, Problem, TaskPlan};
pub use dry_run_executors::{DryRunExecutors, DryRunParts, PreviewOutcome};
pub use error::CommandError;
pub use handoff::{Handed, HandoffLease, Reservation};
pub use observer::Forgotten;
pub use plumbing::{Applied, EngineTimings, Waker};
pub use policy_gates::{StartCheck, WouldStart};
pub use runs::TaskRun;
pub use service::{LifecycleParts, LifecycleService};
