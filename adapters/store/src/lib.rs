//! # passage-store
//!
//! Storage backends for Passage's ports ([`passage_core::ports::EventStore`] and
//! [`passage_core::ports::AccountDirectory`]).
//!
//! - [`SqliteStore`]: the embedded default. One file, WAL mode, fsync at every commit,
//!   appends grouped into shared transactions (see the `sqlite::writer` module docs), schema
//!   managed by a small embedded migration runner (`migrations/sqlite/`).
//! - [`PgStore`]: PostgreSQL, for several engine nodes on one database: commit-ordered
//!   global positions, group commit, leased claims with `FOR UPDATE SKIP LOCKED`,
//!   LISTEN/NOTIFY wake-ups, its own migrations (`migrations/postgres/`). See the
//!   [`postgres`] module and docs/adr/0004-postgres-global-order.md.
//! - [`AnyStore`]: whichever of the two a configuration string names
//!   ([`AnyStore::open`]: a `postgres://` URL or a file path).
//! - [`contract`] (feature `contract-tests`): the behaviour every [`EventStore`] must have,
//!   as generic async functions, so each backend runs the same suite.
//!
//! Errors: one [`Error`] for the crate, turned into the port errors at the boundary.
//!
//! [`EventStore`]: passage_core::ports::EventStore

mod any;
mod batch;
mod budgets;
mod checkpoints;
mod error;
mod migrations;
pub mod operators;
mod personal;
pub mod postgres;
mod sqlite;

#[cfg(feature = "contract-tests")]
pub mod contract;

pub use any::{AnyStore, is_postgres_url};
pub use batch::StoreStats;
pub use budgets::BudgetCharge;
pub use error::Error;
pub use postgres::{Options as PgOptions, PgStore};
pub use sqlite::{Options, Seeded, SqliteDirectory, SqliteStore};

use passage_core::time::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `leased_until` a claim at `now` sets, which is also its fencing token. At least 1 ms
/// past `now`: a later claim (possible only once `now >= leased_until`) then always sets a
/// strictly larger token, so two claims never share one.
pub(crate) fn lease_token(now: Timestamp, lease: Duration) -> Timestamp {
    now.plus(lease.max(Duration::from_millis(1)))
}

/// What a conditional password change that changed `changed` rows means. A reset that
/// changed nothing must not look applied (the effect would be marked done and the person
/// told their password changed): either a later reset won (`false`, if `exists` finds the
/// account) or there is no such account (an error).
pub(crate) async fn password_applied(
    account_id: &str,
    changed: u64,
    exists: impl std::future::Future<Output = Result<bool, Error>>,
) -> Result<bool, Error> {
    if changed == 1 {
        return Ok(true);
    }
    match exists.await? {
        true => Ok(false),
        false => Err(Error::UnknownAccount(account_id.to_owned())),
    }
}

/// Wall-clock time for bookkeeping columns the ports give no time for (`saved_at`,
/// `applied_at`, accounts' `updated_at`). Nothing is decided on these values.
pub(crate) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}
