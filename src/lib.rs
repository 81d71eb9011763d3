//! odm-devops: the DevOps lifecycle of data products (see README.md and DESIGN.md).

pub mod cli;
pub mod config;
pub mod executor;
pub mod secret;
pub mod simulator;
