//! `passage audit verify` finds a modified, removed or reordered event: the log of
//! `passage demo --second-factor sms` is tampered with through SQLite directly, each time on a
//! fresh copy of the database.

mod common;

use common::{Passage, Run, TestDir};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::path::{Path, PathBuf};

/// A demo log, made once per test.
struct Log {
    dir: TestDir,
    passage: Passage,
}

impl Log {
    fn new(tag: &str) -> Self {
        let dir = TestDir::new(tag);
        let passage = Passage::new(&dir);
        passage
            .run(&["demo", "--second-factor", "sms"])
            .expect_ok()
            .stdout_has("[password-reset v1, completed]");
        Self { dir, passage }
    }

    /// A copy of the event store (with its -wal and -shm files, since the binary leaves its
    /// last writes in the WAL) in a new subdirectory; returns the copy's path.
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.dir.join(name);
        std::fs::create_dir_all(&to).expect("create the copy's directory");
        for suffix in ["", "-wal", "-shm"] {
            let from = self.dir.join(&format!("passage.db{suffix}"));
            if from.exists() {
                std::fs::copy(&from, to.join(format!("passage.db{suffix}")))
                    .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            }
        }
        // The same deployment: its secret (and so its audit key) comes along.
        let key = self.dir.join("passage.key");
        if key.exists() {
            std::fs::copy(&key, to.join("passage.key")).expect("copy the key");
        }
        to.join("passage.db")
    }

    fn verify(&self, db: &Path) -> Run {
        let run = self.passage.clone().with_db(db).run(&["audit", "verify"]);
        run.no_panic();
        run
    }
}

/// Opens a copy with one connection and folds the WAL into the main file first.
async fn open(db: &Path) -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(db))
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&pool)
        .await
        .expect("checkpoint the WAL");
    assert_eq!(row.get::<i64, _>(0), 0, "the checkpoint was blocked");
    pool
}

async fn count(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count the events")
}

async fn payload(pool: &SqlitePool, position: i64) -> (String, String) {
    let row = sqlx::query("SELECT event_type, payload FROM events WHERE position = $1")
        .bind(position)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("read position {position}: {e}"));
    (row.get("event_type"), row.get("payload"))
}

async fn set_payload(pool: &SqlitePool, position: i64, event_type: &str, payload: &str) {
    let done = sqlx::query("UPDATE events SET event_type = $1, payload = $2 WHERE position = $3")
        .bind(event_type)
        .bind(payload)
        .bind(position)
        .execute(pool)
        .await
        .expect("update the event");
    assert_eq!(done.rows_affected(), 1);
}

/// Panics unless `run` is a failed verification naming `position` as the first bad one.
#[track_caller]
fn assert_fails_at(run: &Run, position: u64, fault: &str) {
    run.expect_code(1)
        .stderr_has(&format!("audit verify FAILED at position {position}:"))
        .stderr_has(fault)
        .stderr_has(&format!("{} event", position - 1))
        .stderr_has("before it verified");
    assert!(!run.stdout.contains("audit verify ok"), "{run}");
}

#[tokio::test]
async fn an_untouched_copy_verifies() {
    let log = Log::new("audit-clean");
    let original = log.verify(&log.dir.db());
    original.expect_ok();

    let db = log.copy("clean");
    let pool = open(&db).await;
    let n = count(&pool).await;
    assert!(n >= 10, "the demo wrote {n} events");
    let max: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&pool)
        .await
        .expect("the last position");
    assert_eq!(max, n, "positions are gap-free from 1");
    pool.close().await;

    let run = log.verify(&db);
    run.expect_ok().stdout_has(&format!(
        "audit verify ok: {n} events, positions 1 to {n} gap-free, head hash "
    ));
    assert_eq!(
        run.stdout, original.stdout,
        "the copy verifies to the same head hash"
    );
}

#[tokio::test]
async fn a_modified_payload_is_named_by_its_position() {
    let log = Log::new("audit-modified");
    let db = log.copy("modified");
    let pool = open(&db).await;
    let (event_type, before) = payload(&pool, 2).await;
    assert_eq!(event_type, "EmailSubmitted");
    // The masked address is sealed under the journey's key (ADR 0005); the account id is not.
    assert!(
        before.contains("\"email_masked\":\"sealed:v1:") && before.contains("acct-0001"),
        "{before}"
    );
    // One character of the account id.
    let after = before.replacen("acct-0001", "acct-0002", 1);
    assert_ne!(after, before);
    set_payload(&pool, 2, &event_type, &after).await;
    pool.close().await;

    assert_fails_at(&log.verify(&db), 2, "(modified)");
    // The original is untouched.
    log.verify(&log.dir.db()).expect_ok();
}

