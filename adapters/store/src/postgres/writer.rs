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
//! 2. The batch's command ids and stream versions are read **after** taking that lock, in
//!    one statement. In READ COMMITTED each statement sees everything committed before it
//!    started, which now includes every append that held the lock before us, so the
//!    duplicate and version checks are race-free across nodes.
//! 3. Each request is judged in memory, in order, against the database plus the requests
//!    before it in the batch: duplicate, conflict or committed (positions, versions and
//!    chain hashes computed here) by `batch::judge`, which the SQLite writer uses too.
//! 4. One statement writes the whole batch ([`WRITE_BATCH`]): an `INSERT … SELECT FROM
//!    UNNEST(…)` per table, the journeys read model upserted (one row per journey: the
//!    batch's last summary for it), the head moved, and `pg_notify` if the batch added
//!    effects or timers (delivered at COMMIT, so listeners never hear about work they
//!    cannot see yet).
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

    // 2. What the batch needs to know, read under the lock and in one statement: stored
    //    outcomes of its command ids, and the current version of its streams (top-1 per
    //    stream on the unique index). Rows are told apart by `kind`.
    let command_ids: Vec<Uuid> = requests.iter().map(|r| r.command_id).collect();
    let mut streams: Vec<Uuid> = requests.iter().map(|r| r.stream.0).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut stored: HashMap<Uuid, String> = HashMap::new();
    let mut versions: HashMap<JourneyId, u64> = HashMap::with_capacity(streams.len());
    for row in sqlx::query(
        "SELECT 'command' AS kind, command_id AS id, outcome, 0::bigint AS version \
         FROM commands WHERE command_id = ANY($1) \
         UNION ALL \
         SELECT 'stream', s.stream, NULL, COALESCE((SELECT e.stream_version FROM events e \
         WHERE e.stream = s.stream ORDER BY e.stream_version DESC LIMIT 1), 0) \
         FROM UNNEST($2::uuid[]) AS s(stream)",
    )
    .bind(&command_ids)
    .bind(&streams)
    .fetch_all(&mut *tx)
    .await?
    {
        let kind: &str = row.try_get("kind")?;
        let id: Uuid = row.try_get("id")?;
        if kind == "command" {
            stored.insert(id, row.try_get("outcome")?);
            continue;
        }
        let v: i64 = row.try_get("version")?;
        let v = u64::try_from(v)
            .map_err(|_| Error::Corrupt(format!("events.stream_version: negative value {v}")))?;
        versions.insert(JourneyId(id), v);
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

    // 4. The writes: every table's rows, the head moved and the notification, in one
    //    statement (see `WRITE_BATCH`).
    if judged.committed.is_empty() {
        // Duplicates and conflicts only: nothing to write, and the head did not move.
        tx.commit().await?;
        return Ok(judged.verdicts);
    }
    let sums = Summaries::new(&summaries)?;
    let moved = last_position != head_position;
    sqlx::query(WRITE_BATCH)
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
        .bind(&cols.fx_id)
        .bind(&cols.fx_stream)
        .bind(&cols.fx_kind)
        .bind(&cols.fx_payload)
        .bind(&cols.fx_available)
        .bind(&cols.fx_created)
        .bind(&cols.tm_id)
        .bind(&cols.tm_stream)
        .bind(&cols.tm_fire)
        .bind(&cols.tm_payload)
        .bind(&cols.tm_created)
        .bind(&cols.cmd_id)
        .bind(&cols.cmd_stream)
        .bind(&cols.cmd_outcome)
        .bind(&cols.cmd_recorded)
        .bind(&sums.id)
        .bind(&sums.definition)
        .bind(&sums.definition_version)
        .bind(&sums.status)
        .bind(&sums.step)
        .bind(&sums.email)
        .bind(&sums.started)
        .bind(&sums.updated)
        .bind(&sums.version)
        .bind(&sums.subject)
        .bind(&sums.failures)
        .bind(&sums.stall_at)
        .bind(&sums.stall_keep)
        .bind(&cols.key_stream)
        .bind(&cols.key_wrapped)
        .bind(&cols.key_created)
        .bind(moved)
        .bind(rows::to_i64(last_position, "position")?)
        .bind(prev_hash.as_slice())
        .bind(adds_work)
        .bind(channel)
        .execute(&mut *tx)
        .await?;

    // 5. One commit for the batch.
    tx.commit().await?;
    Ok(judged.verdicts)
}

