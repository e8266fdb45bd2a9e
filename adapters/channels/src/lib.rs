//! # passage-channels
//!
//! Channel adapters. For now: the development outboxes, which deliver nowhere but keep every
//! message in a local SQLite file (`passage-outbox.db` beside the event store) so a person
//! can complete a journey on their own machine. This file is the one place where a code is
//! kept in plain form, which is the point of a dev inbox; production channels (SMTP, SMS,
//! voice) never store message bodies. Recipients are masked in logs (R50).

mod dev;

pub use dev::{DevMessage, DevOutbox, MessageFilter};

/// Errors of the channel adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("could not open the dev outbox at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("dev outbox query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("dev outbox row is corrupt: {0}")]
    Corrupt(String),
}
