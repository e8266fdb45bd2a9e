//! # passage-store
//!
//! Storage backends for Passage's ports ([`passage_core::ports::EventStore`] and
//! [`passage_core::ports::AccountDirectory`]).
//!
//! - [`SqliteStore`]: the embedded default. One file, WAL mode, fsync at every commit,
//!   appends grouped into shared transactions (see the `sqlite::writer` module docs), schema
//!   managed by a small embedded migration runner (`migrations/sqlite/`).
//! - [`contract`] (feature `contract-tests`): the behaviour every [`EventStore`] must have,
//!   as generic async functions, so each backend runs the same suite.
//!
//! Errors: one [`Error`] for the crate, turned into the port errors at the boundary.
//!
//! [`EventStore`]: passage_core::ports::EventStore

mod error;
mod sqlite;

#[cfg(feature = "contract-tests")]
pub mod contract;

pub use error::Error;
pub use sqlite::{Options, Seeded, SqliteDirectory, SqliteStore, StoreStats};
