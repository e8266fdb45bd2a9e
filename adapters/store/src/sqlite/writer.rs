//! Group commit: one writer, on a thread of its own, owns every append and commits waiting
//! appends together.
//!
//! # Why group, and why it stays durable
//!
//! With `synchronous=FULL` every COMMIT waits for an fsync of the WAL, which costs about as
//! much as everything else in an append together. One transaction per append would make
//! throughput "one fsync per append". Instead, [`SqliteStore::append`](super::SqliteStore)
//! sends its request to the writer and waits; the writer takes every request that is waiting
//! (up to `max_batch`), writes them all in one `BEGIN IMMEDIATE` transaction and commits
//! once: one fsync per batch. While a batch is committing, new requests queue up and form
//! the next batch, so batches grow exactly when load does and a lone request is not delayed
//! by any timer.
//!
//! Durability is unchanged: a caller's future resolves only after the COMMIT that contains
//! its request has returned, that is after the fsync. A crash before that point loses the
//! request, but its caller never heard "committed", so it retries with the same command id.
//!
//! # Isolation inside a batch
//!
//! Each request is judged on its own, in order, against the log plus the requests before it
//! in the same batch: a duplicate command id gets the stored outcome, a stale
//! `expected_version` gets a conflict, and neither writes anything or affects its
//! neighbours. An SQL error (a constraint violated by one request's data, a full disk) rolls
//! the whole batch back, so nothing is ever half-written; the requests are then written again
//! one per transaction, so only the request that causes the error receives it (as
//! `StoreError::Rejected` when its own data breaks a constraint: retrying cannot help).
//! Idempotency makes that second pass safe whatever the first one did.
//!
//! A caller that stops waiting (its future dropped) does not cancel its append: the request
//! is already queued. That is harmless for the same reason: a retry is a duplicate.
//!
//! # Every write, not only appends
//!
//! SQLite has one write lock per file, so a write outside this task (completing an outbox
//! entry, recording a session, changing a password) would be a transaction and an fsync of
//! its own, serialized with the batches: with a journey's nine appends grouped, its five or
//! six other writes would set the pace. They are therefore queued here too, as single
//! [`Statement`]s, and commit in the same transaction as the appends around them. A
//! statement is a complete write on its own (its `WHERE` clause carries its conditions), so
//! it can be re-run after a busy retry or a rollback, like an append.
//!
//! Claims of due outbox entries and timers queue here too ([`Statement::claim`]: a `SELECT`
//! and the lease of what it found, inside the batch's transaction), and a batch's outbox
//! completions share one statement (`complete_effects`).

use super::rows;
use crate::batch::{DisplayChain, Job, Judged, Stats, Verdict, judge, single_failure};
use crate::error::Error;
use passage_core::ports::{AppendRequest, JourneyId};
use sqlx::query_builder::Separated;
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

/// A value bound to a queued statement.
#[derive(Debug)]
pub(crate) enum Arg {
    Int(i64),
    Text(Option<String>),
}

/// One write statement, owned so that it can wait in the queue and be re-run.
#[derive(Debug)]
pub(crate) struct Statement {
    sql: &'static str,
    args: Vec<Arg>,
    /// Set for an outbox completion, which a batch writes together with the others.
    completion: Option<Completion>,
    /// Set for a claim: the statement selects due rows, which are then leased.
    lease: Option<Lease>,
    /// Set for a send-budget charge, which counts before it writes.
    charge: Option<Charge>,
}

/// A message counted against send budgets: `(key, window ms, max)` each, all or none.
#[derive(Debug)]
struct Charge {
    budgets: Vec<(String, i64, u32)>,
    token: String,
    now: i64,
}

/// How a claim leases the rows its `SELECT` found.
#[derive(Debug)]
struct Lease {
    table: &'static str,
    id_column: &'static str,
    token: i64,
}

/// What a queued statement did: rows affected, and for a claim the rows it leased.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) affected: u64,
    pub(crate) rows: Vec<sqlx::sqlite::SqliteRow>,
    /// For a charge: the index of the first budget that was spent (nothing was counted).
    pub(crate) spent: Option<usize>,
}

