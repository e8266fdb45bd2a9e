//! Group commit on PostgreSQL: one task per [`PgStore`](super::PgStore) handle owns every
//! append of that handle and commits the waiting ones together.
//!
//! # One batch, one transaction
//!
//! The task takes every request waiting (up to `max_batch`) and writes them in one
//! transaction with a fixed number of statements, whatever the batch size (a batch of
//! other writes alone, below, is one statement in autocommit):
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
//! # Other writes
//!
//! Sessions, session revocations and password changes ([`Write`]) queue here too when
//! grouping is on. As statements of their own each was a commit with its own WAL flush,
//! three per completed reset, and together they cost the engine about a quarter of its
//! throughput; here they ride in the batch's one statement (`sessions_in`, `passwords`,
//! `revoked`) and its COMMIT. A batch of such writes alone needs neither the head lock nor
//! the reads, and is that one statement committing on its own: one round trip, as each
//! was before. Every clause of that statement works on one snapshot, so two writes that
//! touch the same rows must not share it: a second password change or revocation of an
//! account, or a revocation queued after a session's insert for that account (it would not
//! see the session, and a session signed in with the old password would survive the
//! reset), waits for the next batch, and so does everything of that account queued behind
//! it ([`Batch::add`]): one account's writes commit in queue order. A completing append's
//! recovery session (`AppendRequest::session`) joins `sessions_in` when, and only when, its
//! append commits, and counts as a session insert for that rule.
//!
//! A batch with appends holds the head lock while its clauses lock account and session
//! rows. A transaction holding one of those rows (seeding an account, erasing one: both a
//! few statements long) therefore delays every node's appends until it ends, and should it
//! wait for something the writer holds, PostgreSQL breaks the deadlock after
//! `deadlock_timeout` and the batch is retried (40P01, below).
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
use passage_core::ports::{AppendRequest, AppendResult, JourneyId, Session, StoreError};
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The name migrations give the `(stream, stream_version)` constraint.
const STREAM_VERSION_KEY: &str = "events_stream_version_key";

/// A write other than an append, committed in the writer's transaction together with the
/// appends around it (module docs, "Other writes").
#[derive(Debug)]
pub(crate) enum Write {
    /// A new session row.
    Session(Session),
    /// A password change, applied unless a later change is stored already.
    Password {
        account_id: String,
        phc: String,
        changed_at: i64,
        now: i64,
    },
    /// Revokes an account's live sessions, as `AccountDirectory::revoke_sessions` says.
    Revoke {
        account_id: String,
        keep_journey: Option<String>,
        recovery_until: i64,
        now: i64,
        reason: String,
    },
}

impl Write {
    fn account(&self) -> &str {
        match self {
            Write::Session(s) => &s.account_id,
            Write::Password { account_id, .. } | Write::Revoke { account_id, .. } => account_id,
        }
    }

    /// Whether this write, queued after `earlier` (same account), must not share its batch.
    /// The batch statement's clauses all work on one snapshot: an `UPDATE … FROM` updates a
    /// row once however many of its source rows match, so a second password change or
    /// revocation would neither apply after the first nor report what it did; and a
    /// revocation does not see a session inserted by the same statement, so a revocation
    /// queued after a session's insert must wait for it to commit (R45: a session signed
    /// in with the old password does not survive the reset). A session inserted after a
    /// revocation may share its batch: not seeing it is what queue order says.
    fn waits_for(&self, earlier: &Write) -> bool {
        matches!(
            (earlier, self),
            (Write::Password { .. }, Write::Password { .. })
                | (
                    Write::Revoke { .. } | Write::Session(_),
                    Write::Revoke { .. }
                )
        )
    }
}

/// Rows the write affected.
pub(crate) type WriteReply = oneshot::Sender<Result<u64, Error>>;

/// What waits for the writer: an append, or another write.
#[derive(Debug)]
pub(crate) enum Queued {
    Append(Box<Job>),
    Write(Write, WriteReply),
}

/// The requests one transaction carries.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    writes: Vec<(Write, WriteReply)>,
    /// Writes that must wait for the next batch (see [`Batch::add`]).
    carried: Vec<(Write, WriteReply)>,
}