#[tokio::test]
async fn a_modified_actor_is_named_by_its_position() {
    let log = Log::new("audit-actor");
    let db = log.copy("actor");
    let pool = open(&db).await;
    let done = sqlx::query(
        "UPDATE events SET metadata = replace(metadata, 'person', 'support') WHERE position = 5",
    )
    .execute(&pool)
    .await
    .expect("edit the metadata");
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;

    assert_fails_at(&log.verify(&db), 5, "(modified)");
}

#[tokio::test]
async fn a_removed_event_is_named_by_its_position() {
    let log = Log::new("audit-removed");
    let db = log.copy("removed");
    let pool = open(&db).await;
    let n = count(&pool).await;
    let done = sqlx::query("DELETE FROM events WHERE position = 4")
        .execute(&pool)
        .await
        .expect("delete position 4");
    assert_eq!(done.rows_affected(), 1);
    assert_eq!(count(&pool).await, n - 1);
    pool.close().await;

    let run = log.verify(&db);
    assert_fails_at(&run, 4, "(removed)");
    run.stderr_has("the next stored event is at 5");
}

#[tokio::test]
async fn swapped_events_are_named_by_the_first_position() {
    let log = Log::new("audit-swapped");
    let db = log.copy("swapped");
    let pool = open(&db).await;
    let (type5, payload5) = payload(&pool, 5).await;
    let (type6, payload6) = payload(&pool, 6).await;
    assert_ne!(type5, type6, "positions 5 and 6 hold different events");
    set_payload(&pool, 5, &type6, &payload6).await;
    set_payload(&pool, 6, &type5, &payload5).await;
    assert_eq!(payload(&pool, 5).await, (type6, payload6));
    pool.close().await;

    assert_fails_at(&log.verify(&db), 5, "does not match its stored hash");
}

/// Export → verify-export round trip, offline, for JSONL and CSV; a changed line, a removed
/// line, a changed manifest and another key each fail verification with a clear reason.
#[test]
fn an_export_verifies_offline_and_any_change_to_it_is_caught() {
    let log = Log::new("export");
    let key = log.passage.run(&["audit", "public-key"]);
    key.expect_ok();
    let public_key = key.stdout.trim().to_owned();
    assert_eq!(public_key.len(), 64, "{key}");
    let offline = |file: &Path, key: &str| {
        // No --db: verification needs nothing but the files and the key.
        let run = log.passage.run(&[
            "audit",
            "verify-export",
            file.to_str().unwrap(),
            "--public-key",
            key,
        ]);
        run.no_panic();
        run
    };
    for format in ["jsonl", "csv"] {
        let file = log.dir.join(&format!("export.{format}"));
        log.passage
            .run(&[
                "audit",
                "export",
                "--format",
                format,
                "--out",
                file.to_str().unwrap(),
            ])
            .expect_ok()
            .stdout_has("exported 13 events (positions 1 to 13)");
        offline(&file, &public_key)
            .expect_ok()
            .stdout_has("verify-export ok: 13 events, positions 1 to 13");
        // An export is evidence: the same --out again is refused unless --force.
        let again = [
            "audit",
            "export",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ];
        log.passage
            .run(&again)
            .expect_code(2)
            .stderr_has("already exists: choose another --out, or add --force");
        log.passage
            .run(&[&again[..], &["--force"]].concat())
            .expect_ok();
        offline(&file, &public_key).expect_ok();
        // Staged under temporary names and moved into place: none is left behind.
        let folder = file.parent().unwrap();
        let staged = |dir: &std::path::Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".tmp"))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(staged(folder), Vec::<String>::new());
        // An export that cannot be written says where, and leaves nothing.
        let nowhere = folder.join("no-such-folder").join("x.jsonl");
        log.passage
            .run(&["audit", "export", "--out", nowhere.to_str().unwrap()])
            .expect_code(1)
            .no_panic()
            .stderr_has(&format!("write {}", nowhere.display()));
        assert_eq!(staged(folder), Vec::<String>::new());

        let original = std::fs::read_to_string(&file).unwrap();
        // One byte of one event.
        let changed = original.replacen("acct-0001", "acct-0002", 1);
        assert_ne!(changed, original);
        std::fs::write(&file, &changed).unwrap();
        offline(&file, &public_key)
            .expect_code(1)
            .stderr_has("does not match its manifest");
        // A removed line.
        let mut lines: Vec<&str> = original.lines().collect();
        lines.remove(5);
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        offline(&file, &public_key).expect_code(1);
        std::fs::write(&file, &original).unwrap();
        offline(&file, &public_key).expect_ok();

        // The manifest edited to match a shorter file: its signature fails.
        let mpath = PathBuf::from(format!("{}.manifest.json", file.display()));
        let manifest = std::fs::read_to_string(&mpath).unwrap();
        std::fs::write(&mpath, manifest.replace("\"count\": 13", "\"count\": 12")).unwrap();
        offline(&file, &public_key)
            .expect_code(1)
            .stderr_has("signature does not verify");
        std::fs::write(&mpath, &manifest).unwrap();
        // Another deployment's key.
        offline(&file, &"ab".repeat(32)).expect_code(1);
        offline(&file, "not-hex")
            .expect_code(1)
            .stderr_has("public key");
    }
    // A range export links to the chain before it.
    let part = log.dir.join("part.jsonl");
    log.passage
        .run(&[
            "audit",
            "export",
            "--from",
            "5",
            "--to",
            "10",
            "--out",
            part.to_str().unwrap(),
        ])
        .expect_ok()
        .stdout_has("exported 6 events (positions 5 to 10)");
    offline(&part, &public_key).expect_ok();
    let beyond = log.dir.join("beyond.jsonl");
    log.passage
        .run(&[
            "audit",
            "export",
            "--from",
            "999",
            "--out",
            beyond.to_str().unwrap(),
        ])
        .expect_code(1);
    assert!(!beyond.exists(), "a refused export wrote nothing");
}

