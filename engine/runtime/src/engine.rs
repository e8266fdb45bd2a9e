//! The executor: load -> decide -> append, with optimistic concurrency and idempotency.

use crate::clock::{Clock, OsEntropy};
use crate::error::Error;
use passage_core::definition::{self, Definition};
use passage_core::journey::view::JourneyView;
use passage_core::journey::{
    self, Command, Context, Decision, FoundAccount, JourneyEvent, JourneyState, Reply,
    SCHEMA_VERSION, SecretString, TimerKind,
};
use passage_core::mask::{mask_email, mask_phone, normalize_email};
use passage_core::password::PasswordContext;
use passage_core::personal::{self, DataKey};
use passage_core::ports::{
    AccountDirectory, AppendRequest, AppendResult, EventStore, JourneyId, JourneySummary,
    NewEffect, NewEvent, NewTimer, StoreError, StoredDataKey, StoredEvent,
};
use passage_core::secrets::{Argon2id, Keys};
use passage_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use tokio::sync::Notify;
use uuid::Uuid;

/// How many times a command is decided again after losing a race for its journey.
const MAX_CONFLICT_RETRIES: usize = 16;

/// How long the session handed out after a reset lasts: a working day.
pub const RECOVERY_SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// Who issued a command and through which channel (recorded with every event, R49).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `person`, `support` or `system`.
    pub kind: String,
    /// A support operator's or chat user's id; none for the person resetting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `cli`, `web`, `api`, `chat`, `worker`, ...
    pub channel: String,
    /// The client's address as the web layer resolved it (behind trusted proxies), R49.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The client's User-Agent, cut to 200 characters with control characters removed
    /// (log injection, attack 46).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Why an operator acted (console and support API actions require one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Actor {
    /// The same actor, seen from a client address and user agent.
    pub fn from_client(mut self, ip: Option<String>, user_agent: Option<&str>) -> Self {
        self.ip = ip;
        self.user_agent =
            user_agent.map(|ua| ua.chars().filter(|c| !c.is_control()).take(200).collect());
        self
    }

    pub fn person(channel: &str) -> Self {
        Self {
            kind: "person".into(),
            id: None,
            channel: channel.into(),
            ip: None,
            user_agent: None,
            reason: None,
        }
    }

    pub fn system() -> Self {
        Self {
            kind: "system".into(),
            id: None,
            channel: "worker".into(),
            ip: None,
            user_agent: None,
            reason: None,
        }
    }

    /// The same actor, giving a reason for what they do (cut to 500 characters, control
    /// characters removed).
    pub fn because(mut self, reason: &str) -> Self {
        self.reason = Some(
            reason
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect::<String>()
                .trim()
                .to_owned(),
        );
        self
    }

    pub fn support(id: &str, channel: &str) -> Self {
        Self {
            kind: "support".into(),
            id: Some(id.into()),
            channel: channel.into(),
            ip: None,
            user_agent: None,
            reason: None,
        }
    }
}

/// Input as it arrives from a person or a provider, before the engine resolves it.
#[derive(Clone)]
pub enum Input {
    Email(String),
    Code(String),
    Resend,
    Choose(String),
    CallKeys {
        call_id: Uuid,
        digits: String,
    },
    CallEnded {
        call_id: Uuid,
        reason: journey::CallFailure,
    },
    Password {
        new: String,
        confirm: String,
    },
    Timer(TimerKind),
    Delivered {
        effect_id: Uuid,
        channel: String,
        provider_ref: String,
    },
    DeliveryFailed {
        effect_id: Uuid,
        channel: String,
        error: String,
        permanent: bool,
    },
    Cancel {
        reason: String,
    },
    /// From the stall scanner.
    Stalled {
        escalate_after: std::time::Duration,
    },
    /// Support reminds the person.
    Nudge,
    /// Support takes the journey's alert.
    AcknowledgeAlert,
    /// A genuine, unexpired handoff link was opened (checked by the caller).
    OpenHandoff {
        expires_at: Timestamp,
    },
    /// Erase the journey's personal data: use [`Engine::erase_journey`], which also
    /// destroys the key.
    ErasePersonalData {
        reason: String,
    },
}

