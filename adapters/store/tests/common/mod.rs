//! Test support shared by the SQLite test files.

#![allow(dead_code)] // each test file uses a different part of this module

use passage_core::ports::{AppendRequest, JourneyId, JourneySummary, NewEvent};
use passage_core::time::Timestamp;
use passage_store::{Options, SqliteStore};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// A database file in the temp directory with a unique name, deleted (with its `-wal` and
/// `-shm` companions) when dropped, also after a failed test.
#[derive(Debug)]
pub struct TempDb {
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("passage-store-test-{}.db", Uuid::new_v4()));
        Self { path }
    }

    pub async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e:?}", self.path.display()))
    }

    pub async fn open_with(&self, options: Options) -> SqliteStore {
        SqliteStore::open_with(&self.path, options)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e:?}", self.path.display()))
    }

    /// A plain connection of the test's own, to look at or damage the file behind the
    /// store's back.
    pub async fn raw(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&self.path);
        sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("raw connection")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(Path::new(&p));
        }
    }
}

pub const T0: Timestamp = Timestamp(1_800_000_000_000);

pub fn summary(stream: JourneyId, version: u64) -> JourneySummary {
    JourneySummary {
        journey_id: stream,
        definition_id: "reset-by-email".into(),
        definition_version: 1,
        status: "active".into(),
        current_step: None,
        email_masked: None,
        started_at: T0,
        updated_at: T0,
        version,
        subject: None,
        failures: 0,
        stall_at: None,
        stall_keep: false,
    }
}

/// A fresh command appending `events` small events to `stream` at `expected`.
pub fn request(stream: JourneyId, expected: u64, events: usize) -> AppendRequest {
    let command_id = Uuid::new_v4();
    AppendRequest {
        stream,
        expected_version: expected,
        command_id,
        metadata: r#"{"actor":"test"}"#.into(),
        recorded_at: T0,
        events: (0..events)
            .map(|i| NewEvent {
                event_type: "CodeSent".into(),
                schema_version: 1,
                payload: format!(r#"{{"n":{i}}}"#),
            })
            .collect(),
        effects: Vec::new(),
        timers: Vec::new(),
        summary: summary(stream, expected + events as u64),
        outcome: format!(r#"{{"command":"{command_id}"}}"#),
        data_key: None,
        session: None,
    }
}

pub fn new_stream() -> JourneyId {
    JourneyId(Uuid::new_v4())
}