/// A fenced outbox completion: effect id, the lease token it must still hold, and when.
#[derive(Debug)]
struct Completion {
    effect_id: String,
    lease: i64,
    now: i64,
}

impl Statement {
    pub(crate) fn new(sql: &'static str) -> Self {
        Self {
            sql,
            args: Vec::new(),
            completion: None,
            lease: None,
            charge: None,
        }
    }

    /// Counts message `token` against every budget `(key, window ms, max)` if each has room
    /// at `now` (or counted it within its window already), else counts nothing and reports
    /// the first spent one in [`Done::spent`]. In the writer's transaction, charges are
    /// serialized with every other write, across processes too (`BEGIN IMMEDIATE`).
    pub(crate) fn charge(budgets: Vec<(String, i64, u32)>, token: String, now: i64) -> Self {
        Self {
            charge: Some(Charge {
                budgets,
                token,
                now,
            }),
            ..Self::new("")
        }
    }

    /// A claim: `select` (with its arguments bound afterwards) finds the due rows of
    /// `table`, which are then leased with `token`, in the writer's transaction. Claims
    /// queue with the appends instead of taking SQLite's write lock on their own: a worker
    /// claims whenever work is committed, and as separate transactions its claims fought
    /// the writer for the lock (SQLite's busy handler sleeping in steps of milliseconds)
    /// and split its batches.
    pub(crate) fn claim(
        select: &'static str,
        table: &'static str,
        id_column: &'static str,
        token: i64,
    ) -> Self {
        Self {
            lease: Some(Lease {
                table,
                id_column,
                token,
            }),
            ..Self::new(select)
        }
    }

    /// Marks an outbox entry done if it is still pending under lease token `lease`.
    /// Alone it is the single fenced UPDATE; in a batch, every completion with a distinct
    /// effect id shares one statement (see [`complete_effects`]).
    pub(crate) fn complete_effect(effect_id: String, lease: i64, now: i64) -> Self {
        let single = Self::new(
            "UPDATE outbox SET status = 'done', done_at = ?3, leased_until = NULL \
             WHERE effect_id = ?1 AND status = 'pending' AND leased_until = ?2",
        )
        .text(effect_id.clone())
        .int(lease)
        .int(now);
        Self {
            completion: Some(Completion {
                effect_id,
                lease,
                now,
            }),
            ..single
        }
    }

    pub(crate) fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(v));
        self
    }

    pub(crate) fn text(mut self, v: impl Into<String>) -> Self {
        self.args.push(Arg::Text(Some(v.into())));
        self
    }

    pub(crate) fn opt_text(mut self, v: Option<&str>) -> Self {
        self.args.push(Arg::Text(v.map(str::to_owned)));
        self
    }

    async fn execute(&self, conn: &mut SqliteConnection) -> Result<Done, Error> {
        if let Some(charge) = &self.charge {
            return charge_budgets(conn, charge).await;
        }
        let mut q = sqlx::query(self.sql);
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
            };
        }
        let Some(lease) = &self.lease else {
            return Ok(Done {
                affected: q.execute(&mut *conn).await?.rows_affected(),
                ..Done::default()
            });
        };
        let rows = q.fetch_all(&mut *conn).await?;
        let ids = rows
            .iter()
            .map(|r| sqlx::Row::try_get::<String, _>(r, lease.id_column))
            .collect::<Result<Vec<_>, _>>()?;
        lease_rows(conn, lease.table, lease.id_column, &ids, lease.token).await?;
        Ok(Done {
            affected: rows.len() as u64,
            rows,
            spent: None,
        })
    }
}

