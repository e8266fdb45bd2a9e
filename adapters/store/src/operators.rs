//! Operators and API tokens, on either backend: the same SQL with each backend's
//! placeholders. Only hashes of tokens are stored.

use crate::error::Error;
use passage_core::roles::Role;
use passage_core::time::Timestamp;
use sqlx::Row as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub token_id: String,
    pub operator: String,
    pub role: Role,
    pub label: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

pub(crate) fn role(s: String) -> Result<Role, Error> {
    s.parse()
        .map_err(|e: String| Error::Corrupt(format!("operators.role: {e}")))
}

/// Invoked inside each backend's module (where the store's fields are visible).
macro_rules! operator_sql {
    ($store:ty, $p:expr, $pool:ident, $bool_disabled:expr) => {
        impl $store {
            /// Adds an operator; `Ok(false)` when the name is taken.
            pub async fn add_operator(
                &self,
                name: &str,
                role: passage_core::roles::Role,
                password_phc: &str,
                now: passage_core::time::Timestamp,
            ) -> Result<bool, $crate::error::Error> {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO operators (name, role, password_phc, created_at) \
                     VALUES ({p}1, {p}2, {p}3, {p}4) ON CONFLICT (name) DO NOTHING",
                    p = $p
                )))
                .bind(name)
                .bind(role.as_str())
                .bind(password_phc)
                .bind(now.as_millis())
                .execute(&self.inner.$pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn operators(&self) -> Result<Vec<$crate::operators::Operator>, $crate::error::Error> {
                let rows = sqlx::query(
                    "SELECT name, role, created_at, disabled FROM operators ORDER BY name",
                )
                .fetch_all(&self.inner.$pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::operators::Operator {
                            name: sqlx::Row::try_get(r, "name")?,
                            role: $crate::operators::role(sqlx::Row::try_get(r, "role")?)?,
                            created_at: passage_core::time::Timestamp(sqlx::Row::try_get(r, "created_at")?),
                            disabled: $bool_disabled(r)?,
                        })
                    })
                    .collect()
            }

            /// Keeps a new token's hash for `operator` with `role` (at most the operator's).
            pub async fn add_api_token(
                &self,
                token_hash: &str,
                operator: &str,
                role: passage_core::roles::Role,
                label: &str,
                now: passage_core::time::Timestamp,
            ) -> Result<String, $crate::error::Error> {
                let token_id = token_hash.get(..12).unwrap_or(token_hash).to_owned();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO api_tokens (token_hash, token_id, operator, role, label, created_at) \
                     VALUES ({p}1, {p}2, {p}3, {p}4, {p}5, {p}6)",
                    p = $p
                )))
                .bind(token_hash)
                .bind(&token_id)
                .bind(operator)
                .bind(role.as_str())
                .bind(label)
                .bind(now.as_millis())
                .execute(&self.inner.$pool)
                .await?;
                Ok(token_id)
            }

            /// The token with this hash, revoked or not, if its operator still exists.
            pub async fn api_token(&self, token_hash: &str) -> Result<Option<$crate::operators::ApiToken>, $crate::error::Error> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT t.token_id, t.operator, t.role, t.label, t.created_at, t.revoked_at \
                     FROM api_tokens t JOIN operators o ON o.name = t.operator \
                     WHERE t.token_hash = {p}1",
                    p = $p
                )))
                .bind(token_hash)
                .fetch_optional(&self.inner.$pool)
                .await?;
                row.map(|r| {
                    let r = &r;
                    Ok($crate::operators::ApiToken {
                        token_id: sqlx::Row::try_get(r, "token_id")?,
                        operator: sqlx::Row::try_get(r, "operator")?,
                        role: $crate::operators::role(sqlx::Row::try_get(r, "role")?)?,
                        label: sqlx::Row::try_get(r, "label")?,
                        created_at: passage_core::time::Timestamp(sqlx::Row::try_get(r, "created_at")?),
                        revoked_at: sqlx::Row::try_get::<Option<i64>, _>(r, "revoked_at")?.map(passage_core::time::Timestamp),
                    })
                })
                .transpose()
            }

            pub async fn api_tokens(&self) -> Result<Vec<$crate::operators::ApiToken>, $crate::error::Error> {
                let rows = sqlx::query(
                    "SELECT token_id, operator, role, label, created_at, revoked_at \
                     FROM api_tokens ORDER BY created_at, token_id",
                )
                .fetch_all(&self.inner.$pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::operators::ApiToken {
                            token_id: sqlx::Row::try_get(r, "token_id")?,
                            operator: sqlx::Row::try_get(r, "operator")?,
                            role: $crate::operators::role(sqlx::Row::try_get(r, "role")?)?,
                            label: sqlx::Row::try_get(r, "label")?,
                            created_at: passage_core::time::Timestamp(sqlx::Row::try_get(r, "created_at")?),
                            revoked_at: sqlx::Row::try_get::<Option<i64>, _>(r, "revoked_at")?.map(passage_core::time::Timestamp),
                        })
                    })
                    .collect()
            }

            /// Disables (or enables again) an operator: a disabled operator's console
            /// sessions and API tokens open nothing from their next request on. `Ok(false)`
            /// when there is no such operator.
            pub async fn set_operator_disabled(&self, name: &str, disabled: bool) -> Result<bool, $crate::error::Error> {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE operators SET disabled = {p}2 WHERE name = {p}1",
                    p = $p
                )))
                .bind(name)
                .bind(disabled)
                .execute(&self.inner.$pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            /// Revokes the token listed as `token_id`; `Ok(false)` if none is live.
            pub async fn revoke_api_token(&self, token_id: &str, now: passage_core::time::Timestamp) -> Result<bool, $crate::error::Error> {
                let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE api_tokens SET revoked_at = {p}2 WHERE token_id = {p}1 AND revoked_at IS NULL",
                    p = $p
                )))
                .bind(token_id)
                .bind(now.as_millis())
                .execute(&self.inner.$pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }
        }

        impl passage_core::ports::OperatorStore for $store {
            async fn operator_login(
                &self,
                name: &str,
            ) -> Result<Option<passage_core::ports::OperatorLogin>, passage_core::ports::StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT name, role, password_phc, disabled FROM operators WHERE name = {p}1",
                    p = $p
                )))
                .bind(name)
                .fetch_optional(&self.inner.$pool)
                .await
                .map_err($crate::error::Error::from)?;
                let login = row
                    .map(|r| -> Result<_, $crate::error::Error> {
                        let r = &r;
                        Ok(passage_core::ports::OperatorLogin {
                            name: sqlx::Row::try_get(r, "name")?,
                            role: $crate::operators::role(sqlx::Row::try_get(r, "role")?)?,
                            password_phc: sqlx::Row::try_get(r, "password_phc")?,
                            disabled: $bool_disabled(r)?,
                        })
                    })
                    .transpose()?;
                Ok(login)
            }

            async fn operator_by_token(
                &self,
                token_hash: &str,
            ) -> Result<Option<passage_core::ports::OperatorIdentity>, passage_core::ports::StoreError> {
                // Every API request asks this: one statement, the token and its operator.
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT t.token_id, t.operator, t.role, o.disabled \
                     FROM api_tokens t JOIN operators o ON o.name = t.operator \
                     WHERE t.token_hash = {p}1 AND t.revoked_at IS NULL",
                    p = $p
                )))
                .bind(token_hash)
                .fetch_optional(&self.inner.$pool)
                .await
                .map_err($crate::error::Error::from)?;
                let identity = row
                    .map(|r| -> Result<_, $crate::error::Error> {
                        let r = &r;
                        if $bool_disabled(r)? {
                            return Ok(None);
                        }
                        let token_id: String = sqlx::Row::try_get(r, "token_id")?;
                        Ok(Some(passage_core::ports::OperatorIdentity {
                            name: sqlx::Row::try_get(r, "operator")?,
                            role: $crate::operators::role(sqlx::Row::try_get(r, "role")?)?,
                            via: format!("token:{token_id}"),
                        }))
                    })
                    .transpose()?;
                Ok(identity.flatten())
            }

            async fn create_operator_session(
                &self,
                session_hash: &str,
                operator: &str,
                created_at: passage_core::time::Timestamp,
                expires_at: passage_core::time::Timestamp,
            ) -> Result<(), passage_core::ports::StoreError> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO operator_sessions (session_hash, operator, created_at, expires_at) \
                     VALUES ({p}1, {p}2, {p}3, {p}4)",
                    p = $p
                )))
                .bind(session_hash)
                .bind(operator)
                .bind(created_at.as_millis())
                .bind(expires_at.as_millis())
                .execute(&self.inner.$pool)
                .await
                .map_err($crate::error::Error::from)?;
                Ok(())
            }

            async fn operator_by_session(
                &self,
                session_hash: &str,
                now: passage_core::time::Timestamp,
            ) -> Result<Option<passage_core::ports::OperatorIdentity>, passage_core::ports::StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT o.name, o.role, o.disabled FROM operator_sessions s \
                     JOIN operators o ON o.name = s.operator \
                     WHERE s.session_hash = {p}1 AND s.revoked_at IS NULL AND s.expires_at > {p}2",
                    p = $p
                )))
                .bind(session_hash)
                .bind(now.as_millis())
                .fetch_optional(&self.inner.$pool)
                .await
                .map_err($crate::error::Error::from)?;
                let Some(r) = row else { return Ok(None) };
                let r = &r;
                if $bool_disabled(r)? {
                    return Ok(None);
                }
                let name: String = sqlx::Row::try_get(r, "name").map_err($crate::error::Error::from)?;
                let role = $crate::operators::role(
                    sqlx::Row::try_get(r, "role").map_err($crate::error::Error::from)?,
                )?;
                Ok(Some(passage_core::ports::OperatorIdentity {
                    name,
                    role,
                    via: "console".into(),
                }))
            }

            async fn revoke_operator_session(
                &self,
                session_hash: &str,
                now: passage_core::time::Timestamp,
            ) -> Result<(), passage_core::ports::StoreError> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE operator_sessions SET revoked_at = {p}2 \
                     WHERE session_hash = {p}1 AND revoked_at IS NULL",
                    p = $p
                )))
                .bind(session_hash)
                .bind(now.as_millis())
                .execute(&self.inner.$pool)
                .await
                .map_err($crate::error::Error::from)?;
                Ok(())
            }
        }
    };
}

pub(crate) fn sqlite_disabled(r: &sqlx::sqlite::SqliteRow) -> Result<bool, Error> {
    Ok(r.try_get::<i64, _>("disabled")? != 0)
}

pub(crate) fn pg_disabled(r: &sqlx::postgres::PgRow) -> Result<bool, Error> {
    Ok(r.try_get::<bool, _>("disabled")?)
}

pub(crate) use operator_sql;
