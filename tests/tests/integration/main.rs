//! Integration and end-to-end tests of Free Agent Dispatcher against the real
//! Postgres and NATS servers: one binary, one module per area.

mod builds;
mod diagnostics;
mod events;
mod health;
mod resilience;
mod stats;
mod submit;
mod worker_protocol;
mod workers;
