//! Turning rows into port types without trusting them.
//!
//! The file is on disk and can be edited by anyone with a shell, so every column is decoded
//! with `try_get` and checked: a bad UUID, a hash of the wrong length or a negative version
//! becomes [`Error::Corrupt`] naming the table and column, never a panic.

use crate::error::Error;
use passage_core::ports::{
    Account, Hash, JourneyId, JourneySummary, OutboxEntry, Session, StoredEvent, TimerEntry,
};
use passage_core::time::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, Sqlite, Type};
use uuid::Uuid;

/// Reads a column, reporting a type mismatch or a NULL where none belongs as corruption.
fn col<'r, T>(row: &'r SqliteRow, table: &str, column: &str) -> Result<T, Error>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|e| Error::Corrupt(format!("{table}.{column}: {e}")))
}

fn uuid(row: &SqliteRow, table: &str, column: &str) -> Result<Uuid, Error> {
    let text: String = col(row, table, column)?;
    Uuid::parse_str(&text)
        .map_err(|e| Error::Corrupt(format!("{table}.{column}: {text:?} is not a UUID ({e})")))
}

fn unsigned(row: &SqliteRow, table: &str, column: &str) -> Result<u64, Error> {
    let n: i64 = col(row, table, column)?;
    u64::try_from(n).map_err(|_| Error::Corrupt(format!("{table}.{column}: negative value {n}")))
}

fn narrow<T: TryFrom<u64>>(n: u64, table: &str, column: &str) -> Result<T, Error> {
    T::try_from(n).map_err(|_| Error::Corrupt(format!("{table}.{column}: {n} is out of range")))
}

fn timestamp(row: &SqliteRow, table: &str, column: &str) -> Result<Timestamp, Error> {
    col::<i64>(row, table, column).map(Timestamp)
}

fn hash(row: &SqliteRow, table: &str, column: &str) -> Result<Hash, Error> {
    let bytes: Vec<u8> = col(row, table, column)?;
    Hash::try_from(bytes.as_slice()).map_err(|_| {
        Error::Corrupt(format!(
            "{table}.{column}: expected 32 bytes, found {}",
            bytes.len()
        ))
    })
}

/// Decodes a row selected with [`event_columns!`].
pub(crate) fn event(row: &SqliteRow) -> Result<StoredEvent, Error> {
    const T: &str = "events";
    Ok(StoredEvent {
        position: unsigned(row, T, "position")?,
        stream: JourneyId(uuid(row, T, "stream")?),
        stream_version: unsigned(row, T, "stream_version")?,
        event_type: col(row, T, "event_type")?,
        schema_version: narrow(unsigned(row, T, "schema_version")?, T, "schema_version")?,
        payload: col(row, T, "payload")?,
        metadata: col(row, T, "metadata")?,
        recorded_at: timestamp(row, T, "recorded_at")?,
        command_id: uuid(row, T, "command_id")?,
        prev_hash: hash(row, T, "prev_hash")?,
        hash: hash(row, T, "hash")?,
    })
}

/// The select list [`event`] decodes. A macro, not a const, so it can be `concat!`ed into
/// the `&'static str` queries sqlx 0.9 accepts without `AssertSqlSafe`.
macro_rules! event_columns {
    () => {
        "position, stream, stream_version, event_type, schema_version, payload, metadata, \
         recorded_at, command_id, prev_hash, hash"
    };
}
pub(crate) use event_columns;

/// A position and hash read from `table` (the last event, or the `log_head` record): where
/// the next append continues the chain.
pub(crate) fn head_of(row: &SqliteRow, table: &str) -> Result<(u64, Hash), Error> {
    Ok((unsigned(row, table, "position")?, hash(row, table, "hash")?))
}

/// An outbox row just leased until `lease` (the claim's fencing token).
pub(crate) fn outbox_entry(row: &SqliteRow, lease: Timestamp) -> Result<OutboxEntry, Error> {
    const T: &str = "outbox";
    Ok(OutboxEntry {
        effect_id: uuid(row, T, "effect_id")?,
        stream: JourneyId(uuid(row, T, "stream")?),
        kind: col(row, T, "kind")?,
        payload: col(row, T, "payload")?,
        attempts: narrow(unsigned(row, T, "attempts")?, T, "attempts")?,
        lease,
    })
}

/// A timer row just leased until `lease` (the claim's fencing token).
pub(crate) fn timer_entry(row: &SqliteRow, lease: Timestamp) -> Result<TimerEntry, Error> {
    const T: &str = "timers";
    Ok(TimerEntry {
        timer_id: uuid(row, T, "timer_id")?,
        stream: JourneyId(uuid(row, T, "stream")?),
        fire_at: timestamp(row, T, "fire_at")?,
        payload: col(row, T, "payload")?,
        lease,
    })
}

pub(crate) fn journey(row: &SqliteRow) -> Result<JourneySummary, Error> {
    const T: &str = "journeys";
    Ok(JourneySummary {
        journey_id: JourneyId(uuid(row, T, "journey_id")?),
        definition_id: col(row, T, "definition_id")?,
        definition_version: narrow(
            unsigned(row, T, "definition_version")?,
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
        failures: narrow(unsigned(row, T, "failures")?, T, "failures")?,
        stall_at: col::<Option<i64>>(row, T, "stall_at")?.map(Timestamp),
        stall_keep: false,
    })
}

pub(crate) fn session(row: &SqliteRow) -> Result<Session, Error> {
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

pub(crate) fn account(row: &SqliteRow) -> Result<Account, Error> {
    const T: &str = "accounts";
    let enabled: i64 = col(row, T, "enabled")?;
    Ok(Account {
        account_id: col(row, T, "account_id")?,
        email: col(row, T, "email")?,
        display_name: col(row, T, "display_name")?,
        phone: col(row, T, "phone")?,
        enabled: match enabled {
            0 => false,
            1 => true,
            n => return Err(Error::Corrupt(format!("{T}.enabled: {n} is not 0 or 1"))),
        },
    })
}

/// Converts a caller's count or version to the INTEGER the schema stores.
pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::OutOfRange(format!("{what} {n} exceeds i64::MAX")))
}
