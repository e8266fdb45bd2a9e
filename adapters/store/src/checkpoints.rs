//! Signed checkpoints of the chain's head (docs/audit.md), on either backend: the same SQL
//! with each backend's placeholders.

/// Invoked inside each backend's module (where the store's fields are visible).
macro_rules! checkpoint_sql {
    ($store:ty, $p:expr, $pool:ident) => {
        impl $store {
            async fn save_checkpoint_inner(
                &self,
                c: &passage_core::ports::Checkpoint,
            ) -> Result<(), $crate::error::Error> {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO checkpoints (position, hash, created_at, public_key, signature) \
                     VALUES ({p}1, {p}2, {p}3, {p}4, {p}5) ON CONFLICT (position) DO NOTHING",
                    p = $p
                )))
                .bind(i64::try_from(c.position).unwrap_or(i64::MAX))
                .bind(c.hash.to_vec())
                .bind(c.created_at.as_millis())
                .bind(&c.public_key)
                .bind(&c.signature)
                .execute(&self.inner.$pool)
                .await?;
                Ok(())
            }

            async fn checkpoints_inner(
                &self,
            ) -> Result<Vec<passage_core::ports::Checkpoint>, $crate::error::Error> {
                let rows = sqlx::query(
                    "SELECT position, hash, created_at, public_key, signature FROM checkpoints \
                     ORDER BY position",
                )
                .fetch_all(&self.inner.$pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let position: i64 = sqlx::Row::try_get(r, "position")?;
                        let hash: Vec<u8> = sqlx::Row::try_get(r, "hash")?;
                        Ok(passage_core::ports::Checkpoint {
                            position: u64::try_from(position).unwrap_or(0),
                            hash: hash.try_into().map_err(|_| {
                                $crate::error::Error::Corrupt(
                                    "checkpoints.hash is not 32 bytes".into(),
                                )
                            })?,
                            created_at: passage_core::time::Timestamp(sqlx::Row::try_get(
                                r,
                                "created_at",
                            )?),
                            public_key: sqlx::Row::try_get(r, "public_key")?,
                            signature: sqlx::Row::try_get(r, "signature")?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use checkpoint_sql;
