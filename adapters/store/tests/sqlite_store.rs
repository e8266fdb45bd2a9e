//! SQLite-specific behaviour beyond the contract: group commit, durability across reopen and
//! process kill, migrations, several handles on one file, lock contention, corrupt rows and
//! the account directory.

mod common;

use common::{T0, TempDb, new_stream, request};
use passage_core::chain::Verifier;
use passage_core::ports::{
    Account, AccountDirectory, AppendResult, EventStore, NewEffect, StoreError, StoredEvent,
};
use passage_store::{Error, Options, Seeded, SqliteStore};
use sqlx::Connection;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use uuid::Uuid;

async fn all_events(store: &SqliteStore) -> Vec<StoredEvent> {
    store.read_all(0, usize::MAX).await.expect("read_all")
}

/// Positions 1..=n, the chain verifies; returns n.
fn assert_log_sound(events: &[StoredEvent]) -> u64 {
    let mut verifier = Verifier::new();
    for e in events {
        if let Err(bad) = verifier.check(e) {
            panic!("chain broken at {}: {}", bad.position, bad.fault);
        }
    }
    verifier.checked()
}

/// Appends a command of `events` events to each of `n` new streams, all at once; every
/// append must commit.
async fn concurrent_appends(store: &SqliteStore, n: usize, events: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let store = store.clone();
        tasks.spawn(async move { store.append(request(new_stream(), 0, events)).await });
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined.expect("append task panicked");
        assert!(
            matches!(result, Ok(AppendResult::Committed { .. })),
            "append failed: {result:?}"
        );
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_puts_concurrent_appends_in_few_transactions() {
    const N: usize = 200;
    let grouped_db = TempDb::new();
    let grouped = grouped_db.open().await;
    let grouped_time = concurrent_appends(&grouped, N, 1).await;
    let g = grouped.stats();

    let single_db = TempDb::new();
    let single = single_db
        .open_with(Options {
            group_commit: false,
            ..Options::default()
        })
        .await;
    let single_time = concurrent_appends(&single, N, 1).await;
    let s = single.stats();

    println!(
        "{N} concurrent appends: grouped = {} transactions (largest batch {}) in {grouped_time:?}; \
         ungrouped = {} transactions (largest batch {}) in {single_time:?}",
        g.transactions, g.largest_batch, s.transactions, s.largest_batch
    );
    assert_eq!(g.requests, N as u64);
    assert!(
        g.transactions <= (N / 4) as u64,
        "grouping should need far fewer than {N} transactions, took {}",
        g.transactions
    );
    assert!(g.largest_batch > 1);
    assert_eq!(
        s.transactions, N as u64,
        "grouping off: one transaction per append"
    );
    assert_eq!(s.largest_batch, 1);

    for store in [&grouped, &single] {
        assert_eq!(assert_log_sound(&all_events(store).await), N as u64);
    }
    grouped.close().await;
    single.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_reopen_and_the_chain_continues() {
    let db = TempDb::new();
    let stream = new_stream();
    {
        let store = db.open().await;
        store.append(request(stream, 0, 3)).await.expect("append");
        store.close().await;
    }
    let store = db.open().await;
    assert_eq!(store.read_stream(stream).await.expect("read").len(), 3);
    let r = store
        .append(request(stream, 3, 2))
        .await
        .expect("append after reopen");
    assert_eq!(
        r,
        AppendResult::Committed {
            first_position: Some(4),
            stream_version: 5
        }
    );
    assert_eq!(assert_log_sound(&all_events(&store).await), 5);
    store.close().await;
}

const KILL_CHILD_ENV: &str = "PASSAGE_STORE_KILL_CHILD_DB";

/// A child process appends as fast as it can and prints each committed position; the
/// parent kills it (SIGKILL, no shutdown code runs) mid-stream. Every position the child
/// reported must be in the file afterwards, and the log must be gap-free with an intact
/// chain: an append is either wholly there or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_appends_survive_a_killed_process() {
    if let Ok(path) = std::env::var(KILL_CHILD_ENV) {
        // Child: never returns; the parent kills it.
        let store = SqliteStore::open(std::path::Path::new(&path))
            .await
            .expect("child open");
        // Should the parent die without killing us, stop on our own.
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            std::process::exit(3);
        });
        let mut tasks = JoinSet::new();
        for _ in 0..4 {
            let store = store.clone();
            tasks.spawn(async move {
                loop {
                    match store.append(request(new_stream(), 0, 2)).await {
                        Ok(AppendResult::Committed {
                            first_position: Some(p),
                            ..
                        }) => println!("committed {}", p + 1),
                        other => panic!("child append: {other:?}"),
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        return;
    }

    let db = TempDb::new();
    db.open().await.close().await; // create and migrate first
    /// Kills the child if an assertion fails before the test does.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "committed_appends_survive_a_killed_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, &db.path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("child stdout");
    let mut reported = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        if let Some(p) = line.strip_prefix("committed ") {
            reported.push(p.parse::<u64>().expect("position"));
            if reported.len() == 300 {
                child.0.kill().expect("kill child");
                break;
            }
        }
    }
    child.0.wait().expect("reap child");
    assert_eq!(
        reported.len(),
        300,
        "the child stopped before reporting 300 appends"
    );

    let store = db.open().await;
    let events = all_events(&store).await;
    let n = assert_log_sound(&events);
    let highest = reported.iter().copied().max().unwrap_or(0);
    assert!(
        n >= highest,
        "the child reported position {highest} committed, the file has {n} events"
    );
    assert_eq!(
        n % 2,
        0,
        "every append wrote 2 events: a half-written append survived"
    );
    println!(
        "killed child: {} appends reported, {n} events in the file",
        reported.len()
    );
    store.close().await;
}

/// `log_head` follows every append (as on PostgreSQL), and a store from before it gets its
/// head from its last event when migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_head_follows_the_appends_and_is_backfilled() {
    let db = TempDb::new();
    let stream = new_stream();
    let store = db.open().await;
    assert_eq!(
        store.recorded_head().await.expect("recorded head"),
        (0, [0u8; 32]),
        "an empty log"
    );
    for round in 0..3u64 {
        store
            .append(request(stream, round * 2, 2))
            .await
            .expect("append");
        let head = store.head().await.expect("head").expect("a head");
        assert_eq!(store.recorded_head().await.expect("recorded head"), head);
    }
    let head = store.head().await.expect("head").expect("a head");
    assert_eq!(head.0, 6);
    store.close().await;
    // As if made by a build before migration 0014.
    let mut raw = db.raw().await;
    for sql in [
        "DROP TABLE log_head",
        "DELETE FROM schema_migrations WHERE version = 14",
    ] {
        sqlx::query(sql).execute(&mut raw).await.expect(sql);
    }
    raw.close().await.expect("close");
    let store = db.open().await;
    assert_eq!(store.recorded_head().await.expect("recorded head"), head);
    store.close().await;

    // Events cut from the end: the next append continues from the head record, so the
    // gap stays for `audit verify` to name instead of being papered over by new events.
    let mut raw = db.raw().await;
    sqlx::query("DELETE FROM events WHERE position > 4")
        .execute(&mut raw)
        .await
        .expect("cut the tail");
    raw.close().await.expect("close");
    let store = db.open().await;
    let other = new_stream();
    store.append(request(other, 0, 1)).await.expect("append");
    let events = all_events(&store).await;
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 7], "the gap 5..=6 is kept");
    assert_eq!(events[4].prev_hash, head.1, "chained to the recorded head");
    store.close().await;

    // A missing head record is corruption, refused as on PostgreSQL.
    let mut raw = db.raw().await;
    sqlx::query("DELETE FROM log_head")
        .execute(&mut raw)
        .await
        .expect("drop the head row");
    raw.close().await.expect("close");
    let store = db.open().await;
    let refused = store.append(request(other, 1, 1)).await.unwrap_err();
    assert!(refused.to_string().contains("log_head"), "{refused}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_and_refuse_edited_or_newer_schemas() {
    let db = TempDb::new();
    let stream = new_stream();
    for round in 0..3u64 {
        let store = db.open().await;
        store
            .append(request(stream, round, 1))
            .await
            .expect("append");
        store.close().await;
    }
    let mut raw = db.raw().await;
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY 1")
        .fetch_all(&mut raw)
        .await
        .expect("read schema_migrations");
    assert_eq!(
        versions,
        (1..=14).collect::<Vec<i64>>(),
        "each migration recorded once"
    );
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .expect("journal_mode");
    assert_eq!(journal, "wal");

    sqlx::query("UPDATE schema_migrations SET checksum = x'00' WHERE version = 2")
        .execute(&mut raw)
        .await
        .expect("tamper checksum");
    match SqliteStore::open(&db.path).await {
        Err(Error::MigrationChanged { version: 2, .. }) => {}
        other => panic!("an edited migration must be refused, got {other:?}"),
    }

    sqlx::query("INSERT INTO schema_migrations VALUES (99, 'future', x'00', 0)")
        .execute(&mut raw)
        .await
        .expect("insert future migration");
    match SqliteStore::open(&db.path).await {
        Err(Error::SchemaTooNew { found: 99, .. }) => {}
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
    raw.close().await.expect("close raw");
}

/// Two handles with their own pools on one file behave like two processes to SQLite:
/// `BEGIN IMMEDIATE` serializes their writers and neither sees a busy error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_append_concurrently() {
    let db = TempDb::new();
    let (a, b) = (db.open().await, db.open().await);
    let shared = new_stream();
    let mut tasks = JoinSet::new();
    for store in [a.clone(), b.clone()] {
        for _ in 0..100 {
            let store = store.clone();
            tasks.spawn(async move { store.append(request(new_stream(), 0, 1)).await });
        }
        // Both handles also fight over one stream.
        for _ in 0..5 {
            let store = store.clone();
            tasks.spawn(async move {
                loop {
                    let v = store.read_stream(shared).await?.len() as u64;
                    match store.append(request(shared, v, 1)).await {
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        other => return other,
                    }
                }
            });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined.expect("task panicked");
        assert!(
            matches!(result, Ok(AppendResult::Committed { .. })),
            "append failed: {result:?}"
        );
    }
    let events = all_events(&a).await;
    assert_eq!(assert_log_sound(&events), 210, "no event lost");
    assert_eq!(a.read_stream(shared).await.expect("read").len(), 10);
    println!("store a: {:?}\nstore b: {:?}", a.stats(), b.stats());
    a.close().await;
    b.close().await;
}

/// Another connection holds the write lock for a while.
async fn hold_write_lock(db: &TempDb, hold: Duration) -> tokio::task::JoinHandle<()> {
    let mut raw = db.raw().await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut raw)
        .await
        .expect("take lock");
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::query("COMMIT")
            .execute(&mut raw)
            .await
            .expect("release lock");
        raw.close().await.expect("close");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lock_contention_is_retried_inside_the_writer() {
    let db = TempDb::new();
    let store = db
        .open_with(Options {
            busy_timeout: Duration::from_millis(50),
            busy_retries: 5,
            ..Options::default()
        })
        .await;
    let holder = hold_write_lock(&db, Duration::from_millis(300)).await;
    let result = store.append(request(new_stream(), 0, 1)).await;
    assert!(
        matches!(result, Ok(AppendResult::Committed { .. })),
        "a 300 ms lock must be waited out, got {result:?}"
    );
    assert!(
        store.stats().busy_retries > 0,
        "the writer should have retried"
    );
    holder.await.expect("holder");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_too_long_is_reported_as_unavailable() {
    let db = TempDb::new();
    let store = db
        .open_with(Options {
            busy_timeout: Duration::from_millis(50),
            busy_retries: 1,
            ..Options::default()
        })
        .await;
    let holder = hold_write_lock(&db, Duration::from_secs(2)).await;
    match store.append(request(new_stream(), 0, 1)).await {
        Err(StoreError::Unavailable(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("busy"), "the message should say busy: {msg}");
        }
        other => panic!("expected Unavailable(busy), got {other:?}"),
    }
    // Other writes report it the same way.
    match store.claim_effects(T0, Duration::from_secs(1), 10).await {
        Err(StoreError::Unavailable(e)) => assert!(e.to_string().contains("busy")),
        other => panic!("expected Unavailable(busy) from claim_effects, got {other:?}"),
    }
    holder.await.expect("holder");
    // And once the lock is gone, all is well.
    assert!(store.append(request(new_stream(), 0, 1)).await.is_ok());
    store.close().await;
}

/// One request that breaks a constraint fails alone; the others queued with it commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_does_not_fail_its_batch() {
    let db = TempDb::new();
    let store = db.open().await;
    let taken = Uuid::new_v4();
    let effect = |effect_id| NewEffect {
        effect_id,
        kind: "send_email".into(),
        payload: "{}".into(),
        available_at: T0,
    };
    let mut first = request(new_stream(), 0, 1);
    first.effects.push(effect(taken));
    store.append(first).await.expect("first");

    // Another connection holds the write lock while everything queues, so the poison is
    // batched with others: its outbox insert fails after the batch's events were written
    // in the same query, and the batch must roll back and be split.
    let holder = hold_write_lock(&db, Duration::from_secs(1)).await;
    let before = store.stats();
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        let mut req = request(new_stream(), 0, 1);
        req.effects
            .push(effect(if i == 25 { taken } else { Uuid::new_v4() }));
        tasks.spawn(async move { (i, store.append(req).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("task panicked");
        if i == 25 {
            assert!(
                matches!(result, Err(StoreError::Rejected(_))),
                "the poison request must be rejected: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Ok(AppendResult::Committed { .. })),
                "request {i} must commit despite the poison: {result:?}"
            );
        }
    }
    holder.await.expect("holder");
    assert_eq!(assert_log_sound(&all_events(&store).await), 50);
    let after = store.stats();
    println!("{after:?}");
    assert!(
        after.split_batches > before.split_batches,
        "the poison should have failed a batch of several requests: {after:?}"
    );
    assert!(
        after.busy > before.busy,
        "committed batches count busy time"
    );
    store.close().await;
}

/// A batch with more events than one statement can bind (SQLite's limit on values per
/// statement) writes them with several `INSERT`s in the batch's one query, each bound at
/// its own offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_one_statement_per_table_commits_whole() {
    let db = TempDb::new();
    let store = db.open().await;
    // Held long enough for all 1 000 to queue even on a loaded machine. The writer's first
    // batch takes whatever had queued when it woke (at most `max_batch`, 512) and waits for
    // the lock; the next takes at least 488 of the rest.
    let holder = hold_write_lock(&db, Duration::from_secs(1)).await;
    concurrent_appends(&store, 1_000, 6).await;
    holder.await.expect("holder");
    let stats = store.stats();
    // 11 values per event row, at most 30 000 values per statement: 2 727 events.
    assert!(
        stats.largest_batch * 6 > 30_000 / 11,
        "no batch needed two events statements: {stats:?}"
    );
    let events = all_events(&store).await;
    assert_eq!(assert_log_sound(&events), 6_000);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_refuses_appends() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .append(request(new_stream(), 0, 1))
        .await
        .expect("append while open");
    store.close().await;
    let refused = store.append(request(new_stream(), 0, 1)).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "an append after close must be refused: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_reported_not_panicked_on() {
    let db = TempDb::new();
    let store = db.open().await;
    let stream = new_stream();
    store.append(request(stream, 0, 2)).await.expect("append");
    let mut raw = db.raw().await;

    sqlx::query("UPDATE events SET command_id = 'not-a-uuid' WHERE position = 2")
        .execute(&mut raw)
        .await
        .expect("damage");
    match store.read_all(0, 10).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("events.command_id"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    sqlx::query("UPDATE journeys SET journey_id = 'zz'")
        .execute(&mut raw)
        .await
        .expect("damage");
    assert!(matches!(
        store.list_journeys(Default::default()).await,
        Err(StoreError::Corrupt(_))
    ));
    // A damaged head of the chain stops appends instead of extending a broken chain.
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut raw)
        .await
        .expect("pragma");
    sqlx::query("UPDATE events SET hash = x'0102' WHERE position = 2")
        .execute(&mut raw)
        .await
        .expect("damage");
    assert!(matches!(
        store.append(request(new_stream(), 0, 1)).await,
        Err(StoreError::Corrupt(_))
    ));
    raw.close().await.expect("close raw");
    store.close().await;
}

fn account(id: &str, email: &str) -> Account {
    Account {
        account_id: id.into(),
        email: email.into(),
        display_name: "Ada Lovelace".into(),
        phone: Some("+15550100".into()),
        enabled: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_seeds_finds_and_changes_passwords() {
    let db = TempDb::new();
    let store = db.open().await;
    let ada = account("u-1", "  Ada@Example.COM ");
    assert_eq!(
        store
            .upsert_account(&ada, "$argon2id$v=19$first")
            .await
            .expect("seed"),
        Seeded::Inserted
    );
    let found = store
        .find_by_email("ada@example.com")
        .await
        .expect("find")
        .expect("found by normalized email");
    assert_eq!(found.email, "ada@example.com");
    assert_eq!(found.phone.as_deref(), Some("+15550100"));
    assert_eq!(store.get("u-1").await.expect("get"), Some(found));
    assert_eq!(store.get("u-2").await.expect("get"), None);

    store
        .set_password_hash("u-1", "$argon2id$v=19$reset", T0)
        .await
        .expect("set password");
    // Re-seeding refreshes the profile but keeps the password the person chose.
    let renamed = Account {
        display_name: "Ada King".into(),
        enabled: false,
        ..ada.clone()
    };
    assert_eq!(
        store
            .upsert_account(&renamed, "$argon2id$v=19$first")
            .await
            .expect("reseed"),
        Seeded::Updated
    );
    assert_eq!(
        store.password_hash("u-1").await.expect("hash").as_deref(),
        Some("$argon2id$v=19$reset")
    );
    let now = store.get("u-1").await.expect("get").expect("exists");
    assert_eq!(
        (now.display_name.as_str(), now.enabled),
        ("Ada King", false)
    );
    assert!(
        !store
            .insert_account_if_missing(&ada, "$argon2id$v=19$other")
            .await
            .expect("insert if missing")
    );
    assert_eq!(
        store
            .get("u-1")
            .await
            .expect("get")
            .expect("exists")
            .display_name,
        "Ada King",
        "insert_account_if_missing leaves an existing account alone"
    );

    assert!(matches!(
        store
            .upsert_account(&account("u-2", "ADA@example.com"), "x")
            .await,
        Err(Error::EmailTaken)
    ));
    assert!(matches!(
        store
            .upsert_account(&account("u-3", "not an email"), "x")
            .await,
        Err(Error::InvalidEmail(_))
    ));
    assert!(
        store.set_password_hash("u-404", "x", T0).await.is_err(),
        "changing an unknown account's password must fail, not silently do nothing"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_sessions_and_password_order() {
    let db = TempDb::new();
    let store = db.open().await;
    store
        .upsert_account(&account("u-9", "grace@example.com"), "$argon2id$first")
        .await
        .expect("seed");
    store
        .upsert_account(&account("u-10", "hopper@example.com"), "$argon2id$first")
        .await
        .expect("seed");
    passage_store::contract::directory_get_many(store.clone(), &["u-9", "u-10"]).await;
    passage_store::contract::directory_sessions(store.clone(), "u-9").await;
    store.close().await;
}

/// A completed reset's session commits with its events or not at all, on both writer
/// settings (`contract::completing_appends_store_their_sessions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_appends_store_their_sessions() {
    for group_commit in [true, false] {
        let db = TempDb::new();
        let store = db
            .open_with(Options {
                group_commit,
                ..Options::default()
            })
            .await;
        // One writer either way: directory writes queue behind the appends.
        passage_store::contract::completing_appends_store_their_sessions(store.clone(), true).await;
        store.close().await;
    }
}

/// The store is a cheap handle: dropping every clone stops the writer without hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_one_writer() {
    let db = TempDb::new();
    let store = db.open().await;
    let clones: Vec<_> = (0..10).map(|_| store.clone()).collect();
    let stream = new_stream();
    let results = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for (i, c) in clones.into_iter().enumerate() {
        let results = Arc::clone(&results);
        tasks.spawn(async move {
            let r = c.append(request(stream, 0, 1)).await;
            results.lock().await.push((i, r.is_ok()));
        });
    }
    while tasks.join_next().await.is_some() {}
    let wins = results.lock().await.iter().filter(|(_, ok)| *ok).count();
    assert_eq!(wins, 1, "ten clones racing for version 1: one wins");
    store.close().await;
}

/// `wait_for_work` on SQLite: this handle's appends of effects or timers wake it at once;
/// another handle (another process, to SQLite) cannot signal it, so its work is found when
/// the timeout ends the wait: the polling fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_wakes_on_own_appends_and_times_out_for_others() {
    let db = TempDb::new();
    let (store, other) = (db.open().await, db.open().await);
    let with_effect = || {
        let mut req = request(new_stream(), 0, 1);
        req.effects.push(NewEffect {
            effect_id: Uuid::new_v4(),
            kind: "send_email".into(),
            payload: "{}".into(),
            available_at: T0,
        });
        req
    };

    // Own append: woken well within 500 ms although the timeout is 30 s.
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_work(Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "nothing appended yet");
    let appended = Instant::now();
    store.append(with_effect()).await.expect("append");
    tokio::time::timeout(Duration::from_millis(500), waiter)
        .await
        .expect("woken within 500 ms by this handle's append")
        .expect("waiter");
    println!("own append woke the waiter after {:?}", appended.elapsed());
    // Consume the permit the signal leaves for a busy waiter.
    store.wait_for_work(Duration::from_millis(10)).await;

    // Another handle's append: no signal crosses handles; the timeout ends the wait.
    let started = Instant::now();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_work(Duration::from_millis(400)).await })
    };
    other.append(with_effect()).await.expect("append");
    waiter.await.expect("waiter");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "another handle's append is found by the polling fallback: waited {waited:?}"
    );
    store.close().await;
    other.close().await;
}

