//! The PostgreSQL backend: [`PgStore`], for several engine nodes sharing one database.
//!
//! Same tables and semantics as the SQLite backend, plus what several nodes need:
//!
//! - **Global order readers can trust**: appends serialize on the single `log_head` row, so
//!   positions are assigned in commit order and `read_all(after)` never skips an event that
//!   commits late (docs/adr/0004-postgres-global-order.md; the [`writer`] module).
//! - **Group commit**: one writer task per handle puts all waiting appends in one
//!   transaction with bulk `UNNEST` inserts.
//! - **Leases**: outbox entries and timers are claimed with `FOR UPDATE SKIP LOCKED`, and
//!   only the holder of the claim's token can complete or reschedule them; a dead node's
//!   claims lapse after the lease.
//! - **No busy polling**: `wait_for_work` is woken by LISTEN/NOTIFY ([`listener`]).
//! - **Isolation**: [`Options::schema`] puts every table in a schema of its own (created if
//!   missing, set as the search_path of every pooled connection), which is how tests get a
//!   fresh store each.

mod budgets;
mod completer;
mod directory;
mod listener;
mod migrate;
mod rows;
mod windows;
mod writer;

use crate::batch::{Job, Stats, StoreStats};
use crate::budgets::SweepClock;
use crate::error::Error;
use crate::{lease_token, wall_clock_ms};
use completer::{Completer, Completion};
use passage_core::ports::{
    AppendRequest, AppendResult, EventStore, JourneyFilter, JourneyId, JourneySummary, OutboxEntry,
    StoreError, StoredEvent, TimerEntry,
};
use passage_core::time::Timestamp;
use rows::event_columns;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;
use writer::{Queued, Write, Writer};

/// Connections of the abuse counters' own pool per handle, and how long a counter waits for
/// one before its caller hears an error (a send is then retried; a request is counted in the
/// node's memory).
const COUNTER_CONNECTIONS: u32 = 3;
const COUNTER_ACQUIRE: Duration = Duration::from_secs(2);

/// How to connect a [`PgStore`]. Build with struct update syntax:
/// `Options { schema: Some("t_1".into()), ..Options::default() }`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Commit concurrent appends of this handle together, one transaction per batch, and
    /// complete concurrent outbox entries with one statement. Turn off only to measure what
    /// grouping buys.
    pub group_commit: bool,
    /// Most appends in one group transaction.
    pub max_batch: usize,
    /// Pooled connections (the append writer takes one per batch; reads and claims share
    /// the rest). The LISTEN connection is extra, opened by the first `wait_for_work`.
    pub max_connections: u32,
    /// The schema holding every table, created if missing and set as the search_path of
    /// every pooled connection. `None` uses whatever the connection's search_path resolves
    /// to (usually `public`). 1 to 48 ASCII letters, digits or underscores.
    pub schema: Option<String>,
    /// How long a statement waits for a lock (chiefly the append lock on `log_head`)
    /// before the append fails as busy: a node that hangs inside a transaction must not
    /// stall every other node forever.
    pub lock_timeout: Duration,
    /// Read only: the schema is checked, not migrated, and every transaction is read-only
    /// (`default_transaction_read_only`), so a role with SELECT alone can read, and nothing
    /// this handle does can change the database (a write fails at the server).
    pub read_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            group_commit: true,
            max_batch: 512,
            max_connections: 8,
            schema: None,
            lock_timeout: Duration::from_secs(10),
            read_only: false,
        }
    }
}

