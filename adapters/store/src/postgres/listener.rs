//! Learning about new work without busy polling: LISTEN on the schema's channel.
//!
//! Appends that add outbox rows or timers run `pg_notify(channel, '')` in their transaction,
//! which PostgreSQL delivers to every listening session at COMMIT. One task per store handle
//! holds a dedicated connection (its own one-connection pool, so it never takes a slot from
//! appends and reads) with `LISTEN channel`, and turns each notification into a wake-up of
//! that handle's `wait_for_work` callers.
//!
//! The task starts with the first `wait_for_work` call, so handles that never wait (a CLI
//! command) open no listening connection. Whenever the task was not listening (at start, and
//! after a lost connection) it may have missed notifications, so as soon as it listens
//! (again) it wakes the waiters once: they claim, find whatever was missed, and wait again.
//! A worker therefore never sleeps through work for longer than its own polling timeout,
//! which stays the fallback if the listener cannot connect at all.

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// The NOTIFY channel for a schema. Channel names are identifiers (at most 63 bytes); a
/// schema name that would not fit as is, or is not a plain identifier, is hashed.
pub(crate) fn channel_name(schema: &str) -> String {
    const PREFIX: &str = "passage_work_";
    let plain = schema
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain && PREFIX.len() + schema.len() <= 63 {
        format!("{PREFIX}{schema}")
    } else {
        let digest = Sha256::digest(schema.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{hex}")
    }
}

/// Wakes every current waiter, and leaves a permit for the next one: a worker that is busy
/// claiming when the signal comes must not sleep through it.
pub(crate) fn signal(work: &Notify) {
    work.notify_waiters();
    work.notify_one();
}

/// Listens on `channel` until `stop` fires (the last store handle was dropped) or `pool` is
/// closed ([`super::PgStore::close`]).
pub(crate) async fn run(
    pool: PgPool,
    channel: String,
    work: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut failures = 0u32;
    loop {
        if pool.is_closed() {
            break;
        }
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = &mut stop => break,
            result = listening => match result {
                Ok(l) => l,
                Err(e) => {
                    failures += 1;
                    let pause = backoff(failures);
                    // Loud once, then quiet: workers keep polling meanwhile.
                    if failures == 1 {
                        tracing::warn!(%channel, ?pause, "cannot LISTEN for new work, polling until it works: {e}");
                    } else {
                        tracing::debug!(%channel, failures, ?pause, "LISTEN still failing: {e}");
                    }
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        if failures > 0 {
            tracing::info!(%channel, "listening for new work again");
        }
        failures = 0;
        // Whatever was committed while we were not listening has not been heard of.
        signal(&work);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => signal(&work),
                    // The connection was lost and re-established: notifications in between
                    // are gone, so wake the waiters to look.
                    Ok(None) => signal(&work),
                    Err(e) => {
                        if !pool.is_closed() {
                            tracing::debug!(%channel, "listening connection failed: {e}");
                        }
                        break;
                    }
                },
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(6)).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::channel_name;

    #[test]
    fn channel_names_are_short_identifiers() {
        assert_eq!(channel_name("public"), "passage_work_public");
        let long = "x".repeat(60);
        for schema in [long.as_str(), "Weird Name\"", "ünïcode"] {
            let c = channel_name(schema);
            assert!(c.len() <= 63, "{c}");
            assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        assert_ne!(channel_name(&"x".repeat(60)), channel_name(&"x".repeat(61)));
    }
}