/// [`Statement::charge`]: a count per budget, then an upsert per budget when all have room.
/// A row left from an earlier window of the same message moves to now, as if counted anew.
async fn charge_budgets(conn: &mut SqliteConnection, charge: &Charge) -> Result<Done, Error> {
    for (i, (key, window, max)) in charge.budgets.iter().enumerate() {
        let (used, seen): (i64, bool) = sqlx::query_as(
            "SELECT count(*), coalesce(max(token = ?2), 0) FROM send_budget_uses \
             WHERE budget_key = ?1 AND used_at > ?3 - ?4",
        )
        .bind(key)
        .bind(&charge.token)
        .bind(charge.now)
        .bind(window)
        .fetch_one(&mut *conn)
        .await?;
        if !seen && used >= i64::from(*max) {
            return Ok(Done {
                spent: Some(i),
                ..Done::default()
            });
        }
    }
    let mut affected = 0;
    for (key, window, _) in &charge.budgets {
        affected += sqlx::query(
            "INSERT INTO send_budget_uses (budget_key, token, used_at, expires_at) \
             VALUES (?1, ?2, ?3, ?3 + ?4) \
             ON CONFLICT (budget_key, token) DO UPDATE \
                 SET used_at = excluded.used_at, expires_at = excluded.expires_at \
                 WHERE send_budget_uses.used_at <= ?3 - ?4",
        )
        .bind(key)
        .bind(&charge.token)
        .bind(charge.now)
        .bind(window)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    Ok(Done {
        affected,
        ..Done::default()
    })
}

/// What waits for the writer: an append, or another write.
#[derive(Debug)]
pub(crate) enum Queued {
    Append(Box<Job>),
    Write {
        statement: Statement,
        reply: oneshot::Sender<Result<Done, Error>>,
    },
}

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) pool: SqlitePool,
    pub(crate) rx: mpsc::Receiver<Queued>,
    /// 1 turns grouping off: one request per transaction.
    pub(crate) max_batch: usize,
    pub(crate) busy_retries: u32,
    pub(crate) stats: Arc<Stats>,
    /// Signalled after a commit that added outbox rows or timers (`wait_for_work`).
    pub(crate) work: Arc<Notify>,
}

