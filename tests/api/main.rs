//! Integration tests: the real service on a random port, spoken to over HTTP, each test on
//! SQLite and on PostgreSQL (`ODM_TEST_POSTGRES_URL`; skipped with a notice when unset).

mod fakes;
mod helpers;

mod activities;
mod azure;
mod bench;
mod board;
mod browsers;
mod callbacks;
mod context;
mod creation;
mod database;
mod dry_run;
mod engine;
mod errors;
mod executor_api;
mod group_commit;
mod handoff;
mod limits;
mod lists;
mod metrics;
mod notifications;
mod openapi;
mod policy;
mod registry;
mod replicas;
mod retries;
mod runs;
mod scale_out;
mod sealing;
mod security;
mod storage;
mod submittal;
mod templates;
mod transport;
mod ui;
mod ui_board;
mod ui_driver;
mod ui_dry_run;
mod ui_runs;
mod walkthrough;
mod write_threads;
