//! PostgreSQL-specific behaviour beyond the contract: global order under many concurrent
//! writers with a reader following the log (the sequence-gap problem), several handles
//! ("nodes") on one schema racing for one journey, lease takeover and SKIP LOCKED claims,
//! group commit, LISTEN/NOTIFY wake-ups across handles, concurrent migrations, the
//! directory, `AnyStore`, and error mapping. See `pg/mod.rs` for where the server is.

mod common;
mod pg;

use common::{T0, new_stream, request};
use passage_core::chain::Verifier;
use passage_core::ports::{
    Account, AccountDirectory, AppendRequest, AppendResult, EventStore, JourneyId, NewEffect,
    OutboxEntry, StoreError, StoredEvent,
};
use passage_core::time::Timestamp;
use passage_store::{AnyStore, Error, PgOptions, PgStore, Seeded};
use sqlx::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use uuid::Uuid;

fn assert_chain(events: &[StoredEvent]) -> u64 {
    let mut verifier = Verifier::new();
    for e in events {
        if let Err(bad) = verifier.check(e) {
            panic!("chain broken at {}: {}", bad.position, bad.fault);
        }
    }
    verifier.checked()
}

async fn whole_log<S: EventStore>(store: &S) -> Vec<StoredEvent> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.position);
        let page = store.read_all(after, 1000).await.expect("read_all");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

fn with_effect(mut req: AppendRequest, available_at: Timestamp) -> AppendRequest {
    req.effects.push(NewEffect {
        effect_id: Uuid::new_v4(),
        kind: "send_email".into(),
        payload: "{}".into(),
        available_at,
    });
    req
}

/// A small deterministic generator, so the test needs no `rand`.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// The sequence-gap problem: with positions from a sequence, a transaction can take
/// position n, commit after n+1, and a reader that already moved past n+1 never sees n.
///
/// 16 writer handles (separate pools and writer tasks, like 16 nodes), 3 tasks each,
/// append for a few seconds to private and shared journeys, with appends of 1 to 25 events
/// so commits take unequal time. A reader on its own handle follows with `read_all(last)`
/// as fast as it can and checks every page continues exactly at last + 1. At the end, what
/// it saw must be the final log, event for event, and the chain must verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_reader_never_skips_a_late_commit() {
    const WRITERS: usize = 16;
    const TASKS_PER_WRITER: usize = 3;
    const SHARED_STREAMS: usize = 4;
    const RUN_FOR: Duration = Duration::from_secs(4);

    pg::with_store(PgOptions::default(), |main, url, schema| async move {
        let mut writers = Vec::new();
        for _ in 0..WRITERS {
            writers.push(
                pg::connect(
                    &url,
                    PgOptions {
                        max_connections: 2,
                        ..pg::options(&schema)
                    },
                )
                .await,
            );
        }
        let shared: Arc<Vec<JourneyId>> =
            Arc::new((0..SHARED_STREAMS).map(|_| new_stream()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        // Set only after every writer task has returned: nothing can commit after it.
        let finished = Arc::new(AtomicBool::new(false));
        let conflicts = Arc::new(AtomicU64::new(0));

        // The reader: follows the log until told to stop and it has caught up.
        let reader = {
            let store = pg::connect(&url, pg::options(&schema)).await;
            let finished = Arc::clone(&finished);
            tokio::spawn(async move {
                let mut seen: Vec<StoredEvent> = Vec::new();
                let mut polls = 0u64;
                loop {
                    // Read before the page: if the writers had finished by then, an empty
                    // page means the reader has everything.
                    let done = finished.load(Ordering::SeqCst);
                    let last = seen.last().map_or(0, |e| e.position);
                    let page = store.read_all(last, 500).await.expect("reader read_all");
                    polls += 1;
                    for (i, e) in page.iter().enumerate() {
                        assert_eq!(
                            e.position,
                            last + 1 + i as u64,
                            "the reader skipped from {} to {}: an earlier position \
                             became visible after a later one",
                            last + i as u64,
                            e.position
                        );
                    }
                    let caught_up = page.is_empty();
                    seen.extend(page);
                    if done && caught_up {
                        break;
                    }
                    if caught_up {
                        tokio::task::yield_now().await;
                    }
                }
                store.close().await;
                (seen, polls)
            })
        };

        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (w, writer) in writers.iter().enumerate() {
            for t in 0..TASKS_PER_WRITER {
                let store = writer.clone();
                let shared = Arc::clone(&shared);
                let stop = Arc::clone(&stop);
                let conflicts = Arc::clone(&conflicts);
                tasks.spawn(async move {
                    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((w * 31 + t) as u64 + 1));
                    let own = new_stream();
                    let mut own_version = 0u64;
                    let mut appends = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let events = if rng.next(8) == 0 {
                            10 + rng.next(16) as usize
                        } else {
                            1 + rng.next(3) as usize
                        };
                        if rng.next(4) == 0 {
                            // A shared journey: read its version, retry on conflict.
                            let stream = shared[rng.next(SHARED_STREAMS as u64) as usize];
                            loop {
                                let v = store
                                    .read_stream(stream)
                                    .await
                                    .expect("read_stream")
                                    .last()
                                    .map_or(0, |e| e.stream_version);
                                match store.append(request(stream, v, events)).await {
                                    Ok(AppendResult::Committed { .. }) => break,
                                    Err(StoreError::Conflict { .. }) => {
                                        conflicts.fetch_add(1, Ordering::Relaxed);
                                    }
                                    other => panic!("shared append: {other:?}"),
                                }
                            }
                        } else {
                            match store.append(request(own, own_version, events)).await {
                                Ok(AppendResult::Committed { stream_version, .. }) => {
                                    own_version = stream_version;
                                }
                                other => panic!("own append: {other:?}"),
                            }
                        }
                        appends += 1;
                    }
                    appends
                });
            }
        }
        tokio::time::sleep(RUN_FOR).await;
        stop.store(true, Ordering::SeqCst);
        let mut appends = 0;
        while let Some(joined) = tasks.join_next().await {
            appends += joined.expect("writer task panicked");
        }
        let elapsed = started.elapsed();
        finished.store(true, Ordering::SeqCst);
        let (seen, polls) = reader.await.expect("reader panicked");

        let log = whole_log(&main).await;
        let n = assert_chain(&log);
        assert_eq!(
            seen.len(),
            log.len(),
            "the reader saw {} events, the log has {}",
            seen.len(),
            log.len()
        );
        assert!(
            seen == log,
            "the reader's sequence differs from the final log"
        );
        let mut by_stream: HashMap<JourneyId, Vec<u64>> = HashMap::new();
        for e in &log {
            by_stream
                .entry(e.stream)
                .or_default()
                .push(e.stream_version);
        }
        for (stream, versions) in &by_stream {
            assert_eq!(
                versions,
                &(1..=versions.len() as u64).collect::<Vec<_>>(),
                "stream {stream}: versions must be 1..=k in position order"
            );
        }
        let (mut transactions, mut requests, mut largest) = (0, 0, 0);
        for w in &writers {
            let s = w.stats();
            transactions += s.transactions;
            requests += s.requests;
            largest = largest.max(s.largest_batch);
        }
        println!(
            "gap test: {WRITERS} writer handles x {TASKS_PER_WRITER} tasks for {elapsed:?}: \
             {appends} appends, {n} events ({:.0} events/s), {} conflicts retried; \
             {requests} requests in {transactions} transactions (largest batch {largest}); \
             reader polled {polls} times and saw all {} events in order",
            n as f64 / elapsed.as_secs_f64(),
            conflicts.load(Ordering::Relaxed),
            seen.len()
        );
        assert!(n > 0 && appends > 0, "the writers appended nothing");
        for w in writers {
            w.close().await;
        }
    })
    .await;
}