impl Writer {
    /// Runs until every [`super::SqliteStore`] handle (every sender) is gone.
    pub(crate) async fn run(mut self) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        // `recv_many` waits for the first request, then takes whatever else is already
        // queued without waiting: that is the whole batching policy.
        while self.rx.recv_many(&mut jobs, self.max_batch).await > 0 {
            self.commit(std::mem::take(&mut jobs)).await;
        }
        tracing::debug!("append writer stopped: every store handle was dropped");
    }

    async fn commit(&self, queued: Vec<Queued>) {
        let mut jobs = Vec::with_capacity(queued.len());
        let mut writes = Vec::new();
        for q in queued {
            match q {
                Queued::Append(job) => jobs.push(*job),
                Queued::Write { statement, reply } => writes.push((statement, reply)),
            }
        }
        let requests: Vec<&AppendRequest> = jobs.iter().map(|j| &j.request).collect();
        let statements: Vec<&Statement> = writes.iter().map(|(s, _)| s).collect();
        match self.write_with_retry(&requests, &statements).await {
            Ok((verdicts, affected)) => {
                self.signal_work(jobs.iter().zip(&verdicts));
                for (job, verdict) in jobs.into_iter().zip(verdicts) {
                    // The caller may have stopped waiting; its append stands regardless.
                    let _ = job.reply.send(verdict.into());
                }
                for ((_, reply), rows) in writes.into_iter().zip(affected) {
                    let _ = reply.send(Ok(rows));
                }
            }
            Err(Error::Busy { attempts, message }) => {
                // Contention is not caused by any one request: retrying them one by one
                // would only wait longer. Everyone gets the same answer.
                let busy = || Error::Busy {
                    attempts,
                    message: message.clone(),
                };
                for job in jobs {
                    let _ = job.reply.send(Err(busy().into()));
                }
                for (_, reply) in writes {
                    let _ = reply.send(Err(busy()));
                }
            }
            Err(e) if jobs.len() + writes.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(single_failure(e).into()));
                } else if let Some((_, reply)) = writes.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(
                    batch = jobs.len() + writes.len(),
                    error = %DisplayChain(&e),
                    "append batch rolled back; writing its requests one by one to isolate the failing one"
                );
                self.stats.split_batches.fetch_add(1, Ordering::Relaxed);
                for (statement, reply) in writes {
                    let result = self.write_with_retry(&[], &[&statement]).await.and_then(
                        |(_, mut rows)| {
                            rows.pop()
                                .ok_or_else(|| Error::Corrupt("the writer ran no statement".into()))
                        },
                    );
                    let _ = reply.send(result);
                }
                for job in jobs {
                    let result = match self.write_with_retry(&[&job.request], &[]).await {
                        Ok((mut verdicts, _)) => match verdicts.pop() {
                            Some(v) => {
                                self.signal_work(std::iter::once((&job, &v)));
                                v.into()
                            }
                            None => Err(Error::Corrupt(
                                "the writer produced no verdict for a request".into(),
                            )
                            .into()),
                        },
                        Err(e) => Err(single_failure(e).into()),
                    };
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    /// Wakes `wait_for_work` callers when a committed request added effects or timers.
    /// `notify_one` after `notify_waiters` leaves a permit for a worker that is between two
    /// waits, so the signal is not lost while it is busy claiming.
    fn signal_work<'a>(&self, mut judged: impl Iterator<Item = (&'a Job, &'a Verdict)>) {
        let added = judged.any(|(job, verdict)| {
            matches!(verdict, Verdict::Committed { .. })
                && !(job.request.effects.is_empty() && job.request.timers.is_empty())
        });
        if added {
            self.work.notify_waiters();
            self.work.notify_one();
        }
    }

    /// Writes a batch, retrying the whole transaction when the write lock stays busy past
    /// SQLite's own busy timeout (another process writing a long batch). Retrying is safe:
    /// a busy error means the transaction did not commit, and the batch is judged again
    /// from scratch.
    async fn write_with_retry(
        &self,
        requests: &[&AppendRequest],
        statements: &[&Statement],
    ) -> Result<(Vec<Verdict>, Vec<Done>), Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = async {
                let mut conn = self.pool.acquire().await?;
                write_batch(&mut conn, requests, statements).await
            }
            .await;
            match result {
                Ok(written) => {
                    self.stats
                        .committed(requests.len(), statements.len(), started.elapsed());
                    for n in written.grouped {
                        self.stats.completed(n);
                    }
                    return Ok((written.verdicts, written.affected));
                }
                Err(Error::Busy { message, .. }) if attempt > self.busy_retries => {
                    return Err(Error::Busy {
                        attempts: attempt,
                        message,
                    });
                }
                Err(Error::Busy { message, .. }) => {
                    self.stats.busy_retries.fetch_add(1, Ordering::Relaxed);
                    let pause = Duration::from_millis(25u64 << attempt.min(6));
                    tracing::debug!(attempt, ?pause, %message, "append batch busy; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Judges and writes a batch, then runs the queued statements, in one `BEGIN IMMEDIATE`
/// transaction.
///
/// `BEGIN IMMEDIATE` takes the write lock before the first read, so the head of the chain
/// and the stream versions read below cannot change before COMMIT, even with another
/// process appending to the same file; a deferred transaction would instead fail with
/// SQLITE_BUSY_SNAPSHOT when it tried to upgrade its stale read to a write.
///
/// The number of statements does not grow with the batch: the batch's command ids and
/// streams are looked up in one read each, and each table gets one multi-row `INSERT` (per
/// chunk of [`MAX_PARAMS`] values), and those `INSERT`s go as one query. Each query is a
/// hop to sqlx's SQLite thread, and per-row statements made those hops, not SQLite, the
/// cost of a large batch.
async fn write_batch(
    conn: &mut SqliteConnection,
    requests: &[&AppendRequest],
    statements: &[&Statement],
) -> Result<Written, Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let verdicts = match requests.is_empty() {
        // A batch of other writes only: nothing to judge, no chain head to read.
        true => Vec::new(),
        false => append(&mut tx, requests).await?,
    };
    let mut affected: Vec<Option<Done>> = statements.iter().map(|_| None).collect();
    let grouped = complete_effects(&mut tx, statements, &mut affected).await?;
    for (s, done) in statements.iter().zip(affected.iter_mut()) {
        if done.is_none() {
            *done = Some(s.execute(&mut tx).await?);
        }
    }
    tx.commit().await?;
    let affected = affected
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    Ok(Written {
        verdicts,
        affected,
        grouped,
    })
}

/// What a committed batch wrote.
struct Written {
    verdicts: Vec<Verdict>,
    /// What each statement did, in order.
    affected: Vec<Done>,
    /// How many completions each grouped completion statement carried.
    grouped: Vec<usize>,
}

/// Writes the batch's outbox completions in one fenced `UPDATE … FROM (VALUES …)`, setting
/// the rows affected of each one it wrote in `affected`; returns the size of each
/// statement. A worker completes every delivery it makes, so a busy batch carries dozens:
/// one statement instead of one hop to SQLite's thread each.
///
/// Only the first completion of each effect id joins: SQLite's `RETURNING` can name only
/// the updated row, not which (id, token) pair matched it, so ids must be unique in the
/// statement. A repeat (a stale worker and the current one, say) runs alone afterwards and
/// finds the entry already done or still held under the other token, as it would have in
/// either order.
async fn complete_effects(
    conn: &mut SqliteConnection,
    statements: &[&Statement],
    affected: &mut [Option<Done>],
) -> Result<Vec<usize>, Error> {
    let mut seen = std::collections::HashSet::new();
    let group: Vec<(usize, &Completion)> = statements
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.completion.as_ref().map(|c| (i, c)))
        .filter(|(_, c)| seen.insert(c.effect_id.as_str()))
        .collect();
    if group.len() < 2 {
        return Ok(Vec::new());
    }
    let mut sizes = Vec::new();
    // Three values per completion: chunks stay far below the bound-value limit.
    for chunk in group.chunks(MAX_PARAMS / 3) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE outbox SET status = 'done', done_at = u.column3, leased_until = NULL \
             FROM (",
        );
        q.push_values(chunk, |mut row, (_, c)| {
            row.push_bind(c.effect_id.as_str())
                .push_bind(c.lease)
                .push_bind(c.now);
        });
        q.push(
            ") AS u WHERE outbox.effect_id = u.column1 AND outbox.leased_until = u.column2 \
             AND outbox.status = 'pending' RETURNING outbox.effect_id",
        );
        let done: Vec<(String,)> = q.build_query_as().fetch_all(&mut *conn).await?;
        let done: std::collections::HashSet<&str> = done.iter().map(|(id,)| id.as_str()).collect();
        for (i, c) in chunk {
            affected[*i] = Some(Done {
                affected: u64::from(done.contains(c.effect_id.as_str())),
                ..Done::default()
            });
        }
        sizes.push(chunk.len());
    }
    Ok(sizes)
}

