//! Per-client request limits shared by every node (R17): fixed windows in `rate_windows`.
//!
//! A hit is one statement, so it needs no transaction: the upsert locks the key's row, and
//! concurrent hits of one key from any node queue on that lock and each sees the count the
//! previous one left. Every `SET` expression reads the row as it was before this hit, which
//! is how the statement tells an admitted hit (counted) from a refused one (`refused`).

use super::PgStore;
use crate::error::Error;
use passage_core::time::Timestamp;
use sqlx::Row;
use std::time::Duration;

impl PgStore {
    /// Counts one hit of `key` at `now`: `Ok(())` if counted, `Err(retry_after)` if `limit`
    /// hits were counted in the key's window already (which starts at its first hit and
    /// lasts `window`; a hit after its end starts a new one).
    pub async fn hit_window(
        &self,
        now: Timestamp,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Result<(), Duration>, Error> {
        let now_ms = now.as_millis();
        // Capped so that `started_at + window_ms` cannot overflow: beyond it is "forever".
        let window_ms = i64::try_from(window.as_millis())
            .unwrap_or(i64::MAX)
            .min(i64::MAX / 4);
        let row = sqlx::query(
            "INSERT INTO rate_windows AS w (window_key, started_at, window_ms, hits, admitted) \
             VALUES ($1, $2, $3, LEAST(1, $4), $4 > 0) \
             ON CONFLICT (window_key) DO UPDATE SET \
                 started_at = CASE WHEN w.started_at + w.window_ms <= $2 THEN $2 \
                              ELSE w.started_at END, \
                 window_ms = CASE WHEN w.started_at + w.window_ms <= $2 THEN $3 \
                             ELSE w.window_ms END, \
                 hits = CASE WHEN w.started_at + w.window_ms <= $2 THEN LEAST(1, $4) \
                        WHEN w.hits < $4 THEN w.hits + 1 ELSE w.hits END, \
                 admitted = CASE WHEN w.started_at + w.window_ms <= $2 THEN $4 > 0 \
                            ELSE w.hits < $4 END \
             RETURNING started_at + window_ms - $2 AS remaining_ms, admitted",
        )
        .bind(key)
        .bind(now_ms)
        .bind(window_ms)
        .bind(i64::from(limit))
        .fetch_one(&self.inner.counter_pool)
        .await?;
        let remaining: i64 = row.try_get("remaining_ms")?;
        let admitted: bool = row.try_get("admitted")?;
        self.sweep_in_background(
            &self.inner.window_sweep,
            now_ms,
            "ended rate-limit windows",
            |store, now| async move { store.sweep_windows(now).await },
        );
        Ok(if admitted {
            Ok(())
        } else {
            Err(Duration::from_millis(u64::try_from(remaining).unwrap_or(0)))
        })
    }

    /// Takes back one hit of `key` in its current window at `now` (an attempt that turned
    /// out not to count); nothing if the window has ended or holds no hit.
    pub async fn give_back_window(&self, now: Timestamp, key: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE rate_windows SET hits = hits - 1 \
             WHERE window_key = $1 AND hits > 0 AND started_at + window_ms > $2",
        )
        .bind(key)
        .bind(now.as_millis())
        .execute(&self.inner.counter_pool)
        .await?;
        Ok(())
    }

    /// Deletes the windows that ended by `now`; returns how many.
    pub async fn sweep_windows(&self, now: Timestamp) -> Result<u64, Error> {
        // Rows being hit are skipped, not waited for (see `sweep_budgets`).
        let done = sqlx::query(
            "DELETE FROM rate_windows WHERE ctid IN ( \
                 SELECT ctid FROM rate_windows WHERE started_at + window_ms <= $1 \
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.as_millis())
        .execute(&self.inner.counter_pool)
        .await?;
        Ok(done.rows_affected())
    }
}