/// The PostgreSQL event store and account directory. Cloning is cheap: clones share one
/// pool, one append writer and one listener.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    /// The writer's queue: appends, and with grouping on the directory's writes too.
    appends: mpsc::Sender<Queued>,
    /// Whether sessions, revocations and password changes go through the writer (grouping
    /// on) or run as statements of their own.
    group_writes: bool,
    /// The completer's queue; `None` with grouping off, where each completion is a
    /// statement of its own.
    completions: Option<mpsc::Sender<Completion>>,
    stats: Arc<Stats>,
    /// The schema the tables live in, and whether it is this store's own (droppable).
    schema: String,
    own_schema: bool,
    /// Wakes `wait_for_work`; signalled by the listener task.
    work: Arc<Notify>,
    channel: String,
    /// The listener's own one-connection pool, created lazily (no connection until the
    /// first `wait_for_work`).
    listen_pool: PgPool,
    /// Set when the listener task is started; dropping it (with the last handle) stops it.
    listener: OnceLock<oneshot::Sender<()>>,
    runtime: tokio::runtime::Handle,
    /// The abuse counters' own small pool (see `connect_with`).
    counter_pool: PgPool,
    /// When this handle last swept spent send-budget rows (ms since the epoch).
    budget_sweep: SweepClock,
    /// When this handle last swept ended rate-limit windows (ms since the epoch).
    window_sweep: SweepClock,
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = url[..scheme_end].to_owned();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    // A password may also travel as a query parameter.
    let tail = &rest[authority_end..];
    match tail.find("password=") {
        Some(p) => {
            let value_start = p + "password=".len();
            let value_end = tail[value_start..]
                .find('&')
                .map_or(tail.len(), |e| value_start + e);
            out.push_str(&tail[..value_start]);
            out.push_str("***");
            out.push_str(&tail[value_end..]);
        }
        None => out.push_str(tail),
    }
    out
}

fn validate_schema(name: &str) -> Result<(), Error> {
    let ok = (1..=48).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSchema(name.to_owned()))
    }
}

