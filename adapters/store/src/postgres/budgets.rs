//! Send budgets shared by every node on the database (R17, R18).
//!
//! The channels cap sends per recipient, per journey, per destination prefix and in total,
//! each "at most `max` per sliding window". Counted in each process's memory, N nodes behind
//! a load balancer would allow N times every budget, and an SMS-pumping script would simply
//! spread its requests. Here the counts are rows of `send_budget_uses`, one per budget and
//! counted message, so every node sees every other node's sends.
//!
//! One charge is one transaction: take a transaction-scoped advisory lock per budget (in a
//! fixed order, so two charges over overlapping budgets cannot deadlock), count each
//! budget's rows inside its window, and insert a row per budget only if every budget has
//! room. The count runs as a statement after the locks, so its snapshot includes every
//! charge that held them before (under READ COMMITTED a statement sees what committed
//! before it started). Charges of unrelated budgets do not wait for each other; charges of
//! one budget queue for a few round trips each. The global budget of a channel is in every
//! charge of that channel, which caps a channel at a few hundred sends per second across the
//! whole deployment: far above any budget a portal configures (the default email budget is
//! 10 000 per hour).

use super::PgStore;
use crate::budgets::BudgetCharge;
use crate::error::Error;
use passage_core::time::Timestamp;
use sqlx::{Connection as _, Row};
use uuid::Uuid;

impl PgStore {
    /// Counts the message `token` against every budget in `charges`, atomically across nodes:
    /// either all of them count it (or counted it already within their window: a retry of
    /// the same message is free) and the answer is `None`, or none does and the answer is the
    /// index of the first budget in `charges` that is spent. A budget with `max` 0 is always
    /// spent.
    pub async fn charge_budgets(
        &self,
        now: Timestamp,
        token: Uuid,
        charges: &[BudgetCharge],
    ) -> Result<Option<usize>, Error> {
        if charges.is_empty() {
            return Ok(None);
        }
        let now_ms = now.as_millis();
        let keys: Vec<&str> = charges.iter().map(|c| c.key.as_str()).collect();
        let windows: Vec<i64> = charges.iter().map(BudgetCharge::window_ms).collect();

        // READ COMMITTED whatever the role's default: the count below must take a snapshot
        // after the locks are held, which a REPEATABLE READ transaction would have taken at
        // its first statement, before waiting for them.
        let mut conn = self.inner.counter_pool.acquire().await?;
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        // The schema is part of the lock key: tests and deployments that keep several
        // stores in one database do not queue behind each other's budgets.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(h) FROM ( \
                 SELECT DISTINCT hashtextextended($2 || '/' || k, 0) AS h \
                 FROM unnest($1::text[]) AS k ORDER BY h) AS locks",
        )
        .bind(&keys)
        .bind(&self.inner.schema)
        .execute(&mut *tx)
        .await?;
        let counted = sqlx::query(
            "SELECT c.ord, \
                    count(u.token) FILTER (WHERE u.used_at > $3 - c.win) AS used, \
                    coalesce(bool_or(u.token = $4 AND u.used_at > $3 - c.win), false) AS seen \
             FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS c(k, win, ord) \
             LEFT JOIN send_budget_uses u ON u.budget_key = c.k \
             GROUP BY c.ord ORDER BY c.ord",
        )
        .bind(&keys)
        .bind(&windows)
        .bind(now_ms)
        .bind(token)
        .fetch_all(&mut *tx)
        .await?;
        for (i, (row, charge)) in counted.iter().zip(charges).enumerate() {
            let used: i64 = row.try_get("used")?;
            let seen: bool = row.try_get("seen")?;
            if !seen && used >= i64::from(charge.max) {
                // Nothing was written: dropping the transaction rolls back and frees the locks.
                return Ok(Some(i));
            }
        }
        // A row left over from an earlier window of the same message is moved to now, as if
        // it had left the window and been counted again.
        sqlx::query(
            "INSERT INTO send_budget_uses (budget_key, token, used_at, expires_at) \
             SELECT DISTINCT ON (k) k, $3, $4, $4 + win \
             FROM unnest($1::text[], $2::int8[]) AS c(k, win) \
             ON CONFLICT (budget_key, token) DO UPDATE \
                 SET used_at = EXCLUDED.used_at, expires_at = EXCLUDED.expires_at \
                 WHERE send_budget_uses.used_at <= EXCLUDED.used_at \
                     - (EXCLUDED.expires_at - EXCLUDED.used_at)",
        )
        .bind(&keys)
        .bind(&windows)
        .bind(token)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.sweep_in_background(
            &self.inner.budget_sweep,
            now_ms,
            "spent send-budget rows",
            |store, now| async move { store.sweep_budgets(now).await },
        );
        Ok(None)
    }

    /// Deletes every budget row whose window has passed at `now`; returns how many.
    pub async fn sweep_budgets(&self, now: Timestamp) -> Result<u64, Error> {
        // Rows a charge holds are skipped, not waited for: a sweep must neither deadlock
        // with a charge moving several of a message's rows nor queue behind another node's
        // sweep. What it skips, the next one takes.
        let done = sqlx::query(
            "DELETE FROM send_budget_uses WHERE ctid IN ( \
                 SELECT ctid FROM send_budget_uses WHERE expires_at <= $1 \
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.as_millis())
        .execute(&self.inner.counter_pool)
        .await?;
        Ok(done.rows_affected())
    }
}