/// Writes other than appends (sessions here; effect and timer completions, password changes
/// the same way) go through the writer and share the appends' transactions: a burst of
/// both takes far fewer transactions than writes. A write that fails (a session hash used
/// twice) fails alone: the appends and sessions batched with it are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_writes_share_the_appends_transactions_and_fail_alone() {
    use passage_core::ports::Session;
    let db = TempDb::new();
    let store = db.open().await;
    store
        .upsert_account(&account("u-1", "ada@example.com"), "$argon2id$first")
        .await
        .expect("seed");
    let session = |hash: String| Session {
        session_hash: hash,
        account_id: "u-1".into(),
        journey_id: None,
        kind: "sign-in".into(),
        amr: "pwd".into(),
        created_at: T0,
        expires_at: passage_core::time::Timestamp(T0.0 + 60_000),
        revoked_at: None,
        password_fp: Some("9f86d081884c7d65".into()),
    };
    store
        .create_session(&session("taken".into()))
        .await
        .expect("first session");
    let before = store.stats();

    // Grouping: N appends and N sessions, all queued at once.
    const N: usize = 100;
    let mut tasks = JoinSet::new();
    for i in 0..N {
        let appender = store.clone();
        tasks.spawn(async move {
            let appended = appender.append(request(new_stream(), 0, 1)).await;
            assert!(
                matches!(appended, Ok(AppendResult::Committed { .. })),
                "append {i}: {appended:?}"
            );
        });
        let writer = store.clone();
        let s = session(format!("s-{i}"));
        tasks.spawn(async move {
            writer.create_session(&s).await.expect("session");
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task panicked");
    }
    let after = store.stats();
    let (transactions, writes) = (
        after.transactions - before.transactions,
        after.writes - before.writes,
    );
    println!("{N} appends and {N} sessions in {transactions} transactions");
    assert_eq!(after.requests - before.requests, N as u64);
    assert_eq!(writes, N as u64, "every session went through the writer");
    assert!(
        transactions <= (N / 2) as u64,
        "{N} appends and {N} sessions took {transactions} transactions"
    );

    // Isolation: one session hash used twice among fifty, with appends around them.
    let mut tasks = JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            let hash = if i == 25 {
                "taken".to_owned()
            } else {
                format!("t-{i}")
            };
            let appended = store.append(request(new_stream(), 0, 1)).await;
            let created = store.create_session(&session(hash)).await;
            (i, appended, created)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, appended, created) = joined.expect("task panicked");
        assert!(
            matches!(appended, Ok(AppendResult::Committed { .. })),
            "append {i}: {appended:?}"
        );
        assert_eq!(created.is_err(), i == 25, "session {i}: {created:?}");
    }
    for hash in (0..N)
        .map(|i| format!("s-{i}"))
        .chain((0..50).filter(|i| *i != 25).map(|i| format!("t-{i}")))
    {
        let found = store.find_session(&hash).await.expect("read session");
        assert!(found.is_some(), "session {hash} was committed");
    }
    assert_eq!(assert_log_sound(&all_events(&store).await), N as u64 + 50);
    store.close().await;
}

