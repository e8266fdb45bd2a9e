//! Group commit on PostgreSQL: one task per [`PgStore`](super::PgStore) handle owns every
//! append of that handle and commits the waiting ones together.
//!
//! # One batch, one transaction
//!
//! The task takes every request waiting (up to `max_batch`) and writes them in one
//! transaction with a fixed number of statements, whatever the batch size:
//!
//! 1. `SELECT … FROM log_head FOR UPDATE`: the global append lock (one row). Every node's
//!    writer queues here, so from now until COMMIT nobody else can append: positions are
//!    handed out in commit order and the chain continues from the true head (see
//!    docs/adr/0004-postgres-global-order.md).
//! 2. The batch's command ids and stream versions are read **after** taking that lock. In
//!    READ COMMITTED each statement sees everything committed before it started, which now
//!    includes every append that held the lock before us, so the duplicate and version
//!    checks are race-free across nodes.
//! 3. Each request is judged in memory, in order, against the database plus the requests
//!    before it in the batch: duplicate, conflict or committed (positions, versions and
//!    chain hashes computed here) by `batch::judge`, which the SQLite writer uses too.
//! 4. One `INSERT … SELECT FROM UNNEST(…)` per table for the whole batch, the journeys
//!    read model upserted (one row per journey: the batch's last summary for it), the head
//!    moved, and `pg_notify` if the batch added effects or timers (delivered at COMMIT, so
//!    listeners never hear about work they cannot see yet).
//! 5. COMMIT: one WAL flush for the whole batch.
//!
//! Requests that arrive while the writer waits for the head lock (another node is
//! committing) join the batch as soon as the lock is held: waiting for the lock is exactly
//! when requests pile up, and they should not wait for yet another turn. Requests that
//! arrive while a batch commits form the next batch. So batches grow with load, and across
//! nodes each node's batch takes its turn on the head lock: throughput is bounded by how
//! many commits the database can do, times the batch size, not by one fsync per event.
//!
//! # Failures
//!
//! A database error rolls the batch back; the requests are then written one per
//! transaction so only the request whose own data breaks a constraint gets the error (as
//! [`StoreError::Rejected`](passage_core::ports::StoreError::Rejected)). A lost connection
//! or a closed pool fails the whole batch with `Unavailable`: whether a COMMIT that lost
//! its connection went through is unknown, and a retry under the same command id resolves
//! it (it is then a duplicate). Lock timeouts, deadlocks and serialization failures are
//! retried a few times first: they say nothing about the requests.

use super::rows;
use crate::batch::{DisplayChain, Job, Stats, Verdict, judge, shared_failure, single_failure};
use crate::error::Error;
use passage_core::ports::{AppendRequest, AppendResult, JourneyId, StoreError};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// The name migrations give the `(stream, stream_version)` constraint.
const STREAM_VERSION_KEY: &str = "events_stream_version_key";

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) pool: PgPool,
    pub(crate) rx: mpsc::Receiver<Job>,
    /// 1 turns grouping off: one request per transaction.
    pub(crate) max_batch: usize,
    /// Attempts after the first for lock timeouts, deadlocks and serialization failures.
    pub(crate) retries: u32,
    pub(crate) stats: Arc<Stats>,
    /// The NOTIFY channel of this schema (see `super::listener`).
    pub(crate) channel: String,
}

