//! Outbox completions, grouped: one `UPDATE … FROM UNNEST` for every completion waiting.
//!
//! A journey's deliveries each end with `complete_effect`. Issued one by one they were the
//! most frequent write outside the appends (three per journey in the seed flow), each an
//! autocommit statement with a WAL flush of its own. The worker delivers a pass's entries
//! concurrently, so their completions arrive together; this task takes every completion
//! waiting and writes them in one statement, one commit. It runs beside the append writer,
//! taking a connection from the shared pool per statement, so completions never wait behind
//! an append batch.
//!
//! Semantics are those of the single statement: an entry is completed only if it is still
//! pending and still leased under the caller's token (the fence), and each caller learns
//! whether its own entry was. Durability too: a caller hears `true` only after the COMMIT.
//! A failed statement fails every completion in it; the worker treats that like any
//! failed completion (the lease lapses and the entry is delivered again under the same
//! idempotency key).

use crate::batch::{DisplayChain, Stats, shared_failure};
use crate::error::Error;
use passage_core::ports::StoreError;
use passage_core::time::Timestamp;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most completions in one statement.
const MAX_BATCH: usize = 512;

/// One waiting `complete_effect` call.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) effect_id: Uuid,
    pub(crate) lease: Timestamp,
    pub(crate) now: Timestamp,
    pub(crate) reply: oneshot::Sender<Result<bool, StoreError>>,
}

#[derive(Debug)]
pub(crate) struct Completer {
    pub(crate) pool: PgPool,
    pub(crate) rx: mpsc::Receiver<Completion>,
    pub(crate) stats: Arc<Stats>,
}

impl Completer {
    /// Runs until every store handle is gone.
    pub(crate) async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while self.rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            match complete(&self.pool, &batch).await {
                Ok(mut done) => {
                    self.stats.completed(batch.len());
                    for c in batch.drain(..) {
                        // The same entry and token twice in one batch: the first caller
                        // completed it, as if the calls had run one after the other.
                        let completed = done.remove(&(c.effect_id, c.lease.as_millis()));
                        let _ = c.reply.send(Ok(completed));
                    }
                }
                Err(e) => {
                    // Each caller gets the error and handles (and logs) it.
                    tracing::debug!(
                        batch = batch.len(),
                        error = %DisplayChain(&e),
                        "grouped outbox completions failed"
                    );
                    let e = Arc::new(e);
                    for c in batch.drain(..) {
                        let _ = c.reply.send(Err(shared_failure(&e)));
                    }
                }
            }
        }
        tracing::debug!("postgres outbox completer stopped: every store handle was dropped");
    }
}

/// The entries this batch completed, with the token each was completed under.
async fn complete(pool: &PgPool, batch: &[Completion]) -> Result<HashSet<(Uuid, i64)>, Error> {
    let ids: Vec<Uuid> = batch.iter().map(|c| c.effect_id).collect();
    let leases: Vec<i64> = batch.iter().map(|c| c.lease.as_millis()).collect();
    let nows: Vec<i64> = batch.iter().map(|c| c.now.as_millis()).collect();
    // Fenced, like the single statement: only the claim holding this token may finish the
    // entry, so a stale token in the same batch as the current one matches nothing. A row
    // joined twice under the same token is updated once.
    let done: Vec<(Uuid, i64)> = sqlx::query_as(
        "UPDATE outbox o SET status = 'done', done_at = u.now, leased_until = NULL \
         FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[]) AS u(effect_id, lease, now) \
         WHERE o.effect_id = u.effect_id AND o.status = 'pending' AND o.leased_until = u.lease \
         RETURNING o.effect_id, u.lease",
    )
    .bind(&ids)
    .bind(&leases)
    .bind(&nows)
    .fetch_all(pool)
    .await?;
    Ok(done.into_iter().collect())
}
