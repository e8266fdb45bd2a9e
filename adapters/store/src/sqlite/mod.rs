//! The embedded SQLite backend: [`SqliteStore`].
//!
//! One file holds the event log, the outbox, the timers, the read models and the account
//! directory. Several processes may open it at once (the CLI and a worker): SQLite's file
//! locks serialize their writers, WAL mode lets readers run beside a writer, and every write
//! transaction starts with `BEGIN IMMEDIATE` so it holds the write lock before its first
//! read (see [`writer`] for why that matters).

mod directory;
mod migrate;
mod rows;
mod writer;

use crate::batch::{Job, Stats, StoreStats};
use crate::error::Error;
use crate::{lease_token, wall_clock_ms};
use passage_core::ports::{
    AppendRequest, AppendResult, EventStore, JourneyFilter, JourneyId, JourneySummary, OutboxEntry,
    StoreError, StoredEvent, TimerEntry,
};
use passage_core::time::Timestamp;
use rows::event_columns;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;
use writer::{Queued, Statement, Writer};

pub use directory::Seeded;

/// The account directory lives in the same file and is served by the same handle.
pub type SqliteDirectory = SqliteStore;

/// How to open a [`SqliteStore`]. Build with struct update syntax:
/// `Options { group_commit: false, ..Options::default() }`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Commit concurrent appends together, one transaction (one fsync) per batch. Turn off
    /// only to measure what grouping buys: every append then gets its own transaction.
    pub group_commit: bool,
    /// Most appends in one group transaction.
    pub max_batch: usize,
    /// How long SQLite itself waits for another connection's lock before reporting busy.
    pub busy_timeout: Duration,
    /// How many times the append writer retries a batch that stayed busy past
    /// `busy_timeout`, before answering [`StoreError::Unavailable`].
    pub busy_retries: u32,
    /// Pooled connections for readers and the few writes outside the writer; the append
    /// writer has one more of its own.
    pub max_connections: u32,
    /// Read only: the file must exist, is opened with SQLite's read-only flag, and its
    /// schema is checked, not migrated; nothing this handle does can change it.
    pub read_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            read_only: false,
            group_commit: true,
            max_batch: 512,
            busy_timeout: Duration::from_secs(5),
            busy_retries: 3,
            max_connections: 8,
        }
    }
}

