//! bitplan's command line and service. The planning and evaluation engine lives in the `planner`
//! crate; this crate parses the command line, serves HTTP, stores everything (SQLite embedded, or
//! PostgreSQL) and runs the durable jobs in worker processes.
pub mod api;
pub mod app;
pub mod blobs;
pub mod cli;
pub mod demo;
pub mod error;
pub mod fleet;
pub mod jobs;
pub mod metrics;
pub mod output;
pub mod planning;
pub mod process;
pub mod runtime;
pub mod search;
pub mod serve;
pub mod store;
pub mod views;
pub mod worker;