/// Judges `requests` against the log and writes the committed ones.
async fn append(
    conn: &mut SqliteConnection,
    requests: &[&AppendRequest],
) -> Result<Vec<Verdict>, Error> {
    // The head of the chain is read once; the batch then continues it in memory. It is the
    // head record (`log_head`), as on PostgreSQL: after events were cut from the end, new
    // ones continue from where the log had got to, leaving the gap for `audit verify` to
    // name, instead of quietly continuing the shortened chain and hiding the cut. Events
    // running past the record were appended by a build from before it (an upgrade in
    // progress): they are the head then. One statement (one hop to SQLite's thread, once
    // per batch) reads both, the further on first, the record first on a tie.
    let found = sqlx::query(
        "SELECT position, hash, recorded FROM ( \
           SELECT position, hash, 1 AS recorded FROM log_head WHERE singleton = 1 \
           UNION ALL \
           SELECT position, hash, 0 FROM (SELECT position, hash FROM events \
                                          ORDER BY position DESC LIMIT 1)) \
         ORDER BY position DESC, recorded DESC",
    )
    .fetch_all(&mut *conn)
    .await?;
    // Both are read whole, so a damaged last event stops appends instead of extending a
    // broken chain, even when the record is the head.
    let mut heads = Vec::with_capacity(2);
    for row in &found {
        let recorded = sqlx::Row::try_get::<i64, _>(row, "recorded")? == 1;
        let table = if recorded { "log_head" } else { "events" };
        heads.push((recorded, rows::head_of(row, table)?));
    }
    if !heads.iter().any(|(recorded, _)| *recorded) {
        return Err(Error::Corrupt("log_head: the head row is missing".into()));
    }
    let head = heads[0].1;
    let command_ids: Vec<String> = requests.iter().map(|r| r.command_id.to_string()).collect();
    let streams: Vec<String> = requests.iter().map(|r| r.stream.0.to_string()).collect();
    let outcomes = stored_outcomes(conn, &command_ids).await?;
    let versions = stream_versions(conn, &streams).await?;
    let judged = judge(requests, head, outcomes, versions);
    write_rows(conn, &judged).await?;
    Ok(judged.verdicts)
}