/// Signed checkpoints catch what the chain alone cannot: events cut off the end, and a
/// chain rewritten consistently from some position on. A checkpoint not signed by the
/// deployment's key is itself refused.
#[tokio::test]
async fn checkpoints_catch_truncation_and_a_rewritten_chain() {
    use passage_core::chain::{ChainFields, event_hash};
    let log = Log::new("audit-checkpoint");
    log.passage
        .run(&["audit", "checkpoint"])
        .expect_ok()
        .stdout_has("checkpoint position=13 hash=");
    log.verify(&log.dir.db())
        .expect_ok()
        .stdout_has("1 signed checkpoint match");

    // Truncation: the head record (`log_head`) says where the log ended; with it edited to
    // match, the checkpoint still does.
    let db = log.copy("truncated");
    let pool = open(&db).await;
    sqlx::query("DELETE FROM events WHERE position > 11")
        .execute(&pool)
        .await
        .expect("cut the tail");
    pool.close().await;
    log.verify(&db)
        .expect_code(1)
        .stderr_has(
            "the log's head record (log_head) says position 13, but the events end at position 11",
        )
        .stderr_has("events were removed from the end");
    let pool = open(&db).await;
    sqlx::query(
        "UPDATE log_head SET position = 11, hash = (SELECT hash FROM events WHERE position = 11)",
    )
    .execute(&pool)
    .await
    .expect("edit the head record");
    pool.close().await;
    log.verify(&db)
        .expect_code(1)
        .stderr_has("the log ends at position 11 but a checkpoint")
        .stderr_has("events were removed from the end");

    // A rewrite: change position 5 and recompute every hash after it, so the chain itself
    // is consistent again.
    let db = log.copy("rewritten");
    let pool = open(&db).await;
    let rows = sqlx::query("SELECT * FROM events WHERE position >= 4 ORDER BY position")
        .fetch_all(&pool)
        .await
        .expect("read the tail");
    let mut prev: [u8; 32] = rows[0].get::<Vec<u8>, _>("hash").try_into().unwrap();
    for row in &rows[1..] {
        let position: i64 = row.get("position");
        let mut metadata: String = row.get("metadata");
        if position == 5 {
            metadata = metadata.replacen("person", "support", 1);
        }
        let payload: String = row.get("payload");
        let event_type: String = row.get("event_type");
        let fields = ChainFields {
            position: position as u64,
            stream: row.get::<String, _>("stream").parse().unwrap(),
            stream_version: row.get::<i64, _>("stream_version") as u64,
            event_type: &event_type,
            schema_version: row.get::<i64, _>("schema_version") as u16,
            payload: &payload,
            metadata: &metadata,
            recorded_at: passage_core::time::Timestamp(row.get("recorded_at")),
            command_id: row.get::<String, _>("command_id").parse().unwrap(),
        };
        let hash = event_hash(&prev, &fields);
        sqlx::query(
            "UPDATE events SET metadata = $1, prev_hash = $2, hash = $3 WHERE position = $4",
        )
        .bind(&metadata)
        .bind(prev.to_vec())
        .bind(hash.to_vec())
        .bind(position)
        .execute(&pool)
        .await
        .expect("rewrite");
        prev = hash;
    }
    pool.close().await;
    log.verify(&db).expect_code(1).stderr_has(
        "audit verify FAILED at position 13: the event there does not match the checkpoint",
    );

    // A forged checkpoint (its signature is not the deployment's).
    let db = log.copy("forged");
    let pool = open(&db).await;
    sqlx::query("UPDATE checkpoints SET signature = $1")
        .bind("00".repeat(64))
        .execute(&pool)
        .await
        .expect("forge");
    pool.close().await;
    log.verify(&db)
        .expect_code(1)
        .stderr_has("is not signed by this deployment's audit key");
}