/// Two nodes append to one journey: optimistic concurrency lets exactly one of two racing
/// appends at the same version win, and under sustained contention (with re-reads and
/// retries) no version is written twice and no command lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_appending_to_one_journey_resolve_by_version() {
    pg::with_store(PgOptions::default(), |a, url, schema| async move {
        let b = pg::connect(&url, pg::options(&schema)).await;
        let stream = new_stream();

        // Head-to-head rounds at the same expected version (round n starts at version n).
        for version in 0..30u64 {
            let round = version;
            let (ra, rb) = tokio::join!(
                a.append(request(stream, version, 1)),
                b.append(request(stream, version, 1))
            );
            let wins = [&ra, &rb]
                .iter()
                .filter(|r| matches!(r, Ok(AppendResult::Committed { .. })))
                .count();
            let losses = [&ra, &rb]
                .iter()
                .filter(|r| {
                    matches!(r, Err(StoreError::Conflict { expected, actual, .. })
                        if *expected == version && *actual == version + 1)
                })
                .count();
            assert_eq!(
                (wins, losses),
                (1, 1),
                "round {round}: exactly one of two racing appends wins: {ra:?} / {rb:?}"
            );
        }

        // Sustained contention: 2 nodes x 4 tasks x 10 appends, each re-reading and retrying.
        let mut tasks = JoinSet::new();
        for node in [a.clone(), b.clone()] {
            for _ in 0..4 {
                let store = node.clone();
                tasks.spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..10 {
                        loop {
                            let v = store
                                .read_stream(stream)
                                .await
                                .expect("read")
                                .last()
                                .map_or(0, |e| e.stream_version);
                            let req = request(stream, v, 1);
                            let id = req.command_id;
                            match store.append(req).await {
                                Ok(AppendResult::Committed { .. }) => {
                                    ids.push(id);
                                    break;
                                }
                                Err(StoreError::Conflict { .. }) => {}
                                other => panic!("append: {other:?}"),
                            }
                        }
                    }
                    ids
                });
            }
        }
        let mut committed = HashSet::new();
        while let Some(joined) = tasks.join_next().await {
            committed.extend(joined.expect("task panicked"));
        }
        let events = a.read_stream(stream).await.expect("read");
        assert_eq!(
            events.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
            (1..=110).collect::<Vec<_>>(),
            "30 raced + 80 contended appends, each version once"
        );
        let stored: HashSet<Uuid> = events.iter().skip(30).map(|e| e.command_id).collect();
        assert_eq!(stored, committed, "every committed command once, no other");
        assert_eq!(assert_chain(&whole_log(&a).await), 110);
        b.close().await;
    })
    .await;
}

