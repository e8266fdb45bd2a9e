//! Ports: what the engine needs from the outside world, as runtime-free traits.
//!
//! Adapters (`adapters/store`, `adapters/channels`) implement these; the runtime is generic
//! over them. Async methods return `impl Future + Send` so this crate needs no async runtime
//! (the shape of restate's `storage-api`).

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

/// One journey is one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JourneyId(pub Uuid);

impl fmt::Display for JourneyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JourneyId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A 32-byte SHA-256 digest.
pub type Hash = [u8; 32];

/// An event ready to be appended; the payload is already serialized JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u16,
    pub payload: String,
}

/// An effect to deliver after commit (send a code, place a call, apply a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEffect {
    /// Also the idempotency key the channel sees.
    pub effect_id: Uuid,
    pub kind: String,
    pub payload: String,
    pub available_at: Timestamp,
}

/// A durable timer; it fires by sending a command to its journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTimer {
    pub timer_id: Uuid,
    pub fire_at: Timestamp,
    pub payload: String,
}

/// The searchable row a journey keeps in the `journeys` read model, written in the same
/// transaction as its events so listings are never behind the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneySummary {
    pub journey_id: JourneyId,
    pub definition_id: String,
    pub definition_version: u32,
    pub status: String,
    pub current_step: Option<String>,
    pub email_masked: Option<String>,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
    /// Pseudonym of the address ([`crate::secrets::Keys::subject`]), once the email step
    /// was answered.
    pub subject: Option<String>,
    /// Failed code attempts over the journey so far (R16 sums them per subject).
    pub failures: u32,
    /// When the stall scanner should look at the journey next (chat-ops); `None`: never.
    pub stall_at: Option<Timestamp>,
    /// Keep the stored `stall_at` instead of this one: system events (deliveries, timers)
    /// are not progress by the person.
    pub stall_keep: bool,
}

/// Everything one command produced, appended atomically or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    pub stream: JourneyId,
    /// Number of events the writer saw in the stream. Another writer got there first when
    /// the stream has moved on: the append fails with [`StoreError::Conflict`].
    pub expected_version: u64,
    /// Idempotency key: a second append with the same id stores nothing and returns the
    /// first outcome.
    pub command_id: Uuid,
    /// JSON: who did it and through which channel (R49).
    pub metadata: String,
    pub recorded_at: Timestamp,
    pub events: Vec<NewEvent>,
    pub effects: Vec<NewEffect>,
    pub timers: Vec<NewTimer>,
    pub summary: JourneySummary,
    /// JSON reply returned to anyone who repeats `command_id`.
    pub outcome: String,
    /// The stream's personal-data key, wrapped ([`crate::personal`]), to keep in the same
    /// transaction when the stream has no key row yet; an existing row (live or erased) is
    /// left as it is.
    pub data_key: Option<String>,
    /// The recovery session a completing command hands out (R45, R47), written in the same
    /// transaction as the events: a journey is never completed without its session, nor a
    /// session stored for a completion that did not commit (a conflict, a duplicate or a
    /// crash writes neither). The store keeps the account directory's `sessions` table in
    /// the same database, which is why this is the store's to write (ADR 0006).
    pub session: Option<Session>,
}

/// A journey's personal-data key as the store holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredDataKey {
    /// Wrapped under the deployment's key ([`crate::secrets::Keys::unwrap_data_key`]).
    Live(String),
    /// Destroyed: the journey's sealed values read `[erased]`.
    Erased,
}

impl fmt::Debug for StoredDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoredDataKey::Live(_) => "Live(..)",
            StoredDataKey::Erased => "Erased",
        })
    }
}

/// What [`EventStore::erase_journey`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JourneyErasure {
    /// A live key was destroyed now (false: it was destroyed before, or never existed).
    pub key_destroyed: bool,
    /// Outbox entries and timers of the journey deleted.
    pub outbox_deleted: u64,
    pub timers_deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendResult {
    Committed {
        /// Global position of the first appended event (none if the command appended no event).
        first_position: Option<u64>,
        stream_version: u64,
    },
    /// The command id was seen before; nothing was written.
    Duplicate { outcome: String },
}

