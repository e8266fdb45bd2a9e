//! The composition root: opens the store, the outbox and the secret key, loads the workflow
//! definitions and wires the engine and worker together.

use crate::budgets::StoreBudgets;
use crate::cli::Global;
use crate::seed::demo_accounts;
use anyhow::{Context as _, bail};
use passage_channels::{Channels, ChannelsConfig, DevOutbox, build_channels_with};
use passage_core::definition::{self, Definition, DefinitionErrors};
use passage_core::secrets::{Argon2id, Entropy, Keys, PasswordHasher, hex};
use passage_runtime::{Engine, EngineOptions, OsEntropy, SystemClock, Worker, WorkerOptions};
use passage_store::AnyStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type AppEngine = Engine<AnyStore, AnyStore>;
/// The channels, their send budgets counted in the store that every node shares (R17).
pub type AppChannels = Channels<StoreBudgets>;
pub type AppWorker = Worker<AnyStore, AnyStore, AppChannels>;

/// Built into the binary so `passage` works from any directory; `--workflows` wins.
const BUILTIN: [(&str, &str); 3] = [
    (
        "password-reset.toml",
        include_str!("../workflows/password-reset.toml"),
    ),
    (
        "email-sms.toml",
        include_str!("../workflows/email-sms.toml"),
    ),
    (
        "email-voice-code.toml",
        include_str!("../workflows/email-voice-code.toml"),
    ),
];

impl App {
    /// Closes the databases so SQLite checkpoints its write-ahead log into the main file:
    /// a copy of `passage.db` alone is then a complete backup.
    pub async fn close(self) {
        self.outbox.close().await;
        self.store.close().await;
    }
}

