//! What both group-commit writers share: the queued job, the per-request verdict, the
//! counters, and the rule that decides which failures belong to one request.

use crate::error::Error;
use passage_core::ports::{AppendRequest, AppendResult, JourneyId, StoreError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::oneshot;

/// One queued append and where its answer goes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) request: AppendRequest,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// What an append writer has done since open; for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Append transactions committed (one per batch).
    pub transactions: u64,
    /// Append requests answered by those transactions (committed, duplicate or conflict).
    pub requests: u64,
    /// Most requests in one transaction.
    pub largest_batch: usize,
    /// Other writes (effect and timer completions, sessions, password changes) committed in
    /// the writer's transactions; SQLite only, where every write goes through the writer.
    pub writes: u64,
    /// Batches retried because the database asked for it: SQLite's write lock stayed busy,
    /// or PostgreSQL reported a lock timeout, deadlock or serialization failure.
    pub busy_retries: u64,
    /// Batches rolled back by an SQL error and rewritten one request at a time.
    pub split_batches: u64,
}

/// Counters a writer keeps; read through [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) transactions: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) largest_batch: AtomicUsize,
    pub(crate) writes: AtomicU64,
    pub(crate) busy_retries: AtomicU64,
    pub(crate) split_batches: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            busy_retries: self.busy_retries.load(Ordering::Relaxed),
            split_batches: self.split_batches.load(Ordering::Relaxed),
        }
    }

    /// Records one committed batch of `requests` append requests and `writes` other writes.
    pub(crate) fn committed(&self, requests: usize, writes: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(requests, Ordering::Relaxed);
    }
}

/// How one request of a batch was judged.
#[derive(Debug)]
pub(crate) enum Verdict {
    Committed {
        first_position: Option<u64>,
        stream_version: u64,
    },
    Duplicate {
        outcome: String,
    },
    Conflict {
        stream: JourneyId,
        expected: u64,
        actual: u64,
    },
}

impl From<Verdict> for Result<AppendResult, StoreError> {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Committed {
                first_position,
                stream_version,
            } => Ok(AppendResult::Committed {
                first_position,
                stream_version,
            }),
            Verdict::Duplicate { outcome } => Ok(AppendResult::Duplicate { outcome }),
            Verdict::Conflict {
                stream,
                expected,
                actual,
            } => Err(StoreError::Conflict {
                stream,
                expected,
                actual,
            }),
        }
    }
}

/// The answer for a request that failed when written alone.
///
/// A constraint the request's own data violates (an effect id already used, a timer id
/// twice, a string PostgreSQL cannot store) fails the same way on every retry, so the
/// caller is told [`StoreError::Rejected`] instead of a retryable `Unavailable`.
pub(crate) fn single_failure(e: Error) -> Error {
    match &e {
        Error::Sql(sql) if caused_by_request_data(sql) => Error::Rejected(format!(
            "the append cannot be stored: {}",
            sql.as_database_error()
                .map_or_else(|| sql.to_string(), |db| db.message().to_owned())
        )),
        _ => e,
    }
}

/// Constraint violations (both backends) and PostgreSQL data exceptions (SQLSTATE class
/// 22: a NUL byte in a string, a value out of range).
fn caused_by_request_data(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    if !matches!(db.kind(), sqlx::error::ErrorKind::Other) {
        return true;
    }
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some_and(|pg| pg.code().starts_with("22") || pg.code().starts_with("23"))
}

/// Formats an error with its sources, `a: b: c`, for one log line.
pub(crate) struct DisplayChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
