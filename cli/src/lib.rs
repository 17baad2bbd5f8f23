//! The `freeagent` binary's library: command-line definitions, the application
//! start-up shared by `serve` and the tests, and the benchmark harness.
//!
//! # Layout
//!
//! - [`auth_limit`]: failed-authentication limits per client address (429).
//! - [`cli`]: the command line (clap derive, every setting also an environment variable).
//! - [`startup`]: [`startup::Application`]: build → `port()` → `run_until_stopped()`.
//! - [`openapi`]: the OpenAPI document of every route, served at `/api/openapi.json`.
//! - [`bench`]: `freeagent bench ...`, numbers printed, not asserted.
//! - [`chaos`]: `freeagent chaos`, the lease invariants under crashes and restarts.
//! - [`request_limits`]: body limit of the JSON routes, JSON rejections, header limits.
//! - [`client`]: submit, status, logs, download, cancel, retry, list, workers.
//! - [`worker`]: the reference worker for Linux hosts.
//! - [`demo`]: the whole loop on one machine.

pub mod auth_limit;
pub mod bench;
mod bench_load;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod commands;
pub mod demo;
pub mod openapi;
pub mod request_limits;
pub mod startup;
pub mod worker;