/// How long the first connection may take before start-up gives up, naming the server.
/// As long as the pool's own acquire timeout: a server that wakes slowly (an auto-paused
/// managed database) starts as before.
const FIRST_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl PgStore {
    /// The `log_head` row: the position and hash of the last appended event, as the append
    /// that wrote it recorded them (position 0 for an empty log).
    pub async fn recorded_head(&self) -> Result<(u64, passage_core::ports::Hash), Error> {
        let row = sqlx::query("SELECT position, hash FROM log_head WHERE singleton")
            .fetch_optional(&self.inner.pool)
            .await?
            .ok_or_else(|| Error::Corrupt("log_head: the head row is missing".into()))?;
        rows::head(&row)
    }

    /// Connects with default [`Options`] and brings the schema up to date. Must be called
    /// inside a tokio runtime: it spawns the append writer.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, Options::default()).await
    }

    pub async fn connect_with(url: &str, options: Options) -> Result<Self, Error> {
        // Checked, not assumed: `tokio::spawn` would panic under another executor.
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if let Some(schema) = &options.schema {
            validate_schema(schema)?;
        }
        let target = redact(url);
        let connect_err = |source| Error::Connect {
            target: target.clone(),
            source,
        };
        let connect = PgConnectOptions::from_str(url)
            .map_err(connect_err)?
            .application_name("passage");

        // Every pooled connection gets the same session settings before first use.
        // Notices ("relation … already exists, skipping" from the migrations' IF NOT
        // EXISTS) are not news to an operator; warnings and errors still come through.
        let mut setup = format!(
            "SET lock_timeout = {}; SET client_min_messages = warning",
            options.lock_timeout.as_millis()
        );
        if let Some(schema) = &options.schema {
            // Validated above: a plain identifier, safe inside double quotes.
            setup.push_str(&format!("; SET search_path TO \"{schema}\""));
        }
        if options.read_only {
            setup.push_str("; SET default_transaction_read_only = on");
        }
        // One plain connection first: the pool retries a failing connect until its acquire
        // timeout (30 s) and then reports only "pool timed out", hiding "connection refused",
        // a wrong password or a missing database.
        match tokio::time::timeout(FIRST_CONNECT_TIMEOUT, PgConnection::connect_with(&connect))
            .await
        {
            Ok(Ok(first)) => {
                let _ = first.close().await;
            }
            Ok(Err(source)) => return Err(connect_err(source)),
            Err(_) => {
                return Err(connect_err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", FIRST_CONNECT_TIMEOUT.as_secs()),
                ))));
            }
        }
        let setup: Arc<str> = setup.into();
        let with_setup = |pool: PgPoolOptions| {
            let setup = Arc::clone(&setup);
            pool.after_connect(move |conn, _meta| {
                let setup = Arc::clone(&setup);
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(setup.to_string()))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
        };
        let pool = with_setup(PgPoolOptions::new().max_connections(options.max_connections.max(2)))
            .connect_with(connect.clone())
            .await
            .map_err(connect_err)?;
        // The abuse counters (send budgets, per-client windows) get connections of their
        // own: a burst of charges queueing on one budget's lock, or a flood of requests from
        // one client, must not take the connections appends and reads need. Their callers
        // wait at most COUNTER_ACQUIRE for one.
        let counter_pool = with_setup(
            PgPoolOptions::new()
                .max_connections(COUNTER_CONNECTIONS)
                .min_connections(0)
                .acquire_timeout(COUNTER_ACQUIRE),
        )
        .connect_lazy_with(connect.clone());
        // One counter connection made now, off the caller's path: a node's first rate-limit
        // hit must not spend its half-second wait on connecting.
        runtime.spawn({
            let counters = counter_pool.clone();
            async move {
                let _ = counters.acquire().await;
            }
        });

        let schema = {
            let mut conn = pool.acquire().await?;
            if options.read_only {
                migrate::check(&mut conn, options.schema.as_deref()).await?
            } else {
                migrate::run(&mut conn, options.schema.as_deref(), wall_clock_ms()).await?
            }
        };
        let channel = listener::channel_name(&schema);
        // LISTEN needs no search_path, and must not wait behind appends for a connection.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(connect);

        let max_batch = if options.group_commit {
            options.max_batch.max(1)
        } else {
            1
        };
        // Bounded, so a burst of appends waits in `append` instead of growing memory.
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4).max(64));
        let stats = Arc::new(Stats::default());
        runtime.spawn(
            Writer {
                pool: pool.clone(),
                rx,
                max_batch,
                retries: 3,
                stats: Arc::clone(&stats),
                channel: channel.clone(),
            }
            .run(),
        );
        let completions = options.group_commit.then(|| {
            let (completions, rx) = mpsc::channel(1024);
            runtime.spawn(
                Completer {
                    pool: pool.clone(),
                    rx,
                    stats: Arc::clone(&stats),
                }
                .run(),
            );
            completions
        });
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                appends: tx,
                group_writes: options.group_commit,
                completions,
                stats,
                schema,
                own_schema: options.schema.is_some(),
                work: Arc::new(Notify::new()),
                channel,
                listen_pool,
                listener: OnceLock::new(),
                runtime,
                counter_pool,
                budget_sweep: SweepClock::default(),
                window_sweep: SweepClock::default(),
            }),
        })
    }

    /// Runs `sweep` (rows of the abuse counters past their window) in a task of its own
    /// when `clock` finds one due at `now_ms`: the charge or hit that found it due does not
    /// wait for it. A failure is logged and left for the next sweep.
    fn sweep_in_background<F, Fut>(
        &self,
        clock: &SweepClock,
        now_ms: i64,
        what: &'static str,
        sweep: F,
    ) where
        F: FnOnce(PgStore, Timestamp) -> Fut,
        Fut: std::future::Future<Output = Result<u64, Error>> + Send + 'static,
    {
        if !clock.due(now_ms) {
            return;
        }
        let swept = sweep(self.clone(), Timestamp::from_millis(now_ms));
        self.inner.runtime.spawn(async move {
            if let Err(e) = swept.await {
                tracing::warn!("failed to sweep {what}: {}", crate::batch::DisplayChain(&e));
            }
        });
    }

    /// Counters of this handle's append writer and outbox completer since connect.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats.snapshot()
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Closes the pools (the listener's too), waiting for checked-out connections to come
    /// back. Committed appends are durable without this. Later calls on any clone fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.listen_pool.close().await;
        self.inner.counter_pool.close().await;
        self.inner.pool.close().await;
    }

    /// Drops this store's schema with everything in it: cleanup for tests that connected
    /// with [`Options::schema`]. Refuses ([`Error::NoOwnSchema`]) when the store uses the
    /// search_path's schema. Other handles on the schema fail afterwards.
    pub async fn drop_schema(&self) -> Result<(), Error> {
        if !self.inner.own_schema {
            return Err(Error::NoOwnSchema);
        }
        // Validated at connect: a plain identifier.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.inner.schema
        )))
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    fn ensure_listener(&self) {
        let inner = &self.inner;
        inner.listener.get_or_init(|| {
            let (stop, stopped) = oneshot::channel();
            inner.runtime.spawn(listener::run(
                inner.listen_pool.clone(),
                inner.channel.clone(),
                Arc::clone(&inner.work),
                stopped,
            ));
            stop
        });
    }

    async fn append_inner(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued::Append(Box::new(Job { request, reply }));
        self.through_writer(queued, answer).await?
    }

    /// Commits a session, revocation or password change and returns the rows it affected:
    /// with grouping on in one of the writer's next batches (the next unless it must wait
    /// behind another write of its account), with grouping off as a statement of its own.
    async fn write(&self, write: Write) -> Result<u64, Error> {
        if !self.inner.group_writes {
            let mut conn = self.inner.pool.acquire().await?;
            let affected = writer::write_alone(&mut conn, &[&write], &self.inner.channel).await?;
            return affected
                .first()
                .copied()
                .ok_or_else(|| Error::Corrupt("the statement counted no write".into()));
        }
        let (reply, answer) = oneshot::channel();
        self.through_writer(Queued::Write(write, reply), answer)
            .await?
    }

    /// Queues `queued` for the writer and waits for its answer on `answer`. A dropped reply
    /// means the writer died with the request in hand: whether it committed is unknown,
    /// which a retry resolves (an append's command id makes it a duplicate).
    async fn through_writer<T>(
        &self,
        queued: Queued,
        answer: oneshot::Receiver<T>,
    ) -> Result<T, Error> {
        self.inner
            .appends
            .send(queued)
            .await
            .map_err(|_| Error::WriterStopped)?;
        answer.await.map_err(|_| Error::WriterStopped)
    }

    async fn command_outcome_inner(&self, command_id: Uuid) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT outcome FROM commands WHERE command_id = $1")
                .bind(command_id)
                .fetch_optional(&self.inner.pool)
                .await?,
        )
    }

    async fn read_stream_inner(&self, stream: JourneyId) -> Result<Vec<StoredEvent>, Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream = $1 ORDER BY stream_version"
        ))
        .bind(stream.0)
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(rows::event).collect()
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
        // Safe to page by position: positions are assigned under the `log_head` lock and
        // that lock is held until COMMIT, so the transaction that wrote position n committed
        // before the one writing n+1 could even start. A snapshot that shows n+1 therefore
        // shows n: a reader can never see past a gap that a slower commit fills later.
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE position > $1 ORDER BY position LIMIT $2"
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
        // Content-addressed: the first row for a hash stays, so saving is idempotent (also
        // when two nodes save the same definition at once).
        sqlx::query(
            "INSERT INTO definitions (content_hash, definition_id, version, source, saved_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (content_hash) DO NOTHING",
        )
        .bind(content_hash)
        .bind(definition_id)
        .bind(i64::from(version))
        .bind(source)
        .bind(wall_clock_ms())
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    async fn load_definition_inner(&self, content_hash: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT source FROM definitions WHERE content_hash = $1")
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
             FROM journeys WHERE stall_at IS NOT NULL AND stall_at <= $1 \
             ORDER BY stall_at, journey_id LIMIT $2",
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
             WHERE subject = $1 AND updated_at >= $2 ORDER BY updated_at DESC, journey_id",
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
            "email_masked = $1 AND email_masked IS NOT NULL"
        } else {
            "$1::text IS NULL"
        };
        let by_subject = if filter.subject.is_some() {
            "subject = $9 AND subject IS NOT NULL"
        } else {
            "$9::text IS NULL"
        };
        let by_id = if filter.journey_id.is_some() {
            "journey_id = $10::uuid"
        } else {
            "$10::text IS NULL"
        };
        let sql = format!(
            "SELECT journey_id, definition_id, definition_version, status, current_step, \
             email_masked, started_at, updated_at, version, subject, failures, stall_at \
             FROM journeys WHERE {by_email} AND {by_subject} AND {by_id} \
             AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR definition_id = $3) \
             AND ($4::text IS NULL OR current_step = $4) \
             AND ($5::bigint IS NULL OR updated_at >= $5) AND ($6::bigint IS NULL OR updated_at < $6) \
             ORDER BY updated_at DESC, journey_id LIMIT $7 OFFSET $8"
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
        // One statement: pick due, unleased rows, skipping rows another node is claiming
        // right now (SKIP LOCKED) instead of waiting for it, and lease them. FOR UPDATE
        // re-checks each picked row against the WHERE clause after locking it, so a row
        // leased by a claim that committed meanwhile is not taken twice.
        let token = lease_token(now, lease);
        let rows = sqlx::query(
            "WITH picked AS ( \
               SELECT effect_id FROM outbox \
               WHERE status = 'pending' AND available_at <= $1 \
               AND (leased_until IS NULL OR leased_until <= $1) \
               AND ($4::text IS NULL OR kind <> $4) \
               AND ($5::uuid IS NULL OR stream = $5) \
               ORDER BY available_at, created_at, effect_id LIMIT $3 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE outbox o SET leased_until = $2 FROM picked \
             WHERE o.effect_id = picked.effect_id \
             RETURNING o.effect_id, o.stream, o.kind, o.payload, o.attempts, o.leased_until, \
             o.available_at, o.created_at",
        )
        .bind(now.as_millis())
        .bind(token.as_millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(skip_kind)
        .bind(stream.map(|s| s.0))
        .fetch_all(&self.inner.pool)
        .await?;
        // RETURNING has no order: restore the due order the claim picked in.
        let mut keyed = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = rows::outbox_entry(row)?;
            let available: i64 = sqlx::Row::try_get(row, "available_at")?;
            let created: i64 = sqlx::Row::try_get(row, "created_at")?;
            keyed.push(((available, created, entry.effect_id), entry));
        }
        keyed.sort_by_key(|k| k.0);
        Ok(keyed.into_iter().map(|(_, e)| e).collect())
    }

    async fn complete_effect_inner(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, Error> {
        // Fenced: only the claim holding this token may finish the entry.
        let done = sqlx::query(
            "UPDATE outbox SET status = 'done', done_at = $3, leased_until = NULL \
             WHERE effect_id = $1 AND status = 'pending' AND leased_until = $2",
        )
        .bind(effect_id)
        .bind(lease.as_millis())
        .bind(now.as_millis())
        .execute(&self.inner.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reschedule_effect_inner(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        retry_at: Option<Timestamp>,
        error: &str,
    ) -> Result<bool, Error> {
        // One statement for both cases: no retry time gives up (status 'dead').
        let changed = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, \
             status = CASE WHEN $3::bigint IS NULL THEN 'dead' ELSE status END, \
             available_at = COALESCE($3, available_at), \
             leased_until = NULL, last_error = $4 \
             WHERE effect_id = $1 AND status = 'pending' AND leased_until = $2",
        )
        .bind(effect_id)
        .bind(lease.as_millis())
        .bind(retry_at.map(Timestamp::as_millis))
        .bind(error)
        .execute(&self.inner.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
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
        let rows = sqlx::query(
            "WITH picked AS ( \
               SELECT timer_id FROM timers \
               WHERE status = 'pending' AND fire_at <= $1 \
               AND (leased_until IS NULL OR leased_until <= $1) \
               AND ($4::uuid IS NULL OR stream = $4) \
               ORDER BY fire_at, created_at, timer_id LIMIT $3 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE timers t SET leased_until = $2 FROM picked \
             WHERE t.timer_id = picked.timer_id \
             RETURNING t.timer_id, t.stream, t.fire_at, t.payload, t.leased_until, t.created_at",
        )
        .bind(now.as_millis())
        .bind(token.as_millis())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(stream.map(|s| s.0))
        .fetch_all(&self.inner.pool)
        .await?;
        let mut keyed = Vec::with_capacity(rows.len());
        for row in &rows {
            let entry = rows::timer_entry(row)?;
            let created: i64 = sqlx::Row::try_get(row, "created_at")?;
            keyed.push(((entry.fire_at, created, entry.timer_id), entry));
        }
        keyed.sort_by_key(|k| k.0);
        Ok(keyed.into_iter().map(|(_, e)| e).collect())
    }

    async fn complete_timer_inner(
        &self,
        timer_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let fired = sqlx::query(
            "UPDATE timers SET status = 'fired', fired_at = $3, leased_until = NULL \
             WHERE timer_id = $1 AND status = 'pending' AND leased_until = $2",
        )
        .bind(timer_id)
        .bind(lease.as_millis())
        .bind(now.as_millis())
        .execute(&self.inner.pool)
        .await?;
        Ok(fired.rows_affected() == 1)
    }

    async fn next_due_inner(&self) -> Result<Option<Timestamp>, Error> {
        // Leases are ignored on purpose (as in SQLite): the caller polls again anyway, so
        // "earliest due" never oversleeps. LEAST ignores NULLs.
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT LEAST( \
               (SELECT MIN(available_at) FROM outbox WHERE status = 'pending'), \
               (SELECT MIN(fire_at) FROM timers WHERE status = 'pending'))",
        )
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(next.map(Timestamp))
    }
}

impl EventStore for PgStore {
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
        let Some(completions) = &self.inner.completions else {
            return Ok(self.complete_effect_inner(effect_id, lease, now).await?);
        };
        let (reply, answer) = oneshot::channel();
        let queued = Completion {
            effect_id,
            lease,
            now,
            reply,
        };
        // A stopped completer is a stopped writer: the caller cannot know what happened.
        completions
            .send(queued)
            .await
            .map_err(|_| Error::WriterStopped)?;
        answer.await.map_err(|_| Error::WriterStopped)?
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
        // Register interest before (possibly) starting the listener, whose first act is a
        // wake-up; the permit `signal` leaves covers the rest.
        let notified = self.inner.work.notified();
        self.ensure_listener();
        let _ = tokio::time::timeout(timeout, notified).await;
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

#[cfg(test)]
mod tests {
    use super::{redact, validate_schema};

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact("postgres://u:s3cret@db:5432/x?sslmode=require"),
            "postgres://u:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact("postgres://root@h/test"), "postgres://root@h/test");
        assert_eq!(
            redact("postgresql://h/db?user=u&password=p&x=1"),
            "postgresql://h/db?user=u&password=***&x=1"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["t_0123", "passage", "A_b9"] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "9t", "a-b", "a\"b", "pub lic", &"x".repeat(49)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}

crate::operators::operator_sql!(PgStore, "$", pool, crate::operators::pg_disabled);
crate::checkpoints::checkpoint_sql!(PgStore, "$", pool);
crate::personal::personal_sql!(PgStore, "$", "::uuid", "BEGIN", pool);

impl PgStore {
    /// Dead tuples are invisible to SQL but stay in the table files until vacuumed: VACUUM
    /// the tables erasure deletes from or rewrites, so their space is reclaimed and reused.
    async fn purge_erased_inner(&self) -> Result<(), Error> {
        sqlx::raw_sql("VACUUM accounts, sessions, journeys, journey_keys, outbox, timers")
            .execute(&self.inner.pool)
            .await?;
        Ok(())
    }
}