impl Batch {
    /// Adds `queued` to this batch, or holds it for the next one: behind a write it must
    /// wait for, and behind anything already held for its account, so that one account's
    /// writes commit in queue order.
    fn add(&mut self, queued: Queued) {
        match queued {
            Queued::Append(job) => self.jobs.push(*job),
            Queued::Write(write, reply) => {
                let account = write.account();
                let held = self.carried.iter().any(|(w, _)| w.account() == account);
                // A completing append's session is a session insert like any other.
                let after_session = matches!(write, Write::Revoke { .. })
                    && self.jobs.iter().any(|j| {
                        j.request
                            .session
                            .as_ref()
                            .is_some_and(|s| s.account_id == account)
                    });
                let waits = held
                    || after_session
                    || self
                        .writes
                        .iter()
                        .any(|(w, _)| w.account() == account && write.waits_for(w));
                match waits {
                    true => self.carried.push((write, reply)),
                    false => self.writes.push((write, reply)),
                }
            }
        }
    }

    /// Everything taken from the queue, held writes included.
    fn len(&self) -> usize {
        self.jobs.len() + self.writes.len() + self.carried.len()
    }
}

/// What a committed batch answers: a verdict per append, rows affected per write.
struct Written {
    verdicts: Vec<Verdict>,
    affected: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) pool: PgPool,
    pub(crate) rx: mpsc::Receiver<Queued>,
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
        let mut queued = Vec::with_capacity(self.max_batch);
        let mut carried = Vec::new();
        loop {
            if carried.is_empty() {
                // Wait for the first request, then take whatever else is already queued:
                // that is the whole batching policy (no timer delays a lone request).
                if self.rx.recv_many(&mut queued, self.max_batch).await == 0 {
                    break;
                }
            } else {
                // Held-back writes go first, with whatever is queued behind them.
                queued.extend(carried.drain(..).map(|(w, r)| Queued::Write(w, r)));
                while queued.len() < self.max_batch {
                    match self.rx.try_recv() {
                        Ok(q) => queued.push(q),
                        Err(_) => break,
                    }
                }
            }
            let mut batch = Batch::default();
            for q in queued.drain(..) {
                batch.add(q);
            }
            carried = self.commit(batch).await;
        }
        tracing::debug!("postgres append writer stopped: every store handle was dropped");
    }

    /// Commits `batch` and answers everyone in it; returns the writes held for the next.
    async fn commit(&mut self, mut batch: Batch) -> Vec<(Write, WriteReply)> {
        // Grouping on: latecomers may join once the head lock is held.
        let join_late = self.max_batch > 1;
        let result = self.write_with_retry(&mut batch, join_late).await;
        let Batch {
            jobs,
            writes,
            carried,
        } = batch;
        match result {
            Ok(written) => {
                for (job, verdict) in jobs.into_iter().zip(written.verdicts) {
                    // The caller may have stopped waiting; its append stands regardless.
                    let _ = job.reply.send(verdict.into());
                }
                for ((_, reply), n) in writes.into_iter().zip(written.affected) {
                    let _ = reply.send(Ok(n));
                }
            }
            Err(e) if jobs.len() + writes.len() > 1 && is_statement_error(&e) => {
                tracing::warn!(
                    batch = jobs.len() + writes.len(),
                    error = %DisplayChain(&e),
                    "append batch rolled back; writing its requests one by one to isolate the failing one"
                );
                self.stats.split_batches.fetch_add(1, Ordering::Relaxed);
                for (write, reply) in writes {
                    let mut one = Batch {
                        writes: vec![(write, reply)],
                        ..Batch::default()
                    };
                    let result = self.write_with_retry(&mut one, false).await;
                    let Some((_, reply)) = one.writes.pop() else {
                        continue;
                    };
                    let _ = reply.send(result.and_then(|w| {
                        w.affected.first().copied().ok_or_else(|| {
                            Error::Corrupt("the writer ran no statement for a write".into())
                        })
                    }));
                }
                for job in jobs {
                    let mut one = Batch {
                        jobs: vec![job],
                        ..Batch::default()
                    };
                    let result = self.write_with_retry(&mut one, false).await;
                    let Some(job) = one.jobs.pop() else { continue };
                    let answer = match result.map(|mut w| w.verdicts.pop()) {
                        Ok(Some(v)) => v.into(),
                        Ok(None) => Err(Error::Corrupt(
                            "the writer produced no verdict for a request".into(),
                        )
                        .into()),
                        Err(e) => self.single_failure(&job.request, e).await,
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) if jobs.len() + writes.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let result = self.single_failure(&job.request, e).await;
                    let _ = job.reply.send(result);
                } else if let Some((_, reply)) = writes.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                // Not caused by any one request (connection lost, pool closed, corrupt
                // head): splitting would only fail again. Everyone gets the same answer.
                let shared = Arc::new(e);
                for job in jobs {
                    let _ = job.reply.send(Err(shared_failure(&shared)));
                }
                for (_, reply) in writes {
                    let _ = reply.send(Err(Error::Shared(Arc::clone(&shared))));
                }
            }
        }
        carried
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

    /// Writes `batch` in one transaction, retrying transient failures. With `join_late`,
    /// whatever queued by the time the head lock is held joins it through [`Batch::add`]
    /// (appends are judged with the rest).
    async fn write_with_retry(
        &mut self,
        batch: &mut Batch,
        join_late: bool,
    ) -> Result<Written, Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let late = join_late.then_some((&mut self.rx, self.max_batch));
            let started = Instant::now();
            let result = async {
                let mut conn = self.pool.acquire().await?;
                write_batch(&mut conn, batch, late, &self.channel).await
            }
            .await;
            match result {
                Ok(written) => {
                    self.stats
                        .committed(batch.jobs.len(), batch.writes.len(), started.elapsed());
                    return Ok(written);
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
    batch: &mut Batch,
    late: Option<(&mut mpsc::Receiver<Queued>, usize)>,
    channel: &str,
) -> Result<Written, Error> {
    if batch.jobs.is_empty() {
        let writes: Vec<&Write> = batch.writes.iter().map(|(w, _)| w).collect();
        return Ok(Written {
            verdicts: Vec::new(),
            affected: write_alone(conn, &writes, channel).await?,
        });
    }
    let mut tx = conn.begin().await?;

    // 1. The global append lock. Nothing below may be read before it is held.
    let row = sqlx::query("SELECT position, hash FROM log_head WHERE singleton FOR UPDATE")
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::Corrupt("log_head: the head row is missing".into()))?;
    let (head_position, head_hash) = rows::head(&row)?;

    // Whatever queued up while we waited for the lock joins this batch (or, for a write
    // that must wait, the next one).
    if let Some((rx, max_batch)) = late {
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(queued) => batch.add(queued),
                Err(_) => break,
            }
        }
    }
    // 2. What the batch needs to know, read under the lock.
    let (stored, versions) = judging_reads(&mut tx, &batch.jobs).await?;
    let requests: Vec<&AppendRequest> = batch.jobs.iter().map(|j| &j.request).collect();

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
    if judged.committed.is_empty() && batch.writes.is_empty() {
        // Duplicates and conflicts only: nothing to write, and the head did not move.
        tx.commit().await?;
        return Ok(Written {
            verdicts: judged.verdicts,
            affected: Vec::new(),
        });
    }
    let sums = Summaries::new(&summaries)?;
    let writes: Vec<&Write> = batch.writes.iter().map(|(w, _)| w).collect();
    let mut others = Others::new(&writes)?;
    // Completed journeys' sessions commit with their events (`AppendRequest::session`).
    for session in judged.committed.iter().filter_map(|r| r.session.as_ref()) {
        others.session(session);
    }
    let moved = last_position != head_position;
    let position = rows::to_i64(last_position, "position")?;
    let head = (moved, position, prev_hash.as_slice());
    let counted = batch_statement(&cols, &sums, &others, head, adds_work, channel)
        .fetch_all(&mut *tx)
        .await?;
    let affected = Others::affected(&writes, &counted)?;

    // 5. One commit for the batch.
    tx.commit().await?;
    Ok(Written {
        verdicts: judged.verdicts,
        affected,
    })
}