pub struct App {
    pub store: AnyStore,
    pub engine: AppEngine,
    pub outbox: DevOutbox,
    /// The configured channels (dev outbox unless SMTP or Twilio are configured).
    pub channels: AppChannels,
    pub worker: AppWorker,
    /// The deployment's audit public key (hex) as the store records it, if it does.
    pub deployment_key: Option<String>,
    /// The configured provider with the longest timeout, and that timeout (none for the dev
    /// outbox): a worker's lease must leave deliveries that long.
    pub slowest_provider: Option<(&'static str, std::time::Duration)>,
    /// Whether this process's workers deliver support alerts (see [`alerts_here`]). The
    /// Discord bot's worker does regardless: it brings its own route.
    pub alerts_here: bool,
}

/// Whether a node delivers support alerts itself. Every node's worker claims from the same
/// outbox, so a node that took alerts to a route support does not watch would lose its
/// share of them: a node has a route only with a webhook, or in a development setup
/// (everything to the dev outbox), and not even then when the deployment names a Discord
/// support channel, which `passage bot` posts to.
pub fn alerts_here(has_route: bool, has_webhook: bool, discord_configured: bool) -> bool {
    has_route && (has_webhook || !discord_configured)
}

/// Files that live beside the store: beside the SQLite file, or in the current directory
/// when the store is PostgreSQL.
fn beside(db: &Path, name: &str) -> PathBuf {
    db.parent()
        .map(|p| p.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// How a command checks the secret against the store (see `secret_matches_deployment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretCheck {
    /// `audit verify` and `audit public-key`, which report on a wrong secret themselves.
    Skip,
    /// Refuse a secret other than the recorded one.
    Compare,
    /// The same, and record this secret's key when none is: commands that write to the
    /// store or sign its checkpoints.
    Record,
}

/// Where the channels' send budgets are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budgets {
    /// In the store, shared by every process and node on it (ADR 0007).
    Shared,
    /// In this process: the terminal demos (see `StoreBudgets::PerProcess`).
    PerProcess,
}

/// Opens the store, the channels and the engine. `create`: whether the command may create
/// the embedded store; the others read or act on what is there, so a mistyped `--db` must
/// not answer from a new, empty file ("no journeys", "audit verify ok: 0 events").
/// `secret`: whether to refuse a secret other than the deployment's (and the one that signed
/// the newest checkpoint), and whether to record it. `config`: the channels, read once by
/// the caller (it may name files), who also checks a worker's lease against it first.
pub async fn open(
    global: &Global,
    config: &ChannelsConfig,
    create: bool,
    secret: SecretCheck,
    budgets: Budgets,
    read_only: bool,
) -> anyhow::Result<App> {
    // A command that reads opens the store read-only (`AnyStore::open_read_only`): a
    // reviewer's role with SELECT alone, or a copy of the file, is enough, and the command
    // provably changes nothing it reports on.
    debug_assert!(!(read_only && (create || secret == SecretCheck::Record)));
    let check_secret = secret != SecretCheck::Skip;
    // Definitions first: a malformed file must stop us before anything is created on disk.
    let definitions = load_definitions(&global.workflows)?;
    let store = open_store(global, create, read_only).await?;
    // A store that already holds events was written under some secret: creating a new one
    // would make its sealed data unreadable and its checkpoints look forged. Checked before
    // anything is written to the store.
    let has_events = passage_core::ports::EventStore::head(&store)
        .await
        .context("read the event store")?
        .is_some();
    // A store whose deployment key is recorded was opened under some secret too, even
    // before its first event.
    let mut deployment_key = store
        .deployment_key()
        .await
        .context("read the deployment's audit key")?;
    let keys = load_keys(global, has_events, deployment_key.is_some(), read_only)?;
    if check_secret {
        secret_matches_checkpoints(&store, &keys).await?;
    }
    let engine = Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(SystemClock),
        EngineOptions {
            keys: keys.clone(),
            hasher: Argon2id::default(),
        },
    );
    if check_secret {
        let records = secret == SecretCheck::Record;
        deployment_key =
            secret_matches_deployment(&store, &engine, &keys, deployment_key, records, has_events)
                .await?;
    }
    if !read_only {
        seed_directory(&store, !global.no_demo_accounts).await?;
    }
    for def in definitions {
        if read_only {
            engine.register_unsaved(def);
        } else {
            engine
                .register(def)
                .await
                .context("register a workflow definition")?;
        }
    }
    let outbox_path = global
        .outbox
        .clone()
        .unwrap_or_else(|| beside(&local_base(global), "passage-outbox.db"));
    // A reading command leaves no outbox file where there was none.
    let outbox = if read_only && !outbox_path.exists() {
        DevOutbox::in_memory().await
    } else {
        DevOutbox::open(&outbox_path).await
    }
    .with_context(|| format!("open the dev outbox {}", outbox_path.display()))?;
    let clock = SystemClock;
    let channels = build_channels_with(
        config,
        Some(outbox.clone()),
        Arc::new(move || passage_runtime::Clock::now(&clock)),
        match budgets {
            Budgets::Shared => StoreBudgets::new(store.clone(), Arc::new(keys)),
            Budgets::PerProcess => StoreBudgets::PerProcess(Default::default()),
        },
    )
    .context("set up the channels")?;
    tracing::info!(channels = %channels.inner().describe(), "channels ready");
    let alerts_here = alerts_here(
        channels.inner().route("support").is_some(),
        config.alerts.is_some(),
        std::env::var_os("PASSAGE_DISCORD_SUPPORT_CHANNEL").is_some(),
    );
    let options = WorkerOptions {
        lease: default_lease(config.slowest_timeout()),
        skip_alerts: !alerts_here,
        ..WorkerOptions::default()
    };
    let worker = Worker::new(engine.clone(), channels.clone(), options);
    Ok(App {
        store,
        engine,
        outbox,
        channels,
        worker,
        deployment_key,
        slowest_provider: config.slowest_timeout(),
        alerts_here,
    })
}