/// A node claims work and dies: nobody else gets the entries while its lease runs, the next
/// claim after the lease takes them all over with new tokens, and the dead node's tokens
/// (should it come back) complete nothing. Concurrent claimers on four nodes get every entry
/// exactly once (FOR UPDATE SKIP LOCKED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lapse_after_a_node_dies_and_claims_never_overlap() {
    pg::with_store(PgOptions::default(), |main, url, schema| async move {
        let lease = Duration::from_secs(30);
        let stream = new_stream();
        let mut req = request(stream, 0, 1);
        for _ in 0..20 {
            req = with_effect(req, T0);
        }
        req.timers.push(passage_core::ports::NewTimer {
            timer_id: Uuid::new_v4(),
            fire_at: T0,
            payload: "{}".into(),
        });
        main.append(req).await.expect("append");

        let dying = pg::connect(&url, pg::options(&schema)).await;
        let taken = dying.claim_effects(T0, lease, 100).await.expect("claim");
        let taken_timers = dying.claim_timers(T0, lease, 100).await.expect("claim");
        assert_eq!((taken.len(), taken_timers.len()), (20, 1));
        dying.close().await;
        drop(dying);

        let survivor = pg::connect(&url, pg::options(&schema)).await;
        let early = T0.plus(lease - Duration::from_millis(1));
        assert!(
            survivor
                .claim_effects(early, lease, 100)
                .await
                .expect("claim")
                .is_empty(),
            "entries stay with their (dead) holder until the lease lapses"
        );
        let after = T0.plus(lease);
        let retaken = survivor
            .claim_effects(after, lease, 100)
            .await
            .expect("claim");
        let retaken_timers = survivor
            .claim_timers(after, lease, 100)
            .await
            .expect("claim");
        assert_eq!(
            (retaken.len(), retaken_timers.len()),
            (20, 1),
            "the lapsed leases are taken over"
        );
        for (old, new) in taken.iter().zip(&retaken) {
            assert!(new.lease > old.lease);
        }
        for e in &taken {
            assert!(
                !main
                    .complete_effect(e.effect_id, e.lease, after)
                    .await
                    .expect("complete"),
                "the dead node's token completes nothing"
            );
        }
        assert!(
            !main
                .complete_timer(taken_timers[0].timer_id, taken_timers[0].lease, after)
                .await
                .expect("complete timer")
        );
        for e in &retaken {
            assert!(
                survivor
                    .complete_effect(e.effect_id, e.lease, after)
                    .await
                    .expect("complete")
            );
        }
        assert!(
            survivor
                .complete_timer(retaken_timers[0].timer_id, retaken_timers[0].lease, after)
                .await
                .expect("complete timer")
        );

        // 300 effects, 4 nodes x 2 claiming tasks, small claims: each entry exactly once.
        let due = T0.plus(Duration::from_secs(3600));
        let mut tasks = JoinSet::new();
        for _ in 0..10 {
            let main = main.clone();
            tasks.spawn(async move {
                let mut req = request(new_stream(), 0, 0);
                for _ in 0..30 {
                    req = with_effect(req, due);
                }
                main.append(req).await.expect("append");
            });
        }
        while tasks.join_next().await.is_some() {}
        let mut nodes = vec![survivor.clone()];
        for _ in 0..3 {
            nodes.push(pg::connect(&url, pg::options(&schema)).await);
        }
        let mut claimers = JoinSet::new();
        for node in &nodes {
            for _ in 0..2 {
                let node = node.clone();
                claimers.spawn(async move {
                    let mut mine: Vec<OutboxEntry> = Vec::new();
                    loop {
                        let batch = node.claim_effects(due, lease, 7).await.expect("claim");
                        if batch.is_empty() {
                            return mine;
                        }
                        for e in &batch {
                            assert!(
                                node.complete_effect(e.effect_id, e.lease, due)
                                    .await
                                    .expect("complete"),
                                "a fresh claim's holder completes"
                            );
                        }
                        mine.extend(batch);
                    }
                });
            }
        }
        let mut claimed = Vec::new();
        let mut per_claimer = Vec::new();
        while let Some(joined) = claimers.join_next().await {
            let mine = joined.expect("claimer panicked");
            per_claimer.push(mine.len());
            claimed.extend(mine.into_iter().map(|e| e.effect_id));
        }
        let unique: HashSet<Uuid> = claimed.iter().copied().collect();
        assert_eq!(claimed.len(), 300, "every effect claimed, none twice");
        assert_eq!(unique.len(), 300);
        println!("SKIP LOCKED claims per claimer: {per_claimer:?}");
        for node in nodes {
            node.close().await;
        }
    })
    .await;
}

