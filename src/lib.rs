//! odm-devops: the DevOps lifecycle of data products (see README.md and DESIGN.md).

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod descriptor;
pub mod domain;
pub mod executor;
pub mod http_client;
pub mod keys;
pub mod lifecycle;
pub mod placeholders;
pub mod registry;
pub mod secret;
pub mod simulator;
pub mod telemetry;
