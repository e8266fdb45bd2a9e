//! Crypto-shredding on either backend (ADR 0005): journeys' personal-data keys, their
//! destruction, retention's query and the account's deletion. The same SQL with each
//! backend's placeholders; journey ids are bound as text and cast where the column is a
//! UUID.

/// Invoked inside each backend's module (where the store's fields are visible).
/// `$p`: placeholder sigil; `$id`: cast that turns a text parameter into the id column's
/// type; `$begin`: the statement that opens a write transaction.
macro_rules! personal_sql {
    ($store:ty, $p:expr, $id:expr, $begin:expr, $pool:ident) => {
        impl $store {
            async fn journey_key_inner(
                &self,
                stream: passage_core::ports::JourneyId,
            ) -> Result<Option<passage_core::ports::StoredDataKey>, $crate::error::Error> {
                let row: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT data_key FROM journey_keys WHERE journey_id = {p}1{id}",
                    p = $p,
                    id = $id
                )))
                .bind(stream.0.to_string())
                .fetch_optional(&self.inner.$pool)
                .await?;
                Ok(row.map(|(key,)| match key {
                    Some(wrapped) => passage_core::ports::StoredDataKey::Live(wrapped),
                    None => passage_core::ports::StoredDataKey::Erased,
                }))
            }

            async fn erase_journey_inner(
                &self,
                stream: passage_core::ports::JourneyId,
                reason: &str,
                now: passage_core::time::Timestamp,
            ) -> Result<passage_core::ports::JourneyErasure, $crate::error::Error> {
                let id = stream.0.to_string();
                let mut tx = self.inner.$pool.begin_with($begin).await?;
                let before: Option<(Option<String>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT data_key FROM journey_keys WHERE journey_id = {p}1{id}",
                    p = $p,
                    id = $id
                )))
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await?;
                // A journey written before keys existed gets a row saying it is erased, so
                // retention does not come back to it; an erased row keeps its first date.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO journey_keys (journey_id, data_key, created_at, erased_at, erased_reason) \
                     VALUES ({p}1{id}, NULL, {p}2, {p}2, {p}3) \
                     ON CONFLICT (journey_id) DO UPDATE SET data_key = NULL, \
                     erased_at = {p}2, erased_reason = {p}3 \
                     WHERE journey_keys.data_key IS NOT NULL",
                    p = $p,
                    id = $id
                )))
                .bind(&id)
                .bind(now.as_millis())
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE journeys SET email_masked = NULL, subject = NULL \
                     WHERE journey_id = {p}1{id}",
                    p = $p,
                    id = $id
                )))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                let outbox = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM outbox WHERE stream = {p}1{id}",
                    p = $p,
                    id = $id
                )))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                let timers = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM timers WHERE stream = {p}1{id}",
                    p = $p,
                    id = $id
                )))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(passage_core::ports::JourneyErasure {
                    key_destroyed: matches!(before, Some((Some(_),))),
                    outbox_deleted: outbox.rows_affected(),
                    timers_deleted: timers.rows_affected(),
                })
            }

            async fn retention_due_inner(
                &self,
                before: passage_core::time::Timestamp,
                limit: usize,
            ) -> Result<Vec<passage_core::ports::JourneyId>, $crate::error::Error> {
                let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST(j.journey_id AS TEXT) FROM journeys j \
                     LEFT JOIN journey_keys k ON k.journey_id = j.journey_id \
                     WHERE j.status IN ('completed', 'failed', 'expired', 'cancelled') \
                     AND j.started_at < {p}1 AND k.erased_at IS NULL \
                     ORDER BY j.started_at, j.journey_id LIMIT {p}2",
                    p = $p
                )))
                .bind(before.as_millis())
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.inner.$pool)
                .await?;
                rows.into_iter()
                    .map(|(id,)| {
                        id.parse().map_err(|e| {
                            $crate::error::Error::Corrupt(format!("journeys.journey_id {id}: {e}"))
                        })
                    })
                    .collect()
            }

            async fn erase_account_inner(
                &self,
                account_id: &str,
            ) -> Result<bool, $crate::error::Error> {
                let mut tx = self.inner.$pool.begin_with($begin).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM sessions WHERE account_id = {p}1",
                    p = $p
                )))
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                let gone = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM accounts WHERE account_id = {p}1",
                    p = $p
                )))
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(gone.rows_affected() == 1)
            }
        }
    };
}

pub(crate) use personal_sql;