async fn concurrent_appends(store: &PgStore, n: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let store = store.clone();
        tasks.spawn(async move { store.append(request(new_stream(), 0, 1)).await });
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

/// Group commit: concurrent appends through one handle share transactions; with grouping
/// off every append is a transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_puts_concurrent_appends_in_few_transactions() {
    const N: usize = 400;
    pg::with_store(PgOptions::default(), |grouped, url, schema| async move {
        let grouped_time = concurrent_appends(&grouped, N).await;
        let g = grouped.stats();

        let single = pg::connect(
            &url,
            PgOptions {
                group_commit: false,
                ..pg::options(&schema)
            },
        )
        .await;
        let single_time = concurrent_appends(&single, N).await;
        let s = single.stats();
        println!(
            "{N} concurrent appends: grouped = {} transactions (largest batch {}) in \
             {grouped_time:?} ({:.0} appends/s); ungrouped = {} transactions (largest batch {}) \
             in {single_time:?} ({:.0} appends/s)",
            g.transactions,
            g.largest_batch,
            N as f64 / grouped_time.as_secs_f64(),
            s.transactions,
            s.largest_batch,
            N as f64 / single_time.as_secs_f64(),
        );
        assert_eq!(g.requests, N as u64);
        assert!(
            g.transactions <= (N / 4) as u64,
            "grouping should need far fewer than {N} transactions, took {}",
            g.transactions
        );
        assert!(g.largest_batch > 1);
        assert_eq!(s.transactions, N as u64, "grouping off: one per append");
        assert_eq!(s.largest_batch, 1);
        assert_eq!(assert_chain(&whole_log(&grouped).await), 2 * N as u64);
        single.close().await;
    })
    .await;
}

/// A password sign-in's session row, created at T0, valid for an hour.
fn sign_in(session_hash: String, account_id: String) -> passage_core::ports::Session {
    passage_core::ports::Session {
        session_hash,
        account_id,
        journey_id: None,
        kind: "sign-in".into(),
        amr: "pwd".into(),
        created_at: T0,
        expires_at: Timestamp(T0.0 + 3_600_000),
        revoked_at: None,
        password_fp: Some("9f86d081884c7d65".into()),
    }
}

/// A connection of its own holding the row locks `select` takes (`… FOR UPDATE`) in an open
/// transaction, to stall the writer until it runs `COMMIT`.
async fn hold_rows(url: &str, schema: &str, select: &str) -> sqlx::PgConnection {
    let mut holder = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{schema}\"; BEGIN; {select}"
    )))
    .execute(&mut holder)
    .await
    .unwrap_or_else(|e| panic!("hold the rows of {select}: {e}"));
    holder
}

/// Appends and directory writes queued together share one transaction, and one account's
/// writes commit in queue order: a revocation queued after a session's insert waits for
/// the next batch (the batch statement's revocations would not see that session, R45), as
/// does a second password change of one account. The writer is stalled on a row lock held
/// here so that everything queues up behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_directory_writes_share_batches_in_queue_order() {
    pg::with_store(PgOptions::default(), |store, url, schema| async move {
        for (id, email) in [
            ("a-stall", "stall@example.com"),
            ("a-1", "one@example.com"),
            ("a-2", "two@example.com"),
        ] {
            store
                .upsert_account(&account(id, email), "$argon2id$first")
                .await
                .expect("seed");
        }
        let mut holder = hold_rows(
            &url,
            &schema,
            "SELECT 1 FROM accounts WHERE account_id = 'a-stall' FOR UPDATE",
        )
        .await;
        let before = store.stats();
        let spawn_password = |account: &'static str, phc: &'static str, at: i64| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .set_password_hash(account, phc, Timestamp(T0.0 + at))
                    .await
                    .expect("set_password_hash")
            })
        };
        // The writer takes this alone and waits for the row lock.
        let stalled = spawn_password("a-stall", "$argon2id$stalled", 1_000);
        tokio::time::sleep(Duration::from_millis(100)).await;

        let mut appends = JoinSet::new();
        for _ in 0..3 {
            let store = store.clone();
            appends.spawn(async move { store.append(request(new_stream(), 0, 1)).await });
        }
        let session = {
            let store = store.clone();
            tokio::spawn(async move {
                let s = sign_in("s-signed-in-with-the-old-password".into(), "a-1".into());
                store.create_session(&s).await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let revoke = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .revoke_sessions(
                        "a-1",
                        None,
                        Timestamp(T0.0 + 1_000),
                        Timestamp(T0.0 + 2_000),
                        "password-reset",
                    )
                    .await
            })
        };
        let earlier = spawn_password("a-2", "$argon2id$earlier", 10_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let later = spawn_password("a-2", "$argon2id$later", 20_000);
        tokio::time::sleep(Duration::from_millis(100)).await;

        sqlx::raw_sql("COMMIT")
            .execute(&mut holder)
            .await
            .expect("release the row");
        assert!(stalled.await.expect("task"));
        for appended in appends.join_all().await {
            assert!(
                matches!(appended, Ok(AppendResult::Committed { .. })),
                "{appended:?}"
            );
        }
        session.await.expect("task").expect("create_session");
        assert_eq!(
            revoke.await.expect("task").expect("revoke_sessions"),
            1,
            "the revocation queued after the session's insert sees it"
        );
        assert!(
            earlier.await.expect("task"),
            "the earlier change applied first"
        );
        assert!(later.await.expect("task"), "then the later one");
        assert_eq!(
            store.password_hash("a-2").await.expect("read").as_deref(),
            Some("$argon2id$later")
        );

        let after = store.stats();
        assert_eq!(after.requests - before.requests, 3);
        assert_eq!(after.writes - before.writes, 5);
        assert_eq!(
            after.transactions - before.transactions,
            3,
            "the stalled write; the appends with the session and the first change of a-2; \
             the held revocation and second change"
        );
    })
    .await;
}

