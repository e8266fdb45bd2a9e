//! [`AnyStore`]: the backend chosen by configuration, behind the same ports.

use crate::error::Error;
use crate::{PgStore, Seeded, SqliteStore, StoreStats};
use passage_core::ports::{
    Account, AccountDirectory, AppendRequest, AppendResult, DirectoryError, EventStore,
    JourneyFilter, JourneyId, JourneySummary, OutboxEntry, Session, StoreError, StoredEvent,
    TimerEntry,
};
use passage_core::time::Timestamp;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// Either backend. Every port method delegates to the one inside; the enum exists so the
/// binary and the runtime stay monomorphic (no `dyn` over the ports' `impl Future` methods).
#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Whether `target` names a PostgreSQL server (`postgres://` or `postgresql://`, any case)
/// rather than a SQLite file.
pub fn is_postgres_url(target: &str) -> bool {
    let lower = target.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Delegates one call to the backend inside.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl AnyStore {
    /// A `postgres://` or `postgresql://` URL connects to PostgreSQL (default options, the
    /// URL's search_path schema); anything else is the path of a SQLite file, created if
    /// missing. Either way the schema is brought up to date.
    pub async fn open(target: &str) -> Result<Self, Error> {
        if is_postgres_url(target) {
            PgStore::connect(target.trim()).await.map(Self::Postgres)
        } else {
            SqliteStore::open(Path::new(target)).await.map(Self::Sqlite)
        }
    }

    /// [`AnyStore::open`] for commands that only read (`audit verify`, exports, listings):
    /// nothing is created or migrated, and nothing can be written. A role with SELECT
    /// alone, or a copy of the SQLite file, is enough.
    pub async fn open_read_only(target: &str) -> Result<Self, Error> {
        if is_postgres_url(target) {
            let options = crate::postgres::Options {
                read_only: true,
                ..Default::default()
            };
            PgStore::connect_with(target.trim(), options)
                .await
                .map(Self::Postgres)
        } else {
            let options = crate::sqlite::Options {
                read_only: true,
                ..Default::default()
            };
            SqliteStore::open_with(Path::new(target), options)
                .await
                .map(Self::Sqlite)
        }
    }

    /// The head the store records apart from the events (the `log_head` row, moved in the
    /// transaction of every append, on both backends). Lets `audit verify` notice events
    /// removed from the end of the log.
    pub async fn recorded_head(&self) -> Result<Option<(u64, passage_core::ports::Hash)>, Error> {
        delegate!(self, s => s.recorded_head().await.map(Some))
    }

    /// Counts message `token` against send budgets shared by every process on this store:
    /// `None` when all counted it, else the index of the first spent one (none counted).
    pub async fn charge_budgets(
        &self,
        now: Timestamp,
        token: Uuid,
        charges: &[crate::BudgetCharge],
    ) -> Result<Option<usize>, Error> {
        delegate!(self, s => s.charge_budgets(now, token, charges).await)
    }

    /// Deletes every send-budget row whose window has passed at `now`; returns how many.
    pub async fn sweep_budgets(&self, now: Timestamp) -> Result<u64, Error> {
        delegate!(self, s => s.sweep_budgets(now).await)
    }

    /// `"sqlite"` or `"postgres"`, for logs and diagnostics.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }

    pub async fn insert_account_if_missing(
        &self,
        account: &Account,
        phc: &str,
    ) -> Result<bool, Error> {
        delegate!(self, s => s.insert_account_if_missing(account, phc).await)
    }

    /// The deployment's audit public key (hex) as recorded, if any.
    pub async fn deployment_key(&self) -> Result<Option<String>, Error> {
        delegate!(self, s => s.deployment_key().await)
    }

    /// Records `key` as the deployment's audit public key unless one is; returns the
    /// recorded one.
    pub async fn pin_deployment_key(&self, key: &str) -> Result<String, Error> {
        delegate!(self, s => s.pin_deployment_key(key).await)
    }

    pub async fn directory_seeded(&self, name: &str) -> Result<bool, Error> {
        delegate!(self, s => s.directory_seeded(name).await)
    }

    pub async fn seed_directory_once(
        &self,
        name: &str,
        accounts: &[(Account, String)],
    ) -> Result<bool, Error> {
        delegate!(self, s => s.seed_directory_once(name, accounts).await)
    }

    pub async fn upsert_account(&self, account: &Account, phc: &str) -> Result<Seeded, Error> {
        delegate!(self, s => s.upsert_account(account, phc).await)
    }

    pub async fn password_hash(&self, account_id: &str) -> Result<Option<String>, Error> {
        delegate!(self, s => s.password_hash(account_id).await)
    }

    pub async fn add_operator(
        &self,
        name: &str,
        role: passage_core::roles::Role,
        password_phc: &str,
        now: Timestamp,
    ) -> Result<bool, Error> {
        delegate!(self, s => s.add_operator(name, role, password_phc, now).await)
    }

    pub async fn operators(&self) -> Result<Vec<crate::operators::Operator>, Error> {
        delegate!(self, s => s.operators().await)
    }

    pub async fn add_api_token(
        &self,
        token_hash: &str,
        operator: &str,
        role: passage_core::roles::Role,
        label: &str,
        now: Timestamp,
    ) -> Result<String, Error> {
        delegate!(self, s => s.add_api_token(token_hash, operator, role, label, now).await)
    }

    pub async fn api_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<crate::operators::ApiToken>, Error> {
        delegate!(self, s => s.api_token(token_hash).await)
    }

    pub async fn api_tokens(&self) -> Result<Vec<crate::operators::ApiToken>, Error> {
        delegate!(self, s => s.api_tokens().await)
    }

    pub async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<bool, Error> {
        delegate!(self, s => s.set_operator_disabled(name, disabled).await)
    }

    pub async fn revoke_api_token(&self, token_id: &str, now: Timestamp) -> Result<bool, Error> {
        delegate!(self, s => s.revoke_api_token(token_id, now).await)
    }

    pub async fn close(&self) {
        delegate!(self, s => s.close().await)
    }

    pub fn stats(&self) -> StoreStats {
        delegate!(self, s => s.stats())
    }
}

impl passage_core::ports::OperatorStore for AnyStore {
    async fn operator_login(
        &self,
        name: &str,
    ) -> Result<Option<passage_core::ports::OperatorLogin>, StoreError> {
        delegate!(self, s => s.operator_login(name).await)
    }

    async fn operator_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<passage_core::ports::OperatorIdentity>, StoreError> {
        delegate!(self, s => s.operator_by_token(token_hash).await)
    }

    async fn create_operator_session(
        &self,
        session_hash: &str,
        operator: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.create_operator_session(session_hash, operator, created_at, expires_at).await)
    }

    async fn operator_by_session(
        &self,
        session_hash: &str,
        now: Timestamp,
    ) -> Result<Option<passage_core::ports::OperatorIdentity>, StoreError> {
        delegate!(self, s => s.operator_by_session(session_hash, now).await)
    }

    async fn revoke_operator_session(
        &self,
        session_hash: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.revoke_operator_session(session_hash, now).await)
    }
}