/// An event as stored, with its place in the stream, in the global log and in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Global position, gap-free from 1.
    pub position: u64,
    pub stream: JourneyId,
    /// Position in the stream, from 1.
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: String,
    pub metadata: String,
    pub recorded_at: Timestamp,
    pub command_id: Uuid,
    pub prev_hash: Hash,
    pub hash: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub effect_id: Uuid,
    pub stream: JourneyId,
    pub kind: String,
    pub payload: String,
    /// Delivery attempts before this claim.
    pub attempts: u32,
    /// The claim's fencing token: the `leased_until` it set. Completing or rescheduling
    /// the entry must present it, so a worker whose lease lapsed (and was taken over)
    /// cannot act on the entry any more.
    pub lease: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEntry {
    pub timer_id: Uuid,
    pub stream: JourneyId,
    pub fire_at: Timestamp,
    pub payload: String,
    /// The claim's fencing token, as in [`OutboxEntry::lease`].
    pub lease: Timestamp,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JourneyFilter {
    pub status: Option<String>,
    pub definition_id: Option<String>,
    /// The masked address as events and listings show it (`a•••e@e•••.com`).
    pub email_masked: Option<String>,
    /// The pseudonym of an address ([`crate::secrets::Keys::subject`]): one person's
    /// journeys exactly, where a masked address may also match look-alikes.
    pub subject: Option<String>,
    /// One journey.
    pub journey_id: Option<JourneyId>,
    /// The step the journey is waiting on.
    pub current_step: Option<String>,
    /// Last activity (`updated_at`) at or after this time.
    pub updated_from: Option<Timestamp>,
    /// Last activity before this time.
    pub updated_to: Option<Timestamp>,
    pub limit: usize,
    /// Rows to skip (paging through a listing).
    pub offset: usize,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("journey {stream} moved on: expected version {expected}, found {actual}")]
    Conflict {
        stream: JourneyId,
        expected: u64,
        actual: u64,
    },
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request can never succeed as sent (its own data breaks a constraint, e.g. an
    /// effect id that is already used): retrying it is pointless, unlike `Unavailable`.
    #[error("event store refused the request: {0}")]
    Rejected(String),
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
}

/// An operator as the console's sign-in sees them: the PHC string to verify against.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorLogin {
    pub name: String,
    pub role: crate::roles::Role,
    pub password_phc: String,
    pub disabled: bool,
}

impl fmt::Debug for OperatorLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorLogin")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Who is calling a console or support-API route, once their session or token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub name: String,
    /// The session's role is the operator's; a token's is the one it was issued with.
    pub role: crate::roles::Role,
    /// `console` for a signed-in browser, `token:<id>` for a script's API token.
    pub via: String,
}