/// Opens (or, with `create`, creates) the configured store; `read_only`: see
/// `AnyStore::open_read_only`. Errors name the file, never a URL (it may hold a password).
pub async fn open_store(
    global: &Global,
    create: bool,
    read_only: bool,
) -> anyhow::Result<AnyStore> {
    if global.database_url.is_none() && !create && !global.db.exists() {
        bail!(
            "there is no event store at {}: check --db (or PASSAGE_DB); a store is created by \
             `passage demo`, `chat`, `serve`, `worker`, `bot`, `journey start`, `operators add` \
             or `accounts import`",
            global.db.display()
        );
    }
    let target = match &global.database_url {
        // Anything else would be taken for a SQLite path: a typo in the scheme would create
        // a file named after the URL, and its errors would print the password.
        Some(url) if !passage_store::is_postgres_url(url) => {
            return Err(crate::Usage(
                "--database-url (or PASSAGE_DATABASE_URL) must start with postgres:// or \
                 postgresql:// (the value is not shown: it may hold a password); for a SQLite \
                 file, use --db PATH"
                    .into(),
            )
            .into());
        }
        Some(url) => url.clone(),
        None => global.db.display().to_string(),
    };
    let opened = if read_only {
        AnyStore::open_read_only(&target).await
    } else {
        AnyStore::open(&target).await
    };
    let store = match opened {
        Ok(store) => store,
        // Names the file itself: a context naming it again would say the path twice.
        Err(e @ passage_store::Error::Open { .. }) => return Err(e.into()),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(match &global.database_url {
                // Never print a URL: it may carry a password.
                Some(_) => "connect to the PostgreSQL database (--database-url)".to_owned(),
                None => format!("open the event store {}", global.db.display()),
            }));
        }
    };
    Ok(store)
}

/// A worker's lease when none is given: the default, or longer when a configured
/// provider's own timeout needs more (`passage_runtime::least_lease`).
pub fn default_lease(slowest_provider: Option<(&str, std::time::Duration)>) -> std::time::Duration {
    let default = WorkerOptions::default().lease;
    slowest_provider.map_or(default, |(_, timeout)| {
        default.max(passage_runtime::least_lease(timeout))
    })
}

fn local_base(global: &Global) -> PathBuf {
    match global.database_url {
        Some(_) => PathBuf::from("passage.db"),
        None => global.db.clone(),
    }
}

/// Loads every `*.toml` in `dir`, or the built-in definitions when `dir` does not exist.
/// Any malformed file stops start-up with its precise errors.
pub fn load_definitions(dir: &Path) -> anyhow::Result<Vec<Definition>> {
    if !dir.is_dir() {
        return BUILTIN
            .iter()
            .map(|(name, src)| definition::load(name, src).map_err(anyhow::Error::from))
            .collect();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read the workflows directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no workflow definitions (*.toml) in {}", dir.display());
    }
    let mut defs = Vec::new();
    let mut problems: Vec<DefinitionErrors> = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).with_context(|| format!("read {}", f.display()))?;
        match definition::load(&f.display().to_string(), &src) {
            Ok(d) => defs.push(d),
            Err(e) => problems.push(e),
        }
    }
    if let Some(first) = problems.into_iter().next() {
        return Err(first.into());
    }
    Ok(defs)
}