/// Group commit across nodes: 4 handles with 64 journeys each progressing at once (one
/// task per journey, each appending its next event as soon as the previous one commits).
/// The head lock lets one transaction commit at a time, so what decides throughput is how
/// many appends share each commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_across_nodes_under_load() {
    const NODES: usize = 4;
    const JOURNEYS_PER_NODE: usize = 64;
    const RUN_FOR: Duration = Duration::from_secs(3);
    pg::with_store(PgOptions::default(), |main, url, schema| async move {
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            nodes.push(pg::connect(&url, pg::options(&schema)).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for node in &nodes {
            for _ in 0..JOURNEYS_PER_NODE {
                let (store, stop) = (node.clone(), Arc::clone(&stop));
                tasks.spawn(async move {
                    let stream = new_stream();
                    let mut version = 0;
                    while !stop.load(Ordering::SeqCst) {
                        match store.append(request(stream, version, 1)).await {
                            Ok(AppendResult::Committed { stream_version, .. }) => {
                                version = stream_version;
                            }
                            other => panic!("append: {other:?}"),
                        }
                    }
                    version
                });
            }
        }
        tokio::time::sleep(RUN_FOR).await;
        stop.store(true, Ordering::SeqCst);
        let mut appends = 0;
        while let Some(joined) = tasks.join_next().await {
            appends += joined.expect("task panicked");
        }
        let elapsed = started.elapsed();
        let (mut transactions, mut largest) = (0, 0);
        for n in &nodes {
            let s = n.stats();
            transactions += s.transactions;
            largest = largest.max(s.largest_batch);
        }
        let per_commit = appends as f64 / transactions.max(1) as f64;
        println!(
            "{NODES} nodes x {JOURNEYS_PER_NODE} journeys for {elapsed:?}: {appends} appends \
             ({:.0}/s) in {transactions} transactions ({:.0}/s), {per_commit:.1} appends per \
             commit on average, largest batch {largest}",
            appends as f64 / elapsed.as_secs_f64(),
            transactions as f64 / elapsed.as_secs_f64(),
        );
        assert!(
            per_commit >= 4.0,
            "appends from concurrent journeys should share commits: {per_commit:.1} per commit"
        );
        assert_eq!(assert_chain(&whole_log(&main).await), appends);
        for n in nodes {
            n.close().await;
        }
    })
    .await;
}

/// LISTEN/NOTIFY: an append with an effect on one node wakes `wait_for_work` on another
/// within 500 ms; an append that adds no work does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_work_wakes_on_another_nodes_append() {
    pg::with_store(PgOptions::default(), |a, url, schema| async move {
        let b = pg::connect(&url, pg::options(&schema)).await;
        // Settle: the first wait starts the listener, which wakes once when it listens.
        let mut settled = false;
        for _ in 0..20 {
            let started = Instant::now();
            b.wait_for_work(Duration::from_millis(300)).await;
            if started.elapsed() >= Duration::from_millis(250) {
                settled = true;
                break;
            }
        }
        assert!(settled, "wait_for_work never waited out a quiet timeout");

        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_for_work(Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.append(request(new_stream(), 0, 2))
            .await
            .expect("append without work");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "an append without effects or timers must not wake workers"
        );
        let appended = Instant::now();
        a.append(with_effect(request(new_stream(), 0, 1), T0))
            .await
            .expect("append with work");
        tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("another node's append must wake the wait within 500 ms")
            .expect("waiter");
        println!(
            "NOTIFY woke the other node {:?} after the append returned",
            appended.elapsed()
        );
        b.close().await;
    })
    .await;
}

