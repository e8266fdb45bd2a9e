//! The account directory in the same database: [`AccountDirectory`] plus seeding helpers,
//! with the same behaviour as the SQLite one.

use super::writer::Write;
use super::{PgStore, rows};
use crate::Seeded;
use crate::error::Error;
use crate::wall_clock_ms;
use passage_core::mask::normalize_email;
use passage_core::ports::{Account, AccountDirectory, DirectoryError, Session};
use passage_core::time::Timestamp;
use sqlx::PgConnection;

/// Unique-email violations get their own error; everything else stays an SQL error.
fn email_taken(e: sqlx::Error) -> Error {
    match e.as_database_error() {
        Some(db) if db.constraint() == Some("accounts_email_key") => Error::EmailTaken,
        _ => Error::from(e),
    }
}

/// Inserts the account unless its id exists (another node may be seeding the same one at
/// the same moment: ON CONFLICT makes that a no-op instead of an error). Returns whether
/// it was inserted.
async fn insert(
    conn: &mut PgConnection,
    account: &Account,
    email: &str,
    phc: &str,
) -> Result<bool, Error> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (account_id, email, display_name, phone, password_phc, enabled, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id) DO NOTHING",
    )
    .bind(&account.account_id)
    .bind(email)
    .bind(&account.display_name)
    .bind(account.phone.as_deref())
    .bind(phc)
    .bind(account.enabled)
    .bind(wall_clock_ms())
    .execute(&mut *conn)
    .await
    .map_err(email_taken)?;
    Ok(inserted.rows_affected() == 1)
}

impl PgStore {
    /// Creates the account with password hash `phc`, or, when `account_id` exists, refreshes
    /// its profile (email, name, phone, enabled) and keeps its password hash: re-running a
    /// seed must not undo a reset the person made since. Idempotent.
    pub async fn upsert_account(&self, account: &Account, phc: &str) -> Result<Seeded, Error> {
        let email = normalize_email(&account.email)?;
        let mut tx = self.inner.pool.begin().await?;
        if insert(&mut tx, account, &email, phc).await? {
            tx.commit().await?;
            return Ok(Seeded::Inserted);
        }
        sqlx::query(
            "UPDATE accounts SET email = $2, display_name = $3, phone = $4, enabled = $5, \
             updated_at = $6 WHERE account_id = $1",
        )
        .bind(&account.account_id)
        .bind(&email)
        .bind(&account.display_name)
        .bind(account.phone.as_deref())
        .bind(account.enabled)
        .bind(wall_clock_ms())
        .execute(&mut *tx)
        .await
        .map_err(email_taken)?;
        tx.commit().await?;
        Ok(Seeded::Updated)
    }

    /// Creates the account unless `account_id` exists; an existing account is left exactly
    /// as it is. Returns whether it was created.
    pub async fn insert_account_if_missing(
        &self,
        account: &Account,
        phc: &str,
    ) -> Result<bool, Error> {
        let email = normalize_email(&account.email)?;
        let mut conn = self.inner.pool.acquire().await?;
        insert(&mut conn, account, &email, phc).await
    }

