//! Decoding PostgreSQL rows into port types. A value that cannot be what this crate wrote
//! (a negative version, a hash of the wrong length) is [`Error::Corrupt`], never a panic.

use crate::error::Error;
use passage_core::ports::{
    Account, Hash, JourneyId, JourneySummary, OutboxEntry, Session, StoredEvent, TimerEntry,
};
use passage_core::time::Timestamp;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

fn col<'r, T>(row: &'r PgRow, table: &str, column: &str) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column)
        .map_err(|e| Error::Corrupt(format!("{table}.{column}: {e}")))
}

fn unsigned(row: &PgRow, table: &str, column: &str) -> Result<u64, Error> {
    let n: i64 = col(row, table, column)?;
    u64::try_from(n).map_err(|_| Error::Corrupt(format!("{table}.{column}: negative value {n}")))
}

fn narrow<T: TryFrom<i64>>(n: i64, table: &str, column: &str) -> Result<T, Error> {
    T::try_from(n).map_err(|_| Error::Corrupt(format!("{table}.{column}: {n} is out of range")))
}

fn timestamp(row: &PgRow, table: &str, column: &str) -> Result<Timestamp, Error> {
    col::<i64>(row, table, column).map(Timestamp)
}

fn hash(row: &PgRow, table: &str, column: &str) -> Result<Hash, Error> {
    let bytes: Vec<u8> = col(row, table, column)?;
    Hash::try_from(bytes.as_slice()).map_err(|_| {
        Error::Corrupt(format!(
            "{table}.{column}: expected 32 bytes, found {}",
            bytes.len()
        ))
    })
}

/// The select list [`event`] decodes (a macro so it can be `concat!`ed into static SQL).
macro_rules! event_columns {
    () => {
        "position, stream, stream_version, event_type, schema_version, payload, metadata, \
         recorded_at, command_id, prev_hash, hash"
    };
}
pub(crate) use event_columns;

/// Decodes a row selected with [`event_columns!`].
pub(crate) fn event(row: &PgRow) -> Result<StoredEvent, Error> {
    const T: &str = "events";
    Ok(StoredEvent {
        position: unsigned(row, T, "position")?,
        stream: JourneyId(col::<Uuid>(row, T, "stream")?),
        stream_version: unsigned(row, T, "stream_version")?,
        event_type: col(row, T, "event_type")?,
        schema_version: narrow(
            i64::from(col::<i32>(row, T, "schema_version")?),
            T,
            "schema_version",
        )?,
        payload: col(row, T, "payload")?,
        metadata: col(row, T, "metadata")?,
        recorded_at: timestamp(row, T, "recorded_at")?,
        command_id: col(row, T, "command_id")?,
        prev_hash: hash(row, T, "prev_hash")?,
        hash: hash(row, T, "hash")?,
    })
}

/// The `log_head` row: where the next append continues positions and the chain.
pub(crate) fn head(row: &PgRow) -> Result<(u64, Hash), Error> {
    Ok((
        unsigned(row, "log_head", "position")?,
        hash(row, "log_head", "hash")?,
    ))
}

/// An outbox row as a claim's `RETURNING` gives it; `leased_until` is the fencing token.
pub(crate) fn outbox_entry(row: &PgRow) -> Result<OutboxEntry, Error> {
    const T: &str = "outbox";
    Ok(OutboxEntry {
        effect_id: col(row, T, "effect_id")?,
        stream: JourneyId(col::<Uuid>(row, T, "stream")?),
        kind: col(row, T, "kind")?,
        payload: col(row, T, "payload")?,
        attempts: narrow(i64::from(col::<i32>(row, T, "attempts")?), T, "attempts")?,
        lease: timestamp(row, T, "leased_until")?,
    })
}

pub(crate) fn timer_entry(row: &PgRow) -> Result<TimerEntry, Error> {
    const T: &str = "timers";
    Ok(TimerEntry {
        timer_id: col(row, T, "timer_id")?,
        stream: JourneyId(col::<Uuid>(row, T, "stream")?),
        fire_at: timestamp(row, T, "fire_at")?,
        payload: col(row, T, "payload")?,
        lease: timestamp(row, T, "leased_until")?,
    })
}

pub(crate) fn journey(row: &PgRow) -> Result<JourneySummary, Error> {
    const T: &str = "journeys";
    Ok(JourneySummary {
        journey_id: JourneyId(col::<Uuid>(row, T, "journey_id")?),
        definition_id: col(row, T, "definition_id")?,
        definition_version: narrow(
            col::<i64>(row, T, "definition_version")?,
            T,
            "definition_version",
        )?,
        status: col(row, T, "status")?,
        current_step: col(row, T, "current_step")?,
        email_masked: col(row, T, "email_masked")?,
        started_at: timestamp(row, T, "started_at")?,
        updated_at: timestamp(row, T, "updated_at")?,
        version: unsigned(row, T, "version")?,
        subject: col(row, T, "subject")?,
        failures: narrow(col::<i64>(row, T, "failures")?, T, "failures")?,
        stall_at: col::<Option<i64>>(row, T, "stall_at")?.map(Timestamp),
        stall_keep: false,
    })
}

pub(crate) fn session(row: &PgRow) -> Result<Session, Error> {
    const T: &str = "sessions";
    Ok(Session {
        session_hash: col(row, T, "session_hash")?,
        account_id: col(row, T, "account_id")?,
        journey_id: col(row, T, "journey_id")?,
        kind: col(row, T, "kind")?,
        amr: col(row, T, "amr")?,
        created_at: timestamp(row, T, "created_at")?,
        expires_at: timestamp(row, T, "expires_at")?,
        revoked_at: col::<Option<i64>>(row, T, "revoked_at")?.map(Timestamp),
        password_fp: col(row, T, "password_fp")?,
    })
}

pub(crate) fn account(row: &PgRow) -> Result<Account, Error> {
    const T: &str = "accounts";
    Ok(Account {
        account_id: col(row, T, "account_id")?,
        email: col(row, T, "email")?,
        display_name: col(row, T, "display_name")?,
        phone: col(row, T, "phone")?,
        enabled: col(row, T, "enabled")?,
    })
}

/// Converts a caller's count or version to the BIGINT the schema stores.
pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::OutOfRange(format!("{what} {n} exceeds i64::MAX")))
}
