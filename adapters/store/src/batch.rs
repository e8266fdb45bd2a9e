//! What both group-commit writers share: the queued job, how a batch is judged, the
//! per-request verdict, the counters, and the rule that decides which failures belong to
//! one request.

use crate::error::Error;
use passage_core::chain::{ChainFields, event_hash};
use passage_core::ports::{AppendRequest, AppendResult, Hash, JourneyId, NewEvent, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

/// One queued append and where its answer goes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) request: AppendRequest,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// What an append writer has done since open; for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writer transactions committed, one per batch (on PostgreSQL a batch of other writes
    /// alone is one statement in autocommit, counted here too).
    pub transactions: u64,
    /// Append requests answered by those transactions (committed, duplicate or conflict).
    pub requests: u64,
    /// Most requests in one transaction.
    pub largest_batch: usize,
    /// Other writes committed in the writer's transactions: on SQLite every write (effect
    /// and timer completions, sessions, revocations, password changes, claims); on
    /// PostgreSQL, with grouping on, sessions, revocations and password changes.
    pub writes: u64,
    /// Outbox completions written in grouped statements, and those statements: PostgreSQL's
    /// completer (each statement its own commit), or SQLite's writer (inside a batch; a
    /// repeated effect id in one batch runs alone and is counted only in `writes`).
    pub completions: u64,
    pub completion_statements: u64,
    /// Batches retried because the database asked for it: SQLite's write lock stayed busy,
    /// or PostgreSQL reported a lock timeout, deadlock or serialization failure.
    pub busy_retries: u64,
    /// Batches rolled back by an SQL error and rewritten one request at a time.
    pub split_batches: u64,
    /// Time the writer spent on the attempts that committed, from asking for its connection
    /// to the end of COMMIT (rolled back and retried attempts are not counted, so it reads
    /// low when batches split). Against the wall time of a run it says how close the
    /// writer is to being the bottleneck: near 100 %, more concurrency only queues.
    pub busy: Duration,
}

/// Counters a writer keeps; read through [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) transactions: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) largest_batch: AtomicUsize,
    pub(crate) writes: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) completion_statements: AtomicU64,
    pub(crate) busy_retries: AtomicU64,
    pub(crate) split_batches: AtomicU64,
    pub(crate) busy_micros: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            completions: self.completions.load(Ordering::Relaxed),
            completion_statements: self.completion_statements.load(Ordering::Relaxed),
            busy_retries: self.busy_retries.load(Ordering::Relaxed),
            split_batches: self.split_batches.load(Ordering::Relaxed),
            busy: Duration::from_micros(self.busy_micros.load(Ordering::Relaxed)),
        }
    }

    /// Records one committed batch of `requests` append requests and `writes` other writes,
    /// which `took` that long.
    pub(crate) fn committed(&self, requests: usize, writes: usize, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.busy_micros.fetch_add(micros, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.largest_batch.fetch_max(requests, Ordering::Relaxed);
    }

    pub(crate) fn completed(&self, completions: usize) {
        self.completion_statements.fetch_add(1, Ordering::Relaxed);
        self.completions
            .fetch_add(completions as u64, Ordering::Relaxed);
    }
}

/// An event of a committed request with its place in the log and its chain hashes.
pub(crate) struct Placed<'a> {
    pub(crate) request: &'a AppendRequest,
    pub(crate) event: &'a NewEvent,
    pub(crate) position: u64,
    pub(crate) version: u64,
    pub(crate) prev_hash: Hash,
    pub(crate) hash: Hash,
}

/// A judged batch: what each request gets, and what the committed ones write.
pub(crate) struct Judged<'a> {
    /// One per request, in order.
    pub(crate) verdicts: Vec<Verdict>,
    /// The committed requests, in order.
    pub(crate) committed: Vec<&'a AppendRequest>,
    pub(crate) events: Vec<Placed<'a>>,
    /// Position and hash of the log's last event after the batch.
    pub(crate) head: (u64, Hash),
}

/// Judges each request in order, on its own, against the log (its `head`, the `outcomes`
/// already stored for the batch's command ids, the `versions` of its streams; absent
/// streams are at 0) plus the requests before it in the batch: a command id already seen
/// gets the first outcome, a stale `expected_version` a conflict, and neither writes
/// anything or affects its neighbours. Committed events get gap-free positions and
/// continue the hash chain.
pub(crate) fn judge<'a>(
    requests: &[&'a AppendRequest],
    head: (u64, Hash),
    mut outcomes: HashMap<Uuid, String>,
    mut versions: HashMap<JourneyId, u64>,
) -> Judged<'a> {
    let (mut last_position, mut prev_hash) = head;
    let mut judged = Judged {
        verdicts: Vec::with_capacity(requests.len()),
        committed: Vec::with_capacity(requests.len()),
        events: Vec::new(),
        head,
    };
    for &req in requests {
        // Duplicate first: a retry carries the expected version of its first attempt,
        // stale by now, and must still get the first outcome, not a conflict.
        if let Some(outcome) = outcomes.get(&req.command_id) {
            judged.verdicts.push(Verdict::Duplicate {
                outcome: outcome.clone(),
            });
            continue;
        }
        let current = versions.get(&req.stream).copied().unwrap_or(0);
        if current != req.expected_version {
            judged.verdicts.push(Verdict::Conflict {
                stream: req.stream,
                expected: req.expected_version,
                actual: current,
            });
            continue;
        }
        let first_position = (!req.events.is_empty()).then_some(last_position + 1);
        let mut version = current;
        for event in &req.events {
            last_position += 1;
            version += 1;
            let hash = event_hash(
                &prev_hash,
                &ChainFields {
                    position: last_position,
                    stream: req.stream.0,
                    stream_version: version,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    payload: &event.payload,
                    metadata: &req.metadata,
                    recorded_at: req.recorded_at,
                    command_id: req.command_id,
                },
            );
            judged.events.push(Placed {
                request: req,
                event,
                position: last_position,
                version,
                prev_hash,
                hash,
            });
            prev_hash = hash;
        }
        if req.summary.journey_id != req.stream {
            tracing::warn!(
                stream = %req.stream,
                summary = %req.summary.journey_id,
                "append summary names another journey; storing it under the appended stream"
            );
        }
        versions.insert(req.stream, version);
        outcomes.insert(req.command_id, req.outcome.clone());
        judged.committed.push(req);
        judged.verdicts.push(Verdict::Committed {
            first_position,
            stream_version: version,
        });
    }
    judged.head = (last_position, prev_hash);
    judged
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
/// One failure shared by every request of a batch that did not commit.
pub(crate) fn shared_failure(e: &std::sync::Arc<Error>) -> StoreError {
    match &**e {
        Error::Corrupt(msg) => StoreError::Corrupt(msg.clone()),
        _ => StoreError::Unavailable(Box::new(std::sync::Arc::clone(e))),
    }
}

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
