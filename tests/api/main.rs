//! Integration tests: the real service on a random port, spoken to over HTTP, each test on
//! SQLite and on PostgreSQL (`ODM_TEST_POSTGRES_URL`; skipped with a notice when unset).

mod fakes;
mod helpers;

mod activities;
mod bench;
mod callbacks;
mod engine;
mod errors;
mod registry;
