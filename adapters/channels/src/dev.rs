//! Development outboxes for email, SMS and voice.

use crate::Error;
use passage_core::mask::{mask_email, mask_phone};
use passage_core::ports::{
    CallExpectation, Channel, JourneyId, MessageKind, OutboundMessage, Receipt, SendError,
};
use passage_core::time::Timestamp;
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::info;
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY,
    -- The effect id: a redelivery after a crash finds the row and is not stored twice.
    idempotency_key TEXT NOT NULL UNIQUE,
    journey_id      TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT NOT NULL,
    call_id         TEXT,
    expect          TEXT,
    deliveries      INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_journey ON messages (journey_id, id);
";

/// A message kept by the dev outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevMessage {
    pub id: i64,
    pub idempotency_key: Uuid,
    pub journey_id: JourneyId,
    /// `email`, `sms` or `voice`.
    pub channel: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub call_id: Option<Uuid>,
    pub expect: Option<CallExpectation>,
    /// How many times the message was handed over (more than 1 only after a redelivery).
    pub deliveries: i64,
    pub created_at: Timestamp,
}

impl DevMessage {
    pub fn recipient_masked(&self) -> String {
        if self.channel == "email" {
            mask_email(&self.recipient)
        } else {
            mask_phone(&self.recipient)
        }
    }

    /// The code a person would read in this message, for the demo and tests: the first run
    /// of 6 to 10 digits, where a call speaks digits one by one ("1, 2, 3, ...").
    pub fn code(&self) -> Option<String> {
        find_code(&self.body)
    }
}

/// The first run of 6 to 10 digits in a message text, where a call speaks digits one by one
/// ("1, 2, 3, ..."): what a person reads as the code. For the dev inbox, the demo and tests.
pub fn find_code(text: &str) -> Option<String> {
    let mut runs = vec![String::new()];
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let spoken_gap = (*c == ',' || *c == ' ')
            && i > 0
            && chars[i - 1].is_ascii_digit() | (chars[i - 1] == ',')
            && chars
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == ' ');
        if c.is_ascii_digit() {
            runs.last_mut()?.push(*c);
        } else if !spoken_gap {
            runs.push(String::new());
        }
    }
    runs.into_iter().find(|r| (6..=10).contains(&r.len()))
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub journey: Option<JourneyId>,
    pub channel: Option<String>,
    pub limit: usize,
}