    /// The deployment's audit public key (hex) as recorded, if any node recorded it.
    pub async fn deployment_key(&self) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT audit_public_key FROM deployment_key")
                .fetch_optional(&self.inner.pool)
                .await?,
        )
    }

    /// Records `key` as the deployment's audit public key unless one is recorded already;
    /// returns the recorded one (the first node's, when several start at once).
    pub async fn pin_deployment_key(&self, key: &str) -> Result<String, Error> {
        sqlx::query(
            "INSERT INTO deployment_key (singleton, audit_public_key, recorded_at) \
             VALUES (1, $1, $2) ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(key)
        .bind(wall_clock_ms())
        .execute(&self.inner.pool)
        .await?;
        self.deployment_key()
            .await?
            .ok_or_else(|| Error::Corrupt("deployment_key: the recorded key vanished".into()))
    }

    /// Whether the directory seed `name` was applied (by any node, at any time).
    pub async fn directory_seeded(&self, name: &str) -> Result<bool, Error> {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM directory_seeds WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.inner.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Applies the seed `name` once: records it and inserts its accounts (each with its
    /// password hash) that are missing, in one transaction. Returns false, writing nothing,
    /// when the seed was applied before (nodes starting together race on the seed's row:
    /// one applies it): an account of it that is missing now was erased.
    pub async fn seed_directory_once(
        &self,
        name: &str,
        accounts: &[(Account, String)],
    ) -> Result<bool, Error> {
        let mut tx = self.inner.pool.begin().await?;
        let recorded = sqlx::query(
            "INSERT INTO directory_seeds (name, seeded_at) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(wall_clock_ms())
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() == 0 {
            return Ok(false);
        }
        for (account, phc) in accounts {
            insert(&mut tx, account, &normalize_email(&account.email)?, phc).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The stored PHC string, to verify a password (tests, the demo login).
    pub async fn password_hash(&self, account_id: &str) -> Result<Option<String>, Error> {
        Ok(
            sqlx::query_scalar("SELECT password_phc FROM accounts WHERE account_id = $1")
                .bind(account_id)
                .fetch_optional(&self.inner.pool)
                .await?,
        )
    }

    async fn find_by_email_inner(&self, normalized_email: &str) -> Result<Option<Account>, Error> {
        let row = sqlx::query(
            "SELECT account_id, email, display_name, phone, enabled FROM accounts \
             WHERE email = $1",
        )
        .bind(normalized_email)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(rows::account).transpose()
    }

    async fn get_inner(&self, account_id: &str) -> Result<Option<Account>, Error> {
        let row = sqlx::query(
            "SELECT account_id, email, display_name, phone, enabled FROM accounts \
             WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(rows::account).transpose()
    }

    async fn get_many_inner(&self, account_ids: &[&str]) -> Result<Vec<Account>, Error> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT account_id, email, display_name, phone, enabled FROM accounts \
             WHERE account_id = ANY($1)",
        )
        .bind(account_ids)
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(rows::account).collect()
    }

    async fn set_password_hash_inner(
        &self,
        account_id: &str,
        phc: &str,
        changed_at: Timestamp,
    ) -> Result<bool, Error> {
        // The condition (no later change stored) is in the statement's WHERE clause,
        // re-checked on the row version it updates: concurrent resets are ordered by the
        // row lock.
        let changed = self
            .write(Write::Password {
                account_id: account_id.to_owned(),
                phc: phc.to_owned(),
                changed_at: changed_at.as_millis(),
                now: wall_clock_ms(),
            })
            .await?;
        let exists = async {
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM accounts WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_optional(&self.inner.pool)
                    .await?;
            Ok(found.is_some())
        };
        crate::password_applied(account_id, changed, exists).await
    }

    async fn create_session_inner(&self, s: &Session) -> Result<(), Error> {
        self.write(Write::Session(s.clone())).await?;
        Ok(())
    }

    async fn find_session_inner(&self, session_hash: &str) -> Result<Option<Session>, Error> {
        let row = sqlx::query(
            "SELECT session_hash, account_id, journey_id, kind, amr, created_at, expires_at, \
             revoked_at, password_fp FROM sessions WHERE session_hash = $1",
        )
        .bind(session_hash)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(rows::session).transpose()
    }

    async fn revoke_sessions_inner(
        &self,
        account_id: &str,
        keep_journey: Option<&str>,
        recovery_until: Timestamp,
        now: Timestamp,
        reason: &str,
    ) -> Result<u64, Error> {
        self.write(Write::Revoke {
            account_id: account_id.to_owned(),
            keep_journey: keep_journey.map(str::to_owned),
            recovery_until: recovery_until.as_millis(),
            now: now.as_millis(),
            reason: reason.to_owned(),
        })
        .await
    }

    async fn revoke_session_inner(
        &self,
        session_hash: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 \
             WHERE session_hash = $1 AND revoked_at IS NULL",
        )
        .bind(session_hash)
        .bind(now.as_millis())
        .bind(reason)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }
}

impl AccountDirectory for PgStore {
    async fn find_by_email(
        &self,
        normalized_email: &str,
    ) -> Result<Option<Account>, DirectoryError> {
        Ok(self.find_by_email_inner(normalized_email).await?)
    }

    async fn get(&self, account_id: &str) -> Result<Option<Account>, DirectoryError> {
        Ok(self.get_inner(account_id).await?)
    }

    async fn get_many(&self, account_ids: &[&str]) -> Result<Vec<Account>, DirectoryError> {
        Ok(self.get_many_inner(account_ids).await?)
    }

    async fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        changed_at: Timestamp,
    ) -> Result<bool, DirectoryError> {
        Ok(self
            .set_password_hash_inner(account_id, phc, changed_at)
            .await?)
    }

    async fn password_hash(&self, account_id: &str) -> Result<Option<String>, DirectoryError> {
        Ok(Self::password_hash(self, account_id).await?)
    }

    async fn create_session(&self, session: &Session) -> Result<(), DirectoryError> {
        Ok(self.create_session_inner(session).await?)
    }

    async fn find_session(&self, session_hash: &str) -> Result<Option<Session>, DirectoryError> {
        Ok(self.find_session_inner(session_hash).await?)
    }

    async fn revoke_sessions(
        &self,
        account_id: &str,
        keep_journey: Option<&str>,
        recovery_until: Timestamp,
        now: Timestamp,
        reason: &str,
    ) -> Result<u64, DirectoryError> {
        Ok(self
            .revoke_sessions_inner(account_id, keep_journey, recovery_until, now, reason)
            .await?)
    }

    async fn revoke_session(
        &self,
        session_hash: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<(), DirectoryError> {
        Ok(self.revoke_session_inner(session_hash, now, reason).await?)
    }

    async fn erase_account(&self, account_id: &str) -> Result<bool, DirectoryError> {
        Ok(self.erase_account_inner(account_id).await?)
    }
}