impl std::fmt::Debug for Input {
    // Codes, passwords and addresses never reach a log through Debug (R50).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Input::Email(_) => "Email(..)",
            Input::Code(_) => "Code(..)",
            Input::Resend => "Resend",
            Input::Choose(o) => return write!(f, "Choose({o:?})"),
            Input::CallKeys { .. } => "CallKeys(..)",
            Input::CallEnded { reason, .. } => return write!(f, "CallEnded({reason:?})"),
            Input::Password { .. } => "Password(..)",
            Input::Timer(t) => return write!(f, "Timer({t:?})"),
            Input::Delivered { .. } => "Delivered",
            Input::DeliveryFailed { .. } => "DeliveryFailed",
            Input::Cancel { .. } => "Cancel",
            Input::Stalled { .. } => "Stalled",
            Input::Nudge => "Nudge",
            Input::AcknowledgeAlert => "AcknowledgeAlert",
            Input::OpenHandoff { .. } => "OpenHandoff",
            Input::ErasePersonalData { .. } => "ErasePersonalData",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub keys: Keys,
    pub hasher: Argon2id,
}

/// What one stall scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Journeys whose deadline was due.
    pub due: usize,
    pub handled: usize,
    pub failed: usize,
}

/// The result of one command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub journey_id: JourneyId,
    pub reply: Reply,
    pub state: JourneyState,
    pub view: JourneyView,
    /// False when the command id had been seen and its first outcome was returned.
    pub fresh: bool,
}

/// One line of a journey's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub position: u64,
    pub version: u64,
    pub recorded_at: Timestamp,
    pub event_type: String,
    pub description: String,
    pub actor: Option<Actor>,
    #[serde(skip)]
    pub event: Option<JourneyEvent>,
    /// The stored event's chain hash (over its sealed form).
    #[serde(skip)]
    pub hash: passage_core::ports::Hash,
}

#[derive(Debug, Serialize, Deserialize)]
struct Metadata {
    actor: Actor,
    command: String,
}

/// The actor as recorded, with the client address and user agent opened.
fn open_actor(mut actor: Actor, key: &JourneyKey) -> Result<Actor, personal::OpenError> {
    personal::open_field(key.open(), &mut actor.ip)?;
    personal::open_field(key.open(), &mut actor.user_agent)?;
    Ok(actor)
}

struct Inner<S, D> {
    store: S,
    directory: D,
    clock: Arc<dyn Clock>,
    options: EngineOptions,
    latest: RwLock<HashMap<String, Arc<Definition>>>,
    by_hash: RwLock<HashMap<String, Arc<Definition>>>,
    wake: Notify,
    /// One async lock per journey with commands in flight in this process: local commands
    /// to one journey queue instead of racing, so optimistic concurrency only has to settle
    /// races between processes (several nodes on one database).
    in_flight: std::sync::Mutex<HashMap<JourneyId, Weak<tokio::sync::Mutex<()>>>>,
    /// Recently used journey states, so a command need not re-read and re-fold its stream.
    /// Safe across nodes: every append names the version it was decided on, and a conflict
    /// drops the entry and reloads from the store.
    states: std::sync::Mutex<StateCache>,
}

/// A bounded map of journey states; when full, it is cleared (simple, and a miss only costs
/// one read of the stream).
#[derive(Default)]
struct StateCache {
    map: HashMap<JourneyId, JourneyState>,
    /// Personal-data keys, unwrapped, so a command seals and opens without a round trip.
    keys: HashMap<JourneyId, JourneyKey>,
}

/// A journey's personal-data key as this process knows it.
#[derive(Debug, Clone)]
pub(crate) enum JourneyKey {
    Live(DataKey),
    /// Destroyed: sealed values read `[erased]`.
    Erased,
    /// Written before keys existed: nothing of it is sealed.
    Missing,
}

impl JourneyKey {
    fn open(&self) -> Option<&DataKey> {
        match self {
            JourneyKey::Live(k) => Some(k),
            _ => None,
        }
    }
}

const STATE_CACHE_CAPACITY: usize = 50_000;

impl StateCache {
    fn get(&self, id: &JourneyId) -> Option<JourneyState> {
        self.map.get(id).cloned()
    }

    /// One field, without cloning the whole state.
    fn subject(&self, id: &JourneyId) -> Option<String> {
        self.map.get(id)?.subject.clone()
    }

    fn put(&mut self, id: JourneyId, state: JourneyState) {
        if self.map.len() >= STATE_CACHE_CAPACITY && !self.map.contains_key(&id) {
            self.map.clear();
            self.keys.clear();
        }
        self.map.insert(id, state);
    }

    fn forget(&mut self, id: &JourneyId) {
        self.map.remove(id);
        self.keys.remove(id);
    }

    fn key(&self, id: &JourneyId) -> Option<JourneyKey> {
        self.keys.get(id).cloned()
    }