/// The development outbox: a [`Channel`] for every message kind.
#[derive(Debug, Clone)]
pub struct DevOutbox {
    /// Readers (listing, counting, the demo's inbox).
    pool: SqlitePool,
    /// The one connection that writes. SQLite admits one writer at a time, and writers on
    /// several connections wait for each other in SQLite's busy handler, which sleeps in
    /// steps of milliseconds: under a burst of deliveries that sleeping, not the writing, set
    /// the pace. Queued on this pool instead, each write starts as soon as the previous ends.
    writer: SqlitePool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl DevOutbox {
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let display = path.display().to_string();
        let open_err = |source| Error::Open {
            path: display.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{display}"))
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a killed process (what the crash tests do), not a power
            // cut; for a development inbox that is the right price for not paying an fsync
            // per message.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Erasure: a forgotten message is overwritten, not left in free pages.
            .pragma("secure_delete", "ON");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&writer)
            .await
            .map_err(open_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        Ok(Self { pool, writer })
    }

    /// An empty outbox in memory, gone with the process: for commands that only read the
    /// event store, which must not create an outbox file where none was.
    pub async fn in_memory() -> Result<Self, Error> {
        let open_err = |source| Error::Open {
            path: ":memory:".into(),
            source,
        };
        // One connection that stays open: each connection to `:memory:` is a database of
        // its own, and the last one closing would drop it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(SqliteConnectOptions::from_str("sqlite::memory:").map_err(open_err)?)
            .await
            .map_err(open_err)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(open_err)?;
        Ok(Self {
            writer: pool.clone(),
            pool,
        })
    }

    async fn store(&self, m: &OutboundMessage) -> Result<(i64, bool), Error> {
        let (channel, recipient, subject, body, call_id, expect) = match &m.kind {
            MessageKind::Email { to, subject, text } => {
                ("email", to, Some(subject.as_str()), text, None, None)
            }
            MessageKind::Sms { to, text } => ("sms", to, None, text, None, None),
            MessageKind::Call {
                to,
                call_id,
                say,
                expect,
            } => (
                "voice",
                to,
                None,
                say,
                Some(call_id.to_string()),
                Some(serde_json::to_string(expect).unwrap_or_default()),
            ),
            MessageKind::Alert {
                dedup_key, text, ..
            } => ("support", dedup_key, None, text, None, None),
        };
        let inserted = sqlx::query(
            "INSERT INTO messages (idempotency_key, journey_id, channel, recipient, subject, body, call_id, expect, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (idempotency_key) DO UPDATE SET deliveries = deliveries + 1
             RETURNING id, deliveries",
        )
        .bind(m.idempotency_key.to_string())
        .bind(m.journey_id.to_string())
        .bind(channel)
        .bind(recipient)
        .bind(subject)
        .bind(body)
        .bind(call_id)
        .bind(expect)
        .bind(now_ms())
        .fetch_one(&self.writer)
        .await?;
        let id: i64 = inserted.get(0);
        let deliveries: i64 = inserted.get(1);
        Ok((id, deliveries == 1))
    }

    pub async fn list(&self, filter: &MessageFilter) -> Result<Vec<DevMessage>, Error> {
        let limit = if filter.limit == 0 { 50 } else { filter.limit } as i64;
        let rows = sqlx::query(
            "SELECT id, idempotency_key, journey_id, channel, recipient, subject, body, call_id, expect, deliveries, created_at
             FROM messages
             WHERE ($1 IS NULL OR journey_id = $1) AND ($2 IS NULL OR channel = $2)
             ORDER BY id DESC LIMIT $3",
        )
        .bind(filter.journey.map(|j| j.to_string()))
        .bind(filter.channel.clone())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<DevMessage> = rows.iter().map(row_to_message).collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// Deletes every message of these journeys (they name the person's full address or
    /// number), then folds the write-ahead log into the file and truncates it so no copy
    /// of them stays on disk. Returns how many messages were deleted.
    pub async fn forget_journeys(&self, journeys: &[JourneyId]) -> Result<u64, Error> {
        let mut deleted = 0;
        for j in journeys {
            deleted += sqlx::query("DELETE FROM messages WHERE journey_id = $1")
                .bind(j.to_string())
                .execute(&self.writer)
                .await?
                .rows_affected();
        }
        // The checkpoint reports a reader it waited for in vain (past the busy timeout) as
        // data, not as an error: "busy" is its first column. Then the log was not truncated
        // and still holds the deleted rows, which an erasure must not report as done.
        let busy: i64 = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.writer)
            .await?;
        if busy != 0 {
            return Err(Error::NotTruncated(format!(
                "{deleted} messages deleted, but a reader kept the log from being truncated"
            )));
        }
        Ok(deleted)
    }

    /// Waits for queries in flight and closes the file (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// The newest message of a journey on a channel.
    pub async fn latest(
        &self,
        journey: JourneyId,
        channel: &str,
    ) -> Result<Option<DevMessage>, Error> {
        let mut v = self
            .list(&MessageFilter {
                journey: Some(journey),
                channel: Some(channel.into()),
                limit: 1,
            })
            .await?;
        Ok(v.pop())
    }

    /// Total messages, and how many were handed over more than once.
    pub async fn counts(&self) -> Result<(i64, i64), Error> {
        let row = sqlx::query("SELECT COUNT(*), COALESCE(SUM(deliveries > 1), 0) FROM messages")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

fn row_to_message(r: &sqlx::sqlite::SqliteRow) -> Result<DevMessage, Error> {
    let uuid = |s: String| Uuid::parse_str(&s).map_err(|e| Error::Corrupt(format!("{s}: {e}")));
    Ok(DevMessage {
        id: r.get(0),
        idempotency_key: uuid(r.get(1))?,
        journey_id: JourneyId(uuid(r.get(2))?),
        channel: r.get(3),
        recipient: r.get(4),
        subject: r.get(5),
        body: r.get(6),
        call_id: r.get::<Option<String>, _>(7).map(uuid).transpose()?,
        expect: r
            .get::<Option<String>, _>(8)
            .map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(e.to_string())))
            .transpose()?,
        deliveries: r.get(9),
        created_at: Timestamp(r.get(10)),
    })
}

impl Channel for DevOutbox {
    async fn deliver(&self, message: &OutboundMessage) -> Result<Receipt, SendError> {
        let (id, first) = self
            .store(message)
            .await
            .map_err(|e| SendError::Transient(e.to_string()))?;
        let masked = match &message.kind {
            MessageKind::Email { to, .. } => mask_email(to),
            MessageKind::Sms { to, .. } | MessageKind::Call { to, .. } => mask_phone(to),
            MessageKind::Alert { .. } => "support".to_owned(),
        };
        info!(
            channel = message.kind.channel(),
            to = %masked,
            journey = %message.journey_id,
            duplicate = !first,
            "dev outbox received a message"
        );
        Ok(Receipt {
            provider_ref: format!("dev-{}-{id}", message.kind.channel()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(channel: &str, body: &str) -> DevMessage {
        DevMessage {
            id: 1,
            idempotency_key: Uuid::nil(),
            journey_id: JourneyId(Uuid::nil()),
            channel: channel.into(),
            recipient: "alice@example.com".into(),
            subject: None,
            body: body.into(),
            call_id: None,
            expect: None,
            deliveries: 1,
            created_at: Timestamp(0),
        }
    }

    #[test]
    fn finds_codes_written_and_spoken() {
        assert_eq!(
            msg("sms", "042917 is your code.").code().as_deref(),
            Some("042917")
        );
        assert_eq!(
            msg(
                "email",
                "Your code is:\n\n    123456\n\nIt expires in 5 minutes."
            )
            .code()
            .as_deref(),
            Some("123456")
        );
        assert_eq!(
            msg(
                "voice",
                "Your verification code is: 4, 0, 2, 9, 1, 7. Again: 4, 0, 2, 9, 1, 7."
            )
            .code()
            .as_deref(),
            Some("402917")
        );
        assert_eq!(msg("voice", "Press the pound key now.").code(), None);
    }

    #[tokio::test]
    async fn keeps_one_row_per_idempotency_key() {
        let path = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
        let outbox = DevOutbox::open(&path).await.unwrap();
        let m = OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: JourneyId(Uuid::new_v4()),
            kind: MessageKind::Sms {
                to: "+61412345678".into(),
                text: "123456 is your code".into(),
            },
        };
        let a = outbox.deliver(&m).await.unwrap();
        let b = outbox.deliver(&m).await.unwrap();
        assert_eq!(a, b, "a redelivery returns the first receipt");
        assert_eq!(outbox.counts().await.unwrap(), (1, 1));
        let latest = outbox.latest(m.journey_id, "sms").await.unwrap().unwrap();
        assert_eq!(latest.deliveries, 2);
        assert_eq!(latest.recipient_masked(), "+61 ••• ••• 678");
        drop(outbox);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    /// Erasure deletes and truncates the write-ahead log; a reader that keeps the log from
    /// being truncated (past the 5 s busy timeout) makes it an error, not a silent success
    /// with the deleted messages still on disk.
    #[tokio::test]
    async fn forgetting_reports_a_log_it_could_not_truncate() {
        use sqlx::Connection;
        let path = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
        let outbox = DevOutbox::open(&path).await.unwrap();
        let journey = JourneyId(Uuid::new_v4());
        let m = OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: journey,
            kind: MessageKind::Sms {
                to: "+61412345678".into(),
                text: "123456 is your code".into(),
            },
        };
        outbox.deliver(&m).await.unwrap();
        // A reader in the middle of a transaction holds its snapshot of the log.
        let mut reader = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut reader).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(&mut reader)
            .await
            .unwrap();
        assert_eq!(seen, 1);
        let err = outbox.forget_journeys(&[journey]).await.unwrap_err();
        assert!(matches!(err, Error::NotTruncated(_)), "{err}");
        assert_eq!(
            outbox.counts().await.unwrap().0,
            0,
            "the rows are deleted all the same"
        );
        // Once the reader is gone, erasing again truncates the log.
        sqlx::raw_sql("COMMIT").execute(&mut reader).await.unwrap();
        reader.close().await.unwrap();
        assert_eq!(outbox.forget_journeys(&[journey]).await.unwrap(), 0);
        let wal = std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(wal, 0, "the log is truncated");
        outbox.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
