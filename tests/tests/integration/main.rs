//! Integration and end-to-end tests of Free Agent Dispatcher against the real
//! Postgres and NATS servers: one binary, one module per area.

mod archives;
mod auth_limits;
mod authz;
mod builds;
mod chaos;
mod cli_and_worker;
mod concurrency;
mod diagnostics;
mod edges;
mod encryption;
mod events;
mod fuzz;
mod health;
mod leases;
mod openapi;
mod replays;
mod request_limits;
mod resilience;
mod secrets;
mod stats;
mod streams;
mod submit;
mod vm;
mod worker_protocol;
mod workers;