/// Writes other than appends, without appends: they touch no log table, so they need
/// neither the head lock nor a read, and the batch statement commits on its own: one
/// round trip, not BEGIN and COMMIT around it. A writer batch of such writes alone is this,
/// and so is each one of them on a store with grouping off. Returns rows affected per write.
pub(crate) async fn write_alone(
    conn: &mut PgConnection,
    writes: &[&Write],
    channel: &str,
) -> Result<Vec<u64>, Error> {
    let others = Others::new(writes)?;
    let counted = batch_statement(
        &Columns::default(),
        &Summaries::default(),
        &others,
        (false, 0, &[]),
        false,
        channel,
    )
    .fetch_all(&mut *conn)
    .await?;
    Others::affected(writes, &counted)
}

/// Step 2: the stored outcomes of the batch's command ids, and the current version of its
/// streams (top-1 per stream on the unique index), read under the lock in one statement.
/// Rows are told apart by `kind`.
async fn judging_reads(
    conn: &mut PgConnection,
    jobs: &[Job],
) -> Result<(HashMap<Uuid, String>, HashMap<JourneyId, u64>), Error> {
    let command_ids: Vec<Uuid> = jobs.iter().map(|j| j.request.command_id).collect();
    let mut streams: Vec<Uuid> = jobs.iter().map(|j| j.request.stream.0).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut stored = HashMap::new();
    let mut versions = HashMap::with_capacity(streams.len());
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
    .fetch_all(&mut *conn)
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
    Ok((stored, versions))
}