impl EventStore for AnyStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        delegate!(self, s => s.append(request).await)
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<String>, StoreError> {
        delegate!(self, s => s.command_outcome(command_id).await)
    }

    async fn read_stream(&self, stream: JourneyId) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.read_stream(stream).await)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.read_all(after, limit).await)
    }

    async fn save_definition(
        &self,
        content_hash: &str,
        definition_id: &str,
        version: u32,
        source: &str,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.save_definition(content_hash, definition_id, version, source).await)
    }

    async fn load_definition(&self, content_hash: &str) -> Result<Option<String>, StoreError> {
        delegate!(self, s => s.load_definition(content_hash).await)
    }

    async fn list_journeys(
        &self,
        filter: JourneyFilter,
    ) -> Result<Vec<JourneySummary>, StoreError> {
        delegate!(self, s => s.list_journeys(filter).await)
    }

    async fn head(&self) -> Result<Option<(u64, passage_core::ports::Hash)>, StoreError> {
        delegate!(self, s => s.head().await)
    }

    async fn save_checkpoint(
        &self,
        checkpoint: &passage_core::ports::Checkpoint,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.save_checkpoint(checkpoint).await)
    }

    async fn checkpoints(&self) -> Result<Vec<passage_core::ports::Checkpoint>, StoreError> {
        delegate!(self, s => s.checkpoints().await)
    }

    async fn due_stalls(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<JourneySummary>, StoreError> {
        delegate!(self, s => s.due_stalls(now, limit).await)
    }

    async fn journeys_by_subject(
        &self,
        subject: &str,
        since: Timestamp,
    ) -> Result<Vec<JourneySummary>, StoreError> {
        delegate!(self, s => s.journeys_by_subject(subject, since).await)
    }

    async fn claim_effects(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        delegate!(self, s => s.claim_effects(now, lease, limit).await)
    }

    async fn claim_effects_except(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: &str,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        delegate!(self, s => s.claim_effects_except(now, lease, limit, skip_kind).await)
    }

    async fn claim_journey_effects(
        &self,
        stream: JourneyId,
        now: Timestamp,
        lease: Duration,
        limit: usize,
        skip_kind: Option<&str>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        delegate!(self, s => s.claim_journey_effects(stream, now, lease, limit, skip_kind).await)
    }

    async fn complete_effect(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.complete_effect(effect_id, lease, now).await)
    }

    async fn reschedule_effect(
        &self,
        effect_id: Uuid,
        lease: Timestamp,
        retry_at: Option<Timestamp>,
        error: &str,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.reschedule_effect(effect_id, lease, retry_at, error).await)
    }

    async fn claim_timers(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        delegate!(self, s => s.claim_timers(now, lease, limit).await)
    }

    async fn claim_journey_timers(
        &self,
        stream: JourneyId,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        delegate!(self, s => s.claim_journey_timers(stream, now, lease, limit).await)
    }

    async fn complete_timer(
        &self,
        timer_id: Uuid,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.complete_timer(timer_id, lease, now).await)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        delegate!(self, s => s.next_due().await)
    }

    async fn wait_for_work(&self, timeout: Duration) {
        delegate!(self, s => s.wait_for_work(timeout).await)
    }

    async fn journey_key(
        &self,
        stream: JourneyId,
    ) -> Result<Option<passage_core::ports::StoredDataKey>, StoreError> {
        delegate!(self, s => s.journey_key(stream).await)
    }

    async fn erase_journey(
        &self,
        stream: JourneyId,
        reason: &str,
        now: Timestamp,
    ) -> Result<passage_core::ports::JourneyErasure, StoreError> {
        delegate!(self, s => s.erase_journey(stream, reason, now).await)
    }

    async fn retention_due(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<JourneyId>, StoreError> {
        delegate!(self, s => s.retention_due(before, limit).await)
    }

    async fn purge_erased(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.purge_erased().await)
    }
}