/// SQLite's limit on bound values per statement is 32 766; chunks stay well under it.
pub(super) const MAX_PARAMS: usize = 30_000;

/// Appends ` IN (?, ?, …)` binding `keys`; callers chunk by [`MAX_PARAMS`].
pub(super) fn push_in_list<'a>(
    q: &mut QueryBuilder<Sqlite>,
    keys: impl IntoIterator<Item = &'a str>,
) {
    q.push(" IN (");
    let mut list = q.separated(", ");
    for key in keys {
        list.push_bind(key);
    }
    q.push(")");
}

/// `SELECT … IN (…)` over `keys`, in chunks of [`MAX_PARAMS`]; `tail` follows the list.
async fn select_in<T>(
    conn: &mut SqliteConnection,
    select: &str,
    keys: &[String],
    tail: &str,
) -> Result<Vec<T>, Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let mut found = Vec::new();
    for chunk in keys.chunks(MAX_PARAMS) {
        let mut q = QueryBuilder::<Sqlite>::new(select);
        push_in_list(&mut q, chunk.iter().map(String::as_str));
        q.push(tail);
        found.extend(q.build_query_as::<T>().fetch_all(&mut *conn).await?);
    }
    Ok(found)
}

fn parse_uuid(text: &str, column: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|_| Error::Corrupt(format!("{column}: not a UUID: {text}")))
}

/// Outcomes already stored for any of `command_ids`, by command id.
async fn stored_outcomes(
    conn: &mut SqliteConnection,
    command_ids: &[String],
) -> Result<HashMap<Uuid, String>, Error> {
    let rows: Vec<(String, String)> = select_in(
        conn,
        "SELECT command_id, outcome FROM commands WHERE command_id",
        command_ids,
        "",
    )
    .await?;
    rows.into_iter()
        .map(|(id, outcome)| Ok((parse_uuid(&id, "commands.command_id")?, outcome)))
        .collect()
}

/// Current version of each of `streams` that has events.
async fn stream_versions(
    conn: &mut SqliteConnection,
    streams: &[String],
) -> Result<HashMap<JourneyId, u64>, Error> {
    let rows: Vec<(String, i64)> = select_in(
        conn,
        "SELECT stream, MAX(stream_version) FROM events WHERE stream",
        streams,
        " GROUP BY stream",
    )
    .await?;
    rows.into_iter()
        .map(|(stream, v)| {
            let v = u64::try_from(v).map_err(|_| {
                Error::Corrupt(format!("events.stream_version: negative value {v}"))
            })?;
            Ok((JourneyId(parse_uuid(&stream, "events.stream")?), v))
        })
        .collect()
}

/// A batch's multi-row `INSERT`s, sent as one query: sqlx's SQLite driver runs the
/// statements of a query one after the other in a single hop to its thread, binding the
/// `?`s in order across them, so the whole write costs one hop instead of one per table
/// (+11 to 24 % grouped throughput, docs/benchmarks.md). sqlx 0.9 calls several statements
/// in one query a deprecated SQLite-only behaviour (launchbadge/sqlx#3108): should an
/// upgrade drop it, the contract suite fails on the missing outbox, command and journeys
/// rows, and the fix is one `execute` per statement, as before.
struct Inserts {
    q: QueryBuilder<Sqlite>,
    statements: usize,
}

impl Inserts {
    fn new() -> Self {
        Self {
            q: QueryBuilder::new(""),
            statements: 0,
        }
    }