/// A checkpoint vouches for the chain up to the head, so `audit checkpoint` verifies the
/// events since the last one and refuses to sign a chain that does not verify; `audit
/// verify` says which events no signed checkpoint covers yet.
#[tokio::test]
async fn a_checkpoint_is_refused_on_a_broken_chain_and_verify_names_the_uncovered_tail() {
    let log = Log::new("audit-checkpoint-refused");
    log.verify(&log.dir.db())
        .expect_ok()
        .stdout_has("note: no signed checkpoint yet");

    let db = log.copy("edited");
    let pool = open(&db).await;
    sqlx::query("UPDATE events SET payload = payload || ' ' WHERE position = 5")
        .execute(&pool)
        .await
        .expect("edit an event");
    pool.close().await;
    let refused = log
        .passage
        .clone()
        .with_db(&db)
        .run(&["audit", "checkpoint"]);
    refused
        .expect_code(1)
        .no_panic()
        .stderr_has("not signing: the chain does not verify at position 5");
    assert!(
        !refused.stdout.contains("checkpoint position="),
        "{refused}"
    );

    // The intact log signs; events added later are named as not yet covered.
    log.passage
        .run(&["audit", "checkpoint"])
        .expect_ok()
        .stdout_has("checkpoint position=13 hash=");
    log.passage
        .run(&["journey", "start", "--email", "bob.smith@example.com"])
        .expect_ok();
    let after = log.verify(&log.dir.db());
    after
        .expect_ok()
        .stdout_has("note: events 14 to 17 come after the newest signed checkpoint (position 13)");
    // A second checkpoint verifies only what came after the first, and covers it.
    log.passage
        .run(&["audit", "checkpoint"])
        .expect_ok()
        .stdout_has("checkpoint position=17 hash=");
    let covered = log.verify(&log.dir.db());
    covered.expect_ok().stdout_has("2 signed checkpoints match");
    assert!(!covered.stdout.contains("note:"), "{covered}");

    // Events cut off the end after a checkpoint: the shorter log is not signed either.
    let db = log.copy("cut");
    let pool = open(&db).await;
    sqlx::query("DELETE FROM events WHERE position > 15")
        .execute(&pool)
        .await
        .expect("cut the tail");
    pool.close().await;
    log.passage
        .clone()
        .with_db(&db)
        .run(&["audit", "checkpoint"])
        .expect_code(1)
        .no_panic()
        .stderr_has("not signing: the log's head record (log_head) says position 17")
        .stderr_has("events were removed from the end");
    // The head record edited to match the cut: the checkpoint still says where the log
    // ended.
    let pool = open(&db).await;
    sqlx::query(
        "UPDATE log_head SET position = 15, hash = (SELECT hash FROM events WHERE position = 15)",
    )
    .execute(&pool)
    .await
    .expect("edit the head record");
    pool.close().await;
    log.passage
        .clone()
        .with_db(&db)
        .run(&["audit", "checkpoint"])
        .expect_code(1)
        .no_panic()
        .stderr_has("not signing: the log ends at position 15 but a checkpoint")
        .stderr_has("events were removed from the end");
    // Cut after the newest checkpoint (17 → 15 above was before it): the head record
    // catches what no checkpoint covers yet.
    log.passage
        .run(&["journey", "start", "--email", "carol@example.com"])
        .expect_ok();
    let db = log.copy("cut-uncovered");
    let pool = open(&db).await;
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(last > 17, "events after the checkpoint at 17");
    sqlx::query("DELETE FROM events WHERE position > 17")
        .execute(&pool)
        .await
        .expect("cut the uncovered tail");
    pool.close().await;
    log.verify(&db).expect_code(1).stderr_has(&format!(
        "the log's head record (log_head) says position {last}, but the events end at position 17"
    ));
    // Nor is it signed over, or hidden by the appends that follow: they continue from the
    // head record, and the gap stays.
    let on_copy = log.passage.clone().with_db(&db);
    on_copy
        .run(&["audit", "checkpoint"])
        .expect_code(1)
        .no_panic()
        .stderr_has(&format!(
            "not signing: the log's head record (log_head) says position {last}"
        ));
    on_copy
        .run(&["journey", "start", "--email", "bob.smith@example.com"])
        .expect_ok();
    log.verify(&db)
        .expect_code(1)
        .stderr_has("audit verify FAILED at position 18");
}