/// [`WRITE_BATCH`] with its arguments; `head` is whether the head moves, and to where.
fn batch_statement(
    cols: &Columns<'_>,
    sums: &Summaries<'_>,
    others: &Others<'_>,
    (moved, position, hash): (bool, i64, &[u8]),
    adds_work: bool,
    channel: &str,
) -> Query<'static, Postgres, PgArguments> {
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
        .bind(position)
        .bind(hash)
        .bind(adds_work)
        .bind(channel)
        .bind(&others.session_hash)
        .bind(&others.session_account)
        .bind(&others.session_journey)
        .bind(&others.session_kind)
        .bind(&others.session_amr)
        .bind(&others.session_created)
        .bind(&others.session_expires)
        .bind(&others.password_ord)
        .bind(&others.password_account)
        .bind(&others.password_phc)
        .bind(&others.password_changed)
        .bind(&others.password_now)
        .bind(&others.revoke_ord)
        .bind(&others.revoke_account)
        .bind(&others.revoke_keep)
        .bind(&others.revoke_until)
        .bind(&others.revoke_now)
        .bind(&others.revoke_reason)
        .bind(&others.session_password)
}

/// A batch's writes as one statement. Each table's rows arrive as arrays expanded by
/// `UNNEST`; empty arrays insert nothing. A batch with appends is then five round trips
/// (BEGIN, the head lock, the read, this, COMMIT) whatever it holds, and a batch of other
/// writes alone is this statement in autocommit: with a statement per table it was twelve,
/// and under load each round trip waits for the server's turn on a busy CPU, which made
/// them, not the rows, most of a batch's time.
///
/// Data-modifying `WITH` clauses run exactly once and to completion whether or not the
/// outer query reads them, all on the statement's snapshot, so none sees another's rows
/// (no foreign keys or triggers join these tables). The one pair that touches the same
/// table, `sessions_in` and `revoked`, therefore acts as if the revocations ran first,
/// which [`Batch::add`] makes true by holding a revocation queued after a session's insert
/// for the next batch.
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
  UPDATE log_head SET position = $44, hash = $45 WHERE singleton AND $43), \
sessions_in AS (\
  INSERT INTO sessions (session_hash, account_id, journey_id, kind, amr, created_at, \
  expires_at, password_fp) \
  SELECT * FROM UNNEST($48::text[], $49::text[], $50::text[], $51::text[], $52::text[], \
  $53::bigint[], $54::bigint[], $66::text[])), \
passwords AS (\
  UPDATE accounts a SET password_phc = u.phc, password_changed_at = u.changed_at, \
  updated_at = u.now \
  FROM UNNEST($55::integer[], $56::text[], $57::text[], $58::bigint[], $59::bigint[]) \
  AS u(ord, account_id, phc, changed_at, now) \
  WHERE a.account_id = u.account_id \
  AND (a.password_changed_at IS NULL OR a.password_changed_at <= u.changed_at) \
  RETURNING u.ord), \