    /// One multi-row `INSERT` per chunk of `rows` (`columns` values each); `tail` follows
    /// the values (an `ON CONFLICT` clause). Nothing for no rows.
    fn push<'r, T>(
        &mut self,
        insert: &str,
        columns: usize,
        rows: &'r [T],
        tail: &str,
        mut bind: impl FnMut(Separated<'_, Sqlite, &'static str>, &'r T),
    ) {
        // sqlx offsets only plain `?`s by the statements before them; a numbered `?1`
        // would bind a value of the first statement.
        debug_assert!(
            !insert.contains(['?', '$']) && !tail.contains(['?', '$']),
            "statements of a combined query bind with plain `?` in the values only"
        );
        for chunk in rows.chunks(MAX_PARAMS / columns) {
            if self.statements > 0 {
                self.q.push(";\n");
            }
            self.q.push(insert);
            self.q.push(" ");
            self.q.push_values(chunk, &mut bind);
            self.q.push(tail);
            self.statements += 1;
        }
    }

    /// Moves `log_head` to the batch's last event, in the same query and transaction as the
    /// events (see migration 0014).
    fn push_head(&mut self, position: i64, hash: &[u8]) {
        if self.statements > 0 {
            self.q.push(";\n");
        }
        self.q.push("UPDATE log_head SET position = ");
        self.q.push_bind(position);
        self.q.push(", hash = ");
        self.q.push_bind(hash.to_vec());
        self.q.push(" WHERE singleton = 1");
        self.statements += 1;
    }

