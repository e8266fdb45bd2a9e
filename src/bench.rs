//! `passage bench`: throughput and latency of the engine on a real store, against a raw
//! baseline measured in the same run (docs/benchmarks.md explains how to read it).

use anyhow::{Context as _, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use passage_channels::DevOutbox;
use passage_core::journey::{JourneyEvent, JourneyState, Reply};
use passage_core::ports::{
    AccountDirectory, Channel, EventStore, JourneyId, MessageKind, OutboundMessage, Receipt,
    SendError,
};
use passage_runtime::{Actor, Clock as _, Engine, Input, Worker, WorkerOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Delivers to the dev outbox, and hands each code to the simulated person waiting for it.
#[derive(Clone)]
pub struct Inbox {
    outbox: DevOutbox,
    slots: Arc<Mutex<HashMap<(JourneyId, &'static str), Slot>>>,
}

enum Slot {
    Code(String),
    Waiting(oneshot::Sender<String>),
}

impl Inbox {
    pub fn new(outbox: DevOutbox) -> Self {
        Self {
            outbox,
            slots: Arc::default(),
        }
    }

    async fn code(&self, journey: JourneyId, channel: &'static str) -> anyhow::Result<String> {
        let rx = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.remove(&(journey, channel)) {
                Some(Slot::Code(c)) => return Ok(c),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert((journey, channel), Slot::Waiting(tx));
                    rx
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| anyhow!("no {channel} code for journey {journey} within 60 s"))?
            .map_err(|_| anyhow!("the inbox was dropped"))
    }
}

impl Channel for Inbox {
    async fn deliver(&self, m: &OutboundMessage) -> Result<Receipt, SendError> {
        let receipt = self.outbox.deliver(m).await?;
        let found = match &m.kind {
            MessageKind::Email { text, subject, .. } if !subject.contains("changed") => {
                passage_channels::find_code(text).map(|c| ("email", c))
            }
            MessageKind::Sms { text, .. } => passage_channels::find_code(text).map(|c| ("sms", c)),
            _ => None,
        };
        if let Some((channel, code)) = found {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.remove(&(m.journey_id, channel)) {
                Some(Slot::Waiting(tx)) => {
                    let _ = tx.send(code);
                }
                _ => {
                    slots.insert((m.journey_id, channel), Slot::Code(code));
                }
            }
        }
        Ok(receipt)
    }
}

/// What one concurrency level measured.
#[derive(Debug, Clone)]
pub struct LevelResult {
    pub concurrency: usize,
    pub journeys: usize,
    pub events: u64,
    pub elapsed: Duration,
    /// Every timed step, named by what the person did.
    pub step_latencies: Vec<(&'static str, Duration)>,
}

impl LevelResult {
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    pub fn journeys_per_sec(&self) -> f64 {
        self.journeys as f64 / self.elapsed.as_secs_f64()
    }

    /// p50 and p99 of every step.
    pub fn p50_p99(&self) -> (Duration, Duration) {
        p50_p99(self.step_latencies.iter().map(|(_, d)| *d).collect())
    }

    /// p50 and p99 of each kind of step, in journey order: where the tail comes from.
    pub fn by_step(&self) -> Vec<(&'static str, Duration, Duration)> {
        let mut groups: Vec<(&'static str, Vec<Duration>)> = Vec::new();
        for &(what, d) in &self.step_latencies {
            match groups.iter_mut().find(|(w, _)| *w == what) {
                Some((_, v)) => v.push(d),
                None => groups.push((what, vec![d])),
            }
        }
        groups
            .into_iter()
            .map(|(what, v)| {
                let (p50, p99) = p50_p99(v);
                (what, p50, p99)
            })
            .collect()
    }
}

fn p50_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn accepted(o: &passage_runtime::Outcome, what: &str) -> anyhow::Result<()> {
    match &o.reply {
        Reply::Accepted { .. } => Ok(()),
        Reply::Rejected(r) => bail!("{what} refused ({}): {}", r.code, r.message),
    }
}

/// A person's pauses: `think` on average, anywhere from half to one and a half times it.
/// Equal pauses would move everyone in lockstep (256 people pressing each button at the same
/// instant), which no real crowd does. A small xorshift, seeded per person: reproducible,
/// and no dependency for it.
struct Pauses {
    think: Duration,
    state: u64,
}

impl Pauses {
    fn new(think: Duration, person: usize) -> Self {
        // Any odd, non-zero seed; the multiplier spreads neighbouring seeds apart.
        let state = (person as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Self { think, state }
    }

    /// Waits for the next pause (not at all when running flat out: even a zero sleep can
    /// wait for the timer's next tick).
    async fn pause(&mut self) {
        if !self.think.is_zero() {
            tokio::time::sleep(self.next()).await;
        }
    }

    fn next(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        self.think.mul_f64(0.5 + unit)
    }
}

/// One person walking the seed journey: email code, SMS code, new password; pausing before
/// each step, the first one too (see [`Pauses`]).
async fn walk<S: EventStore, D: AccountDirectory>(
    engine: &Engine<S, D>,
    inbox: &Inbox,
    email: &str,
    pauses: &mut Pauses,
    latencies: &mut Vec<(&'static str, Duration)>,
) -> anyhow::Result<()> {
    let person = || Actor::person("bench");
    let mut timed = async |id: Option<JourneyId>, input: Option<Input>, what: &'static str| {
        pauses.pause().await;
        let t = Instant::now();
        let o = match (id, input) {
            (Some(id), Some(input)) => engine.submit(id, input, person(), None).await?,
            _ => engine.start("password-reset", person(), None).await?,
        };
        latencies.push((what, t.elapsed()));
        accepted(&o, what)?;
        anyhow::Ok(o.journey_id)
    };
    let id = timed(None, None, "start").await?;
    timed(Some(id), Some(Input::Email(email.into())), "email").await?;
    let code = inbox.code(id, "email").await?;
    timed(Some(id), Some(Input::Code(code)), "email code").await?;
    timed(Some(id), Some(Input::Choose("sms".into())), "choice").await?;
    let sms = inbox.code(id, "sms").await?;
    timed(Some(id), Some(Input::Code(sms)), "sms code").await?;
    let pw = "harbour lantern meadow copper violet";
    let input = Input::Password {
        new: pw.into(),
        confirm: pw.into(),
    };
    timed(Some(id), Some(input), "password").await?;
    Ok(())
}

pub fn progress(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs `journeys` seed journeys, `concurrency` at a time, with a worker delivering; each
/// person pauses about `think` before each step (zero: flat out).
pub async fn engine_level<S: EventStore, D: AccountDirectory>(
    engine: &Engine<S, D>,
    inbox: &Inbox,
    emails: &[String],
    concurrency: usize,
    journeys: usize,
    think: Duration,
    label: &str,
) -> anyhow::Result<LevelResult> {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let worker = Worker::new(
        engine.clone(),
        inbox.clone(),
        WorkerOptions {
            batch: 512,
            idle_poll: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let worker = tokio::spawn(worker.run(rx));
    let head_before = head(engine.store()).await?;
    let bar = progress(journeys as u64, label);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for walker in 0..concurrency.min(journeys) {
        let (engine, inbox, next, bar) = (
            engine.clone(),
            inbox.clone(),
            Arc::clone(&next),
            bar.clone(),
        );
        // Each concurrent person resets their own account, one journey after another.
        let email = emails[walker % emails.len()].clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut pauses = Pauses::new(think, walker);
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= journeys {
                    break;
                }
                walk(&engine, &inbox, &email, &mut pauses, &mut latencies).await?;
                bar.inc(1);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.context("a journey task panicked")??);
    }
    // The run ends when the last notification is delivered, not when the last person leaves.
    wait_idle(engine.store()).await?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let _ = stop.send(true);
    worker.await.context("stop the bench worker")?;
    let events = head(engine.store()).await? - head_before;
    Ok(LevelResult {
        concurrency,
        journeys,
        events,
        elapsed,
        step_latencies: latencies,
    })
}

async fn head<S: EventStore>(store: &S) -> anyhow::Result<u64> {
    // The global log is gap-free, so its head position is its length.
    let mut after = 0;
    loop {
        let page = store.read_all(after, 10_000).await?;
        match page.last() {
            Some(e) => after = e.position,
            None => return Ok(after),
        }
    }
}

async fn wait_idle<S: EventStore>(store: &S) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match store.next_due().await? {
            // Due now: deliveries still to make. Timers due minutes from now do not count.
            Some(t)
                if t <= passage_runtime::SystemClock
                    .now()
                    .plus(Duration::from_secs(1)) => {}
            _ => return Ok(()),
        }
        if Instant::now() > deadline {
            bail!("outbox entries still pending after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Rebuilds every journey's state from the store, then from events already in memory.
pub async fn replay<S: EventStore>(store: &S) -> anyhow::Result<(u64, Duration, Duration)> {
    let t = Instant::now();
    let mut states: HashMap<JourneyId, JourneyState> = HashMap::new();
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in page {
            let ev: JourneyEvent = serde_json::from_str(&e.payload).context("decode an event")?;
            states.entry(e.stream).or_default().apply(&ev);
            all.push((e.stream, ev));
        }
    }
    let from_store = t.elapsed();
    let t = Instant::now();
    let mut states: HashMap<JourneyId, JourneyState> = HashMap::new();
    for (stream, ev) in &all {
        states.entry(*stream).or_default().apply(ev);
    }
    let from_memory = t.elapsed();
    std::hint::black_box(&states);
    Ok((all.len() as u64, from_store, from_memory))
}

/// "step p50/p99 ms: start 1.2/4.0, email …", for the notes under the table.
fn by_step(r: &LevelResult) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let steps: Vec<String> = r
        .by_step()
        .into_iter()
        .map(|(what, p50, p99)| format!("{what} {:.1}/{:.1}", ms(p50), ms(p99)))
        .collect();
    format!("step p50/p99 ms: {}", steps.join(", "))
}

pub fn table_row(backend: &str, mode: &str, r: &LevelResult, baseline: Option<f64>) -> String {
    let ratio = baseline
        .map(|b| format!("{:.0} %", 100.0 * r.events_per_sec() / b))
        .unwrap_or_else(|| "-".into());
    let (p50, p99) = r.p50_p99();
    format!(
        "| {backend} | {mode} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {ratio} |",
        r.concurrency,
        r.journeys,
        r.events_per_sec(),
        r.journeys_per_sec(),
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
    )
}

/// The SQL dialect of a scratch store, for statements written for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A scratch store for one backend, removed afterwards.
pub(crate) struct Scratch {
    backend: &'static str,
    dir: std::path::PathBuf,
    pg: Option<ScratchDatabase>,
}

/// The PostgreSQL database a run creates and drops, and the admin URL that does both.
struct ScratchDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl Scratch {
    pub(crate) async fn new(backend: &'static str, admin_url: &str) -> anyhow::Result<Self> {
        // Unique per run, not only per process: a run never drops a database that another
        // bench (or an earlier run of this one) is still using, and the name it prints is the
        // one it removes.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!("{}_{nanos:08x}", std::process::id());
        let pg = match backend {
            "postgres" => Some(ScratchDatabase::create(admin_url, &unique).await?),
            _ => None,
        };
        let scratch = Self {
            backend,
            dir: std::env::temp_dir().join(format!("passage-bench-{unique}-{backend}")),
            pg,
        };
        if let Err(e) = std::fs::create_dir_all(&scratch.dir) {
            let dir = scratch.dir.display().to_string();
            scratch.cleanup().await;
            return Err(anyhow!(e).context(format!("create the scratch directory {dir}")));
        }
        Ok(scratch)
    }

    /// The scratch database's name, for the notes (PostgreSQL only).
    pub(crate) fn database(&self) -> Option<&str> {
        self.pg.as_ref().map(|db| db.name.as_str())
    }

    /// The file [`Scratch::store`] opens for `fresh` (SQLite only).
    pub(crate) fn sqlite_path(&self, fresh: &str) -> std::path::PathBuf {
        self.dir.join(format!("{fresh}.db"))
    }

    pub(crate) async fn store(
        &self,
        group_commit: bool,
        fresh: &str,
    ) -> anyhow::Result<passage_store::AnyStore> {
        Ok(match &self.pg {
            Some(ScratchDatabase { url, .. }) => passage_store::AnyStore::Postgres(
                passage_store::PgStore::connect_with(
                    url,
                    passage_store::PgOptions {
                        group_commit,
                        schema: Some(fresh.replace('-', "_")),
                        ..Default::default()
                    },
                )
                .await?,
            ),
            None => passage_store::AnyStore::Sqlite(
                passage_store::SqliteStore::open_with(
                    &self.dir.join(format!("{fresh}.db")),
                    passage_store::Options {
                        group_commit,
                        ..Default::default()
                    },
                )
                .await?,
            ),
        })
    }

    /// Writes `n` synthetic rows straight into the journeys read model of store `fresh`
    /// (the only table the stall scan and the search read), then refreshes the planner's
    /// statistics. `values` gives, in the store's SQL dialect, the columns after
    /// `journey_id` as expressions over the row number `i`.
    pub(crate) async fn insert_journeys(
        &self,
        fresh: &str,
        n: usize,
        values: impl Fn(Dialect) -> String,
    ) -> anyhow::Result<()> {
        const COLUMNS: &str = "journey_id, definition_id, definition_version, status, \
            current_step, email_masked, started_at, updated_at, version, subject, failures, \
            stall_at, stall_keep";
        if n == 0 {
            return Ok(());
        }
        match &self.pg {
            Some(ScratchDatabase { url, .. }) => {
                let schema = fresh.replace('-', "_");
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .context("connect to the scratch database")?;
                let sql = format!(
                    "INSERT INTO {schema}.journeys ({COLUMNS}) \
                     SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, {} \
                     FROM generate_series(0, {n} - 1) AS i",
                    values(Dialect::Postgres)
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .context("insert the journeys")?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ANALYZE {schema}.journeys")))
                    .execute(&pool)
                    .await?;
                pool.close().await;
            }
            None => {
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        sqlx::sqlite::SqliteConnectOptions::new().filename(self.sqlite_path(fresh)),
                    )
                    .await
                    .context("open the scratch file")?;
                let sql = format!(
                    "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {n} - 1) \
                     INSERT INTO journeys ({COLUMNS}) \
                     SELECT printf('00000000-0000-4000-8000-%012d', i), {} FROM c",
                    values(Dialect::Sqlite)
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .context("insert the journeys")?;
                sqlx::raw_sql("ANALYZE").execute(&pool).await?;
                pool.close().await;
            }
        }
        Ok(())
    }

    /// Drops the scratch database and removes the scratch files. A failure is reported on
    /// stderr with what to remove by hand; it never hides the run's own result. False when
    /// the scratch database is left behind.
    pub(crate) async fn cleanup(self) -> bool {
        let mut dropped = true;
        if let Some(db) = &self.pg
            && let Err(e) = db.drop().await
        {
            eprintln!(
                "warning: could not drop the scratch database {}: {e:#}; drop it by hand",
                db.name
            );
            dropped = false;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!(
                "warning: could not remove the scratch directory {}: {e}",
                self.dir.display()
            );
        }
        dropped
    }
}

impl ScratchDatabase {
    async fn create(admin_url: &str, unique: &str) -> anyhow::Result<Self> {
        let (base, _) = admin_url
            .rsplit_once('/')
            .ok_or_else(|| anyhow!("--bench-postgres must end with /database"))?;
        let name = format!("passage_bench_{unique}");
        let admin = Self::admin(admin_url).await?;
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .with_context(|| format!("create the scratch database {name}"));
        admin.close().await;
        created?;
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
            admin_url: admin_url.to_owned(),
        })
    }

    async fn admin(admin_url: &str) -> anyhow::Result<sqlx::PgPool> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .context("connect to the PostgreSQL server given by --bench-postgres")
    }

    async fn drop(&self) -> anyhow::Result<()> {
        let admin = Self::admin(&self.admin_url).await?;
        let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await;
        admin.close().await;
        dropped?;
        Ok(())
    }
}

/// An event-sized row: the size of a typical stored `CodeIssued` with its metadata.
const RAW_PAYLOAD: &str = r#"{"type":"CodeIssued","step":"email-code","channel":"email","issue":1,"code_hash":"4f1c2a9e0b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a29180f7e6d5c4b3a2918f0e1","destination_masked":"a•••e@e•••.com","issued_at":1795765081390,"expires_at":1795765381390,"effect_id":"0193b7c2-8f1e-7c3a-9d2b-5e4f6a7b8c9d"}"#;
const RAW_METADATA: &str =
    r#"{"actor":{"kind":"person","channel":"api"},"command":"submit-email"}"#;

/// Runs `concurrency` clients that together insert `rows` rows, `batch` at a time, each
/// batch through `insert(first_row, count)`; returns the elapsed time.
async fn clients<F, Fut>(
    concurrency: usize,
    rows: usize,
    batch: usize,
    bar: &ProgressBar,
    insert: F,
) -> anyhow::Result<Duration>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, bar, insert) = (Arc::clone(&next), bar.clone(), insert.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if n >= rows {
                    return anyhow::Ok(());
                }
                let k = batch.min(rows - n);
                insert(n, k).await?;
                bar.inc(k as u64);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(start.elapsed())
}

const RAW_INSERT: &str =
    "INSERT INTO bench_raw (stream, version, event_type, payload, metadata, hash) ";

/// The raw baseline: `concurrency` clients inserting event-sized rows with plain batched
/// INSERTs, `batch` rows per transaction, into a scratch table of the same database. Best
/// rows/s over the batch sizes tried.
async fn raw_baseline(
    scratch: &Scratch,
    concurrency: usize,
    rows: usize,
) -> anyhow::Result<Vec<(usize, f64)>> {
    let mut results = Vec::new();
    for batch in [1usize, 8, 64] {
        let bar = progress(
            rows as u64,
            &format!("{} raw insert x{batch}", scratch.backend),
        );
        let elapsed = match &scratch.pg {
            Some(ScratchDatabase { url, .. }) => {
                // As many connections as the engine's store pool: same database, same means.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect(url)
                    .await?;
                sqlx::raw_sql("DROP TABLE IF EXISTS bench_raw; CREATE TABLE bench_raw (id BIGSERIAL PRIMARY KEY, stream UUID NOT NULL, version BIGINT NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL, hash BYTEA NOT NULL)")
                    .execute(&pool)
                    .await?;
                let p = pool.clone();
                let elapsed = clients(concurrency, rows, batch, &bar, move |n, k| {
                    let pool = p.clone();
                    async move {
                        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(RAW_INSERT);
                        qb.push_values(0..k, |mut b, i| {
                            b.push_bind(uuid::Uuid::new_v4())
                                .push_bind((n + i) as i64)
                                .push_bind("CodeIssued")
                                .push_bind(RAW_PAYLOAD)
                                .push_bind(RAW_METADATA)
                                .push_bind(vec![7u8; 32]);
                        });
                        let mut tx = pool.begin().await?;
                        qb.build().execute(&mut *tx).await?;
                        tx.commit().await?;
                        anyhow::Ok(())
                    }
                })
                .await?;
                pool.close().await;
                elapsed
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(scratch.dir.join("raw.db"))
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await?;
                sqlx::raw_sql("DROP TABLE IF EXISTS bench_raw; CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, stream TEXT NOT NULL, version INTEGER NOT NULL, event_type TEXT NOT NULL, payload TEXT NOT NULL, metadata TEXT NOT NULL, hash BLOB NOT NULL)")
                    .execute(&pool)
                    .await?;
                let p = pool.clone();
                let elapsed = clients(concurrency, rows, batch, &bar, move |n, k| {
                    let pool = p.clone();
                    async move {
                        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(RAW_INSERT);
                        qb.push_values(0..k, |mut b, i| {
                            b.push_bind(uuid::Uuid::new_v4().to_string())
                                .push_bind((n + i) as i64)
                                .push_bind("CodeIssued")
                                .push_bind(RAW_PAYLOAD)
                                .push_bind(RAW_METADATA)
                                .push_bind(vec![7u8; 32]);
                        });
                        // Writers queue on SQLite's lock; IMMEDIATE avoids upgrade deadlocks.
                        let mut conn = pool.acquire().await?;
                        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                        qb.build().execute(&mut *conn).await?;
                        sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                        anyhow::Ok(())
                    }
                })
                .await?;
                pool.close().await;
                elapsed
            }
        };
        bar.finish_and_clear();
        results.push((batch, rows as f64 / elapsed.as_secs_f64()));
    }
    Ok(results)
}

/// Bench accounts: at least one per concurrent person, because two resets of one account
/// at once are not independent work (completing one cancels the other, R44).
pub(crate) fn demo_people(count: usize) -> Vec<passage_core::ports::Account> {
    (0..count.max(64))
        .map(|i| passage_core::ports::Account {
            account_id: format!("bench-{i:03}"),
            email: format!("person{i:03}@example.com"),
            display_name: format!("Person {i:03}"),
            phone: Some(format!("+614{:08}", 10_000_000 + i)),
            enabled: true,
        })
        .collect()
}

pub(crate) async fn engine_for(
    store: passage_store::AnyStore,
    definitions: &[passage_core::definition::Definition],
    people: &[passage_core::ports::Account],
    production_hashing: bool,
) -> anyhow::Result<Engine<passage_store::AnyStore, passage_store::AnyStore>> {
    for a in people {
        store
            .insert_account_if_missing(a, "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
            .await?;
    }
    let hasher = if production_hashing {
        passage_core::secrets::Argon2id::default()
    } else {
        passage_core::secrets::Argon2id::new(256, 1, 1)
    };
    let engine = Engine::new(
        store.clone(),
        store,
        Arc::new(passage_runtime::SystemClock),
        passage_runtime::EngineOptions {
            keys: passage_core::secrets::Keys::derive(b"bench secret, not for production use"),
            hasher,
        },
    );
    for d in definitions {
        engine.register(d.clone()).await?;
    }
    Ok(engine)
}

/// The figures of one run at the highest level that the targets are judged on
/// (docs/benchmarks.md, "Reading the figures").
struct Judged {
    /// Grouped events/s ÷ the events/s with one append per transaction.
    grouping: f64,
    /// Grouped events/s ÷ the best raw rows/s, in percent.
    of_raw: f64,
    /// Step p99 when running flat out, grouped, in milliseconds.
    p99_ms: f64,
}

/// What every run of one backend shares: the definitions and the simulated people.
struct Setup<'a> {
    args: &'a crate::cli::BenchArgs,
    definitions: &'a [passage_core::definition::Definition],
    people: &'a [passage_core::ports::Account],
    emails: &'a [String],
    max_level: usize,
}

impl Setup<'_> {
    fn journeys_at(&self, level: usize) -> usize {
        self.args
            .journeys
            .unwrap_or(if level == 1 { 40 } else { (3 * level).max(160) })
    }

    async fn engine(
        &self,
        store: &passage_store::AnyStore,
    ) -> anyhow::Result<Engine<passage_store::AnyStore, passage_store::AnyStore>> {
        engine_for(
            store.clone(),
            self.definitions,
            self.people,
            self.args.production_hashing,
        )
        .await
    }
}

pub async fn run(
    args: &crate::cli::BenchArgs,
    definitions: Vec<passage_core::definition::Definition>,
) -> anyhow::Result<()> {
    let max_level = args.levels.iter().copied().max().unwrap_or(1);
    if let Some(journeys) = args.journeys
        && journeys < max_level
    {
        // The row would be labelled with a concurrency it never reached.
        return Err(crate::Usage(format!(
            "--journeys {journeys} is below the highest --levels value, {max_level}: \
             a row could never have {max_level} journeys under way at once; \
             give at least {max_level} journeys or lower --levels"
        ))
        .into());
    }
    let people = demo_people(max_level);
    let emails: Vec<String> = people.iter().map(|a| a.email.clone()).collect();
    let setup = Setup {
        args,
        definitions: &definitions,
        people: &people,
        emails: &emails,
        max_level,
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut judged = Vec::new();
    for &backend in args.backend.names() {
        let mut runs = Vec::new();
        for run in 1..=args.repeat {
            // Each run gets fresh stores and its own baseline: a run's ratios never mix
            // figures from two moments of a machine whose pace drifts.
            let label = match args.repeat {
                1 => backend.to_owned(),
                _ => format!("{backend} (run {run})"),
            };
            let scratch = Scratch::new(backend, &args.bench_postgres).await?;
            // Named as soon as it exists: a run killed halfway leaves it for the operator.
            let database = scratch.database().map(str::to_owned);
            if let Some(name) = &database {
                eprintln!("{label}: scratch database {name}, dropped at the end of the run");
            }
            let result = measure(&setup, &scratch, &label, &mut rows, &mut notes).await;
            let dropped = scratch.cleanup().await;
            if let Some(name) = database {
                notes.push(match dropped {
                    true => {
                        format!("{label}: scratch database {name}, dropped at the end of the run")
                    }
                    false => format!(
                        "{label}: scratch database {name} could not be dropped: drop it by hand"
                    ),
                });
            }
            runs.push(result?);
        }
        judged.push((backend, runs));
    }
    println!(
        "| backend | mode | concurrent journeys | journeys | events/s | journeys/s | step p50 ms | step p99 ms | engine ÷ raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    for n in notes {
        println!("- {n}");
    }
    println!();
    println!("Ratios at {max_level} concurrent journeys, flat out:");
    for (backend, runs) in judged {
        println!("- {}", ratios(backend, &runs));
    }
    Ok(())
}

/// "sqlite: grouped ÷ one append per transaction 5.4×, …", with the median and range of
/// several runs.
fn ratios(backend: &str, runs: &[Judged]) -> String {
    let figure = |pick: fn(&Judged) -> f64, decimals: usize, unit: &str| -> String {
        let mut v: Vec<f64> = runs.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        match v.len() {
            1 => format!("{median:.decimals$}{unit}"),
            _ => format!(
                "{median:.decimals$}{unit} ({:.decimals$}–{:.decimals$}{unit})",
                v[0],
                v[v.len() - 1]
            ),
        }
    };
    let which = match runs.len() {
        1 => backend.to_owned(),
        n => format!("{backend}, median of {n} runs (lowest–highest)"),
    };
    format!(
        "{which}: grouped ÷ one append per transaction {}, engine ÷ raw {}, step p99 {}",
        figure(|j| j.grouping, 1, "×"),
        figure(|j| j.of_raw, 0, " %"),
        figure(|j| j.p99_ms, 1, " ms"),
    )
}

/// One run on one backend: the raw baseline, each level grouped, the paced row, the highest
/// level ungrouped, and the replay; table rows and notes are labelled with `label`.
async fn measure(
    setup: &Setup<'_>,
    scratch: &Scratch,
    label: &str,
    rows: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Judged> {
    let args = setup.args;
    let max_level = setup.max_level;
    let raw = raw_baseline(scratch, max_level, args.raw_rows).await?;
    let best = raw.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    for (batch, r) in &raw {
        notes.push(format!("{label}: raw batched INSERT, {max_level} clients, {batch} rows per transaction: {r:.0} rows/s"));
    }
    let inbox = Inbox::new(DevOutbox::open(&scratch.dir.join("outbox.db")).await?);
    let mut top = None;
    for &level in &args.levels {
        let store = scratch.store(true, &format!("grouped-{level}")).await?;
        let engine = setup.engine(&store).await?;
        let before = store.stats();
        let r = engine_level(
            &engine,
            &inbox,
            setup.emails,
            level,
            setup.journeys_at(level),
            Duration::ZERO,
            &format!("{label} engine c={level}"),
        )
        .await?;
        let after = store.stats();
        let txs = after.transactions - before.transactions;
        // Writes other than appends that shared the writer's transactions (which ones
        // differs by backend: StoreStats::writes).
        let writes = match after.writes - before.writes {
            0 => String::new(),
            n => format!(" and {n} other writes"),
        };
        // Outbox completions are grouped: on SQLite inside the writer's transactions
        // (repeats of an effect id excepted), on PostgreSQL in statements of their own.
        let completions = match after.completions - before.completions {
            0 => String::new(),
            n => format!(
                "; {n} outbox completions in {} statements",
                after.completion_statements - before.completion_statements
            ),
        };
        // How much of the run the append writer spent in transactions: near 100 % it is
        // the bottleneck, and more concurrency only queues behind it.
        let busy = (after.busy - before.busy).as_secs_f64() / r.elapsed.as_secs_f64();
        notes.push(format!(
            "{label}: c={level}: {} append requests{writes} in {txs} transactions (largest {} appends){completions}; writer busy {:.0} % of the run",
            after.requests - before.requests,
            after.largest_batch,
            busy * 100.0
        ));
        rows.push(table_row(
            label,
            "grouped",
            &r,
            (level == max_level).then_some(best),
        ));
        if level == max_level {
            notes.push(format!("{label}: c={level}, flat out: {}", by_step(&r)));
            top = Some((store.clone(), r));
        }
    }
    if args.think_ms > 0 {
        let think = Duration::from_millis(args.think_ms);
        let store = scratch.store(true, "paced").await?;
        let engine = setup.engine(&store).await?;
        let r = engine_level(
            &engine,
            &inbox,
            setup.emails,
            max_level,
            setup.journeys_at(max_level),
            think,
            &format!("{label} paced c={max_level}"),
        )
        .await?;
        rows.push(table_row(
            label,
            &format!(
                "grouped, people pausing ~{} ms before each step",
                args.think_ms
            ),
            &r,
            None,
        ));
        notes.push(format!(
            "{label}: c={max_level}, {} ms pauses: {}",
            args.think_ms,
            by_step(&r)
        ));
    }
    let store = scratch.store(false, "ungrouped").await?;
    let engine = setup.engine(&store).await?;
    let ungrouped = engine_level(
        &engine,
        &inbox,
        setup.emails,
        max_level,
        setup.journeys_at(max_level),
        Duration::ZERO,
        &format!("{label} ungrouped c={max_level}"),
    )
    .await?;
    rows.push(table_row(
        label,
        "one append per transaction",
        &ungrouped,
        Some(best),
    ));
    let (top_store, grouped) = top.context("the highest level is one of the levels")?;
    let (events, from_store, from_memory) = replay(&top_store).await?;
    notes.push(format!(
        "{label}: replay of {events} events: {:.0} events/s from the store, {:.0} events/s from memory",
        events as f64 / from_store.as_secs_f64(),
        events as f64 / from_memory.as_secs_f64()
    ));
    notes.push(format!("{label}: raw baseline (best) {best:.0} rows/s"));
    Ok(Judged {
        grouping: grouped.events_per_sec() / ungrouped.events_per_sec(),
        of_raw: 100.0 * grouped.events_per_sec() / best,
        p99_ms: grouped.p50_p99().1.as_secs_f64() * 1000.0,
    })
}