    fn put_key(&mut self, id: JourneyId, key: JourneyKey) {
        if self.keys.len() >= STATE_CACHE_CAPACITY && !self.keys.contains_key(&id) {
            self.keys.clear();
        }
        self.keys.insert(id, key);
    }
}

/// A cloneable handle to the executor.
pub struct Engine<S, D> {
    inner: Arc<Inner<S, D>>,
}

impl<S, D> Clone for Engine<S, D> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, D> std::fmt::Debug for Engine<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Parses a stored event and opens its sealed fields (`[erased]` once the key is gone).
fn decode(e: &StoredEvent, key: &JourneyKey) -> Result<JourneyEvent, Error> {
    let event = serde_json::from_str(&e.payload)
        .map_err(|err| Error::Decode(format!("event at position {}: {err}", e.position)))?;
    personal::open_event(key.open(), event)
        .map_err(|err| Error::Decode(format!("event at position {}: {err}", e.position)))
}

/// The key to open a stream with: none once the stream records its erasure, whatever a
/// cache says (another node may have erased it).
fn key_for(stored: &[StoredEvent], key: JourneyKey) -> JourneyKey {
    if stored.iter().any(|e| e.event_type == "PersonalDataErased") {
        return JourneyKey::Erased;
    }
    key
}

impl<S: EventStore, D: AccountDirectory> Engine<S, D> {
    pub fn new(store: S, directory: D, clock: Arc<dyn Clock>, options: EngineOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                directory,
                clock,
                options,
                latest: RwLock::default(),
                by_hash: RwLock::default(),
                wake: Notify::new(),
                in_flight: std::sync::Mutex::default(),
                states: std::sync::Mutex::default(),
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn directory(&self) -> &D {
        &self.inner.directory
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.options.keys
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Signalled after every commit that left work for the worker.
    pub(crate) fn wake(&self) -> &Notify {
        &self.inner.wake
    }

    /// Makes a definition startable by its id, and keeps its bytes in the store so journeys
    /// started on it can finish on it even after the file changes.
    pub async fn register(&self, def: Definition) -> Result<Arc<Definition>, Error> {
        self.inner
            .store
            .save_definition(&def.content_hash, &def.id, def.version, &def.source)
            .await?;
        Ok(self.register_unsaved(def))
    }

    /// [`Engine::register`] without saving the definition: for a handle that only reads
    /// (a read-only store). Journeys already in the store find their own definitions there
    /// by hash.
    pub fn register_unsaved(&self, def: Definition) -> Arc<Definition> {
        let def = Arc::new(def);
        write(&self.inner.by_hash).insert(def.content_hash.clone(), Arc::clone(&def));
        write(&self.inner.latest).insert(def.id.clone(), Arc::clone(&def));
        def
    }

    /// The definitions journeys can be started on, by id.
    pub fn definitions(&self) -> Vec<Arc<Definition>> {
        let mut v: Vec<_> = read(&self.inner.latest).values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    async fn definition_by_hash(
        &self,
        journey: JourneyId,
        hash: &str,
    ) -> Result<Arc<Definition>, Error> {
        if let Some(d) = read(&self.inner.by_hash).get(hash) {
            return Ok(Arc::clone(d));
        }
        let missing = || Error::MissingDefinition {
            journey,
            hash: hash.to_owned(),
        };
        let source = self
            .inner
            .store
            .load_definition(hash)
            .await?
            .ok_or_else(missing)?;
        let def = definition::load(&format!("stored definition {hash}"), &source)
            .map_err(|e| Error::Decode(e.to_string()))?;
        if def.content_hash != hash {
            return Err(
                StoreError::Corrupt(format!("definition {hash} does not hash to its key")).into(),
            );
        }
        let def = Arc::new(def);
        write(&self.inner.by_hash).insert(hash.to_owned(), Arc::clone(&def));
        Ok(def)
    }

    /// Starts a journey on the latest registered version of `workflow`.
    pub async fn start(
        &self,
        workflow: &str,
        actor: Actor,
        command_id: Option<Uuid>,
    ) -> Result<Outcome, Error> {
        let def = read(&self.inner.latest)
            .get(workflow)
            .cloned()
            .ok_or_else(|| Error::UnknownWorkflow {
                name: workflow.to_owned(),
                available: self
                    .definitions()
                    .iter()
                    .map(|d| d.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        // A start with an idempotency key gets a journey id derived from it, so a repeated
        // start lands on the same journey and returns its first outcome. Keyed with the
        // deployment's secret: the id is an API client's capability, and knowing someone's
        // idempotency key must not be enough to compute it.
        let journey_id = match command_id {
            Some(c) => {
                let tag = self.inner.options.keys.web_tag("journey-id", c.as_bytes());
                JourneyId(passage_core::secrets::derived_id(&[
                    b"journey",
                    tag.as_bytes(),
                ]))
            }
            None => JourneyId(Uuid::now_v7()),
        };
        let origin = actor.channel.clone();
        self.execute(
            journey_id,
            Some(def),
            Pending::Start { origin },
            actor,
            command_id,
        )
        .await
    }

    /// Submits input to a journey. A repeated `command_id` returns the first outcome.
    pub async fn submit(
        &self,
        journey_id: JourneyId,
        input: Input,
        actor: Actor,
        command_id: Option<Uuid>,
    ) -> Result<Outcome, Error> {
        self.execute(journey_id, None, Pending::Input(input), actor, command_id)
            .await
    }

    /// Current state, definition and view of a journey.
    pub async fn load(
        &self,
        journey_id: JourneyId,
    ) -> Result<(JourneyState, Arc<Definition>, JourneyView), Error> {
        let stored = self.inner.store.read_stream(journey_id).await?;
        let (state, def) = self.fold(journey_id, &stored, stored.len()).await?;
        let view = JourneyView::build(&state, &def);
        Ok((state, def, view))
    }

    /// The address pseudonym a journey is for. It never changes once the email step has set
    /// it, so this process's cached state answers as well as the log, without a read.
    pub async fn subject(&self, journey_id: JourneyId) -> Result<Option<String>, Error> {
        let cached = self.cache().subject(&journey_id);
        if cached.is_some() {
            return Ok(cached);
        }
        let (state, ..) = self.load(journey_id).await?;
        Ok(state.subject)
    }

    /// The state as it was after the first `at` events (support's replay).
    pub async fn replay(
        &self,
        journey_id: JourneyId,
        at: usize,
    ) -> Result<(JourneyState, JourneyView, usize), Error> {
        let stored = self.inner.store.read_stream(journey_id).await?;
        let (state, def) = self.fold(journey_id, &stored, at.max(1)).await?;
        let view = JourneyView::build(&state, &def);
        Ok((state, view, stored.len()))
    }

    async fn fold(
        &self,
        journey_id: JourneyId,
        stored: &[StoredEvent],
        upto: usize,
    ) -> Result<(JourneyState, Arc<Definition>), Error> {
        if stored.is_empty() {
            return Err(Error::UnknownJourney(journey_id));
        }
        let key = key_for(stored, self.data_key(journey_id).await?);
        let mut state = JourneyState::default();
        for e in stored.iter().take(upto) {
            state.apply(&decode(e, &key)?);
        }
        let hash = state
            .definition
            .as_ref()
            .map(|d| d.hash.clone())
            .ok_or_else(|| {
                Error::Decode(format!(
                    "journey {journey_id} does not begin with JourneyStarted"
                ))
            })?;
        let def = self.definition_by_hash(journey_id, &hash).await?;
        Ok((state, def))
    }

    /// One pass of the stall scanner (chat-ops): every journey whose stall deadline is due
    /// at `now` gets the `Stalled` command, which nudges, alerts, refreshes or escalates
    /// (see `passage_core::journey::decide`). Cost: one indexed range query over the due
    /// journeys plus one command each; healthy journeys are never read. Two nodes scanning
    /// at once issue the same command ids (journey + deadline), so each stall is handled once.
    pub async fn scan_stalls(
        &self,
        now: Timestamp,
        escalate_after: std::time::Duration,
        limit: usize,
    ) -> Result<ScanReport, Error> {
        let due = self.inner.store.due_stalls(now, limit).await?;
        let mut report = ScanReport {
            due: due.len(),
            ..ScanReport::default()
        };
        for j in due {
            let id = passage_core::secrets::derived_id(&[
                b"stall",
                j.journey_id.0.as_bytes(),
                &j.stall_at.map_or(0, |t| t.as_millis()).to_be_bytes(),
            ]);
            let outcome = self
                .submit(
                    j.journey_id,
                    Input::Stalled { escalate_after },
                    Actor::system(),
                    Some(id),
                )
                .await;
            match outcome {
                Ok(_) => report.handled += 1,
                Err(e) => {
                    tracing::warn!(journey = %j.journey_id, "stall scan: {e}");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    pub async fn timeline(&self, journey_id: JourneyId) -> Result<Vec<TimelineEntry>, Error> {
        let stored = self.inner.store.read_stream(journey_id).await?;
        if stored.is_empty() {
            return Err(Error::UnknownJourney(journey_id));
        }
        let key = key_for(&stored, self.data_key(journey_id).await?);
        stored
            .iter()
            .map(|e| {
                let event = decode(e, &key)?;
                let actor = serde_json::from_str::<Metadata>(&e.metadata)
                    .ok()
                    .map(|m| open_actor(m.actor, &key))
                    .transpose()
                    .map_err(|err| {
                        Error::Decode(format!("metadata at position {}: {err}", e.position))
                    })?;
                Ok(TimelineEntry {
                    position: e.position,
                    version: e.stream_version,
                    recorded_at: e.recorded_at,
                    event_type: e.event_type.clone(),
                    description: event.describe(),
                    actor,
                    event: Some(event),
                    hash: e.hash,
                })
            })
            .collect()
    }

    async fn resolve(&self, input: Input, state: &JourneyState) -> Result<Command, Error> {
        Ok(match input {
            Input::Email(raw) => match normalize_email(&raw) {
                Err(e) => Command::RejectEmail {
                    reason: e.to_string(),
                },
                Ok(email) => {
                    let found = self.inner.directory.find_by_email(&email).await?;
                    Command::SubmitEmail {
                        email_masked: mask_email(&email),
                        subject: self.inner.options.keys.subject(&email),
                        // A disabled account is treated exactly like a missing one (R1).
                        account: found.filter(|a| a.enabled).map(|a| FoundAccount {
                            phone_masked: a.phone.as_deref().map(mask_phone),
                            account_id: a.account_id,
                        }),
                    }
                }
            },
            Input::Code(code) => Command::SubmitCode {
                code: SecretString(code),
            },
            Input::Resend => Command::Resend,
            Input::Choose(option) => Command::Choose { option },
            Input::CallKeys { call_id, digits } => Command::CallKeys { call_id, digits },
            Input::CallEnded { call_id, reason } => Command::CallEnded { call_id, reason },
            Input::Password { new, confirm } => {
                // The words the password may not contain come from the account (R29).
                let account = match &state.account_id {
                    Some(id) => self.inner.directory.get(id).await?,
                    None => None,
                };
                let context = account
                    .map(|a| PasswordContext {
                        email: a.email,
                        display_name: a.display_name,
                    })
                    .unwrap_or_default();
                Command::SetPassword {
                    new: SecretString(new),
                    confirm: SecretString(confirm),
                    context,
                }
            }
            Input::Timer(timer) => Command::TimerFired { timer },
            Input::Delivered {
                effect_id,
                channel,
                provider_ref,
            } => Command::Delivered {
                effect_id,
                channel,
                provider_ref,
            },
            Input::DeliveryFailed {
                effect_id,
                channel,
                error,
                permanent,
            } => Command::DeliveryFailed {
                effect_id,
                channel,
                error,
                permanent,
            },
            Input::Cancel { reason } => Command::Cancel { reason },
            Input::Stalled { escalate_after } => Command::Stalled { escalate_after },
            Input::Nudge => Command::Nudge,
            Input::AcknowledgeAlert => Command::AcknowledgeAlert,
            Input::OpenHandoff { expires_at } => Command::OpenHandoff { expires_at },
            Input::ErasePersonalData { reason } => Command::ErasePersonalData { reason },
        })
    }

    async fn execute(
        &self,
        journey_id: JourneyId,
        start_def: Option<Arc<Definition>>,
        pending: Pending,
        actor: Actor,
        command_id: Option<Uuid>,
    ) -> Result<Outcome, Error> {
        // No lookup of the command id first: the append itself refuses an id it has seen
        // and returns the first outcome (a repeated start finds its journey because the
        // journey id is derived from the command id, see `start`).
        // A start without one has a journey id made a moment ago (UUIDv7, 74 random bits):
        // there is no log to read for it. Should the append still meet a stream there, it
        // reports a conflict and the retry reads.
        let brand_new = command_id.is_none() && matches!(pending, Pending::Start { .. });
        let command_id = command_id.unwrap_or_else(Uuid::new_v4);
        let store = &self.inner.store;
        let lock = self.journey_lock(journey_id);
        let _serialized = lock.lock().await;
        for attempt in 0..MAX_CONFLICT_RETRIES {
            if attempt > 0 {
                // Another process won the race: back off a little, with jitter, so that
                // several losers do not collide again in lockstep.
                let ms = rand::random_range(1..=(2u64 << attempt.min(6)));
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let cached = match attempt {
                0 => self.cache().get(&journey_id),
                _ => None,
            };
            let (state, key) = match cached {
                Some(state) => {
                    let key = self.data_key(journey_id).await?;
                    (state, key)
                }
                None if brand_new && attempt == 0 => (JourneyState::default(), JourneyKey::Missing),
                None => {
                    let stored = store.read_stream(journey_id).await?;
                    let key = match stored.is_empty() {
                        // A new journey: its key is made below, with its first events.
                        true => JourneyKey::Missing,
                        false => key_for(&stored, self.data_key(journey_id).await?),
                    };
                    let mut state = JourneyState::default();
                    for e in &stored {
                        state.apply(&decode(e, &key)?);
                    }
                    (state, key)
                }
            };
            let def = match (&start_def, &state.definition) {
                (_, Some(d)) => self.definition_by_hash(journey_id, &d.hash).await?,
                (Some(d), None) => Arc::clone(d),
                (None, None) => return Err(Error::UnknownJourney(journey_id)),
            };
            let cmd = match &pending {
                Pending::Start { origin } => Command::Start {
                    journey_id,
                    origin: origin.clone(),
                },
                Pending::Input(input) => self.resolve(input.clone(), &state).await?,
            };
            let now = self.inner.clock.now();
            let subject_failures = match (&cmd, &state.subject) {
                (Command::SubmitCode { .. }, Some(subject)) => {
                    self.subject_failures(subject, now).await?
                }
                _ => 0,
            };
            let decision = {
                let mut rng = OsEntropy;
                let mut ctx = Context {
                    journey_id,
                    now,
                    rng: &mut rng,
                    keys: &self.inner.options.keys,
                    hasher: &self.inner.options.hasher,
                    subject_failures,
                };
                journey::decide(&state, &def, &cmd, &mut ctx)
            };
            let mut next = state.clone();
            for e in &decision.events {
                next.apply(e);
            }
            if decision.events.is_empty()
                && decision.effects.is_empty()
                && decision.timers.is_empty()
            {
                let view = JourneyView::build(&next, &def);
                return Ok(Outcome {
                    journey_id,
                    reply: decision.reply,
                    state: next,
                    view,
                    fresh: true,
                });
            }
            // A journey without a key (new, or written before keys existed) gets one with
            // these events; an erased one never gets another, nor does the erasure itself.
            let (key, new_key) = match key {
                JourneyKey::Missing if !matches!(cmd, Command::ErasePersonalData { .. }) => {
                    let k = DataKey::generate(&mut OsEntropy);
                    let wrapped =
                        self.inner
                            .options
                            .keys
                            .wrap_data_key(journey_id.0, &k, &mut OsEntropy);
                    (JourneyKey::Live(k), Some(wrapped))
                }
                other => (other, None),
            };
            let mut request = self.append_request(
                journey_id,
                &state,
                &next,
                &def,
                &cmd,
                &actor,
                command_id,
                now,
                &decision,
                key.open(),
            )?;
            request.data_key = new_key;
            match store.append(request).await {
                Ok(AppendResult::Committed { .. }) => {
                    self.cache().put_key(journey_id, key);
                    if !decision.effects.is_empty() || !decision.timers.is_empty() {
                        self.inner.wake.notify_waiters();
                        self.inner.wake.notify_one();
                    }
                    self.cache().put(journey_id, next.clone());
                    let view = JourneyView::build(&next, &def);
                    return Ok(Outcome {
                        journey_id,
                        reply: decision.reply,
                        state: next,
                        view,
                        fresh: true,
                    });
                }
                Ok(AppendResult::Duplicate { outcome }) => {
                    self.cache().forget(&journey_id);
                    return self.replayed_outcome(journey_id, &outcome).await;
                }
                Err(StoreError::Conflict { .. }) => {
                    self.cache().forget(&journey_id);
                    continue;
                }
                Err(e) => {
                    // The append may or may not have committed: trust only the store.
                    self.cache().forget(&journey_id);
                    return Err(e.into());
                }
            }
        }
        Err(Error::TooMuchContention(journey_id))
    }

    /// R16: failed code attempts for `subject` within the window, over all its journeys.
    async fn subject_failures(&self, subject: &str, now: Timestamp) -> Result<u32, Error> {
        let since = Timestamp(now.0 - journey::SUBJECT_FAILURE_WINDOW.as_millis() as i64);
        let journeys = self.inner.store.journeys_by_subject(subject, since).await?;
        Ok(journeys.iter().map(|j| j.failures).sum())
    }

    /// The journey's key: from memory, else from the store (once per journey and process).
    pub(crate) async fn data_key(&self, journey_id: JourneyId) -> Result<JourneyKey, Error> {
        if let Some(k) = self.cache().key(&journey_id) {
            return Ok(k);
        }
        let key = match self.inner.store.journey_key(journey_id).await? {
            None => JourneyKey::Missing,
            Some(StoredDataKey::Erased) => JourneyKey::Erased,
            Some(StoredDataKey::Live(wrapped)) => JourneyKey::Live(
                self.inner
                    .options
                    .keys
                    .unwrap_data_key(journey_id.0, &wrapped)
                    .map_err(|e| {
                        Error::Unreadable(format!(
                            "the personal-data key of journey {journey_id}: {e} (was the deployment secret changed?)"
                        ))
                    })?,
            ),
        };
        self.cache().put_key(journey_id, key.clone());
        Ok(key)
    }

    /// Drops what this process remembers of a journey (its state and key).
    pub(crate) fn forget(&self, journey_id: JourneyId) {
        self.cache().forget(&journey_id);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, StateCache> {
        self.inner.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journey_lock(&self, journey_id: JourneyId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = map.get(&journey_id).and_then(Weak::upgrade) {
            return lock;
        }
        // Forget journeys nobody is waiting on any more, so the map stays small.
        map.retain(|_, w| w.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(journey_id, Arc::downgrade(&lock));
        lock
    }

    #[allow(clippy::too_many_arguments)]
    fn append_request(
        &self,
        journey_id: JourneyId,
        before: &JourneyState,
        after: &JourneyState,
        def: &Definition,
        cmd: &Command,
        actor: &Actor,
        command_id: Uuid,
        now: Timestamp,
        decision: &Decision,
        key: Option<&DataKey>,
    ) -> Result<AppendRequest, Error> {
        let json = |r: serde_json::Result<String>| r.map_err(|e| Error::Decode(e.to_string()));
        let mut rng = OsEntropy;
        let mut recorded = actor.clone();
        if let Some(k) = key {
            personal::seal_field(k, &mut recorded.ip, &mut rng);
            personal::seal_field(k, &mut recorded.user_agent, &mut rng);
        }
        let metadata = json(serde_json::to_string(&Metadata {
            actor: recorded,
            command: cmd.name().into(),
        }))?;
        let events = decision
            .events
            .iter()
            .map(|e| {
                let payload = match key {
                    Some(k) => serde_json::to_string(&personal::seal_event(k, e, &mut rng)),
                    None => serde_json::to_string(e),
                };
                Ok(NewEvent {
                    event_type: e.event_type().into(),
                    schema_version: SCHEMA_VERSION,
                    payload: json(payload)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let effects = decision
            .effects
            .iter()
            .map(|e| {
                Ok(NewEffect {
                    effect_id: e.effect_id(),
                    kind: e.kind().into(),
                    payload: json(serde_json::to_string(e))?,
                    available_at: now,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let timers = decision
            .timers
            .iter()
            .map(|t| {
                Ok(NewTimer {
                    timer_id: t.timer_id,
                    fire_at: t.fire_at,
                    payload: json(serde_json::to_string(&t.kind))?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // The session token is handed out once and never stored, not even for idempotent
        // retries: a repeated completing command gets "accepted" without a second session
        // (R31). Its hash becomes the session row, which commits with these events.
        let (stored_reply, session) = match &decision.reply {
            Reply::Accepted { session_token } => (
                Reply::Accepted {
                    session_token: None,
                },
                session_token
                    .as_deref()
                    .and_then(|t| recovery_session(journey_id, after, t, def, now)),
            ),
            r => (r.clone(), None),
        };
        // The erasure's own row keeps the address and pseudonym until the key is destroyed,
        // so an erasure interrupted between the two is found again by the person's pseudonym.
        let listed = match cmd {
            Command::ErasePersonalData { .. } => before,
            _ => after,
        };
        let summary = JourneySummary {
            journey_id,
            definition_id: def.id.clone(),
            definition_version: def.version,
            status: after.status.as_str().into(),
            current_step: after.current_step.as_ref().map(|s| s.0.clone()),
            email_masked: listed.email_masked.clone(),
            started_at: after.started_at.unwrap_or(now),
            updated_at: now,
            version: after.version,
            subject: listed.subject.clone(),
            failures: after.failures,
            stall_at: None,
            stall_keep: false,
        };
        let (stall_at, stall_keep) = stall_deadline(before, after, def, cmd, actor, now, decision);
        let summary = JourneySummary {
            stall_at,
            stall_keep,
            ..summary
        };
        Ok(AppendRequest {
            stream: journey_id,
            expected_version: before.version,
            command_id,
            metadata,
            recorded_at: now,
            events,
            effects,
            timers,
            summary,
            outcome: json(serde_json::to_string(&stored_reply))?,
            data_key: None,
            session,
        })
    }

    async fn replayed_outcome(
        &self,
        journey_id: JourneyId,
        stored: &str,
    ) -> Result<Outcome, Error> {
        let reply: Reply =
            serde_json::from_str(stored).map_err(|e| Error::Decode(e.to_string()))?;
        let (state, _, view) = self.load(journey_id).await?;
        Ok(Outcome {
            journey_id,
            reply,
            state,
            view,
            fresh: false,
        })
    }
}

enum Pending {
    Start { origin: String },
    Input(Input),
}

// A poisoned lock only means another thread panicked mid-insert into a cache; the maps
// stay usable, so recover the guard instead of propagating the panic.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// The session handed out when a reset completes (R45, R47): a `recovery` session whose
/// AMR names the factors the journey verified. Only the token's hash is stored, and it is
/// stored by the completing append itself, so that the journey and its session commit
/// together or not at all.
fn recovery_session(
    journey_id: JourneyId,
    state: &JourneyState,
    token: &str,
    def: &Definition,
    now: Timestamp,
) -> Option<passage_core::ports::Session> {
    let account_id = state.account_id.clone()?;
    let amr = state
        .passed
        .iter()
        .filter_map(|s| match def.step(s).map(|s| &s.kind) {
            Some(definition::StepKind::Code(c)) => Some(format!("{}-otp", c.channel.as_str())),
            Some(definition::StepKind::Voice(_)) => Some("voice".to_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ");
    Some(passage_core::ports::Session {
        session_hash: passage_core::secrets::session_hash(token),
        account_id,
        journey_id: Some(journey_id.to_string()),
        kind: "recovery".into(),
        amr,
        created_at: now,
        expires_at: now.plus(RECOVERY_SESSION_LIFETIME),
        revoked_at: None,
        password_fp: None,
    })
}

/// When the stall scanner should look at the journey next, or `(None, true)` to keep what
/// the store has. Only progress by the person (or a new step) restarts the clock; a
/// delivery or a timer does not. Unknown addresses are never nudged or alerted on: there is
/// nobody to remind and nothing for support to do (and nothing may differ for them, R1).
fn stall_deadline(
    before: &JourneyState,
    after: &JourneyState,
    def: &Definition,
    cmd: &Command,
    actor: &Actor,
    now: Timestamp,
    decision: &Decision,
) -> (Option<Timestamp>, bool) {
    let stall_after = after
        .current_step
        .as_ref()
        .and_then(|s| def.step(s))
        .and_then(|s| s.stall_after);
    if after.account_id.is_none() {
        return (None, false);
    }
    match cmd {
        Command::Stalled { .. } | Command::AcknowledgeAlert | Command::Nudge => {
            let done = after.status != journey::Status::Active
                || after
                    .alert
                    .as_ref()
                    .is_some_and(|a| a.acknowledged || a.escalated);
            if done {
                return (None, false);
            }
            let next = stall_after.map(|d| now.plus(d));
            // An open alert is looked at again when it is due to escalate, if that comes
            // before the next refresh.
            let escalation = match (cmd, &after.alert) {
                (Command::Stalled { escalate_after }, Some(a)) => {
                    Some(a.alerted_at.plus(*escalate_after))
                }
                _ => None,
            };
            let next = match (next, escalation) {
                (Some(n), Some(e)) => Some(n.min(e.max(now))),
                (n, e) => n.or(e),
            };
            return (next, false);
        }
        _ => {}
    }
    // A message that cannot be delivered: support should hear now, not after a stall.
    if after.status == journey::Status::Active && after.undeliverable && !before.undeliverable {
        return (Some(now), false);
    }
    if after.status == journey::Status::Failed && before.status == journey::Status::Active {
        // A lockout after wrong guesses is a security event, not a stuck person.
        let lockout = decision
            .events
            .iter()
            .any(|e| matches!(e, JourneyEvent::CodeAttemptFailed { .. }));
        return (if lockout { None } else { Some(now) }, false);
    }
    if after.status != journey::Status::Active {
        return (None, false);
    }
    if actor.kind == "person" || before.current_step != after.current_step {
        return (stall_after.map(|d| now.plus(d)), false);
    }
    (None, true)
}
