//! The crate's one error type, and its translation into the port errors at the boundary.

use passage_core::mask::EmailError;
use passage_core::ports::{DirectoryError, StoreError};
use std::path::PathBuf;

/// Everything that can go wrong inside `passage-store`.
///
/// Callers of the ports never see this type directly: it becomes a [`StoreError`] or a
/// [`DirectoryError`] at the boundary (see the `From` impls below). Inherent methods of
/// [`crate::SqliteStore`] (open, seeding) return it as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("failed to open the SQLite database at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to apply migration {version:04}_{name}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// An applied migration's SQL differs from the one this build carries: someone edited a
    /// migration after it ran. Refusing to start is safer than guessing which schema is live.
    #[error(
        "migration {version:04}_{name} was changed after it was applied to this database \
         (checksum differs); add a new migration instead of editing an applied one"
    )]
    MigrationChanged { version: i64, name: String },
    /// A newer build migrated this file; this build does not know its schema.
    #[error(
        "the database has migration {found} but this build only knows migrations up to \
         {known}; upgrade passage"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// SQLITE_BUSY that outlasted the busy timeout and the writer's retries: another process
    /// held the write lock for too long.
    #[error(
        "the database is busy: another connection held the write lock past the busy \
         timeout ({attempts} attempt(s)): {message}"
    )]
    Busy { attempts: u32, message: String },
    /// Any other driver error. Never holds a busy error: [`From<sqlx::Error>`] turns those
    /// into [`Error::Busy`] so the message says what happened.
    #[error("SQLite error")]
    Sql(#[source] sqlx::Error),
    /// A stored value that cannot be what this crate wrote (bad UUID, wrong hash length,
    /// negative version...).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A value from the caller that the schema cannot hold (a version beyond `i64::MAX`).
    #[error("value out of range: {0}")]
    OutOfRange(String),
    /// The group-commit writer task is gone: the runtime it was spawned on shut down, or it
    /// panicked. Nothing more can be appended through this handle.
    #[error("the store's writer task has stopped")]
    WriterStopped,
    /// The store spawns its append writer on the current tokio runtime.
    #[error("SqliteStore must be opened inside a tokio runtime")]
    NoRuntime,
    #[error("no account with id {0:?}")]
    UnknownAccount(String),
    #[error("another account already uses that email address")]
    EmailTaken,
    #[error("invalid email address")]
    InvalidEmail(#[from] EmailError),
}

/// SQLite's primary result codes for "someone else holds the lock". The driver reports the
/// extended code (e.g. 517 = SQLITE_BUSY_SNAPSHOT); the primary code is its low byte.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_busy(&e) {
            Error::Busy {
                attempts: 1,
                message: e.to_string(),
            }
        } else {
            Error::Sql(e)
        }
    }
}

fn is_busy(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Corrupt(msg) => StoreError::Corrupt(msg),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}

impl From<Error> for DirectoryError {
    fn from(e: Error) -> Self {
        DirectoryError(Box::new(e))
    }
}