/// Operators of the support console and the support API (issue #7), apart from portal
/// users. Only hashes of session tokens and API tokens are stored.
pub trait OperatorStore: Clone + Send + Sync + 'static {
    fn operator_login(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<OperatorLogin>, StoreError>> + Send;

    /// The live token with this hash whose operator is still enabled.
    fn operator_by_token(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = Result<Option<OperatorIdentity>, StoreError>> + Send;

    fn create_operator_session(
        &self,
        session_hash: &str,
        operator: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live, unexpired session with this hash whose operator is still enabled.
    fn operator_by_session(
        &self,
        session_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<OperatorIdentity>, StoreError>> + Send;

    fn revoke_operator_session(
        &self,
        session_hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The event log plus the outbox and timer tables that share its transactions.
pub trait EventStore: Clone + Send + Sync + 'static {
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// The stored outcome of a command already appended, if any.
    fn command_outcome(
        &self,
        command_id: Uuid,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    fn read_stream(
        &self,
        stream: JourneyId,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Events with `position > after`, in position order, at most `limit`.
    fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// The last event's position and hash, `None` for an empty log.
    fn head(&self) -> impl Future<Output = Result<Option<(u64, Hash)>, StoreError>> + Send;

    /// Keeps a signed checkpoint of the chain head (idempotent per position).
    fn save_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every checkpoint, oldest first.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;

    /// Keeps a definition's source under its content hash (idempotent).
    fn save_definition(
        &self,
        content_hash: &str,
        definition_id: &str,
        version: u32,
        source: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn load_definition(
        &self,
        content_hash: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    fn list_journeys(
        &self,
        filter: JourneyFilter,
    ) -> impl Future<Output = Result<Vec<JourneySummary>, StoreError>> + Send;

    /// The journeys of one subject updated at or after `since`, newest first: what R16's
    /// failure cap sums and R44's revocation cancels. Served by an index on
    /// `(subject, updated_at)`, so its cost does not grow with other addresses' journeys.
    /// Active or failed journeys whose `stall_at` is due at `now`, most overdue first:
    /// served by an index on `stall_at`, so the cost follows the due journeys, not the
    /// healthy ones.
    fn due_stalls(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JourneySummary>, StoreError>> + Send;

    fn journeys_by_subject(
        &self,
        subject: &str,
        since: Timestamp,
    ) -> impl Future<Output = Result<Vec<JourneySummary>, StoreError>> + Send;

    /// Leases up to `limit` outbox entries that are due at `now` and not leased by anyone
    /// else; the lease lapses after `lease` so a dead worker's entries are taken over. Each
    /// entry carries its fencing token ([`OutboxEntry::lease`]).
    fn claim_effects(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send;

    /// [`EventStore::claim_effects`] leaving entries of effect kind `skip_kind` to other
    /// workers: a node without a support alert route leaves `raise-alert` to the node that
    /// has one (`passage bot`).
    fn claim_effects_except(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: &str,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send;

    /// [`EventStore::claim_effects`] (or `_except` with `skip_kind`) taking only entries of
    /// the journey `stream`: a command that drives one journey by hand delivers that
    /// journey's messages, never the rest of a shared store's queue.
    fn claim_journey_effects(
        &self,
        stream: JourneyId,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: Option<&str>,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StoreError>> + Send;

    /// Marks the entry delivered, if it is still pending and leased with `lease` (the token
    /// of the claim that returned it). `Ok(false)`: the lease was lost (it lapsed and
    /// another worker claimed the entry, or the entry is no longer pending); nothing changed.
    fn complete_effect(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Releases the lease and makes the entry due again at `retry_at`; `None` gives up.
    /// Fenced like [`EventStore::complete_effect`]: `Ok(false)` means the lease was lost.
    fn reschedule_effect(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        retry_at: Option<Timestamp>,
        error: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Leases due timers, as [`EventStore::claim_effects`] leases effects.
    fn claim_timers(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TimerEntry>, StoreError>> + Send;

    /// [`EventStore::claim_timers`] taking only timers of the journey `stream` (see
    /// [`EventStore::claim_journey_effects`]).
    fn claim_journey_timers(
        &self,
        stream: JourneyId,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TimerEntry>, StoreError>> + Send;

    /// Marks the timer fired, fenced by its claim's `lease` token like
    /// [`EventStore::complete_effect`].
    fn complete_timer(
        &self,
        timer_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The earliest time at which a pending effect or timer becomes due, if any.
    fn next_due(&self) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    /// Resolves when new outbox or timer work may be available, or after `timeout` at the
    /// latest. Spurious wake-ups are allowed (the caller claims and finds nothing); missed
    /// ones are bounded by `timeout`, which is the polling fallback.
    fn wait_for_work(&self, timeout: Duration) -> impl Future<Output = ()> + Send;

    /// The journey's personal-data key; `None` for journeys written before keys existed.
    fn journey_key(
        &self,
        stream: JourneyId,
    ) -> impl Future<Output = Result<Option<StoredDataKey>, StoreError>> + Send;

    /// Crypto-shreds the journey, in one transaction: its key is destroyed (a row saying so
    /// is written for journeys without one), its read-model row loses the masked address and
    /// the pseudonym, and its outbox entries and timers (which name the person or would
    /// contact them) are deleted. Idempotent.
    fn erase_journey(
        &self,
        stream: JourneyId,
        reason: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<JourneyErasure, StoreError>> + Send;

    /// Finished journeys (completed, failed, expired, cancelled) started before `before`
    /// whose personal data is not erased yet, oldest first: what retention erases. By start,
    /// not last update: recording an erasure updates the row, and an erasure interrupted
    /// before its key was destroyed must still be found.
    fn retention_due(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<JourneyId>, StoreError>> + Send;

    /// Makes erased bytes unrecoverable from the storage files where the backend allows it
    /// (SQLite: fold the write-ahead log into the file and truncate it; PostgreSQL: VACUUM
    /// the tables erasure touches).
    fn purge_erased(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An account as the directory knows it. Full addresses live only here (never in events).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub account_id: String,
    pub email: String,
    pub display_name: String,
    pub phone: Option<String>,
    pub enabled: bool,
}

impl fmt::Debug for Account {
    // Masked, so that an account printed by accident leaks no address (R50).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("account_id", &self.account_id)
            .field("email", &crate::mask::mask_email(&self.email))
            .field("phone", &self.phone.as_deref().map(crate::mask::mask_phone))
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("account directory unavailable: {0}")]
pub struct DirectoryError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The portal's account directory (the identity store the reset changes).
pub trait AccountDirectory: Clone + Send + Sync + 'static {
    /// Looks up by the normalized address (see [`crate::mask::normalize_email`]).
    fn find_by_email(
        &self,
        normalized_email: &str,
    ) -> impl Future<Output = Result<Option<Account>, DirectoryError>> + Send;

    fn get(
        &self,
        account_id: &str,
    ) -> impl Future<Output = Result<Option<Account>, DirectoryError>> + Send;

    /// The accounts among `account_ids` that exist, in no particular order: one read for a
    /// batch of deliveries instead of one each.
    fn get_many(
        &self,
        account_ids: &[&str],
    ) -> impl Future<Output = Result<Vec<Account>, DirectoryError>> + Send;

    /// Replaces the stored password hash (PHC string, argon2id) with one chosen at
    /// `changed_at`, unless a newer one is already stored: two resets completed concurrently
    /// end with the later one's password whatever order they are applied in (attack 15).
    /// Returns whether this hash was applied.
    fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        changed_at: Timestamp,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// The stored password hash, to verify a sign-in.
    fn password_hash(
        &self,
        account_id: &str,
    ) -> impl Future<Output = Result<Option<String>, DirectoryError>> + Send;

    fn create_session(
        &self,
        session: &Session,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// The session whose token hashes to `session_hash` ([`crate::secrets::session_hash`]),
    /// revoked or not; callers check [`Session::is_live`].
    fn find_session(
        &self,
        session_hash: &str,
    ) -> impl Future<Output = Result<Option<Session>, DirectoryError>> + Send;

    /// Revokes the account's live sessions created up to `recovery_until` (the reset's
    /// completion) except the one minted by `keep_journey` (R45): a later reset's session
    /// outlives an earlier reset applied after it, and a sign-in with the new password
    /// survives a retried apply. Returns how many were revoked.
    fn revoke_sessions(
        &self,
        account_id: &str,
        keep_journey: Option<&str>,
        recovery_until: Timestamp,
        now: Timestamp,
        reason: &str,
    ) -> impl Future<Output = Result<u64, DirectoryError>> + Send;

    /// Revokes one session (sign-out).
    fn revoke_session(
        &self,
        session_hash: &str,
        now: Timestamp,
        reason: &str,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Deletes the account (full address, phone, name, password hash) and its sessions, for
    /// the right to erasure. Returns whether the account existed.
    fn erase_account(
        &self,
        account_id: &str,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;
}

/// A signed statement "the chain's event at `position` hashes to `hash`", made at
/// `created_at` (docs/audit.md). The signature covers [`Checkpoint::signed_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    pub hash: Hash,
    pub created_at: Timestamp,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

impl Checkpoint {
    pub fn signed_bytes(position: u64, hash: &Hash, created_at: Timestamp) -> Vec<u8> {
        let mut b = b"passage-checkpoint-v1".to_vec();
        b.extend_from_slice(&position.to_be_bytes());
        b.extend_from_slice(hash);
        b.extend_from_slice(&created_at.as_millis().to_be_bytes());
        b
    }
}

/// A portal session. Only the token's hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub session_hash: String,
    pub account_id: String,
    /// The journey that minted it, for a session handed out at the end of a reset.
    pub journey_id: Option<String>,
    /// `sign-in` (password) or `recovery` (after a reset: not a step-up, R47).
    pub kind: String,
    /// How the person proved who they are, e.g. `pwd` or `email-otp sms-otp` (R47's AMR).
    pub amr: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// A sign-in's [`crate::secrets::password_fingerprint`] of the hash it was verified
    /// against; the session is dead once the account's password differs (R45). `None` for
    /// recovery sessions, which the reset's revocation governs.
    pub password_fp: Option<String>,
}

impl Session {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A message for a person, ready for a channel. Carries the plain code: it exists only in
/// memory between unsealing and delivery (R11).
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The effect id: channels use it to deliver at most once per key.
    pub idempotency_key: Uuid,
    pub journey_id: JourneyId,
    pub kind: MessageKind,
    /// A security notice the person must get whatever else was sent to them (R46: "your
    /// password was changed"): it counts against no per-recipient or per-journey budget,
    /// which anyone can spend by starting resets for an address. Only a completed reset
    /// sends one, so it cannot be used to flood an inbox.
    pub notice: bool,
}

impl fmt::Debug for OutboundMessage {
    // Never print bodies: they carry codes (R50).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMessage")
            .field("idempotency_key", &self.idempotency_key)
            .field("journey_id", &self.journey_id)
            .field("channel", &self.kind.channel())
            .field("notice", &self.notice)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum MessageKind {
    Email {
        to: String,
        subject: String,
        text: String,
    },
    Sms {
        to: String,
        text: String,
    },
    /// A voice call; `say` is what the call speaks, `expect` what it waits for.
    Call {
        to: String,
        call_id: Uuid,
        say: String,
        expect: CallExpectation,
    },
    /// A support alert (chat-ops): raised once per `dedup_key`, then updated in place.
    /// Carries masked data only.
    Alert {
        dedup_key: String,
        text: String,
        update: bool,
        /// Mention the support role (escalation).
        mention: bool,
        /// The alert is over (the journey ended or left the alerted step): its last update,
        /// after which nobody needs to act on it.
        resolved: bool,
    },
}

impl fmt::Debug for MessageKind {
    // Bodies carry codes and addresses: never print them (R50).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageKind::{}", self.channel())
    }
}

impl MessageKind {
    pub fn channel(&self) -> &'static str {
        match self {
            MessageKind::Email { .. } => "email",
            MessageKind::Sms { .. } => "sms",
            MessageKind::Call { .. } => "voice",
            MessageKind::Alert { .. } => "support",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallExpectation {
    /// Confirm with a lone `#`.
    PressPound,
    /// Read a code out; nothing is keyed on the phone.
    ListenOnly,
}

/// What a channel reports after accepting a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Provider's message or call id, for support and audit (R49).
    pub provider_ref: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Retrying cannot help (bad number, rejected address).
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
    /// Retrying may help (timeout, 5xx).
    #[error("transient delivery failure: {0}")]
    Transient(String),
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
}

/// Delivers messages on one or more channels.
pub trait Channel: Clone + Send + Sync + 'static {
    fn deliver(
        &self,
        message: &OutboundMessage,
    ) -> impl Future<Output = Result<Receipt, SendError>> + Send;

    /// The receipt of an earlier delivery of the message with this idempotency key, when
    /// the channel still holds it: `deliver` would return it without calling the provider.
    /// Layers in front of a provider (a circuit breaker) answer such a redelivery without
    /// counting it as a call.
    fn remembered(&self, _idempotency_key: Uuid) -> Option<Receipt> {
        None
    }
}