/// A batch's writes as one statement. Each table's rows arrive as arrays expanded by
/// `UNNEST`; empty arrays insert nothing. A batch is then five round trips (BEGIN, the head
/// lock, the read, this, COMMIT) whatever it holds: with a statement per table it was twelve,
/// and under load each round trip waits for the server's turn on a busy CPU, which made
/// them, not the rows, most of a batch's time.
///
/// Data-modifying `WITH` clauses run exactly once and to completion whether or not the
/// outer query reads them, all on the statement's snapshot: none of them reads what another
/// writes (no foreign keys or triggers join these tables), so their order does not matter.
/// A constraint violation anywhere fails the whole statement with the constraint's name
/// (`events_stream_version_key` stays a conflict). The outer `SELECT` calls `pg_notify` only
/// when `$46` is set: queued with the transaction, delivered at COMMIT, never on rollback,
/// and identical notifications in one transaction fold into one.
const WRITE_BATCH: &str = "\
WITH events_in AS (\
  INSERT INTO events (position, stream, stream_version, event_type, schema_version, payload, \
  metadata, recorded_at, command_id, prev_hash, hash) \
  SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], $5::integer[], \
  $6::text[], $7::text[], $8::bigint[], $9::uuid[], $10::bytea[], $11::bytea[])), \
outbox_in AS (\
  INSERT INTO outbox (effect_id, stream, kind, payload, available_at, created_at) \
  SELECT * FROM UNNEST($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::bigint[], \
  $17::bigint[])), \
timers_in AS (\
  INSERT INTO timers (timer_id, stream, fire_at, payload, created_at) \
  SELECT * FROM UNNEST($18::uuid[], $19::uuid[], $20::bigint[], $21::text[], $22::bigint[])), \
commands_in AS (\
  INSERT INTO commands (command_id, stream, outcome, recorded_at) \
  SELECT * FROM UNNEST($23::uuid[], $24::uuid[], $25::text[], $26::bigint[])), \
journeys_up AS (\
  INSERT INTO journeys (journey_id, definition_id, definition_version, status, current_step, \
  email_masked, started_at, updated_at, version, subject, failures, stall_at, stall_keep) \
  SELECT * FROM UNNEST($27::uuid[], $28::text[], $29::bigint[], $30::text[], $31::text[], \
  $32::text[], $33::bigint[], $34::bigint[], $35::bigint[], $36::text[], $37::bigint[], \
  $38::bigint[], $39::bool[]) \
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
  stall_at = CASE WHEN excluded.stall_keep THEN journeys.stall_at ELSE excluded.stall_at END, \
  stall_keep = excluded.stall_keep), \
keys_in AS (\
  INSERT INTO journey_keys (journey_id, data_key, created_at) \
  SELECT * FROM UNNEST($40::uuid[], $41::text[], $42::bigint[]) \
  ON CONFLICT (journey_id) DO NOTHING), \
head_moved AS (\
  UPDATE log_head SET position = $44, hash = $45 WHERE singleton AND $43) \
SELECT pg_notify($47, '') WHERE $46";

/// The journeys read model's rows for a batch, one vector per column.
struct Summaries<'a> {
    id: Vec<Uuid>,
    definition: Vec<&'a str>,
    definition_version: Vec<i64>,
    status: Vec<&'a str>,
    step: Vec<Option<&'a str>>,
    email: Vec<Option<&'a str>>,
    started: Vec<i64>,
    updated: Vec<i64>,
    version: Vec<i64>,
    subject: Vec<Option<&'a str>>,
    failures: Vec<i64>,
    stall_at: Vec<Option<i64>>,
    stall_keep: Vec<bool>,
}

impl<'a> Summaries<'a> {
    /// The row is keyed by the request's stream: that is the journey the events went to.
    fn new(summaries: &HashMap<Uuid, &'a AppendRequest>) -> Result<Self, Error> {
        let n = summaries.len();
        let mut s = Self {
            id: Vec::with_capacity(n),
            definition: Vec::with_capacity(n),
            definition_version: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            step: Vec::with_capacity(n),
            email: Vec::with_capacity(n),
            started: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            failures: Vec::with_capacity(n),
            stall_at: Vec::with_capacity(n),
            stall_keep: Vec::with_capacity(n),
        };
        for (stream, req) in summaries {
            let sum = &req.summary;
            s.id.push(*stream);
            s.definition.push(sum.definition_id.as_str());
            s.definition_version.push(i64::from(sum.definition_version));
            s.status.push(sum.status.as_str());
            s.step.push(sum.current_step.as_deref());
            s.email.push(sum.email_masked.as_deref());
            s.started.push(sum.started_at.as_millis());
            s.updated.push(sum.updated_at.as_millis());
            s.version
                .push(rows::to_i64(sum.version, "summary version")?);
            s.subject.push(sum.subject.as_deref());
            s.failures.push(i64::from(sum.failures));
            s.stall_at.push(sum.stall_at.map(|t| t.as_millis()));
            s.stall_keep.push(sum.stall_keep);
        }
        Ok(s)
    }
}