revoked AS (\
  UPDATE sessions s SET revoked_at = u.now, revoked_reason = u.reason \
  FROM UNNEST($60::integer[], $61::text[], $62::text[], $63::bigint[], $64::bigint[], \
  $65::text[]) AS u(ord, account_id, keep, recovery_until, now, reason) \
  WHERE s.account_id = u.account_id AND s.revoked_at IS NULL \
  AND (s.journey_id IS NULL OR u.keep IS NULL OR s.journey_id <> u.keep) \
  AND s.created_at <= u.recovery_until \
  RETURNING u.ord) \
SELECT ord, count(*) AS n FROM passwords GROUP BY ord \
UNION ALL SELECT ord, count(*) FROM revoked GROUP BY ord \
UNION ALL SELECT -1, 0 FROM (SELECT pg_notify($47, '') WHERE $46) AS notified";

/// A batch's other writes, one vector per column; `ord` is the write's place in the
/// batch, which the statement returns with the rows each update touched.
#[derive(Default)]
struct Others<'a> {
    session_hash: Vec<&'a str>,
    session_account: Vec<&'a str>,
    session_journey: Vec<Option<&'a str>>,
    session_kind: Vec<&'a str>,
    session_amr: Vec<&'a str>,
    session_created: Vec<i64>,
    session_expires: Vec<i64>,
    session_password: Vec<Option<&'a str>>,
    password_ord: Vec<i32>,
    password_account: Vec<&'a str>,
    password_phc: Vec<&'a str>,
    password_changed: Vec<i64>,
    password_now: Vec<i64>,
    revoke_ord: Vec<i32>,
    revoke_account: Vec<&'a str>,
    revoke_keep: Vec<Option<&'a str>>,
    revoke_until: Vec<i64>,
    revoke_now: Vec<i64>,
    revoke_reason: Vec<&'a str>,
}

impl<'a> Others<'a> {
    fn new(writes: &[&'a Write]) -> Result<Self, Error> {
        let mut o = Self::default();
        for (i, &write) in writes.iter().enumerate() {
            let ord = i32::try_from(i)
                .map_err(|_| Error::OutOfRange(format!("write {i} of one batch")))?;
            match write {
                Write::Session(s) => o.session(s),
                Write::Password {
                    account_id,
                    phc,
                    changed_at,
                    now,
                } => {
                    o.password_ord.push(ord);
                    o.password_account.push(account_id);
                    o.password_phc.push(phc);
                    o.password_changed.push(*changed_at);
                    o.password_now.push(*now);
                }
                Write::Revoke {
                    account_id,
                    keep_journey,
                    recovery_until,
                    now,
                    reason,
                } => {
                    o.revoke_ord.push(ord);
                    o.revoke_account.push(account_id);
                    o.revoke_keep.push(keep_journey.as_deref());
                    o.revoke_until.push(*recovery_until);
                    o.revoke_now.push(*now);
                    o.revoke_reason.push(reason);
                }
            }
        }
        Ok(o)
    }

    fn session(&mut self, s: &'a Session) {
        self.session_hash.push(&s.session_hash);
        self.session_account.push(&s.account_id);
        self.session_journey.push(s.journey_id.as_deref());
        self.session_kind.push(&s.kind);
        self.session_amr.push(&s.amr);
        self.session_created.push(s.created_at.as_millis());
        self.session_expires.push(s.expires_at.as_millis());
        self.session_password.push(s.password_fp.as_deref());
    }

    /// Rows affected per write, in batch order: an inserted session is one row (a failed
    /// insert fails the statement); an update touched what the statement counted for it.
    fn affected(writes: &[&Write], counted: &[PgRow]) -> Result<Vec<u64>, Error> {
        let mut affected: Vec<u64> = writes
            .iter()
            .map(|w| u64::from(matches!(w, Write::Session(_))))
            .collect();
        for row in counted {
            let ord: i32 = row.try_get("ord")?;
            let n: i64 = row.try_get("n")?;
            let (Ok(i), Ok(n)) = (usize::try_from(ord), u64::try_from(n)) else {
                continue; // the notification's row
            };
            match affected.get_mut(i) {
                Some(slot) => *slot = n,
                None => {
                    return Err(Error::Corrupt(format!(
                        "the batch statement counted rows for write {i} of {}",
                        affected.len()
                    )));
                }
            }
        }
        Ok(affected)
    }
}

/// The journeys read model's rows for a batch, one vector per column.
#[derive(Default)]
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
        let mut s = Self::default();
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