/// The same tampering on PostgreSQL: one edited byte, a deleted event, two swapped events
/// and a tail cut after a checkpoint are each named. Each case runs on a fresh database.
#[tokio::test]
async fn tampering_in_postgres_is_named_by_position() {
    use sqlx::postgres::PgPoolOptions;
    let Some(server) = common::postgres::ScratchServer::connect().await else {
        return;
    };
    let cases: [(&str, &str, &str); 4] = [
        (
            "edit",
            "UPDATE events SET payload = replace(payload, 'acct-0001', 'acct-0002') WHERE position = 2",
            "audit verify FAILED at position 2:",
        ),
        (
            "delete",
            "DELETE FROM events WHERE position = 4",
            "audit verify FAILED at position 4:",
        ),
        (
            "swap",
            "UPDATE events e SET payload = o.payload, event_type = o.event_type \
             FROM events o WHERE (e.position, o.position) IN ((5, 6), (6, 5))",
            "audit verify FAILED at position 5:",
        ),
        (
            "truncate",
            "DELETE FROM events WHERE position > 11",
            "events were removed from the end",
        ),
    ];
    for (name, tamper, expected) in cases {
        let db = format!("passage_audit_{name}_{}", std::process::id());
        let url = server.fresh_database(&db).await;
        let dir = TestDir::new(&format!("audit-pg-{name}"));
        let p = Passage::new(&dir);
        let pg = |args: &[&str]| {
            let mut all = vec!["--database-url", url.as_str()];
            all.extend_from_slice(args);
            let run = p.run(&all);
            run.no_panic();
            run
        };
        pg(&["demo", "--second-factor", "sms"]).expect_ok();
        pg(&["audit", "checkpoint"]).expect_ok();
        pg(&["audit", "verify"])
            .expect_ok()
            .stdout_has("1 signed checkpoint match");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let done = sqlx::query(sqlx::AssertSqlSafe(tamper.to_owned()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(done.rows_affected() >= 1, "{name} changed nothing");
        pool.close().await;
        pg(&["audit", "verify"]).expect_code(1).stderr_has(expected);
        server.drop_database(&db).await;
    }
}

/// On PostgreSQL the append records the log's head apart from the events (`log_head`), so
/// events removed from the end after the last checkpoint are caught too; SQLite has no such
/// record and `verify` names the uncovered positions instead (above).
#[tokio::test]
async fn postgres_catches_a_tail_cut_after_the_last_checkpoint() {
    use sqlx::postgres::PgPoolOptions;
    let Some(server) = common::postgres::ScratchServer::connect().await else {
        return;
    };
    let db = format!("passage_audit_uncovered_{}", std::process::id());
    let url = server.fresh_database(&db).await;
    let dir = TestDir::new("audit-pg-uncovered");
    let p = Passage::new(&dir);
    let pg = |args: &[&str]| {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        let run = p.run(&all);
        run.no_panic();
        run
    };
    pg(&["demo", "--second-factor", "sms"]).expect_ok();
    pg(&["audit", "checkpoint"])
        .expect_ok()
        .stdout_has("checkpoint position=13 ");
    pg(&["journey", "start", "--email", "bob.smith@example.com"]).expect_ok();
    pg(&["audit", "verify"])
        .expect_ok()
        .stdout_has("note: events 14 to 17 come after the newest signed checkpoint");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let cut = sqlx::query("DELETE FROM events WHERE position > 15")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(cut.rows_affected(), 2);
    pool.close().await;
    pg(&["audit", "verify"]).expect_code(1).stderr_has(
        "the log's head record (log_head) says position 17, but the events end at position 15",
    );
    server.drop_database(&db).await;
}

/// `url` with its user replaced by `user` (no password: the test server trusts loopback).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

/// A compliance reviewer is given a role that may only read (SELECT): `audit verify`,
/// exports and every listing work with it, because reading commands open the store
/// read-only (no migration, no seeding, no definition saved, every transaction read-only),
/// while a command that writes is refused by the server with its own reason.
#[tokio::test]
async fn a_reviewer_with_select_only_verifies_exports_and_lists() {
    let Some(server) = common::postgres::ScratchServer::connect().await else {
        return;
    };
    let db = format!("passage_audit_reviewer_{}", std::process::id());
    let role = format!("passage_reviewer_{}", std::process::id());
    let url = server.fresh_database(&db).await;
    let dir = TestDir::new("audit-pg-reviewer");
    let p = Passage::new(&dir);
    let run_as = |url: &str, args: &[&str]| {
        let mut all = vec!["--database-url", url];
        all.extend_from_slice(args);
        let run = p.run(&all);
        run.no_panic();
        run
    };
    run_as(&url, &["demo", "--second-factor", "sms"]).expect_ok();
    run_as(&url, &["audit", "checkpoint"]).expect_ok();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    for sql in [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE {db} TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let reviewer = as_user(&url, &role);
    run_as(&reviewer, &["audit", "verify"])
        .expect_ok()
        .stdout_has("audit verify ok: 13 events");
    let out = dir.join("review.jsonl");
    run_as(
        &reviewer,
        &["audit", "export", "--out", out.to_str().unwrap()],
    )
    .expect_ok()
    .stdout_has("exported 13 events");
    let listed = run_as(&reviewer, &["journeys", "list"]);
    listed.expect_ok().stdout_has("completed");
    let id = listed.stdout.split_whitespace().next().unwrap().to_owned();
    run_as(&reviewer, &["journey", "show", &id])
        .expect_ok()
        .stdout_has("JourneyCompleted");
    run_as(&reviewer, &["funnel"]).expect_ok();
    run_as(&reviewer, &["operators", "list"]).expect_ok();
    let public_key = run_as(&reviewer, &["audit", "public-key"]);
    public_key.expect_ok();
    let public_key = public_key.stdout.trim().to_owned();
    // With the published key instead of the secret, from a place with no key file at all.
    let elsewhere = TestDir::new("audit-pg-reviewer-nosecret");
    let bare = Passage::new(&elsewhere);
    let verify_with = |key: &str| {
        let run = bare.run(&[
            "--database-url",
            reviewer.as_str(),
            "audit",
            "verify",
            "--public-key",
            key,
        ]);
        run.no_panic();
        run
    };
    verify_with(&public_key)
        .expect_ok()
        .stdout_has("audit verify ok: 13 events")
        .stdout_has("1 signed checkpoint match");
    // Another deployment's key (a valid key, not the one that signed).
    let other = bare
        .clone()
        .with_env(
            "PASSAGE_SECRET",
            "another deployment's secret, 32 chars or more",
        )
        .run(&["--database-url", reviewer.as_str(), "audit", "public-key"]);
    other.expect_ok();
    let other = other.stdout.lines().next().unwrap().trim().to_owned();
    assert_ne!(other, public_key);
    verify_with(&other)
        .expect_code(1)
        .stderr_has("is not signed by this deployment's audit key")
        .stderr_has("--public-key gives");
    verify_with("not-hex")
        .expect_code(2)
        .stderr_has("--public-key:");
    assert!(
        elsewhere.entries().is_empty(),
        "verifying with a public key created files: {:?}",
        elsewhere.entries()
    );
    // Writing is the server's to refuse: said plainly, nothing half-done.
    run_as(
        &reviewer,
        &["journey", "start", "--email", "bob.smith@example.com"],
    )
    .expect_code(1)
    .stderr_has("permission denied");
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events_before, events_after);
    pool.close().await;
    server.drop_database(&db).await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&server.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}