impl Writer {
    /// Runs until every handle (every sender) is gone.
    pub(crate) async fn run(mut self) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        // Wait for the first request, then take whatever else is already queued: that is
        // the whole batching policy (no timer delays a lone request).
        while self.rx.recv_many(&mut jobs, self.max_batch).await > 0 {
            self.commit(std::mem::take(&mut jobs)).await;
        }
        tracing::debug!("postgres append writer stopped: every store handle was dropped");
    }

    async fn commit(&mut self, jobs: Vec<Job>) {
        let mut jobs = jobs;
        // Grouping on: latecomers may join once the head lock is held.
        let join_late = self.max_batch > 1;
        match self.write_with_retry(&mut jobs, join_late).await {
            Ok(verdicts) => {
                for (job, verdict) in jobs.into_iter().zip(verdicts) {
                    // The caller may have stopped waiting; its append stands regardless.
                    let _ = job.reply.send(verdict.into());
                }
            }
            Err(e) if jobs.len() > 1 && is_statement_error(&e) => {
                tracing::warn!(
                    batch = jobs.len(),
                    error = %DisplayChain(&e),
                    "append batch rolled back; writing its requests one by one to isolate the failing one"
                );
                self.stats.split_batches.fetch_add(1, Ordering::Relaxed);
                for job in jobs {
                    let mut one = vec![job];
                    let result = match self.write_with_retry(&mut one, false).await {
                        Ok(mut verdicts) => match verdicts.pop() {
                            Some(v) => Ok(v),
                            None => Err(Error::Corrupt(
                                "the writer produced no verdict for a request".into(),
                            )),
                        },
                        Err(e) => Err(e),
                    };
                    let Some(job) = one.pop() else { continue };
                    let answer = match result {
                        Ok(v) => v.into(),
                        Err(e) => self.single_failure(&job.request, e).await,
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let result = self.single_failure(&job.request, e).await;
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                // Not caused by any one request (connection lost, pool closed, corrupt
                // head): splitting would only fail again. Everyone gets the same answer.
                let shared = Arc::new(e);
                for job in jobs {
                    let _ = job.reply.send(Err(shared_failure(&shared)));
                }
            }
        }
    }

    /// The answer for one request that failed on its own. A `(stream, stream_version)`
    /// violation means another writer got that version first (only possible if something
    /// bypassed the head lock): it is a conflict, reported with the version now stored.
    async fn single_failure(
        &self,
        request: &AppendRequest,
        e: Error,
    ) -> Result<AppendResult, StoreError> {
        if violated_constraint(&e) == Some(STREAM_VERSION_KEY) {
            let actual = match current_version(&self.pool, request.stream).await {
                Ok(v) => v,
                Err(read) => return Err(read.into()),
            };
            return Err(StoreError::Conflict {
                stream: request.stream,
                expected: request.expected_version,
                actual,
            });
        }
        Err(single_failure(e).into())
    }

    /// Writes `jobs` in one transaction, retrying transient failures. With `join_late`,
    /// requests queued by the time the head lock is held are added to `jobs` (and judged
    /// with them); the verdicts are in `jobs` order either way.
    async fn write_with_retry(
        &mut self,
        jobs: &mut Vec<Job>,
        join_late: bool,
    ) -> Result<Vec<Verdict>, Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let late = join_late.then_some((&mut self.rx, self.max_batch));
            let started = Instant::now();
            let result = async {
                let mut conn = self.pool.acquire().await?;
                write_batch(&mut conn, jobs, late, &self.channel).await
            }
            .await;
            match result {
                Ok(verdicts) => {
                    self.stats.committed(jobs.len(), 0, started.elapsed());
                    return Ok(verdicts);
                }
                Err(e) if is_transient(&e) && attempt <= self.retries => {
                    self.stats.busy_retries.fetch_add(1, Ordering::Relaxed);
                    let pause = Duration::from_millis(10u64 << attempt.min(6));
                    tracing::debug!(attempt, ?pause, error = %DisplayChain(&e), "append batch retried");
                    tokio::time::sleep(pause).await;
                }
                Err(Error::Busy { message, .. }) => {
                    return Err(Error::Busy {
                        attempts: attempt,
                        message,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The server refused a statement (as opposed to: the connection or the pool failed).
fn is_statement_error(e: &Error) -> bool {
    matches!(e, Error::Sql(sql) if sql.as_database_error().is_some())
}

/// Lock timeout (mapped to [`Error::Busy`]), serialization failure or deadlock: the batch
/// did not commit and may well succeed if written again.
fn is_transient(e: &Error) -> bool {
    match e {
        Error::Busy { .. } => true,
        Error::Sql(sql) => sql
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "40001" || code == "40P01"),
        _ => false,
    }
}

fn violated_constraint(e: &Error) -> Option<&str> {
    match e {
        Error::Sql(sql) => sql.as_database_error().and_then(|db| db.constraint()),
        _ => None,
    }
}

async fn current_version(pool: &PgPool, stream: JourneyId) -> Result<u64, Error> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT MAX(stream_version) FROM events WHERE stream = $1")
            .bind(stream.0)
            .fetch_one(pool)
            .await?;
    let v = v.unwrap_or(0);
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("events.stream_version: negative {v}")))
}

/// The rows a batch writes, one vector per column, bound as arrays and expanded by UNNEST.
#[derive(Default)]
struct Columns<'a> {
    ev_position: Vec<i64>,
    ev_stream: Vec<Uuid>,
    ev_version: Vec<i64>,
    ev_type: Vec<&'a str>,
    ev_schema: Vec<i32>,
    ev_payload: Vec<&'a str>,
    ev_metadata: Vec<&'a str>,
    ev_recorded: Vec<i64>,
    ev_command: Vec<Uuid>,
    ev_prev: Vec<Vec<u8>>,
    ev_hash: Vec<Vec<u8>>,

    fx_id: Vec<Uuid>,
    fx_stream: Vec<Uuid>,
    fx_kind: Vec<&'a str>,
    fx_payload: Vec<&'a str>,
    fx_available: Vec<i64>,
    fx_created: Vec<i64>,

    tm_id: Vec<Uuid>,
    tm_stream: Vec<Uuid>,
    tm_fire: Vec<i64>,
    tm_payload: Vec<&'a str>,
    tm_created: Vec<i64>,

    cmd_id: Vec<Uuid>,
    cmd_stream: Vec<Uuid>,
    cmd_outcome: Vec<&'a str>,
    cmd_recorded: Vec<i64>,

    key_stream: Vec<Uuid>,
    key_wrapped: Vec<&'a str>,
    key_created: Vec<i64>,
}

/// Judges and writes a batch in one transaction (see the module docs for the steps).
async fn write_batch(
    conn: &mut PgConnection,
    jobs: &mut Vec<Job>,
    late: Option<(&mut mpsc::Receiver<Job>, usize)>,
    channel: &str,
) -> Result<Vec<Verdict>, Error> {
    let mut tx = conn.begin().await?;

    // 1. The global append lock. Nothing below may be read before it is held.
    let head = sqlx::query("SELECT position, hash FROM log_head WHERE singleton FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::Corrupt("log_head: the head row is missing".into()))?;
    let (head_position, head_hash) = rows::head(&head)?;

    // Whatever queued up while we waited for the lock joins this batch.
    if let Some((rx, max_batch)) = late {
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    }
    let requests: Vec<&AppendRequest> = jobs.iter().map(|j| &j.request).collect();

    // 2. What the batch needs to know, read under the lock: stored outcomes of its command
    //    ids and the current version of its streams (top-1 per stream on the unique index).
    let command_ids: Vec<Uuid> = requests.iter().map(|r| r.command_id).collect();
    let mut stored: HashMap<Uuid, String> = HashMap::new();
    for row in sqlx::query("SELECT command_id, outcome FROM commands WHERE command_id = ANY($1)")
        .bind(&command_ids)
        .fetch_all(&mut *tx)
        .await?
    {
        let id: Uuid = row.try_get("command_id")?;
        stored.insert(id, row.try_get("outcome")?);
    }
    let mut streams: Vec<Uuid> = requests.iter().map(|r| r.stream.0).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut versions: HashMap<JourneyId, u64> = HashMap::with_capacity(streams.len());
    for row in sqlx::query(
        "SELECT s.stream, COALESCE((SELECT e.stream_version FROM events e \
         WHERE e.stream = s.stream ORDER BY e.stream_version DESC LIMIT 1), 0) AS version \
         FROM UNNEST($1::uuid[]) AS s(stream)",
    )
    .bind(&streams)
    .fetch_all(&mut *tx)
    .await?
    {
        let stream: Uuid = row.try_get("stream")?;
        let v: i64 = row.try_get("version")?;
        let v = u64::try_from(v)
            .map_err(|_| Error::Corrupt(format!("events.stream_version: negative value {v}")))?;
        versions.insert(JourneyId(stream), v);
    }

    // 3. Judge each request in order; committed ones become rows.
    let judged = judge(&requests, (head_position, head_hash), stored, versions);
    let mut cols = Columns::default();
    for e in &judged.events {
        let req = e.request;
        cols.ev_position.push(rows::to_i64(e.position, "position")?);
        cols.ev_stream.push(req.stream.0);
        cols.ev_version
            .push(rows::to_i64(e.version, "stream version")?);
        cols.ev_type.push(&e.event.event_type);
        cols.ev_schema.push(i32::from(e.event.schema_version));
        cols.ev_payload.push(&e.event.payload);
        cols.ev_metadata.push(&req.metadata);
        cols.ev_recorded.push(req.recorded_at.as_millis());
        cols.ev_command.push(req.command_id);
        cols.ev_prev.push(e.prev_hash.to_vec());
        cols.ev_hash.push(e.hash.to_vec());
    }
    // Journeys read model: the last committed summary per journey (one upserted row each:
    // ON CONFLICT DO UPDATE may not touch a row twice in one statement).
    let mut summaries: HashMap<Uuid, &AppendRequest> = HashMap::new();
    let mut adds_work = false;
    for &req in &judged.committed {
        for effect in &req.effects {
            cols.fx_id.push(effect.effect_id);
            cols.fx_stream.push(req.stream.0);
            cols.fx_kind.push(&effect.kind);
            cols.fx_payload.push(&effect.payload);
            cols.fx_available.push(effect.available_at.as_millis());
            cols.fx_created.push(req.recorded_at.as_millis());
        }
        for timer in &req.timers {
            cols.tm_id.push(timer.timer_id);
            cols.tm_stream.push(req.stream.0);
            cols.tm_fire.push(timer.fire_at.as_millis());
            cols.tm_payload.push(&timer.payload);
            cols.tm_created.push(req.recorded_at.as_millis());
        }
        adds_work |= !(req.effects.is_empty() && req.timers.is_empty());
        cols.cmd_id.push(req.command_id);
        cols.cmd_stream.push(req.stream.0);
        cols.cmd_outcome.push(&req.outcome);
        cols.cmd_recorded.push(req.recorded_at.as_millis());
        if let Some(wrapped) = &req.data_key {
            cols.key_stream.push(req.stream.0);
            cols.key_wrapped.push(wrapped);
            cols.key_created.push(req.recorded_at.as_millis());
        }
        summaries.insert(req.stream.0, req);
    }
    let (last_position, prev_hash) = judged.head;

    // 4. The writes, one statement per table for the whole batch.
    if !cols.ev_position.is_empty() {
        sqlx::query(
            "INSERT INTO events (position, stream, stream_version, event_type, schema_version, \
             payload, metadata, recorded_at, command_id, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], \
             $5::integer[], $6::text[], $7::text[], $8::bigint[], $9::uuid[], $10::bytea[], \
             $11::bytea[])",
        )
        .bind(&cols.ev_position)
        .bind(&cols.ev_stream)
        .bind(&cols.ev_version)
        .bind(&cols.ev_type)
        .bind(&cols.ev_schema)
        .bind(&cols.ev_payload)
        .bind(&cols.ev_metadata)
        .bind(&cols.ev_recorded)
        .bind(&cols.ev_command)
        .bind(&cols.ev_prev)
        .bind(&cols.ev_hash)
        .execute(&mut *tx)
        .await?;
    }
    if !cols.fx_id.is_empty() {
        sqlx::query(
            "INSERT INTO outbox (effect_id, stream, kind, payload, available_at, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
             $5::bigint[], $6::bigint[])",
        )
        .bind(&cols.fx_id)
        .bind(&cols.fx_stream)
        .bind(&cols.fx_kind)
        .bind(&cols.fx_payload)
        .bind(&cols.fx_available)
        .bind(&cols.fx_created)
        .execute(&mut *tx)
        .await?;
    }
    if !cols.tm_id.is_empty() {
        sqlx::query(
            "INSERT INTO timers (timer_id, stream, fire_at, payload, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], \
             $5::bigint[])",
        )
        .bind(&cols.tm_id)
        .bind(&cols.tm_stream)
        .bind(&cols.tm_fire)
        .bind(&cols.tm_payload)
        .bind(&cols.tm_created)
        .execute(&mut *tx)
        .await?;
    }
    if !cols.cmd_id.is_empty() {
        sqlx::query(
            "INSERT INTO commands (command_id, stream, outcome, recorded_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::bigint[])",
        )
        .bind(&cols.cmd_id)
        .bind(&cols.cmd_stream)
        .bind(&cols.cmd_outcome)
        .bind(&cols.cmd_recorded)
        .execute(&mut *tx)
        .await?;
        upsert_summaries(&mut tx, &summaries).await?;
    }
    if !cols.key_stream.is_empty() {
        // An existing row wins: above all an erased one, which must stay erased.
        sqlx::query(
            "INSERT INTO journey_keys (journey_id, data_key, created_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) \
             ON CONFLICT (journey_id) DO NOTHING",
        )
        .bind(&cols.key_stream)
        .bind(&cols.key_wrapped)
        .bind(&cols.key_created)
        .execute(&mut *tx)
        .await?;
    }
    if last_position != head_position {
        sqlx::query("UPDATE log_head SET position = $1, hash = $2 WHERE singleton")
            .bind(rows::to_i64(last_position, "position")?)
            .bind(prev_hash.as_slice())
            .execute(&mut *tx)
            .await?;
    }
    if adds_work {
        // Queued with the transaction and delivered at COMMIT (never if it rolls back);
        // identical notifications in one transaction are folded into one.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel)
            .execute(&mut *tx)
            .await?;
    }

    // 5. One commit for the batch.
    tx.commit().await?;
    Ok(judged.verdicts)
}

/// The row is keyed by the request's stream: that is the journey the events went to.
async fn upsert_summaries(
    conn: &mut PgConnection,
    summaries: &HashMap<Uuid, &AppendRequest>,
) -> Result<(), Error> {
    let n = summaries.len();
    let mut id = Vec::with_capacity(n);
    let mut definition = Vec::with_capacity(n);
    let mut definition_version = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut step = Vec::with_capacity(n);
    let mut email = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut version = Vec::with_capacity(n);
    let mut subject = Vec::with_capacity(n);
    let mut failures = Vec::with_capacity(n);
    let mut stall_at = Vec::with_capacity(n);
    let mut stall_keep = Vec::with_capacity(n);
    for (stream, req) in summaries {
        let s = &req.summary;
        id.push(*stream);
        definition.push(s.definition_id.as_str());
        definition_version.push(i64::from(s.definition_version));
        status.push(s.status.as_str());
        step.push(s.current_step.as_deref());
        email.push(s.email_masked.as_deref());
        started.push(s.started_at.as_millis());
        updated.push(s.updated_at.as_millis());
        version.push(rows::to_i64(s.version, "summary version")?);
        subject.push(s.subject.as_deref());
        failures.push(i64::from(s.failures));
        stall_at.push(s.stall_at.map(|t| t.as_millis()));
        stall_keep.push(s.stall_keep);
    }
    sqlx::query(
        "INSERT INTO journeys (journey_id, definition_id, definition_version, status, \
         current_step, email_masked, started_at, updated_at, version, subject, failures, \
         stall_at, stall_keep) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
         $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::bigint[], \
         $12::bigint[], $13::bool[]) \
         ON CONFLICT (journey_id) DO UPDATE SET \
         definition_id = excluded.definition_id, \
         definition_version = excluded.definition_version, \
         status = excluded.status, \
         current_step = excluded.current_step, \
         email_masked = excluded.email_masked, \
         started_at = excluded.started_at, \
         updated_at = excluded.updated_at, \
         version = excluded.version, \
         subject = excluded.subject, \
         failures = excluded.failures, \
         stall_at = CASE WHEN excluded.stall_keep THEN journeys.stall_at \
                    ELSE excluded.stall_at END, \
         stall_keep = excluded.stall_keep",
    )
    .bind(&id)
    .bind(&definition)
    .bind(&definition_version)
    .bind(&status)
    .bind(&step)
    .bind(&email)
    .bind(&started)
    .bind(&updated)
    .bind(&version)
    .bind(&subject)
    .bind(&failures)
    .bind(&stall_at)
    .bind(&stall_keep)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