/// The master secret: `PASSAGE_SECRET`, else a key file, created with mode 0600 only for a
/// store without events (a first run).
fn load_keys(
    global: &Global,
    store_has_events: bool,
    pinned: bool,
    read_only: bool,
) -> anyhow::Result<Keys> {
    if let Ok(secret) = std::env::var("PASSAGE_SECRET") {
        if secret.len() < 32 {
            bail!("PASSAGE_SECRET must be at least 32 characters (e.g. 64 hex digits)");
        }
        return Ok(Keys::derive(secret.as_bytes()));
    }
    let path = global
        .secret_file
        .clone()
        .unwrap_or_else(|| beside(&local_base(global), "passage.key"));
    match std::fs::read_to_string(&path) {
        Ok(existing) => {
            let secret = existing.trim();
            if secret.len() < 32 {
                bail!(
                    "the secret key file {} holds fewer than 32 characters",
                    path.display()
                );
            }
            return Ok(Keys::derive(secret.as_bytes()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("read the secret key file {}", path.display()));
        }
    }
    if store_has_events || pinned {
        bail!(
            "the event store {}, but the secret key file {} does not exist: \
             a new secret could not open the journeys' sealed data and would not match the \
             log's checkpoints. Set PASSAGE_SECRET or --secret-file to the deployment's secret \
             (without them the key file is passage.key beside --db, or in the current \
             directory with --database-url)",
            if store_has_events {
                "already holds events"
            } else {
                "is already bound to a secret (its deployment key is recorded)"
            },
            path.display()
        );
    }
    // A command that only reads creates nothing, a key file least of all: a reviewer's
    // workstation must not mint a secret for a store that has none recorded yet.
    if read_only {
        bail!(
            "no secret: set PASSAGE_SECRET or --secret-file to the deployment's secret (a \
             command that only reads does not create the key file {})",
            path.display()
        );
    }
    let mut bytes = [0u8; 32];
    OsEntropy.fill(&mut bytes);
    let secret = hex(&bytes);
    write_private(&path, &secret)
        .with_context(|| format!("create the secret key file {}", path.display()))?;
    Ok(Keys::derive(secret.as_bytes()))
}

/// Refuses a secret other than the one that signed the log's newest checkpoint: every
/// command would otherwise run, and `audit verify` would call the checkpoints forged.
async fn secret_matches_checkpoints(store: &AnyStore, keys: &Keys) -> anyhow::Result<()> {
    use passage_core::ports::EventStore as _;
    let ours = hex(crate::audit::signing_key(keys).verifying_key().as_bytes());
    let newest = store
        .checkpoints()
        .await
        .context("read the audit checkpoints")?
        .into_iter()
        .max_by_key(|c| c.position);
    match newest {
        Some(c) if c.public_key != ours => bail!(
            "this secret's audit key ({}…) is not the one that signed the log's newest \
             checkpoint, at position {} ({}…): set PASSAGE_SECRET or --secret-file to the \
             deployment's secret. (If the secret is right, that checkpoint was not written by \
             this deployment: compare it with the published checkpoint lines.)",
            &ours[..16],
            c.position,
            c.public_key.get(..16).unwrap_or(&c.public_key)
        ),
        _ => Ok(()),
    }
}

/// The store records the audit public key of the first secret a writing command (`serve`,
/// `worker`, `bot`, `demo`, `journey start`...) opened it with; every command then refuses
/// another secret at once. The checkpoint check above catches it only once a checkpoint is
/// signed, and a node with another secret would meanwhile seal codes and personal data the
/// others cannot read, key the shared counters differently, and could sign the first
/// checkpoint itself, locking the right secret out. A store from before the record that
/// holds journeys is recorded only under a secret seen to open one of them.
/// `recorded`: the key as read at open; returns it as it is afterwards.
async fn secret_matches_deployment(
    store: &AnyStore,
    engine: &AppEngine,
    keys: &Keys,
    recorded: Option<String>,
    writes: bool,
    has_events: bool,
) -> anyhow::Result<Option<String>> {
    let ours = hex(crate::audit::signing_key(keys).verifying_key().as_bytes());
    let refuse = |key: &str| {
        anyhow::anyhow!(
            "this secret's audit key ({}…) is not the deployment's ({}…, recorded when a \
             passage command first wrote to this database): set PASSAGE_SECRET or \
             --secret-file to the secret the other nodes use (docs/deployment.md says what \
             to do if the first write used a wrong one)",
            &ours[..16],
            key.get(..16).unwrap_or(key)
        )
    };
    match recorded {
        Some(key) if key != ours => Err(refuse(&key)),
        Some(key) => Ok(Some(key)),
        None if !writes => Ok(None),
        None => {
            if has_events && !secret_opens_the_journeys(engine).await? {
                return Ok(None);
            }
            let key = store
                .pin_deployment_key(&ours)
                .await
                .context("record the deployment's audit key")?;
            if key != ours {
                return Err(refuse(&key));
            }
            Ok(Some(key))
        }
    }
}

/// Whether `engine`'s secret opens the newest journeys of a store that recorded no
/// deployment key yet (written before this build): the first writer after the upgrade must
/// not record a wrong secret as the deployment's. `Ok(true)` once a journey that still has
/// its personal-data key opened; `Ok(false)` when none could tell (all erased, or from
/// before per-journey keys), and then nothing is recorded yet; an error when one would not
/// open.
async fn secret_opens_the_journeys(engine: &AppEngine) -> anyhow::Result<bool> {
    use passage_core::ports::{EventStore as _, JourneyFilter, StoredDataKey};
    let newest = engine
        .store()
        .list_journeys(JourneyFilter {
            limit: 50,
            ..JourneyFilter::default()
        })
        .await
        .context("list the newest journeys")?;
    for journey in newest {
        let id = journey.journey_id;
        if !matches!(
            engine.store().journey_key(id).await,
            Ok(Some(StoredDataKey::Live(_)))
        ) {
            continue;
        }
        match engine.load(id).await {
            Err(e @ passage_runtime::Error::Unreadable(_)) => bail!(
                "this secret cannot open the journeys already in this store ({e}): set \
                 PASSAGE_SECRET or --secret-file to the deployment's secret"
            ),
            Ok(_) => return Ok(true),
            // Anything else (a definition this build lacks, say) says nothing about the
            // secret: the other journeys decide.
            Err(_) => continue,
        }
    }
    Ok(false)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Adds the demo accounts, each with a random password nobody knows, to a store that never
/// had them: the seed is recorded (`directory_seeds`), so a demo account erased later
/// (`passage subjects erase`) stays gone, even when all of them were.
/// Adds the demo accounts to a store that never had its demo seed, once. Without
/// `with_accounts` the seed is recorded with no accounts: a later command run without
/// `--no-demo-accounts` (a workstation, a node missing the setting) must not add them to a
/// directory that was made without them.
async fn seed_directory(store: &AnyStore, with_accounts: bool) -> anyhow::Result<()> {
    const SEED: &str = "demo";
    if store.directory_seeded(SEED).await? {
        return Ok(());
    }
    if !with_accounts {
        store
            .seed_directory_once(SEED, &[])
            .await
            .context("record that the directory has no demo accounts")?;
        return Ok(());
    }
    let mut accounts = Vec::new();
    for account in demo_accounts() {
        let mut pw = [0u8; 24];
        let mut salt = [0u8; 16];
        OsEntropy.fill(&mut pw);
        OsEntropy.fill(&mut salt);
        let phc = Argon2id::default()
            .hash(&hex(&pw), &salt)
            .map_err(|e| anyhow::anyhow!("hash a demo password: {e}"))?;
        accounts.push((account, phc));
    }
    store
        .seed_directory_once(SEED, &accounts)
        .await
        .context("seed the demo directory")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::default_lease;
    use std::time::Duration;

    /// Which nodes deliver support alerts: a webhook wherever it is configured; the dev
    /// outbox in a development setup unless a Discord support channel is named; nothing
    /// without a route (the bot's worker brings its own).
    #[test]
    fn alerts_are_delivered_by_the_nodes_with_a_route_support_watches() {
        use super::alerts_here;
        // (route, webhook, discord) → delivered here
        assert!(alerts_here(true, true, false));
        assert!(alerts_here(true, true, true));
        assert!(alerts_here(true, false, false));
        assert!(!alerts_here(true, false, true));
        assert!(!alerts_here(false, false, false));
        assert!(!alerts_here(false, false, true));
    }

    #[test]
    fn the_default_lease_grows_with_a_slow_providers_timeout() {
        let default = Duration::from_secs(60);
        assert_eq!(default_lease(None), default);
        let smtp = "SMTP (smtp.timeout_secs)";
        assert_eq!(
            default_lease(Some((smtp, Duration::from_secs(30)))),
            default
        );
        // 3/4 of 87 s is 65.25 s: the 60 s timeout and the 5 s margin.
        assert_eq!(
            default_lease(Some((smtp, Duration::from_secs(60)))),
            Duration::from_secs(87)
        );
    }
}