    async fn execute(mut self, conn: &mut SqliteConnection) -> Result<(), Error> {
        if self.statements > 0 {
            // Not cached: the text differs with every batch's row counts.
            self.q.build().persistent(false).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Everything the committed requests of a batch write: one statement per table, all in
/// one query.
async fn write_rows(conn: &mut SqliteConnection, judged: &Judged<'_>) -> Result<(), Error> {
    let mut inserts = Inserts::new();
    // Text forms and range checks first: the binders below cannot fail.
    let events = judged
        .events
        .iter()
        .map(|e| {
            Ok((
                rows::to_i64(e.position, "position")?,
                rows::to_i64(e.version, "stream version")?,
                e.request.stream.0.to_string(),
                e.request.command_id.to_string(),
                e,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    inserts.push(
        "INSERT INTO events (position, stream, stream_version, event_type, schema_version, \
         payload, metadata, recorded_at, command_id, prev_hash, hash)",
        11,
        &events,
        "",
        |mut b, (position, version, stream, command_id, e)| {
            b.push_bind(*position)
                .push_bind(stream.as_str())
                .push_bind(*version)
                .push_bind(e.event.event_type.as_str())
                .push_bind(i64::from(e.event.schema_version))
                .push_bind(e.event.payload.as_str())
                .push_bind(e.request.metadata.as_str())
                .push_bind(e.request.recorded_at.as_millis())
                .push_bind(command_id.as_str())
                .push_bind(&e.prev_hash[..])
                .push_bind(&e.hash[..]);
        },
    );
    if let Some((position, .., last)) = events.last() {
        inserts.push_head(*position, &last.hash[..]);
    }

    let committed = judged
        .committed
        .iter()
        .map(|&req| {
            Ok((
                req,
                req.stream.0.to_string(),
                rows::to_i64(req.summary.version, "summary version")?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let effects: Vec<_> = committed
        .iter()
        .flat_map(|(req, stream, _)| req.effects.iter().map(move |e| (*req, stream, e)))
        .collect();
    inserts.push(
        "INSERT INTO outbox (effect_id, stream, kind, payload, available_at, created_at)",
        6,
        &effects,
        "",
        |mut b, (req, stream, e)| {
            b.push_bind(e.effect_id.to_string())
                .push_bind(stream.as_str())
                .push_bind(e.kind.as_str())
                .push_bind(e.payload.as_str())
                .push_bind(e.available_at.as_millis())
                .push_bind(req.recorded_at.as_millis());
        },
    );
    let timers: Vec<_> = committed
        .iter()
        .flat_map(|(req, stream, _)| req.timers.iter().map(move |t| (*req, stream, t)))
        .collect();
    inserts.push(
        "INSERT INTO timers (timer_id, stream, fire_at, payload, created_at)",
        5,
        &timers,
        "",
        |mut b, (req, stream, t)| {
            b.push_bind(t.timer_id.to_string())
                .push_bind(stream.as_str())
                .push_bind(t.fire_at.as_millis())
                .push_bind(t.payload.as_str())
                .push_bind(req.recorded_at.as_millis());
        },
    );
    inserts.push(
        "INSERT INTO commands (command_id, stream, outcome, recorded_at)",
        4,
        &committed,
        "",
        |mut b, (req, stream, _)| {
            b.push_bind(req.command_id.to_string())
                .push_bind(stream.as_str())
                .push_bind(req.outcome.as_str())
                .push_bind(req.recorded_at.as_millis());
        },
    );
    // SQLite applies a multi-row upsert row by row, so two requests for one journey in a
    // batch leave the second one's summary, exactly as two statements would (and
    // `stall_keep` keeps the stall deadline the first one set). The row is keyed by the
    // request's stream: that is the journey the events went to.
    inserts.push(
        "INSERT INTO journeys (journey_id, definition_id, definition_version, status, \
         current_step, email_masked, started_at, updated_at, version, subject, failures, \
         stall_at, stall_keep)",
        13,
        &committed,
        " ON CONFLICT (journey_id) DO UPDATE SET \
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
         stall_at = CASE WHEN excluded.stall_keep = 1 THEN journeys.stall_at \
                    ELSE excluded.stall_at END, \
         stall_keep = excluded.stall_keep",
        |mut b, (req, stream, summary_version)| {
            let s = &req.summary;
            b.push_bind(stream.as_str())
                .push_bind(s.definition_id.as_str())
                .push_bind(i64::from(s.definition_version))
                .push_bind(s.status.as_str())
                .push_bind(s.current_step.as_deref())
                .push_bind(s.email_masked.as_deref())
                .push_bind(s.started_at.as_millis())
                .push_bind(s.updated_at.as_millis())
                .push_bind(*summary_version)
                .push_bind(s.subject.as_deref())
                .push_bind(i64::from(s.failures))
                .push_bind(s.stall_at.map(|t| t.as_millis()))
                .push_bind(i64::from(s.stall_keep));
        },
    );
    let keys: Vec<_> = committed
        .iter()
        .filter_map(|(req, stream, _)| req.data_key.as_deref().map(|k| (*req, stream, k)))
        .collect();
    // An existing row wins: above all an erased one, which must stay erased.
    inserts.push(
        "INSERT INTO journey_keys (journey_id, data_key, created_at)",
        3,
        &keys,
        " ON CONFLICT (journey_id) DO NOTHING",
        |mut b, (req, stream, key)| {
            b.push_bind(stream.as_str())
                .push_bind(*key)
                .push_bind(req.recorded_at.as_millis());
        },
    );
    // Completed journeys' sessions commit with their events (`AppendRequest::session`).
    // They are written before the batch's queued statements, so a revocation queued
    // earlier in the same batch sees them; it revokes only sessions created up to its
    // password change, which such a session was, so R45 wants it revoked anyway.
    let sessions: Vec<_> = committed
        .iter()
        .filter_map(|(req, ..)| req.session.as_ref())
        .collect();
    inserts.push(
        "INSERT INTO sessions (session_hash, account_id, journey_id, kind, amr, created_at, \
         expires_at, password_fp)",
        8,
        &sessions,
        "",
        |mut b, s| {
            b.push_bind(s.session_hash.as_str())
                .push_bind(s.account_id.as_str())
                .push_bind(s.journey_id.as_deref())
                .push_bind(s.kind.as_str())
                .push_bind(s.amr.as_str())
                .push_bind(s.created_at.as_millis())
                .push_bind(s.expires_at.as_millis())
                .push_bind(s.password_fp.as_deref());
        },
    );
    inserts.execute(conn).await
}

/// Sets the lease token on the claimed rows: one UPDATE per claim, not one per row.
async fn lease_rows(
    conn: &mut SqliteConnection,
    table: &'static str,
    id_column: &'static str,
    ids: &[String],
    token: i64,
) -> Result<(), Error> {
    // One value more than the ids: the token.
    for chunk in ids.chunks(MAX_PARAMS - 1) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("UPDATE {table} SET leased_until = "));
        q.push_bind(token);
        q.push(format!(" WHERE {id_column}"));
        push_in_list(&mut q, chunk.iter().map(String::as_str));
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
