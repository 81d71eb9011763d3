//! Commands on activities and tasks, and the engine that carries them out.

mod commands;
mod context;
pub mod engine;
mod error;
mod queries;
pub mod run_settings;
pub mod state;
mod task_placeholders;
mod task_templates;

pub use commands::{Applied, EngineTimings, Lifecycle, NewActivityRequest, Waker};
pub use error::CommandError;
