//! The crate's one error type, and its translation into the port errors at the boundary.

use passage_core::mask::EmailError;
use passage_core::ports::{DirectoryError, StoreError};
use std::path::PathBuf;

/// Everything that can go wrong inside `passage-store`.
///
/// Callers of the ports never see this type directly: it becomes a [`StoreError`] or a
/// [`DirectoryError`] at the boundary (see the `From` impls below). Inherent methods of
/// the stores (open, connect, seeding) return it as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("failed to open the SQLite database at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// `target` is the connection URL with any password removed.
    #[error("failed to connect to PostgreSQL at {target}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    /// Schema names are plain identifiers so they can be quoted, used in a NOTIFY channel
    /// name and told apart in logs without surprises.
    #[error(
        "invalid PostgreSQL schema name {0:?}: use 1 to 48 ASCII letters, digits or \
         underscores, not starting with a digit"
    )]
    InvalidSchema(String),
    /// [`crate::PgStore::drop_schema`] on a store that was not given a schema of its own:
    /// dropping whatever the search path points at is never what a test meant.
    #[error("this store has no schema of its own (Options::schema is None); nothing dropped")]
    NoOwnSchema,
    /// No schema was configured and the connection's search_path names no existing one.
    #[error(
        "the PostgreSQL search_path names no existing schema: set one in the options or \
         in the connection URL"
    )]
    NoSchema,
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
    /// Opened read-only, the database lacks migrations this build needs (a read-only handle
    /// cannot apply them).
    #[error(
        "the database's schema is {behind} migration(s) behind this build (it has {found}, this \
         build needs {known}), and a read-only command does not change it: run a command that \
         writes (`passage serve`, say) once with this build and a role that may alter the \
         schema, then read again"
    )]
    SchemaBehind {
        found: i64,
        known: i64,
        behind: usize,
    },
    /// Opened read-only, the database has no Passage schema at all.
    #[error(
        "this database holds no Passage event store (no schema_migrations table): check the \
         database name, or the schema in the URL's search_path"
    )]
    NotAStore,
    /// SQLITE_BUSY that outlasted the busy timeout and the writer's retries, or a PostgreSQL
    /// lock timeout: another connection held the write lock for too long.
    #[error(
        "the database is busy: another connection held the write lock past the lock \
         timeout ({attempts} attempt(s)): {message}"
    )]
    Busy { attempts: u32, message: String },
    /// Any other driver error. Never holds a busy error: [`From<sqlx::Error>`] turns those
    /// into [`Error::Busy`] so the message says what happened.
    #[error("database error")]
    Sql(#[source] sqlx::Error),
    /// The append can never succeed as sent: its own data breaks a constraint (an effect or
    /// timer id already in use). Becomes [`StoreError::Rejected`].
    #[error("{0}")]
    Rejected(String),
    /// A stored value that cannot be what this crate wrote (bad UUID, wrong hash length,
    /// negative version...).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A value from the caller that the schema cannot hold (a version beyond `i64::MAX`).
    #[error("value out of range: {0}")]
    OutOfRange(String),
    /// The group-commit writer is gone: it panicked, or (PostgreSQL) the runtime it was
    /// spawned on shut down. Nothing more can be appended through this handle.
    #[error("the store's writer has stopped")]
    WriterStopped,
    /// The stores' pools need the current tokio runtime, and PostgreSQL's append writer is
    /// spawned on it.
    #[error("the store must be opened inside a tokio runtime")]
    NoRuntime,
    /// The SQLite store could not start its writer's thread (out of threads or memory).
    #[error("could not start the SQLite append writer's thread")]
    WriterThread(#[source] std::io::Error),
    /// The group-commit transaction a write shared with others failed for a reason none of
    /// them caused (connection lost, pool closed, the lock still busy after the retries,
    /// corrupt stored data): each write gets the same error.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
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
/// PostgreSQL's `lock_not_available`: `lock_timeout` expired.
const PG_LOCK_NOT_AVAILABLE: &str = "55P03";

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
    // By backend: a PostgreSQL SQLSTATE can be all digits and must not be read as a SQLite
    // result code.
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return pg.code() == PG_LOCK_NOT_AVAILABLE;
    }
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Corrupt(msg) => StoreError::Corrupt(msg),
            Error::Rejected(msg) => StoreError::Rejected(msg),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}

impl From<Error> for DirectoryError {
    fn from(e: Error) -> Self {
        DirectoryError(Box::new(e))
    }
}
