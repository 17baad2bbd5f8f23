//! Integration and end-to-end tests of Free Agent Dispatcher against the real
//! Postgres and NATS servers: one binary, one module per area.

mod authz;
mod builds;
mod cli_and_worker;
mod concurrency;
mod diagnostics;
mod edges;
mod events;
mod health;
mod leases;
mod openapi;
mod replays;
mod resilience;
mod secrets;
mod stats;
mod streams;
mod submit;
mod vm;
mod worker_protocol;
mod workers;