/// Several nodes starting at once against an empty schema: the advisory lock serializes
/// the migration runners, each migration is applied once, and all nodes work. Edited or
/// newer migrations are refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_are_safe_and_edits_are_refused() {
    let Some(url) = pg::reachable().await else {
        return;
    };
    let schema = pg::fresh_schema();
    let mut starting = JoinSet::new();
    for _ in 0..4 {
        let (url, options) = (url.clone(), pg::options(&schema));
        starting.spawn(async move { PgStore::connect_with(&url, options).await });
    }
    let mut stores = Vec::new();
    while let Some(joined) = starting.join_next().await {
        stores.push(
            joined
                .expect("connect task panicked")
                .expect("concurrent connect and migrate"),
        );
    }
    let outcome = tokio::spawn({
        let (stores, url, schema) = (stores.clone(), url.clone(), schema.clone());
        async move {
            for (i, s) in stores.iter().enumerate() {
                s.append(request(new_stream(), 0, 1))
                    .await
                    .unwrap_or_else(|e| panic!("node {i} cannot append: {e}"));
            }
            let mut raw = sqlx::PgConnection::connect(&url).await.expect("raw");
            let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM {schema}.schema_migrations ORDER BY 1"
            )))
            .fetch_all(&mut raw)
            .await
            .expect("schema_migrations");
            assert_eq!(
                versions,
                (1..=14).collect::<Vec<i64>>(),
                "each migration applied once"
            );
            let heads: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {schema}.log_head"
            )))
            .fetch_one(&mut raw)
            .await
            .expect("log_head");
            assert_eq!(heads, 1, "one head row");

            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "UPDATE {schema}.schema_migrations SET checksum = '\\x00' WHERE version = 2"
            )))
            .execute(&mut raw)
            .await
            .expect("tamper");
            match PgStore::connect_with(&url, pg::options(&schema)).await {
                Err(Error::MigrationChanged { version: 2, .. }) => {}
                other => panic!("an edited migration must be refused, got {other:?}"),
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {schema}.schema_migrations VALUES (99, 'future', '\\x00', 0)"
            )))
            .execute(&mut raw)
            .await
            .expect("future migration");
            match PgStore::connect_with(&url, pg::options(&schema)).await {
                Err(Error::SchemaTooNew { found: 99, .. }) => {}
                other => panic!("a newer schema must be refused, got {other:?}"),
            }
            raw.close().await.expect("close raw");
        }
    })
    .await;
    stores[0].drop_schema().await.expect("drop schema");
    for s in &stores {
        s.close().await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A request whose own data breaks a constraint is rejected alone; the requests batched
/// with it commit (the batch is split and rewritten one by one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_request_is_rejected_alone() {
    pg::with_store(PgOptions::default(), |store, _, _| async move {
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

        let mut tasks = JoinSet::new();
        for i in 0..60 {
            let store = store.clone();
            let mut req = request(new_stream(), 0, 1);
            req.effects
                .push(effect(if i == 30 { taken } else { Uuid::new_v4() }));
            if i == 45 {
                // PostgreSQL TEXT cannot hold NUL: the request's own data again.
                req.events[0].payload = "{\"nul\":\"\u{0}\"}".into();
            }
            tasks.spawn(async move { (i, store.append(req).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, result) = joined.expect("task panicked");
            if i == 30 || i == 45 {
                assert!(
                    matches!(result, Err(StoreError::Rejected(_))),
                    "request {i} must be rejected: {result:?}"
                );
            } else {
                assert!(
                    matches!(result, Ok(AppendResult::Committed { .. })),
                    "request {i} must commit despite the poison: {result:?}"
                );
            }
        }
        assert_eq!(assert_chain(&whole_log(&store).await), 59);
        println!("{:?}", store.stats());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_head_row_is_reported_as_corrupt() {
    pg::with_store(PgOptions::default(), |store, url, schema| async move {
        store
            .append(request(new_stream(), 0, 1))
            .await
            .expect("append");
        let mut raw = sqlx::PgConnection::connect(&url).await.expect("raw");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {schema}.log_head"
        )))
        .execute(&mut raw)
        .await
        .expect("damage");
        match store.append(request(new_stream(), 0, 1)).await {
            Err(StoreError::Corrupt(msg)) => assert!(msg.contains("log_head"), "{msg}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        raw.close().await.expect("close raw");
    })
    .await;
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
async fn directory_sessions_and_password_order() {
    pg::with_store(PgOptions::default(), |store, _, _| async move {
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
    })
    .await;
}

/// A completed reset's session commits with its events or not at all
/// (`contract::completing_appends_store_their_sessions`); with grouping on, a revocation
/// queued behind a completing append of its account waits for that append's batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_appends_store_their_sessions() {
    for group_commit in [true, false] {
        let options = PgOptions {
            group_commit,
            ..PgOptions::default()
        };
        pg::with_store(options, |store, _, _| async move {
            passage_store::contract::completing_appends_store_their_sessions(
                store.clone(),
                group_commit,
            )
            .await;
        })
        .await;
    }
}

/// Grouping off: each directory write is a statement of its own instead of a part of the
/// writer's next transaction. Same contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_sessions_with_grouping_off() {
    let options = PgOptions {
        group_commit: false,
        ..PgOptions::default()
    };
    pg::with_store(options, |store, _, _| async move {
        store
            .upsert_account(&account("u-9", "grace@example.com"), "$argon2id$first")
            .await
            .expect("seed");
        passage_store::contract::directory_sessions(store.clone(), "u-9").await;
        assert_eq!(store.stats().writes, 0, "none through the writer");
    })
    .await;
}

/// With grouping on, sessions, revocations and password changes commit in the writer's
/// transactions (a WAL flush shared with the appends, not one each), and each caller gets
/// what it would have got alone: its rows counted, a later password change kept over an
/// earlier one whatever order they arrive in, a failing write failing alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_writes_share_the_writers_transactions_and_answer_as_if_alone() {
    const N: usize = 40;
    const SESSIONS: usize = 3;
    pg::with_store(PgOptions::default(), |store, url, schema| async move {
        for i in 0..N {
            store
                .upsert_account(
                    &account(&format!("g-{i}"), &format!("g{i}@example.com")),
                    "$argon2id$first",
                )
                .await
                .expect("seed");
        }
        let before = store.stats();

        let mut tasks = JoinSet::new();
        for i in 0..N {
            for k in 0..SESSIONS {
                let (store, s) = (
                    store.clone(),
                    sign_in(format!("g-{i}-{k}"), format!("g-{i}")),
                );
                tasks.spawn(async move { store.create_session(&s).await });
            }
        }
        for created in tasks.join_all().await {
            created.expect("create_session");
        }
        let after = store.stats();
        let (writes, transactions) = (
            after.writes - before.writes,
            after.transactions - before.transactions,
        );
        println!("{writes} concurrent session inserts in {transactions} writer transactions");
        assert_eq!(writes, (N * SESSIONS) as u64);
        assert!(transactions <= writes / 4, "{transactions} transactions");

        // Per account at once: a revocation, two of them for g-1, and two password changes
        // for g-2 (the later one must win whichever commits first).
        let mut revokes = JoinSet::new();
        for i in 0..N {
            let copies = if i == 1 { 2 } else { 1 };
            for _ in 0..copies {
                let store = store.clone();
                revokes.spawn(async move {
                    let n = store
                        .revoke_sessions(
                            &format!("g-{i}"),
                            None,
                            T0,
                            Timestamp(T0.0 + 60_000),
                            "test",
                        )
                        .await
                        .expect("revoke_sessions");
                    (i, n)
                });
            }
        }
        let mut passwords = JoinSet::new();
        for (phc, at) in [("$argon2id$earlier", 10_000), ("$argon2id$later", 20_000)] {
            let store = store.clone();
            passwords.spawn(async move {
                store
                    .set_password_hash("g-2", phc, Timestamp(T0.0 + at))
                    .await
                    .expect("set_password_hash")
            });
        }
        let mut revoked: HashMap<usize, u64> = HashMap::new();
        for (i, n) in revokes.join_all().await {
            *revoked.entry(i).or_default() += n;
        }
        for i in 0..N {
            assert_eq!(
                revoked[&i], SESSIONS as u64,
                "sessions revoked for g-{i}, once"
            );
        }
        let applied = passwords.join_all().await;
        assert!(
            applied.iter().any(|a| *a),
            "the later change applies: {applied:?}"
        );
        assert_eq!(
            store.password_hash("g-2").await.expect("read").as_deref(),
            Some("$argon2id$later")
        );
        assert!(matches!(
            store.set_password_hash("nobody", "$argon2id$x", T0).await,
            Err(e) if e.to_string().contains("nobody")
        ));

        // A failing write fails alone: a session hash already used, among fresh ones. The
        // head lock, held here, stalls the writer on an append while the writes queue up,
        // so that they certainly share the next batch.
        let mut holder = hold_rows(&url, &schema, "SELECT 1 FROM log_head FOR UPDATE").await;
        let split_before = store.stats().split_batches;
        let stalled = tokio::spawn({
            let store = store.clone();
            async move { store.append(request(new_stream(), 0, 1)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut tasks = JoinSet::new();
        for k in 0..8 {
            let (store, s) = (store.clone(), sign_in(format!("fresh-{k}"), "g-3".into()));
            tasks.spawn(async move { store.create_session(&s).await.is_ok() });
        }
        let (store2, dup) = (store.clone(), sign_in("g-0-0".into(), "g-3".into()));
        let dup = tokio::spawn(async move { store2.create_session(&dup).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::raw_sql("COMMIT")
            .execute(&mut holder)
            .await
            .expect("release the head lock");
        assert!(
            matches!(
                stalled.await.expect("task"),
                Ok(AppendResult::Committed { .. })
            ),
            "the stalled append commits"
        );
        assert!(
            tasks.join_all().await.into_iter().all(|ok| ok),
            "the fresh ones commit"
        );
        let err = dup
            .await
            .expect("task")
            .expect_err("a session hash is unique");
        assert!(format!("{err:?}").contains("sessions_pkey"), "{err:?}");
        assert_eq!(
            store.stats().split_batches - split_before,
            1,
            "the nine writes shared a batch, which was split"
        );
        for k in 0..8 {
            assert!(
                store
                    .find_session(&format!("fresh-{k}"))
                    .await
                    .expect("find")
                    .is_some()
            );
        }
        assert_eq!(
            store
                .find_session("g-0-0")
                .await
                .expect("find")
                .map(|s| s.account_id)
                .as_deref(),
            Some("g-0"),
            "the original row is untouched"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_seeds_finds_and_changes_passwords() {
    pg::with_store(PgOptions::default(), |store, _, _| async move {
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
        assert_eq!(store.get("u-1").await.expect("get"), Some(found));
        store
            .set_password_hash("u-1", "$argon2id$v=19$reset", T0)
            .await
            .expect("set password");
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
            Some("$argon2id$v=19$reset"),
            "re-seeding keeps the password the person chose"
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
        assert!(matches!(
            store
                .upsert_account(&account("u-2", "ADA@example.com"), "x")
                .await,
            Err(Error::EmailTaken)
        ));
        assert!(matches!(
            store
                .insert_account_if_missing(&account("u-3", "ada@example.com"), "x")
                .await,
            Err(Error::EmailTaken)
        ));
        assert!(store.set_password_hash("u-404", "x", T0).await.is_err());
    })
    .await;
}

/// `AnyStore::open` picks the backend from the target: a `postgres://` URL (here with the
/// schema in the URL's search_path) or a file path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_opens_the_backend_the_target_names() {
    let file = common::TempDb::new();
    let sqlite = AnyStore::open(&file.path.to_string_lossy())
        .await
        .expect("open sqlite");
    assert_eq!(sqlite.backend(), "sqlite");
    sqlite
        .append(request(new_stream(), 0, 1))
        .await
        .expect("append");
    sqlite.close().await;

    let Some(url) = pg::reachable().await else {
        return;
    };
    let schema = pg::fresh_schema();
    let mut raw = sqlx::PgConnection::connect(&url).await.expect("raw");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut raw)
        .await
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let outcome = tokio::spawn({
        let (schema, target) = (schema.clone(), target.clone());
        async move {
            let store = AnyStore::open(&target).await.expect("open postgres");
            assert_eq!(store.backend(), "postgres");
            let stream = new_stream();
            store
                .append(with_effect(request(stream, 0, 2), T0))
                .await
                .expect("append");
            assert_eq!(store.read_stream(stream).await.expect("read").len(), 2);
            if let AnyStore::Postgres(pg) = &store {
                assert_eq!(pg.schema(), schema, "the URL's search_path schema is used");
            }
            let claimed = store
                .claim_effects(T0, Duration::from_secs(5), 10)
                .await
                .expect("claim");
            assert_eq!(claimed.len(), 1);
            assert!(
                store
                    .complete_effect(claimed[0].effect_id, claimed[0].lease, T0)
                    .await
                    .expect("complete")
            );
            assert!(store.stats().transactions >= 1);
            store.close().await;
        }
    })
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut raw)
        .await
        .expect("drop schema");
    raw.close().await.expect("close raw");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Outbox completions through one handle are grouped (one statement for all those
/// waiting, `postgres/completer.rs`) without changing what each caller hears
/// (`contract::concurrent_completions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_outbox_completions_share_statements_and_keep_the_fence() {
    pg::with_store(PgOptions::default(), |store, _url, _schema| async move {
        let before = store.stats();
        let attempts = passage_store::contract::concurrent_completions(store.clone(), 300).await;
        let after = store.stats();
        let completions = after.completions - before.completions;
        let statements = after.completion_statements - before.completion_statements;
        println!("{completions} completions in {statements} statements");
        assert_eq!(
            completions, attempts as u64,
            "every completion goes through the completer"
        );
        assert!(
            statements < completions / 4,
            "completions should share statements: {completions} in {statements}"
        );
    })
    .await;
}

/// Per-client limits counted for every node (R17): a window admits exactly `limit` hits
/// however they race over two handles, tells the refused how long the window has left,
/// takes a hit back, and starts afresh when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_windows_count_once_across_nodes() {
    pg::with_store(PgOptions::default(), |a, url, schema| async move {
        let b = pg::connect(&url, pg::options(&schema)).await;
        let minute = Duration::from_secs(60);
        let mut racing = JoinSet::new();
        for i in 0..30 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            racing.spawn(async move { store.hit_window(T0, "client-1", 10, minute).await });
        }
        let mut admitted = 0;
        while let Some(joined) = racing.join_next().await {
            match joined.expect("hit task").expect("hit") {
                Ok(()) => admitted += 1,
                Err(retry) => assert_eq!(retry, minute, "the whole window is left at T0"),
            }
        }
        assert_eq!(admitted, 10, "30 racing hits over two nodes, a limit of 10");

        let later = T0.plus(Duration::from_secs(20));
        assert_eq!(
            b.hit_window(later, "client-1", 10, minute)
                .await
                .expect("hit"),
            Err(Duration::from_secs(40)),
            "the refused learn when the window ends"
        );
        assert_eq!(
            a.hit_window(later, "client-2", 10, minute)
                .await
                .expect("hit"),
            Ok(()),
            "another key has its own window"
        );
        a.give_back_window(later, "client-1")
            .await
            .expect("give back");
        assert_eq!(
            b.hit_window(later, "client-1", 10, minute)
                .await
                .expect("hit"),
            Ok(()),
            "a hit given back makes room for one"
        );
        assert!(
            a.hit_window(later, "client-1", 10, minute)
                .await
                .expect("hit")
                .is_err()
        );
        assert!(
            a.hit_window(T0, "closed", 0, minute)
                .await
                .expect("hit")
                .is_err(),
            "a limit of 0 admits nothing"
        );

        // The window ends; the row is still there and the next hit starts a new window.
        let next = T0.plus(minute);
        for n in 0..10 {
            assert_eq!(
                a.hit_window(next, "client-1", 10, minute)
                    .await
                    .expect("hit"),
                Ok(()),
                "hit {n} of the new window"
            );
        }
        assert_eq!(
            b.hit_window(next, "client-1", 10, minute)
                .await
                .expect("hit"),
            Err(minute),
            "the new window is full and lasts a minute from its first hit"
        );
        assert!(
            b.hit_window(next, "closed", 0, minute)
                .await
                .expect("hit")
                .is_err(),
            "a limit of 0 admits nothing in a new window either"
        );
        // Once every window has ended, a sweep leaves nothing behind.
        let end = next.plus(minute * 2);
        assert!(b.sweep_windows(end).await.expect("sweep") > 0);
        assert_eq!(a.sweep_windows(end).await.expect("sweep"), 0);
        b.close().await;
    })
    .await;
}
