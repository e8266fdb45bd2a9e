//! Group commit: one task owns every append and commits waiting appends together.
//!
//! # Why group, and why it stays durable
//!
//! With `synchronous=FULL` every COMMIT waits for an fsync of the WAL, which costs about as
//! much as everything else in an append together. One transaction per append would make
//! throughput "one fsync per append". Instead, [`SqliteStore::append`](super::SqliteStore)
//! sends its request to this task and waits; the task takes every request that is waiting
//! (up to `max_batch`), writes them all in one `BEGIN IMMEDIATE` transaction and commits
//! once: one fsync per batch. While a batch is committing, new requests queue up and form
//! the next batch, so batches grow exactly when load does and a lone request is not delayed
//! by any timer.
//!
//! Durability is unchanged: a caller's future resolves only after the COMMIT that contains
//! its request has returned, that is after the fsync. A crash before that point loses the
//! request, but its caller never heard "committed", so it retries with the same command id.
//!
//! # Isolation inside a batch
//!
//! Each request is judged on its own, in order, against the log plus the requests before it
//! in the same batch: a duplicate command id gets the stored outcome, a stale
//! `expected_version` gets a conflict, and neither writes anything or affects its
//! neighbours. An SQL error (a constraint violated by one request's data, a full disk) rolls
//! the whole batch back, so nothing is ever half-written; the requests are then written again
//! one per transaction, so only the request that causes the error receives it (as
//! `StoreError::Rejected` when its own data breaks a constraint: retrying cannot help).
//! Idempotency makes that second pass safe whatever the first one did.
//!
//! A caller that stops waiting (its future dropped) does not cancel its append: the request
//! is already queued. That is harmless for the same reason: a retry is a duplicate.

use super::rows;
use crate::batch::{DisplayChain, Job, Stats, Verdict, single_failure};
use crate::error::Error;
use passage_core::chain::{ChainFields, GENESIS, event_hash};
use passage_core::ports::{AppendRequest, JourneyId};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) pool: SqlitePool,
    pub(crate) rx: mpsc::Receiver<Job>,
    /// 1 turns grouping off: one request per transaction.
    pub(crate) max_batch: usize,
    pub(crate) busy_retries: u32,
    pub(crate) stats: Arc<Stats>,
    /// Signalled after a commit that added outbox rows or timers (`wait_for_work`).
    pub(crate) work: Arc<Notify>,
}