/// The SQLite event store and account directory. Cloning is cheap: clones share one pool
/// and one append writer.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    /// The append writer's own connection (the same pool as `pool` in memory).
    writer_pool: SqlitePool,
    /// The writer: appends and every other write go through it (see `writer`).
    writes: mpsc::Sender<Queued>,
    stats: Arc<Stats>,
    /// Signalled by this handle's writer after commits that add effects or timers. Other
    /// processes' appends are not seen here: `wait_for_work`'s timeout covers them.
    work: Arc<Notify>,
    /// When this handle last swept spent send-budget rows (ms since the epoch).
    budget_sweep: crate::budgets::SweepClock,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` with default [`Options`], and
    /// brings its schema up to date. Must be called inside a tokio runtime (sqlx's pool
    /// needs one); the append writer runs on a thread of its own.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with(path, Options::default()).await
    }

    pub async fn open_with(path: &Path, options: Options) -> Result<Self, Error> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(!options.read_only)
            .read_only(options.read_only);
        // WAL: readers never block the writer nor the other way round, and a commit appends
        // to the log instead of rewriting pages. Set by whoever writes: a read-only
        // connection may not change the journal mode (and the file is WAL already).
        // Never `immutable`, which would spare a reader the `-wal` and `-shm` files it
        // creates when no other connection is open: such a reader neither locks nor looks
        // for changes, so a writer starting meanwhile (or one reached through a symlink
        // under another name) would tear what it reads, and `audit verify` would report
        // tampering that is not there. docs/audit.md says whom to read as instead.
        let connect = if options.read_only {
            connect
        } else {
            connect.journal_mode(SqliteJournalMode::Wal)
        };
        let connect = connect
            // FULL: fsync the WAL at every commit, so a committed append survives a power
            // cut, not only a killed process. Group commit pays for it (see `writer`).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            // Erasure (ADR 0005): deleted rows are overwritten with zeros, not left in
            // free space where a byte search of the file would still find them.
            .pragma("secure_delete", "ON")
            // 32 MiB of page cache per connection instead of 2: the indexes a batch touches
            // stay in memory instead of being read back through the OS on every statement.
            .pragma("cache_size", "-32768")
            .foreign_keys(true);
        let open_err = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .connect_with(connect.clone())
            .await
            .map_err(open_err)?;
        // The writer keeps one connection of its own. SQLite empties a connection's page
        // cache whenever another connection committed since its last transaction, so a
        // writer taking any pooled connection started every batch cold (every page of the
        // indexes it touches read back through the OS); on its own connection its commits
        // keep its cache warm. Readers pay the invalidation either way.
        let writer_pool = SqlitePoolOptions::new()
            .max_connections(1)
            // No ping on each batch's acquire: a round trip to SQLite's thread for a
            // connection only this writer uses, whose failures the batch reports anyway.
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(connect);
        Self::start(pool, writer_pool, &options).await
    }

    /// A private in-memory database, for tests. It lives as long as the store: one pooled
    /// connection that is never closed, because every connection to `:memory:` would
    /// otherwise be a database of its own.
    pub async fn open_in_memory() -> Result<Self, Error> {
        let open_err = |source| Error::Open {
            path: ":memory:".into(),
            source,
        };
        // `sqlite::memory:` gets a unique shared-cache name from sqlx.
        let connect = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(open_err)?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await
            .map_err(open_err)?;
        // One connection is the whole database here, so the writer shares it.
        Self::start(pool.clone(), pool, &Options::default()).await
    }

    async fn start(
        pool: SqlitePool,
        writer_pool: SqlitePool,
        options: &Options,
    ) -> Result<Self, Error> {
        // Checked, not assumed: sqlx's pool needs tokio's timers, and would panic under
        // another executor.
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        {
            let mut conn = pool.acquire().await?;
            if options.read_only {
                migrate::check(&mut conn).await?;
            } else {
                migrate::run(&mut conn, wall_clock_ms()).await?;
            }
        }
        let max_batch = if options.group_commit {
            options.max_batch.max(1)
        } else {
            1
        };
        // Bounded, so a burst of appends waits in `append` instead of growing memory.
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4).max(64));
        let stats = Arc::new(Stats::default());
        let work = Arc::new(Notify::new());
        let writer = Writer {
            pool: writer_pool.clone(),
            rx,
            max_batch,
            busy_retries: options.busy_retries,
            stats: Arc::clone(&stats),
            work: Arc::clone(&work),
        };
        // The writer gets a thread and a runtime of its own. A batch is a few dozen hops to
        // sqlx's SQLite thread and back; as a task among the engine's, every hop back waited
        // in the runtime's queue behind whatever else was runnable, and the single writer,
        // which bounds the throughput, sat idle between its statements.
        //
        // The runtime is built on that thread: dropped here, in async context, after a
        // failed spawn, it would panic instead of returning the error.
        let (started, runtime_built) = oneshot::channel();
        std::thread::Builder::new()
            .name("passage-sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = started.send(Ok(()));
                        runtime.block_on(writer.run());
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
            })
            .map_err(Error::WriterThread)?;
        runtime_built
            .await
            .map_err(|_| Error::WriterStopped)?
            .map_err(Error::WriterThread)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                writer_pool,
                writes: tx,
                stats,
                work,
                budget_sweep: crate::budgets::SweepClock::default(),
            }),
        })
    }

    /// Counters of the append writer since open.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats.snapshot()
    }

    /// Closes the pool, waiting for checked-out connections to come back. Appends already
    /// committed are durable without this; it only makes shutdown tidy (and lets tests
    /// delete the file). Later calls on any clone fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
        self.inner.writer_pool.close().await;
    }

    /// A write transaction that holds the write lock from its first statement.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        Ok(self.inner.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Runs one write statement in the writer's next transaction; returns rows affected.
    pub(crate) async fn write(&self, statement: Statement) -> Result<u64, Error> {
        Ok(self.queue(statement).await?.affected)
    }

    /// Counts the message `token` against every budget in `charges`, atomically: all of
    /// them count it (or counted it within their window already) and the answer is `None`,
    /// or none does and the answer is the index of the first spent budget. The charge runs
    /// in the writer's transaction, so it is serialized with every other process's
    /// charges on this file (`passage serve` and `passage bot` both deliver).
    pub async fn charge_budgets(
        &self,
        now: Timestamp,
        token: Uuid,
        charges: &[crate::BudgetCharge],
    ) -> Result<Option<usize>, Error> {
        if charges.is_empty() {
            return Ok(None);
        }
        let budgets = charges
            .iter()
            .map(|c| (c.key.clone(), c.window_ms(), c.max))
            .collect();
        let done = self
            .queue(Statement::charge(
                budgets,
                token.to_string(),
                now.as_millis(),
            ))
            .await?;
        if done.spent.is_none()
            && self.inner.budget_sweep.due(now.as_millis())
            && let Err(e) = self.sweep_budgets(now).await
        {
            // The charge committed; the rows it would have deleted wait for the next sweep.
            tracing::warn!(
                "failed to sweep spent send-budget rows: {}",
                crate::batch::DisplayChain(&e)
            );
        }
        Ok(done.spent)
    }

    /// Deletes every send-budget row whose window has passed at `now`; returns how many.
    pub async fn sweep_budgets(&self, now: Timestamp) -> Result<u64, Error> {
        self.write(
            Statement::new("DELETE FROM send_budget_uses WHERE expires_at <= ?1")
                .int(now.as_millis()),
        )
        .await
    }

    async fn queue(&self, statement: Statement) -> Result<writer::Done, Error> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(Queued::Write { statement, reply })
            .await
            .map_err(|_| Error::WriterStopped)?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    async fn append_inner(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(Queued::Append(Box::new(Job { request, reply })))
            .await
            .map_err(|_| Error::WriterStopped)?;
        // A dropped reply means the writer died with the request in hand: whether it
        // committed is unknown, which a retry with the same command id resolves.
        answer.await.map_err(|_| Error::WriterStopped)?
    }

    async fn command_outcome_inner(&self, command_id: Uuid) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT outcome FROM commands WHERE command_id = ?1")
                .bind(command_id.to_string())
                .fetch_optional(&self.inner.pool)
                .await?,
        )
    }

    async fn read_stream_inner(&self, stream: JourneyId) -> Result<Vec<StoredEvent>, Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream = ?1 ORDER BY stream_version"
        ))
        .bind(stream.0.to_string())
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(rows::event).collect()
    }

    /// The `log_head` row: the position and hash of the last appended event, as the writer's
    /// transaction that appended it recorded them (position 0 for an empty log).
    pub async fn recorded_head(&self) -> Result<(u64, passage_core::ports::Hash), Error> {
        let row = sqlx::query("SELECT position, hash FROM log_head WHERE singleton = 1")
            .fetch_optional(&self.inner.pool)
            .await?
            .ok_or_else(|| Error::Corrupt("log_head: the head row is missing".into()))?;
        rows::head_of(&row, "log_head")
    }

    async fn head_inner(&self) -> Result<Option<(u64, passage_core::ports::Hash)>, Error> {
        let row = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
            .fetch_optional(&self.inner.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let position: i64 = sqlx::Row::try_get(&row, "position")?;
        let hash: Vec<u8> = sqlx::Row::try_get(&row, "hash")?;
        let hash: passage_core::ports::Hash = hash
            .try_into()
            .map_err(|_| Error::Corrupt("events.hash is not 32 bytes".into()))?;
        Ok(Some((u64::try_from(position).unwrap_or(0), hash)))
    }

    async fn read_all_inner(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Positions are assigned under the write lock and become visible only at COMMIT, so
        // a reader never sees position n+1 before n: paging by `after` cannot skip an event.
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        ))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(rows::event).collect()
    }

    async fn save_definition_inner(
        &self,
        content_hash: &str,
        definition_id: &str,
        version: u32,
        source: &str,
    ) -> Result<(), Error> {
        // Content-addressed: a second save of the same hash is the same definition, so the
        // first row stays (OR IGNORE) and saving is idempotent.
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT OR IGNORE INTO definitions (content_hash, definition_id, version, source, \
             saved_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(content_hash)
        .bind(definition_id)
        .bind(i64::from(version))
        .bind(source)
        .bind(wall_clock_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn load_definition_inner(&self, content_hash: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT source FROM definitions WHERE content_hash = ?1")
                .bind(content_hash)
                .fetch_optional(&self.inner.pool)
                .await?,
        )
    }

    async fn due_stalls_inner(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JourneySummary>, Error> {
        let rows = sqlx::query(
            "SELECT journey_id, definition_id, definition_version, status, current_step, \
             email_masked, started_at, updated_at, version, subject, failures, stall_at \
             FROM journeys WHERE stall_at IS NOT NULL AND stall_at <= ?1 \
             ORDER BY stall_at, journey_id LIMIT ?2",
        )
        .bind(now.as_millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(rows::journey).collect()
    }

    async fn journeys_by_subject_inner(
        &self,
        subject: &str,
        since: Timestamp,
    ) -> Result<Vec<JourneySummary>, Error> {
        let rows = sqlx::query(
            "SELECT journey_id, definition_id, definition_version, status, current_step, \
             email_masked, started_at, updated_at, version, subject, failures, stall_at FROM journeys \
             WHERE subject = ?1 AND updated_at >= ?2 ORDER BY updated_at DESC, journey_id",
        )
        .bind(subject)
        .bind(since.as_millis())
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(rows::journey).collect()
    }

    async fn list_journeys_inner(
        &self,
        filter: JourneyFilter,
    ) -> Result<Vec<JourneySummary>, Error> {
        const DEFAULT_LIMIT: usize = 100;
        let limit = if filter.limit == 0 {
            DEFAULT_LIMIT
        } else {
            filter.limit
        };
        // The masked address, the pseudonym and the id each switch the statement to a form
        // with a plain equality on their indexed column (an `(x IS NULL OR col = x)` term
        // hides it and the planner scans the table). The other filters stay in that form:
        // a NULL parameter disables its condition. journey_id breaks ties so pages are
        // stable.
        let by_email = if filter.email_masked.is_some() {
            "email_masked = ?1 AND email_masked IS NOT NULL"
        } else {
            "?1 IS NULL"
        };
        let by_subject = if filter.subject.is_some() {
            "subject = ?9 AND subject IS NOT NULL"
        } else {
            "?9 IS NULL"
        };
        let by_id = if filter.journey_id.is_some() {
            "journey_id = ?10"
        } else {
            "?10 IS NULL"
        };
        let sql = format!(
            "SELECT journey_id, definition_id, definition_version, status, current_step, \
             email_masked, started_at, updated_at, version, subject, failures, stall_at \
             FROM journeys WHERE {by_email} AND {by_subject} AND {by_id} \
             AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR definition_id = ?3) \
             AND (?4 IS NULL OR current_step = ?4) \
             AND (?5 IS NULL OR updated_at >= ?5) AND (?6 IS NULL OR updated_at < ?6) \
             ORDER BY updated_at DESC, journey_id LIMIT ?7 OFFSET ?8"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.email_masked.as_deref())
            .bind(filter.status.as_deref())
            .bind(filter.definition_id.as_deref())
            .bind(filter.current_step.as_deref())
            .bind(filter.updated_from.map(|t| t.as_millis()))
            .bind(filter.updated_to.map(|t| t.as_millis()))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(filter.offset).unwrap_or(i64::MAX))
            .bind(filter.subject.as_deref())
            .bind(filter.journey_id.map(|id| id.to_string()))
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter().map(rows::journey).collect()
    }

    async fn claim_effects_inner(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: Option<&str>,
        stream: Option<JourneyId>,
    ) -> Result<Vec<OutboxEntry>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Select and lease in one write transaction (the writer's): two dispatchers (two
        // processes) can never both see an entry as free.
        let token = lease_token(now, lease);
        let claim = Statement::claim(
            "SELECT effect_id, stream, kind, payload, attempts FROM outbox \
             WHERE status = 'pending' AND available_at <= ?1 \
             AND (leased_until IS NULL OR leased_until <= ?1) \
             AND (?3 IS NULL OR kind <> ?3) \
             AND (?4 IS NULL OR stream = ?4) \
             ORDER BY available_at, created_at, effect_id LIMIT ?2",
            "outbox",
            "effect_id",
            token.as_millis(),
        )
        .int(now.as_millis())
        .int(i64::try_from(limit).unwrap_or(i64::MAX))
        .opt_text(skip_kind)
        .opt_text(stream.map(|s| s.to_string()).as_deref());
        let done = self.queue(claim).await?;
        done.rows
            .iter()
            .map(|row| rows::outbox_entry(row, token))
            .collect()
    }

    // The three fenced updates below need no write transaction of their own: a single
    // UPDATE is atomic, and its WHERE clause (still pending, still leased with this token)
    // is the whole check.

    async fn complete_effect_inner(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let done = self
            .write(Statement::complete_effect(
                effect_id.to_string(),
                lease.as_millis(),
                now.as_millis(),
            ))
            .await?;
        Ok(done == 1)
    }

    async fn reschedule_effect_inner(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        retry_at: Option<Timestamp>,
        error: &str,
    ) -> Result<bool, Error> {
        let statement = match retry_at {
            Some(at) => Statement::new(
                "UPDATE outbox SET attempts = attempts + 1, available_at = ?3, \
                 leased_until = NULL, last_error = ?4 \
                 WHERE effect_id = ?1 AND status = 'pending' AND leased_until = ?2",
            )
            .text(effect_id.to_string())
            .int(lease.as_millis())
            .int(at.as_millis())
            .text(error),
            None => Statement::new(
                "UPDATE outbox SET attempts = attempts + 1, status = 'dead', \
                 leased_until = NULL, last_error = ?3 \
                 WHERE effect_id = ?1 AND status = 'pending' AND leased_until = ?2",
            )
            .text(effect_id.to_string())
            .int(lease.as_millis())
            .text(error),
        };
        Ok(self.write(statement).await? == 1)
    }

    async fn claim_timers_inner(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        stream: Option<JourneyId>,
    ) -> Result<Vec<TimerEntry>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let token = lease_token(now, lease);
        let claim = Statement::claim(
            "SELECT timer_id, stream, fire_at, payload FROM timers \
             WHERE status = 'pending' AND fire_at <= ?1 \
             AND (leased_until IS NULL OR leased_until <= ?1) \
             AND (?3 IS NULL OR stream = ?3) \
             ORDER BY fire_at, created_at, timer_id LIMIT ?2",
            "timers",
            "timer_id",
            token.as_millis(),
        )
        .int(now.as_millis())
        .int(i64::try_from(limit).unwrap_or(i64::MAX))
        .opt_text(stream.map(|s| s.to_string()).as_deref());
        let done = self.queue(claim).await?;
        done.rows
            .iter()
            .map(|row| rows::timer_entry(row, token))
            .collect()
    }

    async fn complete_timer_inner(
        &self,
        timer_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let fired = self
            .write(
                Statement::new(
                    "UPDATE timers SET status = 'fired', fired_at = ?3, leased_until = NULL \
                     WHERE timer_id = ?1 AND status = 'pending' AND leased_until = ?2",
                )
                .text(timer_id.to_string())
                .int(lease.as_millis())
                .int(now.as_millis()),
            )
            .await?;
        Ok(fired == 1)
    }

    async fn next_due_inner(&self) -> Result<Option<Timestamp>, Error> {
        // Leases are ignored on purpose: a leased entry is due at its lease's end at the
        // latest, and the caller polls again anyway, so "earliest due" never oversleeps.
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(due) FROM ( \
               SELECT MIN(available_at) AS due FROM outbox WHERE status = 'pending' \
               UNION ALL \
               SELECT MIN(fire_at) AS due FROM timers WHERE status = 'pending')",
        )
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(next.map(Timestamp))
    }
}

impl EventStore for SqliteStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        self.append_inner(request).await
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<String>, StoreError> {
        Ok(self.command_outcome_inner(command_id).await?)
    }

    async fn read_stream(&self, stream: JourneyId) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self.read_stream_inner(stream).await?)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(self.read_all_inner(after, limit).await?)
    }

    async fn head(&self) -> Result<Option<(u64, passage_core::ports::Hash)>, StoreError> {
        Ok(self.head_inner().await?)
    }

    async fn save_checkpoint(
        &self,
        checkpoint: &passage_core::ports::Checkpoint,
    ) -> Result<(), StoreError> {
        Ok(self.save_checkpoint_inner(checkpoint).await?)
    }

    async fn checkpoints(&self) -> Result<Vec<passage_core::ports::Checkpoint>, StoreError> {
        Ok(self.checkpoints_inner().await?)
    }

    async fn save_definition(
        &self,
        content_hash: &str,
        definition_id: &str,
        version: u32,
        source: &str,
    ) -> Result<(), StoreError> {
        Ok(self
            .save_definition_inner(content_hash, definition_id, version, source)
            .await?)
    }

    async fn load_definition(&self, content_hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self.load_definition_inner(content_hash).await?)
    }

    async fn list_journeys(
        &self,
        filter: JourneyFilter,
    ) -> Result<Vec<JourneySummary>, StoreError> {
        Ok(self.list_journeys_inner(filter).await?)
    }

    async fn due_stalls(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JourneySummary>, StoreError> {
        Ok(self.due_stalls_inner(now, limit).await?)
    }

    async fn journeys_by_subject(
        &self,
        subject: &str,
        since: Timestamp,
    ) -> Result<Vec<JourneySummary>, StoreError> {
        Ok(self.journeys_by_subject_inner(subject, since).await?)
    }

    async fn claim_effects(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .claim_effects_inner(now, lease, limit, None, None)
            .await?)
    }

    async fn claim_effects_except(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: &str,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .claim_effects_inner(now, lease, limit, Some(skip_kind), None)
            .await?)
    }

    async fn claim_journey_effects(
        &self,
        stream: JourneyId,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: Option<&str>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .claim_effects_inner(now, lease, limit, skip_kind, Some(stream))
            .await?)
    }

    async fn complete_effect(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self.complete_effect_inner(effect_id, lease, now).await?)
    }

    async fn reschedule_effect(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        retry_at: Option<Timestamp>,
        error: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .reschedule_effect_inner(effect_id, lease, retry_at, error)
            .await?)
    }

    async fn claim_timers(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        Ok(self.claim_timers_inner(now, lease, limit, None).await?)
    }

    async fn claim_journey_timers(
        &self,
        stream: JourneyId,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        Ok(self
            .claim_timers_inner(now, lease, limit, Some(stream))
            .await?)
    }

    async fn complete_timer(
        &self,
        timer_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(self.complete_timer_inner(timer_id, lease, now).await?)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.next_due_inner().await?)
    }

    async fn wait_for_work(&self, timeout: Duration) {
        // SQLite has no cross-process notification: this handle's own appends wake the
        // wait at once, another process's are found when the timeout ends it.
        let _ = tokio::time::timeout(timeout, self.inner.work.notified()).await;
    }

    async fn journey_key(
        &self,
        stream: JourneyId,
    ) -> Result<Option<passage_core::ports::StoredDataKey>, StoreError> {
        Ok(self.journey_key_inner(stream).await?)
    }

    async fn erase_journey(
        &self,
        stream: JourneyId,
        reason: &str,
        now: Timestamp,
    ) -> Result<passage_core::ports::JourneyErasure, StoreError> {
        Ok(self.erase_journey_inner(stream, reason, now).await?)
    }

    async fn retention_due(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<JourneyId>, StoreError> {
        Ok(self.retention_due_inner(before, limit).await?)
    }

    async fn purge_erased(&self) -> Result<(), StoreError> {
        Ok(self.purge_erased_inner().await?)
    }
}

crate::operators::operator_sql!(SqliteStore, "?", pool, crate::operators::sqlite_disabled);
crate::checkpoints::checkpoint_sql!(SqliteStore, "?", pool);
crate::personal::personal_sql!(SqliteStore, "?", "", "BEGIN IMMEDIATE", pool);

impl SqliteStore {
    /// Deleted rows are zeroed in place (`secure_delete`), but their older page images stay
    /// in the write-ahead log until it is checkpointed: fold it into the file and cut it to
    /// nothing, so a copy of the files holds no erased byte.
    async fn purge_erased_inner(&self) -> Result<(), Error> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passage_core::ports::AppendResult;

    /// The writer has a connection of its own: readers holding every pooled connection (an
    /// audit export, a slow search) neither stall appends nor the writes queued behind them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_holding_every_pooled_connection_do_not_stall_appends() {
        let path = std::env::temp_dir().join(format!("passage-writer-{}.db", Uuid::new_v4()));
        let options = Options {
            max_connections: 2,
            ..Options::default()
        };
        let store = SqliteStore::open_with(&path, options).await.expect("open");
        let held = [
            store.inner.pool.acquire().await.expect("reader 1"),
            store.inner.pool.acquire().await.expect("reader 2"),
        ];
        let request = crate::contract::request(JourneyId(Uuid::new_v4()), 0, 1);
        let appended = tokio::time::timeout(Duration::from_secs(5), store.append(request)).await;
        assert!(
            matches!(appended, Ok(Ok(AppendResult::Committed { .. }))),
            "an append with every reader connection held: {appended:?}"
        );
        drop(held);
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
