//! Every SQL statement of the controller, as functions named for what they do.
//!
//! Functions take any Postgres executor (a pool, a connection or a transaction);
//! the caller owns `begin`/`commit`. Rows are converted to domain types here.

pub mod builds;
pub mod diagnostics;
pub mod leases;
pub mod logs;
pub mod outbox;
pub mod stats;
pub mod webhooks;
pub mod workers;

/// Errors of the store: the database failed, or it holds something the model
/// does not allow (which would be a bug).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// A row held a value outside the model.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}