impl AccountDirectory for AnyStore {
    async fn find_by_email(
        &self,
        normalized_email: &str,
    ) -> Result<Option<Account>, DirectoryError> {
        delegate!(self, s => s.find_by_email(normalized_email).await)
    }

    async fn get(&self, account_id: &str) -> Result<Option<Account>, DirectoryError> {
        delegate!(self, s => s.get(account_id).await)
    }

    async fn get_many(&self, account_ids: &[&str]) -> Result<Vec<Account>, DirectoryError> {
        delegate!(self, s => s.get_many(account_ids).await)
    }

    async fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        changed_at: Timestamp,
    ) -> Result<bool, DirectoryError> {
        delegate!(self, s => s.set_password_hash(account_id, phc, changed_at).await)
    }

    async fn password_hash(&self, account_id: &str) -> Result<Option<String>, DirectoryError> {
        delegate!(self, s => AccountDirectory::password_hash(s, account_id).await)
    }

    async fn create_session(&self, session: &Session) -> Result<(), DirectoryError> {
        delegate!(self, s => s.create_session(session).await)
    }

    async fn find_session(&self, session_hash: &str) -> Result<Option<Session>, DirectoryError> {
        delegate!(self, s => s.find_session(session_hash).await)
    }

    async fn revoke_sessions(
        &self,
        account_id: &str,
        keep_journey: Option<&str>,
        recovery_until: Timestamp,
        now: Timestamp,
        reason: &str,
    ) -> Result<u64, DirectoryError> {
        delegate!(self, s => s.revoke_sessions(account_id, keep_journey, recovery_until, now, reason).await)
    }

    async fn revoke_session(
        &self,
        session_hash: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<(), DirectoryError> {
        delegate!(self, s => s.revoke_session(session_hash, now, reason).await)
    }

    async fn erase_account(&self, account_id: &str) -> Result<bool, DirectoryError> {
        delegate!(self, s => s.erase_account(account_id).await)
    }
}

#[cfg(test)]
mod tests {
    use super::is_postgres_url;

    #[test]
    fn urls_pick_postgres_and_everything_else_is_a_file() {
        for pg in [
            "postgres://root@127.0.0.1/test",
            "postgresql://h/db",
            "PostgreSQL://h/db",
            " postgres://h",
        ] {
            assert!(is_postgres_url(pg), "{pg}");
        }
        for file in [
            "passage.db",
            "/tmp/postgres.db",
            "postgres",
            "./postgres://x",
            "",
        ] {
            assert!(!is_postgres_url(file), "{file}");
        }
    }
}