impl Writer {
    /// Runs until every [`super::SqliteStore`] handle (every sender) is gone.
    pub(crate) async fn run(mut self) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        // `recv_many` waits for the first request, then takes whatever else is already
        // queued without waiting: that is the whole batching policy.
        while self.rx.recv_many(&mut jobs, self.max_batch).await > 0 {
            self.commit(std::mem::take(&mut jobs)).await;
        }
        tracing::debug!("append writer stopped: every store handle was dropped");
    }

    async fn commit(&self, jobs: Vec<Job>) {
        let requests: Vec<&AppendRequest> = jobs.iter().map(|j| &j.request).collect();
        match self.write_with_retry(&requests).await {
            Ok(verdicts) => {
                self.signal_work(jobs.iter().zip(&verdicts));
                for (job, verdict) in jobs.into_iter().zip(verdicts) {
                    // The caller may have stopped waiting; its append stands regardless.
                    let _ = job.reply.send(verdict.into());
                }
            }
            Err(Error::Busy { attempts, message }) => {
                // Contention is not caused by any one request: retrying them one by one
                // would only wait longer. Everyone gets the same answer.
                for job in jobs {
                    let err = Error::Busy {
                        attempts,
                        message: message.clone(),
                    };
                    let _ = job.reply.send(Err(err.into()));
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(single_failure(e).into()));
                }
            }
            Err(e) => {
                tracing::warn!(
                    batch = jobs.len(),
                    error = %DisplayChain(&e),
                    "append batch rolled back; writing its requests one by one to isolate the failing one"
                );
                self.stats.split_batches.fetch_add(1, Ordering::Relaxed);
                for job in jobs {
                    let result = match self.write_with_retry(&[&job.request]).await {
                        Ok(mut verdicts) => match verdicts.pop() {
                            Some(v) => {
                                self.signal_work(std::iter::once((&job, &v)));
                                v.into()
                            }
                            None => Err(Error::Corrupt(
                                "the writer produced no verdict for a request".into(),
                            )
                            .into()),
                        },
                        Err(e) => Err(single_failure(e).into()),
                    };
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    /// Wakes `wait_for_work` callers when a committed request added effects or timers.
    /// `notify_one` after `notify_waiters` leaves a permit for a worker that is between two
    /// waits, so the signal is not lost while it is busy claiming.
    fn signal_work<'a>(&self, mut judged: impl Iterator<Item = (&'a Job, &'a Verdict)>) {
        let added = judged.any(|(job, verdict)| {
            matches!(verdict, Verdict::Committed { .. })
                && !(job.request.effects.is_empty() && job.request.timers.is_empty())
        });
        if added {
            self.work.notify_waiters();
            self.work.notify_one();
        }
    }

    /// Writes a batch, retrying the whole transaction when the write lock stays busy past
    /// SQLite's own busy timeout (another process writing a long batch). Retrying is safe:
    /// a busy error means the transaction did not commit, and the batch is judged again
    /// from scratch.
    async fn write_with_retry(&self, requests: &[&AppendRequest]) -> Result<Vec<Verdict>, Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = async {
                let mut conn = self.pool.acquire().await?;
                write_batch(&mut conn, requests).await
            }
            .await;
            match result {
                Ok(verdicts) => {
                    self.stats.committed(requests.len());
                    return Ok(verdicts);
                }
                Err(Error::Busy { message, .. }) if attempt > self.busy_retries => {
                    return Err(Error::Busy {
                        attempts: attempt,
                        message,
                    });
                }
                Err(Error::Busy { message, .. }) => {
                    self.stats.busy_retries.fetch_add(1, Ordering::Relaxed);
                    let pause = Duration::from_millis(25u64 << attempt.min(6));
                    tracing::debug!(attempt, ?pause, %message, "append batch busy; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Judges and writes a batch in one `BEGIN IMMEDIATE` transaction.
///
/// `BEGIN IMMEDIATE` takes the write lock before the first read, so the head of the chain
/// and the stream versions read below cannot change before COMMIT, even with another
/// process appending to the same file; a deferred transaction would instead fail with
/// SQLITE_BUSY_SNAPSHOT when it tried to upgrade its stale read to a write.
async fn write_batch(
    conn: &mut SqliteConnection,
    requests: &[&AppendRequest],
) -> Result<Vec<Verdict>, Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;

    // The head of the chain is read once; the batch then continues it in memory.
    let head = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (mut last_position, mut prev_hash) = match head {
        Some(row) => rows::head(&row)?,
        None => (0, GENESIS),
    };
    // Stream versions and command ids as left by the earlier requests of this batch.
    let mut versions: HashMap<JourneyId, u64> = HashMap::new();
    let mut committed_commands: HashMap<Uuid, &str> = HashMap::new();
    let mut verdicts = Vec::with_capacity(requests.len());

    for &req in requests {
        let command_id = req.command_id.to_string();
        let stream = req.stream.0.to_string();

        // Duplicate first: a retry arrives with the expected version of its first attempt,
        // which is stale by now, and must still get the first outcome, not a conflict.
        if let Some(outcome) = committed_commands.get(&req.command_id) {
            verdicts.push(Verdict::Duplicate {
                outcome: (*outcome).to_owned(),
            });
            continue;
        }
        let stored: Option<String> =
            sqlx::query_scalar("SELECT outcome FROM commands WHERE command_id = ?1")
                .bind(&command_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(outcome) = stored {
            verdicts.push(Verdict::Duplicate { outcome });
            continue;
        }

        let current = match versions.get(&req.stream) {
            Some(v) => *v,
            None => {
                let v: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream = ?1",
                )
                .bind(&stream)
                .fetch_one(&mut *tx)
                .await?;
                u64::try_from(v).map_err(|_| {
                    Error::Corrupt(format!("events.stream_version: negative value {v}"))
                })?
            }
        };
        if current != req.expected_version {
            verdicts.push(Verdict::Conflict {
                stream: req.stream,
                expected: req.expected_version,
                actual: current,
            });
            continue;
        }

        let metadata = req.metadata.as_str();
        let first_position = (!req.events.is_empty()).then_some(last_position + 1);
        let mut version = current;
        for event in &req.events {
            last_position += 1;
            version += 1;
            let hash = event_hash(
                &prev_hash,
                &ChainFields {
                    position: last_position,
                    stream: req.stream.0,
                    stream_version: version,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    payload: &event.payload,
                    metadata,
                    recorded_at: req.recorded_at,
                    command_id: req.command_id,
                },
            );
            sqlx::query(
                "INSERT INTO events (position, stream, stream_version, event_type, \
                 schema_version, payload, metadata, recorded_at, command_id, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .bind(rows::to_i64(last_position, "position")?)
            .bind(&stream)
            .bind(rows::to_i64(version, "stream version")?)
            .bind(&event.event_type)
            .bind(i64::from(event.schema_version))
            .bind(&event.payload)
            .bind(metadata)
            .bind(req.recorded_at.as_millis())
            .bind(&command_id)
            .bind(prev_hash.as_slice())
            .bind(hash.as_slice())
            .execute(&mut *tx)
            .await?;
            prev_hash = hash;
        }

        for effect in &req.effects {
            sqlx::query(
                "INSERT INTO outbox (effect_id, stream, kind, payload, available_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(effect.effect_id.to_string())
            .bind(&stream)
            .bind(&effect.kind)
            .bind(&effect.payload)
            .bind(effect.available_at.as_millis())
            .bind(req.recorded_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }

        for timer in &req.timers {
            sqlx::query(
                "INSERT INTO timers (timer_id, stream, fire_at, payload, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(timer.timer_id.to_string())
            .bind(&stream)
            .bind(timer.fire_at.as_millis())
            .bind(&timer.payload)
            .bind(req.recorded_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }

        sqlx::query(
            "INSERT INTO commands (command_id, stream, outcome, recorded_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&command_id)
        .bind(&stream)
        .bind(&req.outcome)
        .bind(req.recorded_at.as_millis())
        .execute(&mut *tx)
        .await?;

        upsert_summary(&mut tx, req, &stream).await?;
        if let Some(wrapped) = &req.data_key {
            // An existing row wins: above all an erased one, which must stay erased.
            sqlx::query(
                "INSERT INTO journey_keys (journey_id, data_key, created_at) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (journey_id) DO NOTHING",
            )
            .bind(&stream)
            .bind(wrapped)
            .bind(req.recorded_at.as_millis())
            .execute(&mut *tx)
            .await?;
        }

        versions.insert(req.stream, version);
        committed_commands.insert(req.command_id, &req.outcome);
        verdicts.push(Verdict::Committed {
            first_position,
            stream_version: version,
        });
    }

    tx.commit().await?;
    Ok(verdicts)
}

/// The row is keyed by the request's stream: that is the journey the events went to.
async fn upsert_summary(
    conn: &mut SqliteConnection,
    req: &AppendRequest,
    stream: &str,
) -> Result<(), Error> {
    let s = &req.summary;
    if s.journey_id != req.stream {
        tracing::warn!(
            stream = %req.stream,
            summary = %s.journey_id,
            "append summary names another journey; storing it under the appended stream"
        );
    }
    sqlx::query(
        "INSERT INTO journeys (journey_id, definition_id, definition_version, status, \
         current_step, email_masked, started_at, updated_at, version, subject, failures, \
         stall_at, stall_keep) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (journey_id) DO UPDATE SET \
         definition_id = excluded.definition_id, \
         definition_version = excluded.definition_version, \
         status = excluded.status, \
         current_step = excluded.current_step, \
         email_masked = excluded.email_masked, \
         started_at = excluded.started_at, \
         updated_at = excluded.updated_at, \
         version = excluded.version, \
         subject = excluded.subject, \
         failures = excluded.failures, \
         stall_at = CASE WHEN excluded.stall_keep = 1 THEN journeys.stall_at \
                    ELSE excluded.stall_at END, \
         stall_keep = excluded.stall_keep",
    )
    .bind(stream)
    .bind(&s.definition_id)
    .bind(i64::from(s.definition_version))
    .bind(&s.status)
    .bind(s.current_step.as_deref())
    .bind(s.email_masked.as_deref())
    .bind(s.started_at.as_millis())
    .bind(s.updated_at.as_millis())
    .bind(rows::to_i64(s.version, "summary version")?)
    .bind(s.subject.as_deref())
    .bind(i64::from(s.failures))
    .bind(s.stall_at.map(|t| t.as_millis()))
    .bind(i64::from(s.stall_keep))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