/// Completions queued with the appends are written in one fenced statement per batch
/// (`complete_effects` in the writer) without changing what each caller hears
/// (`contract::concurrent_completions`). Repeats of an effect id run alone, so not every
/// completion is grouped, but most are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_outbox_completions_share_statements_and_keep_the_fence() {
    let db = TempDb::new();
    let store = db.open().await;
    let before = store.stats();
    let attempts = passage_store::contract::concurrent_completions(store.clone(), 300).await;
    let after = store.stats();
    let grouped = after.completions - before.completions;
    let statements = after.completion_statements - before.completion_statements;
    println!("{attempts} completions, {grouped} of them in {statements} grouped statements");
    assert!(
        grouped >= attempts as u64 / 2,
        "most completions should be grouped: {grouped} of {attempts}"
    );
    assert!(
        statements < grouped / 4,
        "grouped completions should share statements: {grouped} in {statements}"
    );
    store.close().await;
}

/// Claims queue in the writer with the appends (`Statement::claim`): four claimers racing
/// 40 concurrent appends of 5 effects each get every effect exactly once, and the claims
/// share the appends' transactions instead of taking the write lock on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_share_the_writers_transactions_and_never_overlap() {
    let db = TempDb::new();
    let store = db.open().await;
    let before = store.stats();
    let mut appends = JoinSet::new();
    for _ in 0..40 {
        let store = store.clone();
        appends.spawn(async move {
            let mut req = request(new_stream(), 0, 1);
            for _ in 0..5 {
                req.effects.push(NewEffect {
                    effect_id: Uuid::new_v4(),
                    kind: "send_email".into(),
                    payload: "{}".into(),
                    available_at: T0,
                });
            }
            assert!(matches!(
                store.append(req).await,
                Ok(AppendResult::Committed { .. })
            ));
        });
    }
    let mut claimers = JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        claimers.spawn(async move {
            let mut mine = Vec::new();
            let mut idle = 0;
            // Until the appends are surely done and nothing is left to claim.
            while idle < 20 {
                let batch = store
                    .claim_effects(T0, Duration::from_secs(60), 16)
                    .await
                    .expect("claim");
                idle = if batch.is_empty() { idle + 1 } else { 0 };
                mine.extend(batch.into_iter().map(|e| e.effect_id));
                tokio::task::yield_now().await;
            }
            mine
        });
    }
    while let Some(j) = appends.join_next().await {
        j.expect("append task");
    }
    let mut claimed = Vec::new();
    while let Some(j) = claimers.join_next().await {
        claimed.extend(j.expect("claimer"));
    }
    let unique: std::collections::HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 200, "every effect claimed, none twice");
    assert_eq!(unique.len(), 200);
    let after = store.stats();
    let transactions = after.transactions - before.transactions;
    let writes = after.writes - before.writes;
    println!("40 appends and {writes} claims in {transactions} transactions");
    assert!(
        transactions < 40 + writes,
        "claims and appends should share transactions: {transactions} for {} requests",
        40 + writes
    );
    store.close().await;
}
