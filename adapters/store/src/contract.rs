//! The event store contract: what every [`EventStore`] backend must do, as generic async
//! functions that panic with a message saying which promise was broken.
//!
//! Each backend's test crate calls every function with a **fresh, empty** store (global
//! positions are asserted from 1) on a multi-threaded tokio runtime (several functions race
//! appends from spawned tasks), e.g.:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn global_order() {
//!     let store = fresh_store().await; // an empty database of the backend under test
//!     passage_store::contract::global_order(store).await;
//! }
//! ```
//!
//! `tests/sqlite_contract.rs` (a file and in memory) and `tests/postgres_contract.rs` (a
//! fresh schema per function) are the two instances of this.
//!
//! Times are fixed instants, never the clock: a store must take `now` from its caller.

use passage_core::chain::Verifier;
use passage_core::ports::{
    AppendRequest, AppendResult, EventStore, JourneyFilter, JourneyId, JourneySummary, NewEffect,
    NewEvent, NewTimer, OutboxEntry, StoreError, StoredEvent,
};
use passage_core::time::Timestamp;
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinSet;
use uuid::Uuid;

/// An arbitrary fixed instant (2027-01-15) all the suite's times are relative to.
const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(offset: Duration) -> Timestamp {
    T0.plus(offset)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn new_stream() -> JourneyId {
    JourneyId(Uuid::new_v4())
}

fn summary(stream: JourneyId, version: u64) -> JourneySummary {
    JourneySummary {
        journey_id: stream,
        definition_id: "reset-by-email".into(),
        definition_version: 1,
        status: "active".into(),
        current_step: Some("send_code".into()),
        email_masked: Some("a***@example.com".into()),
        started_at: T0,
        updated_at: T0,
        version,
        subject: None,
        failures: 0,
        stall_at: None,
        stall_keep: false,
    }
}

/// A fresh command appending `events` events to `stream` at `expected`, with nothing else.
pub(crate) fn request(stream: JourneyId, expected: u64, events: usize) -> AppendRequest {
    let command_id = Uuid::new_v4();
    AppendRequest {
        stream,
        expected_version: expected,
        command_id,
        metadata: format!(r#"{{"actor":"contract","command":"{command_id}"}}"#),
        recorded_at: T0,
        events: (0..events)
            .map(|i| NewEvent {
                event_type: if i % 2 == 0 {
                    "CodeSent"
                } else {
                    "CodeVerified"
                }
                .into(),
                schema_version: 1 + (i % 3) as u16,
                payload: format!(r#"{{"n":{i},"text":"héllo ✓"}}"#),
            })
            .collect(),
        effects: Vec::new(),
        timers: Vec::new(),
        summary: summary(stream, expected + events as u64),
        outcome: format!(r#"{{"accepted":"{command_id}"}}"#),
        data_key: None,
        session: None,
    }
}

fn effect(available_at: Timestamp) -> NewEffect {
    let effect_id = Uuid::new_v4();
    NewEffect {
        effect_id,
        kind: "send_email".into(),
        payload: format!(r#"{{"effect":"{effect_id}"}}"#),
        available_at,
    }
}

fn timer(fire_at: Timestamp) -> NewTimer {
    let timer_id = Uuid::new_v4();
    NewTimer {
        timer_id,
        fire_at,
        payload: format!(r#"{{"timer":"{timer_id}"}}"#),
    }
}

async fn append_ok<S: EventStore>(store: &S, req: AppendRequest, why: &str) -> AppendResult {
    match store.append(req).await {
        Ok(r) => r,
        Err(e) => panic!("{why}: append failed: {e}"),
    }
}

async fn stream_of<S: EventStore>(store: &S, stream: JourneyId) -> Vec<StoredEvent> {
    match store.read_stream(stream).await {
        Ok(events) => events,
        Err(e) => panic!("read_stream({stream}) failed: {e}"),
    }
}

/// Every event from position 1, read in pages of `page`.
async fn read_everything<S: EventStore>(store: &S, page: usize) -> Vec<StoredEvent> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.position);
        let batch = match store.read_all(after, page).await {
            Ok(b) => b,
            Err(e) => panic!("read_all({after}, {page}) failed: {e}"),
        };
        assert!(
            batch.len() <= page,
            "read_all({after}, {page}) returned {} events, more than the limit",
            batch.len()
        );
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

async fn claim<S: EventStore>(store: &S, now: Timestamp, lease: Duration) -> Vec<OutboxEntry> {
    match store.claim_effects(now, lease, 100).await {
        Ok(c) => c,
        Err(e) => panic!("claim_effects at {now} failed: {e}"),
    }
}

fn assert_conflict(
    result: Result<AppendResult, StoreError>,
    stream: JourneyId,
    expected: u64,
    actual: u64,
    why: &str,
) {
    match result {
        Err(StoreError::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) if s == stream && e == expected && a == actual => {}
        other => panic!(
            "{why}: expected Conflict {{ stream: {stream}, expected: {expected}, actual: \
             {actual} }}, got {other:?}"
        ),
    }
}

/// Optimistic concurrency: an append whose `expected_version` is not the stream's version
/// fails with [`StoreError::Conflict`] carrying both versions and writes nothing, and when
/// writers race for the same version exactly one wins.
pub async fn conflicting_appends<S: EventStore>(store: S) {
    let stream = new_stream();
    let first = append_ok(
        &store,
        request(stream, 0, 2),
        "first append to a new stream",
    )
    .await;
    assert_eq!(
        first,
        AppendResult::Committed {
            first_position: Some(1),
            stream_version: 2
        },
        "the first append to an empty store starts at position 1 and version 1"
    );

    let stale = request(stream, 0, 1);
    let stale_id = stale.command_id;
    assert_conflict(
        store.append(stale).await,
        stream,
        0,
        2,
        "a stale expected version",
    );
    assert_conflict(
        store.append(request(stream, 5, 1)).await,
        stream,
        5,
        2,
        "an expected version ahead of the stream",
    );
    let empty = new_stream();
    assert_conflict(
        store.append(request(empty, 1, 1)).await,
        empty,
        1,
        0,
        "a new stream is at version 0",
    );

    // Racing writers: all read version 2, exactly one may append.
    let mut racers = JoinSet::new();
    for _ in 0..10 {
        let store = store.clone();
        racers.spawn(async move { store.append(request(stream, 2, 1)).await });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(joined) = racers.join_next().await {
        match joined.expect("a racing append task panicked") {
            Ok(AppendResult::Committed {
                stream_version: 3, ..
            }) => won += 1,
            Err(StoreError::Conflict {
                expected: 2,
                actual: 3,
                ..
            }) => lost += 1,
            other => panic!("racing appends at version 2: unexpected result {other:?}"),
        }
    }
    assert_eq!(
        (won, lost),
        (1, 9),
        "of 10 appends racing for version 3 exactly one must win"
    );

    let events = stream_of(&store, stream).await;
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(
        versions,
        vec![1, 2, 3],
        "conflicting appends must write no event"
    );
    assert!(
        store
            .read_stream(empty)
            .await
            .map(|e| e.is_empty())
            .unwrap_or(false),
        "a conflicting append to a new stream must not create it"
    );
    assert_eq!(
        store
            .command_outcome(stale_id)
            .await
            .expect("command_outcome failed"),
        None,
        "a conflicting append must not record its command id"
    );

    // Its command id was not burned: the same command succeeds once it has caught up.
    let mut caught_up = request(stream, 3, 1);
    caught_up.command_id = stale_id;
    assert!(
        matches!(
            append_ok(&store, caught_up, "retrying a conflicted command").await,
            AppendResult::Committed {
                stream_version: 4,
                ..
            }
        ),
        "a command that conflicted must be appendable later under the same id"
    );
}

/// Idempotency: a command id already appended stores nothing more and returns the first
/// outcome, whatever the retry carries, also when the retries race; a command appending no
/// event still records its outcome.
pub async fn idempotent_retry<S: EventStore>(store: S) {
    let stream = new_stream();
    let mut first = request(stream, 0, 2);
    first.effects.push(effect(T0));
    first.timers.push(timer(at(secs(60))));
    let command_id = first.command_id;
    let outcome = first.outcome.clone();

    append_ok(&store, first.clone(), "first attempt").await;
    assert_eq!(
        append_ok(&store, first.clone(), "identical retry").await,
        AppendResult::Duplicate {
            outcome: outcome.clone()
        },
        "an identical retry must return the stored outcome"
    );
    // A retry built from newer state (different version, events, effects) is still a
    // duplicate: the command id decides.
    let mut changed = request(stream, 2, 3);
    changed.command_id = command_id;
    changed.effects.push(effect(T0));
    changed.timers.push(timer(T0));
    changed.outcome = r#"{"different":true}"#.into();
    assert_eq!(
        append_ok(&store, changed, "retry with other content").await,
        AppendResult::Duplicate {
            outcome: outcome.clone()
        },
        "a retry with the same command id must return the first outcome and store nothing"
    );

    let events = stream_of(&store, stream).await;
    assert_eq!(events.len(), 2, "retries must not append events");
    for (stored, sent) in events.iter().zip(&first.events) {
        assert_eq!(stored.event_type, sent.event_type, "event_type round trip");
        assert_eq!(
            stored.schema_version, sent.schema_version,
            "schema_version round trip"
        );
        assert_eq!(stored.payload, sent.payload, "payload round trip");
        assert_eq!(stored.metadata, first.metadata, "metadata round trip");
        assert_eq!(
            stored.recorded_at, first.recorded_at,
            "recorded_at round trip"
        );
        assert_eq!(stored.command_id, command_id, "command_id round trip");
        assert_eq!(stored.stream, stream, "stream round trip");
    }
    let claimed = claim(&store, at(secs(3600)), secs(30)).await;
    assert_eq!(claimed.len(), 1, "retries must not add outbox entries");
    let timers = store
        .claim_timers(at(secs(3600)), secs(30), 100)
        .await
        .expect("claim_timers failed");
    assert_eq!(timers.len(), 1, "retries must not add timers");

    assert_eq!(
        store
            .command_outcome(command_id)
            .await
            .expect("command_outcome failed"),
        Some(outcome),
        "command_outcome returns the stored outcome"
    );
    assert_eq!(
        store
            .command_outcome(Uuid::new_v4())
            .await
            .expect("command_outcome failed"),
        None,
        "an unknown command has no outcome"
    );

    // Racing retries of one new command: one commits, the rest are duplicates.
    let racing = request(stream, 2, 1);
    let racing_outcome = racing.outcome.clone();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (store, req) = (store.clone(), racing.clone());
        tasks.spawn(async move { store.append(req).await });
    }
    let (mut committed, mut duplicates) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("a retrying task panicked") {
            Ok(AppendResult::Committed {
                stream_version: 3, ..
            }) => committed += 1,
            Ok(AppendResult::Duplicate { outcome }) if outcome == racing_outcome => duplicates += 1,
            other => panic!("racing retries of one command: unexpected result {other:?}"),
        }
    }
    assert_eq!(
        (committed, duplicates),
        (1, 7),
        "8 racing copies of one command: one commit, seven duplicates"
    );

    // A command that appends no event is still recorded.
    let quiet = request(stream, 3, 0);
    assert_eq!(
        append_ok(&store, quiet.clone(), "a command with no event").await,
        AppendResult::Committed {
            first_position: None,
            stream_version: 3
        },
        "an append of zero events commits at the current version with no position"
    );
    assert_eq!(
        append_ok(&store, quiet.clone(), "retrying a command with no event").await,
        AppendResult::Duplicate {
            outcome: quiet.outcome.clone()
        },
        "a zero-event command's id must be recorded too"
    );
    assert_eq!(stream_of(&store, stream).await.len(), 3);
}

/// The global log under concurrency: many tasks append to many streams (some shared, with
/// conflicts and retries); afterwards positions are exactly 1..=N, each stream's versions
/// are 1..=k in position order, `read_stream` agrees with `read_all`, and the hash chain
/// verifies.
pub async fn global_order<S: EventStore>(store: S) {
    const SHARED_STREAMS: usize = 4;
    const TASKS: usize = 16;
    const APPENDS_PER_TASK: usize = 12;
    let streams: Vec<JourneyId> = (0..TASKS).map(|_| new_stream()).collect();

    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        // Tasks 0..8 share 4 streams pairwise (conflicts happen); 8..16 own one each.
        let stream = if t < 2 * SHARED_STREAMS {
            streams[t % SHARED_STREAMS]
        } else {
            streams[t]
        };
        let store = store.clone();
        tasks.spawn(async move {
            let mut appended = 0u64;
            for k in 0..APPENDS_PER_TASK {
                let count = 1 + (t + k) % 3;
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(
                        tries < 1000,
                        "task {t} could not append after 1000 conflicts"
                    );
                    let version = stream_of(&store, stream).await.len() as u64;
                    match store.append(request(stream, version, count)).await {
                        Ok(AppendResult::Committed { .. }) => break,
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        other => panic!("task {t}: unexpected append result {other:?}"),
                    }
                }
                appended += count as u64;
            }
            appended
        });
    }
    let mut total = 0u64;
    while let Some(joined) = tasks.join_next().await {
        total += joined.expect("an appending task panicked");
    }

    let all = read_everything(&store, 7).await;
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "positions must be exactly 1..={total}, gap-free and in order"
    );
    let mut verifier = Verifier::new();
    for e in &all {
        if let Err(bad) = verifier.check(e) {
            panic!(
                "the hash chain is broken at position {}: {}",
                bad.position, bad.fault
            );
        }
    }

    let mut by_stream: HashMap<JourneyId, Vec<&StoredEvent>> = HashMap::new();
    for e in &all {
        by_stream.entry(e.stream).or_default().push(e);
    }
    for (stream, events) in &by_stream {
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        assert_eq!(
            versions,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "stream {stream}: versions must be 1..=k in position order"
        );
        let read = stream_of(&store, *stream).await;
        assert_eq!(
            read.iter().collect::<Vec<_>>(),
            *events,
            "stream {stream}: read_stream must return the same events as read_all"
        );
    }
}

/// The outbox and the timers share the append's fate: a conflicting, duplicate or failed
/// append writes none, a committed one writes all. Claims honour due times and leases.
pub async fn outbox_timer_atomicity<S: EventStore>(store: S) {
    let stream = new_stream();
    let lease = secs(30);

    let mut good = request(stream, 0, 1);
    let kept_effect = effect(T0);
    let kept_timer = timer(at(secs(60)));
    good.effects.push(kept_effect.clone());
    good.timers.push(kept_timer.clone());
    append_ok(&store, good.clone(), "the committed append").await;

    let mut conflicting = request(stream, 0, 1);
    conflicting.effects.push(effect(T0));
    conflicting.timers.push(timer(T0));
    assert_conflict(
        store.append(conflicting).await,
        stream,
        0,
        1,
        "conflicting append",
    );

    let mut duplicate = good.clone();
    duplicate.effects = vec![effect(T0)];
    duplicate.timers = vec![timer(T0)];
    assert!(
        matches!(
            store.append(duplicate).await,
            Ok(AppendResult::Duplicate { .. })
        ),
        "a retry of the committed command must be a duplicate"
    );

    // An append that cannot be stored (its effect id is taken) fails as a whole: its event
    // and its timer must not be written either.
    let mut failing = request(stream, 1, 1);
    failing.effects.push(effect(T0));
    failing.effects.push(NewEffect {
        payload: "{}".into(),
        ..kept_effect.clone()
    });
    failing.timers.push(timer(T0));
    let failing_id = failing.command_id;
    match store.append(failing).await {
        Err(StoreError::Rejected(_)) => {}
        other => panic!(
            "an append reusing an existing effect id must be rejected (it can never succeed), \
             got {other:?}"
        ),
    }
    assert_eq!(
        stream_of(&store, stream).await.len(),
        1,
        "a failed append must not write its events"
    );
    assert_eq!(
        store
            .command_outcome(failing_id)
            .await
            .expect("command_outcome failed"),
        None,
        "a failed append must not record its command"
    );

    // Only the committed append's rows exist: the earliest due is its effect.
    assert_eq!(
        store.next_due().await.expect("next_due failed"),
        Some(T0),
        "next_due is the committed effect's available_at"
    );

    // Effects: due time, lease, lapse, retry, completion.
    assert!(
        claim(&store, Timestamp(T0.as_millis() - 1), lease)
            .await
            .is_empty(),
        "an effect is not claimed before its available_at"
    );
    let claimed = claim(&store, T0, lease).await;
    assert_eq!(
        claimed
            .iter()
            .map(|e| (e.effect_id, e.attempts))
            .collect::<Vec<_>>(),
        vec![(kept_effect.effect_id, 0)],
        "only the committed append's effect exists, due at its available_at"
    );
    // The claim above leased it until T0+30s.
    assert!(
        claim(&store, at(secs(29)), lease).await.is_empty(),
        "a leased effect must not be claimed again before the lease lapses"
    );
    let again = claim(&store, at(secs(30)), lease).await;
    assert_eq!(
        again,
        vec![OutboxEntry {
            effect_id: kept_effect.effect_id,
            stream,
            kind: kept_effect.kind.clone(),
            payload: kept_effect.payload.clone(),
            attempts: 0,
            lease: at(secs(60)),
        }],
        "an effect whose lease lapsed is claimable again, with its fields intact and the \
         new claim's token (now + lease)"
    );
    assert!(
        store
            .reschedule_effect(
                kept_effect.effect_id,
                again[0].lease,
                Some(at(secs(120))),
                "smtp 451"
            )
            .await
            .expect("reschedule_effect failed"),
        "the lease holder can reschedule"
    );
    assert!(
        claim(&store, at(secs(119)), lease).await.is_empty(),
        "a rescheduled effect is not due before retry_at, even with its lease released"
    );
    let retried = claim(&store, at(secs(120)), lease).await;
    assert_eq!(
        retried
            .iter()
            .map(|e| (e.effect_id, e.attempts))
            .collect::<Vec<_>>(),
        vec![(kept_effect.effect_id, 1)],
        "a rescheduled effect is due at retry_at with one more attempt"
    );
    assert!(
        store
            .complete_effect(kept_effect.effect_id, retried[0].lease, at(secs(121)))
            .await
            .expect("complete_effect failed"),
        "the lease holder can complete"
    );
    assert!(
        claim(&store, at(secs(86_400)), lease).await.is_empty(),
        "a completed effect is never claimed again"
    );

    // Giving up: reschedule with no retry time.
    let mut doomed = request(stream, 1, 0);
    let doomed_effect = effect(at(secs(200)));
    doomed.effects.push(doomed_effect.clone());
    append_ok(&store, doomed, "an append with an effect and no event").await;
    let claimed = claim(&store, at(secs(200)), lease).await;
    assert_eq!(
        claimed.iter().map(|e| e.effect_id).collect::<Vec<_>>(),
        vec![doomed_effect.effect_id],
        "an effect appended without events is still written"
    );
    assert!(
        store
            .reschedule_effect(
                doomed_effect.effect_id,
                claimed[0].lease,
                None,
                "mailbox does not exist"
            )
            .await
            .expect("reschedule_effect(None) failed"),
        "the lease holder can give up"
    );
    assert!(
        claim(&store, at(secs(86_400)), lease).await.is_empty(),
        "an effect given up on (retry_at None) is never claimed again"
    );

    // Limits: three due effects, claims of two.
    let mut three = request(stream, 1, 0);
    three.effects = (0..3).map(|_| effect(at(secs(300)))).collect();
    append_ok(&store, three.clone(), "three effects").await;
    let first_two = store
        .claim_effects(at(secs(300)), lease, 2)
        .await
        .expect("claim_effects failed");
    assert_eq!(
        first_two.len(),
        2,
        "claim_effects returns at most `limit` entries"
    );
    let last_one = store
        .claim_effects(at(secs(300)), lease, 2)
        .await
        .expect("claim_effects failed");
    assert_eq!(
        last_one.len(),
        1,
        "the entries leased by the first claim are skipped"
    );
    let mut ids: Vec<Uuid> = first_two
        .iter()
        .chain(&last_one)
        .map(|e| e.effect_id)
        .collect();
    ids.sort();
    let mut want: Vec<Uuid> = three.effects.iter().map(|e| e.effect_id).collect();
    want.sort();
    assert_eq!(ids, want, "the two claims together return each effect once");
    for entry in first_two.iter().chain(&last_one) {
        assert!(
            store
                .complete_effect(entry.effect_id, entry.lease, at(secs(301)))
                .await
                .expect("complete_effect failed"),
            "each claim's holder completes its entry"
        );
    }

    // Timers: due time, lease, lapse, completion.
    let timers_at = |now| store.claim_timers(now, secs(10), 100);
    assert!(
        timers_at(at(secs(59)))
            .await
            .expect("claim_timers failed")
            .is_empty(),
        "a timer is not claimed before fire_at"
    );
    let fired = timers_at(at(secs(60))).await.expect("claim_timers failed");
    assert_eq!(fired.len(), 1, "only the committed append's timer exists");
    assert_eq!(
        (
            fired[0].timer_id,
            fired[0].stream,
            fired[0].fire_at,
            &fired[0].payload
        ),
        (
            kept_timer.timer_id,
            stream,
            kept_timer.fire_at,
            &kept_timer.payload
        ),
        "a claimed timer carries its fields"
    );
    assert_eq!(
        fired[0].lease,
        at(secs(70)),
        "the claim's token is now + lease"
    );
    assert!(
        timers_at(at(secs(69)))
            .await
            .expect("claim_timers failed")
            .is_empty(),
        "a leased timer is not claimed again before the lease lapses"
    );
    let retaken = timers_at(at(secs(70))).await.expect("claim_timers failed");
    assert_eq!(
        retaken.iter().map(|t| t.lease).collect::<Vec<_>>(),
        vec![at(secs(80))],
        "a timer whose lease lapsed is claimable again, with the new claim's token"
    );
    assert!(
        store
            .complete_timer(kept_timer.timer_id, retaken[0].lease, at(secs(71)))
            .await
            .expect("complete_timer failed"),
        "the lease holder can complete the timer"
    );
    assert!(
        timers_at(at(secs(86_400)))
            .await
            .expect("claim_timers failed")
            .is_empty(),
        "a fired timer is never claimed again"
    );

    assert_eq!(
        store.next_due().await.expect("next_due failed"),
        None,
        "with every effect done or dead and every timer fired nothing is due: the failed, \
         conflicting and duplicate appends left no rows"
    );
}

/// `read_all` pages: `after` is exclusive, `limit` is a maximum, and paging with any page
/// size yields the whole log once, in order.
pub async fn read_all_paging<S: EventStore>(store: S) {
    let (a, b) = (new_stream(), new_stream());
    let mut versions = HashMap::from([(a, 0u64), (b, 0u64)]);
    for (i, stream) in [a, b, a, a, b, b, a].into_iter().enumerate() {
        let count = 1 + i % 3;
        let v = versions[&stream];
        append_ok(&store, request(stream, v, count), "filling the log").await;
        versions.insert(stream, v + count as u64);
    }
    let total: u64 = versions.values().sum();

    let all = store.read_all(0, 1000).await.expect("read_all failed");
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "read_all(0, big) returns the whole log in position order"
    );
    for page in [1, 2, 3, 5, total as usize, total as usize + 5] {
        assert_eq!(
            read_everything(&store, page).await,
            all,
            "paging by {page} must yield the same log"
        );
    }
    let middle = store.read_all(2, 2).await.expect("read_all failed");
    assert_eq!(
        middle.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![3, 4],
        "read_all(2, 2) is positions 3 and 4: `after` is exclusive"
    );
    let tail = store
        .read_all(total - 1, 10)
        .await
        .expect("read_all failed");
    assert_eq!(
        tail.as_slice(),
        &all[all.len() - 1..],
        "the last event alone"
    );
    assert!(
        store
            .read_all(total, 10)
            .await
            .expect("read_all failed")
            .is_empty(),
        "nothing after the last position"
    );
    assert!(
        store
            .read_all(u64::MAX, 10)
            .await
            .expect("read_all(u64::MAX) failed")
            .is_empty(),
        "a position beyond any stored one reads nothing (and does not overflow)"
    );
}

/// Definitions are kept by content hash: saving is idempotent and the first source stays.
pub async fn definitions_roundtrip<S: EventStore>(store: S) {
    let source = "# reset by email\nid = \"reset-by-email\"\nversion = 1\n[steps] # ✓ ünïcode\n";
    assert_eq!(
        store
            .load_definition("sha256:missing")
            .await
            .expect("load_definition failed"),
        None,
        "an unknown hash loads nothing"
    );
    store
        .save_definition("sha256:aaaa", "reset-by-email", 1, source)
        .await
        .expect("save_definition failed");
    assert_eq!(
        store
            .load_definition("sha256:aaaa")
            .await
            .expect("load_definition failed"),
        Some(source.to_owned()),
        "a saved definition loads back byte for byte"
    );
    store
        .save_definition("sha256:aaaa", "reset-by-email", 1, source)
        .await
        .expect("saving the same definition twice must succeed");
    store
        .save_definition("sha256:aaaa", "reset-by-email", 1, "something else")
        .await
        .expect("saving under an existing hash must succeed");
    assert_eq!(
        store
            .load_definition("sha256:aaaa")
            .await
            .expect("load_definition failed"),
        Some(source.to_owned()),
        "a hash names one source: the first one saved stays"
    );
    store
        .save_definition("sha256:bbbb", "reset-by-email", 2, "version 2")
        .await
        .expect("save_definition failed");
    assert_eq!(
        store
            .load_definition("sha256:bbbb")
            .await
            .expect("load_definition failed"),
        Some("version 2".to_owned()),
        "another hash is another definition"
    );
}

/// The `journeys` read model follows appends: newest updated first, filters by status and
/// definition, a limit (0 = default), and no change from a conflicting append.
pub async fn journeys_summary<S: EventStore>(store: S) {
    let list = |status: Option<&str>, definition: Option<&str>, limit: usize| {
        store.list_journeys(JourneyFilter {
            email_masked: None,
            status: status.map(str::to_owned),
            definition_id: definition.map(str::to_owned),
            limit,
            ..JourneyFilter::default()
        })
    };
    let make = |stream, def: &str, status: &str, updated: u64, version| JourneySummary {
        definition_id: def.into(),
        status: status.into(),
        updated_at: at(secs(updated)),
        current_step: (status == "active").then(|| "verify".to_owned()),
        email_masked: (def == "reset-by-email").then(|| "b***@example.org".to_owned()),
        // Two people share the mask: the pseudonym tells them apart.
        subject: (def == "reset-by-email").then(|| format!("subject-{status}")),
        ..summary(stream, version)
    };
    let (a, b, c) = (new_stream(), new_stream(), new_stream());
    let sa = make(a, "reset-by-email", "active", 1, 1);
    let sb = make(b, "reset-by-sms", "active", 2, 1);
    let sc = make(c, "reset-by-email", "completed", 3, 1);
    for s in [&sa, &sb, &sc] {
        let mut req = request(s.journey_id, 0, 1);
        req.summary = s.clone();
        append_ok(&store, req, "starting a journey").await;
    }

    let ids = |v: Vec<JourneySummary>| v.into_iter().map(|s| s.journey_id).collect::<Vec<_>>();
    let all = list(None, None, 0).await.expect("list_journeys failed");
    assert_eq!(
        all,
        vec![sc.clone(), sb.clone(), sa.clone()],
        "limit 0 lists every journey (default limit), newest updated first, fields intact"
    );
    assert_eq!(
        ids(list(Some("active"), None, 0)
            .await
            .expect("list_journeys failed")),
        vec![b, a],
        "status filter"
    );
    assert_eq!(
        ids(list(None, Some("reset-by-email"), 0)
            .await
            .expect("list_journeys failed")),
        vec![c, a],
        "definition filter"
    );
    assert_eq!(
        ids(list(Some("active"), Some("reset-by-email"), 0)
            .await
            .expect("list_journeys failed")),
        vec![a],
        "both filters"
    );
    let by_email = store
        .list_journeys(JourneyFilter {
            email_masked: Some("b***@example.org".into()),
            ..JourneyFilter::default()
        })
        .await
        .expect("list_journeys failed");
    assert_eq!(ids(by_email), vec![c, a], "masked address filter");
    let nobody = store
        .list_journeys(JourneyFilter {
            email_masked: Some("z***@example.org".into()),
            ..JourneyFilter::default()
        })
        .await
        .expect("list_journeys failed");
    assert!(nobody.is_empty());
    assert_eq!(
        ids(list(None, None, 2).await.expect("list_journeys failed")),
        vec![c, b],
        "limit keeps the newest"
    );
    let filtered = |f: JourneyFilter| {
        let store = store.clone();
        async move { ids(store.list_journeys(f).await.expect("list_journeys failed")) }
    };
    assert_eq!(
        filtered(JourneyFilter {
            current_step: Some("verify".into()),
            ..JourneyFilter::default()
        })
        .await,
        vec![b, a],
        "step filter"
    );
    assert_eq!(
        filtered(JourneyFilter {
            updated_from: Some(at(secs(2))),
            updated_to: Some(at(secs(3))),
            ..JourneyFilter::default()
        })
        .await,
        vec![b],
        "activity range: from inclusive, to exclusive"
    );
    assert_eq!(
        filtered(JourneyFilter {
            limit: 1,
            offset: 1,
            ..JourneyFilter::default()
        })
        .await,
        vec![b],
        "offset pages through the listing"
    );
    assert_eq!(
        filtered(JourneyFilter {
            subject: Some("subject-completed".into()),
            ..JourneyFilter::default()
        })
        .await,
        vec![c],
        "the pseudonym finds one person's journeys among look-alike masks"
    );
    assert_eq!(
        filtered(JourneyFilter {
            journey_id: Some(b),
            ..JourneyFilter::default()
        })
        .await,
        vec![b],
        "one journey by id"
    );
    assert_eq!(
        filtered(JourneyFilter {
            journey_id: Some(b),
            status: Some("completed".into()),
            ..JourneyFilter::default()
        })
        .await,
        Vec::<JourneyId>::new(),
        "the id combines with the other filters"
    );
    assert_eq!(
        filtered(JourneyFilter {
            email_masked: Some("b***@example.org".into()),
            limit: 1,
            offset: 1,
            ..JourneyFilter::default()
        })
        .await,
        vec![a],
        "offset with the masked address"
    );
    assert!(
        list(Some("no-such-status"), None, 0)
            .await
            .expect("list_journeys failed")
            .is_empty(),
        "a filter that matches nothing lists nothing"
    );

    // A later append replaces the row.
    let sa2 = make(a, "reset-by-email", "completed", 4, 2);
    let mut req = request(a, 1, 1);
    req.summary = sa2.clone();
    append_ok(&store, req, "moving a journey on").await;
    // A conflicting append does not touch it.
    let mut stale = request(b, 0, 1);
    stale.summary = make(b, "reset-by-sms", "hijacked", 99, 1);
    assert_conflict(store.append(stale).await, b, 0, 1, "a stale append to b");
    // An append of zero events still updates it.
    let sb2 = make(b, "reset-by-sms", "stalled", 5, 1);
    let mut quiet = request(b, 1, 0);
    quiet.summary = sb2.clone();
    append_ok(&store, quiet, "a summary-only append").await;

    assert_eq!(
        list(None, None, 0).await.expect("list_journeys failed"),
        vec![sb2, sa2, sc],
        "summaries follow committed appends (also zero-event ones) and ignore conflicting ones"
    );
}

/// Lease fencing: a worker whose lease lapsed, and whose entry another worker claimed,
/// can neither complete nor reschedule it (the store answers `false` and changes nothing);
/// the current holder can. The same for timers.
pub async fn lease_fencing<S: EventStore>(store: S) {
    let stream = new_stream();
    let lease = secs(30);
    let mut req = request(stream, 0, 1);
    let fx = effect(T0);
    let tm = timer(T0);
    req.effects.push(fx.clone());
    req.timers.push(tm.clone());
    append_ok(&store, req, "an append with an effect and a timer").await;

    // Worker A claims, then stalls past its lease; worker B takes the entry over.
    let a = claim(&store, T0, lease).await;
    assert_eq!(a.len(), 1, "worker A claims the effect");
    assert_eq!(a[0].lease, at(secs(30)), "A's token is its leased_until");
    let b = claim(&store, at(secs(31)), lease).await;
    assert_eq!(b.len(), 1, "worker B takes the lapsed effect over");
    assert!(b[0].lease > a[0].lease, "a later claim gets a later token");

    let lost = |what: &str| format!("{what} with a lost lease must answer false");
    assert!(
        !store
            .complete_effect(fx.effect_id, a[0].lease, at(secs(32)))
            .await
            .expect("complete_effect failed"),
        "{}",
        lost("complete_effect")
    );
    assert!(
        !store
            .reschedule_effect(fx.effect_id, a[0].lease, Some(at(secs(40))), "late")
            .await
            .expect("reschedule_effect failed"),
        "{}",
        lost("reschedule_effect")
    );
    assert!(
        !store
            .reschedule_effect(fx.effect_id, a[0].lease, None, "late")
            .await
            .expect("reschedule_effect failed"),
        "{}",
        lost("giving up")
    );
    // A's attempts changed nothing: B's lease still holds (not claimable before it lapses)
    // and B can finish.
    assert!(
        claim(&store, at(secs(60)), lease).await.is_empty(),
        "B's lease is intact after A's fenced-off calls"
    );
    assert!(
        store
            .complete_effect(fx.effect_id, b[0].lease, at(secs(33)))
            .await
            .expect("complete_effect failed"),
        "the current holder completes"
    );
    assert!(
        !store
            .complete_effect(fx.effect_id, b[0].lease, at(secs(34)))
            .await
            .expect("complete_effect failed"),
        "completing twice answers false the second time"
    );
    assert!(
        !store
            .complete_effect(Uuid::new_v4(), b[0].lease, at(secs(34)))
            .await
            .expect("complete_effect failed"),
        "an unknown effect answers false"
    );

    // A reschedule by the holder releases the lease: its token is spent.
    let mut req = request(stream, 1, 0);
    let fx2 = effect(at(secs(100)));
    req.effects.push(fx2.clone());
    append_ok(&store, req, "a second effect").await;
    let c = claim(&store, at(secs(100)), lease).await;
    assert!(
        store
            .reschedule_effect(fx2.effect_id, c[0].lease, Some(at(secs(200))), "retry")
            .await
            .expect("reschedule_effect failed"),
        "the holder reschedules"
    );
    assert!(
        !store
            .complete_effect(fx2.effect_id, c[0].lease, at(secs(101)))
            .await
            .expect("complete_effect failed"),
        "after rescheduling, the old token completes nothing"
    );

    // Timers.
    let ta = store
        .claim_timers(T0, lease, 10)
        .await
        .expect("claim_timers failed");
    assert_eq!(ta.len(), 1, "worker A claims the timer");
    let tb = store
        .claim_timers(at(secs(30)), lease, 10)
        .await
        .expect("claim_timers failed");
    assert_eq!(tb.len(), 1, "worker B takes the lapsed timer over");
    assert!(
        !store
            .complete_timer(tm.timer_id, ta[0].lease, at(secs(31)))
            .await
            .expect("complete_timer failed"),
        "{}",
        lost("complete_timer")
    );
    assert!(
        store
            .claim_timers(at(secs(59)), lease, 10)
            .await
            .expect("claim_timers failed")
            .is_empty(),
        "B's timer lease is intact"
    );
    assert!(
        store
            .complete_timer(tm.timer_id, tb[0].lease, at(secs(32)))
            .await
            .expect("complete_timer failed"),
        "the current holder fires the timer"
    );
    assert!(
        store
            .claim_timers(at(secs(86_400)), lease, 10)
            .await
            .expect("claim_timers failed")
            .is_empty(),
        "a fired timer is never claimed again"
    );
}

/// Waits until one whole short `wait_for_work` passes quietly. Backends may wake once
/// spuriously (when they start listening, or from the permit a signal leaves for a waiter
/// that was busy), which the contract allows; the wake-up test must start after that.
async fn settle<S: EventStore>(store: &S) {
    use std::time::Instant;
    let quiet = Duration::from_millis(300);
    for _ in 0..20 {
        let started = Instant::now();
        store.wait_for_work(quiet).await;
        let took = started.elapsed();
        assert!(
            took < quiet + secs(5),
            "wait_for_work({quiet:?}) took {took:?}: the timeout must bound it"
        );
        if took >= quiet - Duration::from_millis(50) {
            return;
        }
    }
    panic!("wait_for_work never waited out its timeout with nothing to do");
}

/// `wait_for_work` ends at its timeout when nothing happens, and promptly when this handle
/// appends an effect or a timer.
pub async fn wait_for_work_wakes_on_append<S: EventStore>(store: S) {
    use std::time::Instant;
    for (what, with_timer) in [("an effect", false), ("a timer", true)] {
        settle(&store).await;
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                store.wait_for_work(secs(30)).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiter.is_finished(),
            "wait_for_work returned with nothing appended"
        );
        let mut req = request(new_stream(), 0, 1);
        if with_timer {
            req.timers.push(timer(at(secs(5))));
        } else {
            req.effects.push(effect(T0));
        }
        let appended = Instant::now();
        append_ok(&store, req, "an append adding work").await;
        let waited = tokio::time::timeout(secs(10), waiter)
            .await
            .unwrap_or_else(|_| panic!("wait_for_work did not wake after {what} was appended"))
            .expect("waiter task panicked");
        let latency = appended.elapsed();
        assert!(
            latency < Duration::from_millis(500),
            "wait_for_work woke {latency:?} after appending {what} (waited {waited:?}); \
             expected well under 500 ms"
        );
    }
}

/// R16 and R44 read a subject's journeys: only that subject's, only those updated since the
/// given time, newest first, with their failure counts.
pub async fn journeys_by_subject<S: EventStore>(store: S) {
    let (a, b, c, d) = (new_stream(), new_stream(), new_stream(), new_stream());
    let rows = [
        (a, Some("subject-1"), 1, 2),
        (b, Some("subject-1"), 5, 3),
        (c, Some("subject-2"), 6, 4),
        (d, None, 7, 0),
    ];
    for (stream, subject, updated, failures) in rows {
        let mut req = request(stream, 0, 1);
        req.summary = JourneySummary {
            updated_at: at(secs(updated)),
            subject: subject.map(str::to_owned),
            failures,
            ..summary(stream, 1)
        };
        append_ok(&store, req, "a journey with a subject").await;
    }
    let found = store
        .journeys_by_subject("subject-1", at(secs(0)))
        .await
        .expect("journeys_by_subject failed");
    assert_eq!(
        found
            .iter()
            .map(|s| (s.journey_id, s.failures))
            .collect::<Vec<_>>(),
        vec![(b, 3), (a, 2)],
        "the subject's journeys, newest first, failures intact"
    );
    assert_eq!(found[0].subject.as_deref(), Some("subject-1"));
    let recent = store
        .journeys_by_subject("subject-1", at(secs(5)))
        .await
        .expect("journeys_by_subject failed");
    assert_eq!(
        recent.iter().map(|s| s.journey_id).collect::<Vec<_>>(),
        vec![b],
        "`since` is inclusive and excludes older updates"
    );
    assert!(
        store
            .journeys_by_subject("subject-3", at(secs(0)))
            .await
            .expect("journeys_by_subject failed")
            .is_empty()
    );
}

/// Concurrent outbox completions are each answered as if alone, however a backend groups
/// them: the holder of the current token completes, a stale token or an unknown id does
/// not, and the same token twice completes once. `n` entries (a multiple of 50), completed
/// concurrently with their current token, a sixth of them also with a stale one and another
/// sixth twice, plus one unknown id. Returns how many completions were attempted.
pub async fn concurrent_completions<S: EventStore>(store: S, n: usize) -> usize {
    for _ in 0..n / 50 {
        let mut req = request(new_stream(), 0, 1);
        req.effects = (0..50).map(|_| effect(T0)).collect();
        assert!(
            matches!(store.append(req).await, Ok(AppendResult::Committed { .. })),
            "append 50 effects"
        );
    }
    let lease = secs(30);
    let first = store.claim_effects(T0, lease, n).await.expect("claim");
    assert_eq!(first.len(), n);
    // The first claims lapse; a second claim takes every entry over with a new token.
    let later = at(secs(31));
    let current = store.claim_effects(later, lease, n).await.expect("reclaim");
    assert_eq!(current.len(), n);
    let stale: HashMap<Uuid, Timestamp> = first.iter().map(|e| (e.effect_id, e.lease)).collect();

    let mut tasks = JoinSet::new();
    for (i, entry) in current.iter().enumerate() {
        let (id, token) = (entry.effect_id, entry.lease);
        let attempts: Vec<(Timestamp, &str)> = match i % 6 {
            0 => vec![(stale[&id], "stale"), (token, "current")],
            1 => vec![(token, "current"), (token, "repeat")],
            _ => vec![(token, "current")],
        };
        for (token, what) in attempts {
            let store = store.clone();
            tasks.spawn(async move {
                let done = store
                    .complete_effect(id, token, later)
                    .await
                    .expect("complete_effect failed");
                (id, what, done)
            });
        }
    }
    let unknown = {
        let store = store.clone();
        let token = current[0].lease;
        tokio::spawn(async move { store.complete_effect(Uuid::new_v4(), token, later).await })
    };
    let mut completed_by: HashMap<Uuid, Vec<&str>> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (id, what, done) = joined.expect("completion task panicked");
        if what == "stale" {
            assert!(!done, "a stale token completed {id}");
        }
        if done {
            completed_by.entry(id).or_default().push(what);
        }
    }
    assert!(
        !unknown
            .await
            .expect("task")
            .expect("complete_effect failed"),
        "an unknown id completed"
    );
    assert_eq!(completed_by.len(), n, "every entry completed by its holder");
    for (id, by) in &completed_by {
        assert_eq!(by.len(), 1, "{id} completed more than once: {by:?}");
    }
    assert!(
        store
            .claim_effects(at(secs(120)), lease, n)
            .await
            .expect("claim")
            .is_empty(),
        "completed entries are never claimed again"
    );
    n + n / 6 * 2 + 1
}

/// `get_many` answers what `get` answers for each id, in one read: existing accounts once
/// each however often they are named, unknown ids left out, nothing for no ids.
pub async fn directory_get_many<D: passage_core::ports::AccountDirectory>(
    dir: D,
    existing: &[&str],
) {
    assert!(
        dir.get_many(&[]).await.expect("no ids").is_empty(),
        "no ids, no accounts"
    );
    let mut asked: Vec<&str> = existing.to_vec();
    asked.extend_from_slice(existing);
    asked.push("no-such-account");
    let mut found = dir.get_many(&asked).await.expect("get_many");
    found.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    let mut expected = Vec::new();
    for id in existing {
        expected.push(
            dir.get(id)
                .await
                .expect("get")
                .expect("an existing account"),
        );
    }
    expected.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    expected.dedup_by(|a, b| a.account_id == b.account_id);
    assert_eq!(
        found, expected,
        "each existing account once, unknown ids left out"
    );
    let unknown = dir
        .get_many(&["no-such-account", "nor-this-one"])
        .await
        .expect("unknown ids");
    assert!(unknown.is_empty(), "unknown ids find nothing: {unknown:?}");
}

/// Sessions and password order for an existing account `account_id` whose password was
/// never reset: a later reset wins whatever order resets are applied in (attack 15); R45
/// revokes every session but the resetting journey's; sign-out revokes one.
pub async fn directory_sessions<D: passage_core::ports::AccountDirectory>(
    dir: D,
    account_id: &str,
) {
    use passage_core::ports::Session;
    let session = |hash: &str, journey: Option<&str>| Session {
        session_hash: hash.into(),
        account_id: account_id.into(),
        journey_id: journey.map(str::to_owned),
        kind: if journey.is_some() {
            "recovery"
        } else {
            "sign-in"
        }
        .into(),
        amr: if journey.is_some() {
            "email-otp sms-otp"
        } else {
            "pwd"
        }
        .into(),
        created_at: T0,
        expires_at: at(secs(3600)),
        revoked_at: None,
        // Sign-ins remember which password they were verified against.
        password_fp: journey.is_none().then(|| "9f86d081884c7d65".to_owned()),
    };
    // A later reset's recovery session, created after this reset completed (at 20 s).
    let later = Session {
        created_at: at(secs(25)),
        ..session("h-later-reset", Some("j-2"))
    };
    for s in [
        session("h-old", None),
        session("h-other-tab", None),
        session("h-reset", Some("j-1")),
        later,
    ] {
        dir.create_session(&s).await.expect("create_session failed");
    }
    let found = dir
        .find_session("h-reset")
        .await
        .expect("find_session failed")
        .expect("the session exists");
    assert_eq!(found, session("h-reset", Some("j-1")));
    let signed_in = dir
        .find_session("h-old")
        .await
        .expect("find_session failed")
        .expect("the session exists");
    assert_eq!(
        signed_in,
        session("h-old", None),
        "a sign-in keeps its password fingerprint"
    );
    assert!(found.is_live(at(secs(10))));
    assert!(!found.is_live(at(secs(3600))), "expired at expires_at");
    assert_eq!(dir.find_session("h-none").await.expect("find"), None);

    assert!(
        dir.set_password_hash(account_id, "$argon2id$later", at(secs(20)))
            .await
            .expect("set_password_hash failed")
    );
    assert!(
        !dir.set_password_hash(account_id, "$argon2id$earlier", at(secs(10)))
            .await
            .expect("set_password_hash failed"),
        "a reset completed earlier does not overwrite a later one"
    );
    assert_eq!(
        dir.password_hash(account_id)
            .await
            .expect("password_hash")
            .as_deref(),
        Some("$argon2id$later")
    );

    let revoked = dir
        .revoke_sessions(
            account_id,
            Some("j-1"),
            at(secs(20)),
            at(secs(30)),
            "password-reset",
        )
        .await
        .expect("revoke_sessions failed");
    assert_eq!(revoked, 2, "every session but the reset's own");
    for h in ["h-old", "h-other-tab"] {
        let s = dir
            .find_session(h)
            .await
            .expect("find")
            .expect("kept for audit");
        assert_eq!(s.revoked_at, Some(at(secs(30))));
        assert!(!s.is_live(at(secs(31))));
    }
    assert!(
        dir.find_session("h-reset")
            .await
            .expect("find")
            .expect("exists")
            .is_live(at(secs(31)))
    );
    assert!(
        dir.find_session("h-later-reset")
            .await
            .expect("find")
            .expect("exists")
            .is_live(at(secs(31))),
        "a recovery session created after this reset completed is a later reset's: kept"
    );
    dir.revoke_session("h-reset", at(secs(40)), "sign-out")
        .await
        .expect("revoke_session failed");
    assert!(
        !dir.find_session("h-reset")
            .await
            .expect("find")
            .expect("exists")
            .is_live(at(secs(41)))
    );
    assert_eq!(
        dir.revoke_sessions(account_id, None, at(secs(50)), at(secs(50)), "again")
            .await
            .expect("revoke"),
        1,
        "then only the later reset's session was left to revoke"
    );
}

/// A completing append's recovery session (`AppendRequest::session`) is stored in the
/// append's transaction: found once the append commits, never written by a duplicate or a
/// conflict, and when it cannot be stored (a colliding hash) the append fails with it,
/// events and all, while the appends it shared a batch with commit. With
/// `writes_queue_behind_appends` (the store's directory writes go through its append
/// writer, in order), a revocation queued right after such an append sees its session,
/// even when both share one transaction. (Session rows reference accounts by id only, so
/// no account rows are needed.)
pub async fn completing_appends_store_their_sessions<S>(store: S, writes_queue_behind_appends: bool)
where
    S: EventStore + passage_core::ports::AccountDirectory + Clone + 'static,
{
    use passage_core::ports::Session;
    let accounts = ["acct-a", "acct-b"];
    let session = |hash: &str, account: &str, journey: JourneyId| Session {
        session_hash: hash.into(),
        account_id: account.into(),
        journey_id: Some(journey.to_string()),
        kind: "recovery".into(),
        amr: "email-otp sms-otp".into(),
        created_at: at(secs(5)),
        expires_at: at(secs(3600)),
        revoked_at: None,
        password_fp: None,
    };
    let found = |store: S, hash: String| async move {
        match store.find_session(&hash).await {
            Ok(s) => s,
            Err(e) => panic!("find_session({hash}) failed: {e}"),
        }
    };

    // Committed: the session is there, as given.
    let stream = new_stream();
    let mut req = request(stream, 0, 2);
    let first = session("h-completed", accounts[0], stream);
    req.session = Some(first.clone());
    let retry = AppendRequest {
        session: Some(session("h-retried", accounts[0], stream)),
        ..req.clone()
    };
    append_ok(&store, req, "a completing append").await;
    assert_eq!(
        found(store.clone(), "h-completed".into()).await,
        Some(first),
        "the session commits with the events"
    );
    // A retry of the same command is a duplicate: its session is not stored.
    assert!(matches!(
        append_ok(&store, retry, "the completing command repeated").await,
        AppendResult::Duplicate { .. }
    ));
    assert_eq!(found(store.clone(), "h-retried".into()).await, None);
    // A stale append writes neither its events nor its session.
    let mut stale = request(stream, 0, 1);
    stale.session = Some(session("h-stale", accounts[0], stream));
    assert_conflict(
        store.append(stale).await,
        stream,
        0,
        2,
        "an append behind the stream",
    );
    assert_eq!(found(store.clone(), "h-stale".into()).await, None);

    // A session that cannot be stored fails its append, events and all; appends queued
    // with it commit with their sessions.
    let mut tasks = JoinSet::new();
    let colliding = new_stream();
    let mut streams = Vec::new();
    for i in 0..16 {
        let stream = if i == 7 { colliding } else { new_stream() };
        streams.push(stream);
        let hash = if i == 7 {
            "h-completed".to_owned()
        } else {
            format!("h-batch-{i}")
        };
        let mut req = request(stream, 0, 1);
        req.session = Some(session(&hash, accounts[i % 2], stream));
        let store = store.clone();
        tasks.spawn(async move { (i, store.append(req).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.expect("append task panicked");
        match (i, result) {
            (7, Err(StoreError::Rejected(_))) => {}
            (7, other) => panic!("a colliding session must reject its append, got {other:?}"),
            (_, Ok(AppendResult::Committed { .. })) => {}
            (i, other) => panic!("append {i} beside the rejected one: {other:?}"),
        }
    }
    assert!(
        stream_of(&store, colliding).await.is_empty(),
        "the rejected append wrote no events"
    );
    for (i, stream) in streams.iter().enumerate().filter(|(i, _)| *i != 7) {
        assert_eq!(stream_of(&store, *stream).await.len(), 1);
        let s = found(store.clone(), format!("h-batch-{i}")).await;
        assert_eq!(
            s.map(|s| s.journey_id),
            Some(Some(stream.to_string())),
            "append {i}'s session"
        );
    }
    assert_eq!(
        found(store.clone(), "h-completed".into())
            .await
            .map(|s| s.journey_id),
        Some(Some(stream.to_string())),
        "the colliding append did not overwrite the first session"
    );

    if !writes_queue_behind_appends {
        return;
    }
    // A revocation queued right behind a completing append of the same account, up to a
    // time after the session was made, revokes that session, whichever batch each lands in.
    // One account per pair (sessions need no account row), so only its own revocation can
    // revoke a pair's session.
    let mut pairs = JoinSet::new();
    for i in 0..24 {
        let store = store.clone();
        let account = format!("pair-{i}");
        pairs.spawn(async move {
            let stream = new_stream();
            let mut req = request(stream, 0, 1);
            let hash = format!("h-pair-{i}");
            req.session = Some(Session {
                created_at: at(secs(100 + i as u64)),
                ..session(&hash, &account, stream)
            });
            let appended = store.append(req);
            let revoked =
                store.revoke_sessions(&account, None, at(secs(200)), at(secs(300)), "test");
            // `join!` polls in order: the append is queued before the revocation.
            let (appended, revoked) = tokio::join!(appended, revoked);
            appended.expect("the completing append");
            assert_eq!(
                revoked.expect("the revocation"),
                1,
                "pair {i}: rows revoked"
            );
            (i, hash)
        });
    }
    while let Some(joined) = pairs.join_next().await {
        let (i, hash) = joined.expect("pair task panicked");
        let s = found(store.clone(), hash)
            .await
            .expect("the pair's session");
        assert!(
            s.revoked_at.is_some(),
            "pair {i}: the revocation queued after the append saw its session"
        );
    }
}

/// The head of the log and checkpoints: `head` is the last event's position and hash;
/// checkpoints are kept once per position, listed oldest first.
pub async fn checkpoints_roundtrip<S: EventStore>(store: S) {
    use passage_core::ports::Checkpoint;
    assert_eq!(store.head().await.expect("head failed"), None, "empty log");
    let stream = new_stream();
    append_ok(&store, request(stream, 0, 3), "three events").await;
    let all = store.read_all(0, 10).await.expect("read_all failed");
    let last = all.last().expect("events");
    assert_eq!(
        store.head().await.expect("head failed"),
        Some((last.position, last.hash))
    );
    let c = |position: u64, hash| Checkpoint {
        position,
        hash,
        created_at: at(secs(position)),
        public_key: "ab".repeat(32),
        signature: "cd".repeat(64),
    };
    store
        .save_checkpoint(&c(3, last.hash))
        .await
        .expect("save failed");
    store
        .save_checkpoint(&c(1, all[0].hash))
        .await
        .expect("save failed");
    store
        .save_checkpoint(&c(3, last.hash))
        .await
        .expect("saving the same checkpoint again is fine");
    assert_eq!(
        store.checkpoints().await.expect("checkpoints failed"),
        vec![c(1, all[0].hash), c(3, last.hash)]
    );
}

/// `claim_effects_except` leaves the skipped kind pending for another worker.
pub async fn claim_skips_a_kind<S: EventStore>(store: S) {
    let stream = new_stream();
    let mut req = request(stream, 0, 1);
    req.effects = vec![
        NewEffect {
            effect_id: Uuid::new_v4(),
            kind: "raise-alert".into(),
            payload: "{}".into(),
            available_at: T0,
        },
        NewEffect {
            effect_id: Uuid::new_v4(),
            kind: "send-code".into(),
            payload: "{}".into(),
            available_at: T0,
        },
    ];
    append_ok(&store, req, "two effects").await;
    let now = at(secs(1));
    let claimed = store
        .claim_effects_except(now, secs(30), 10, "raise-alert")
        .await
        .expect("claim failed");
    assert_eq!(
        claimed.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["send-code"]
    );
    let rest = store
        .claim_effects(now, secs(30), 10)
        .await
        .expect("claim failed");
    assert_eq!(
        rest.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        vec!["raise-alert"],
        "the skipped entry is still there for a worker that takes it"
    );
}

/// `claim_journey_effects` and `claim_journey_timers` take one journey's due work only,
/// honour the skipped kind, and leave every other journey's work pending for the workers.
pub async fn claim_one_journey<S: EventStore>(store: S) {
    let (mine, theirs) = (new_stream(), new_stream());
    for (stream, why) in [(mine, "mine"), (theirs, "theirs")] {
        let mut req = request(stream, 0, 1);
        let mut alert = effect(T0);
        alert.kind = "raise-alert".into();
        req.effects = vec![effect(T0), alert];
        req.timers = vec![timer(T0)];
        append_ok(&store, req, why).await;
    }
    let now = at(secs(1));
    let claimed = store
        .claim_journey_effects(mine, now, secs(30), 10, Some("raise-alert"))
        .await
        .expect("claim failed");
    assert_eq!(
        claimed
            .iter()
            .map(|e| (e.stream, e.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![(mine, "send_email")]
    );
    let alerts = store
        .claim_journey_effects(mine, now, secs(30), 10, None)
        .await
        .expect("claim failed");
    assert_eq!(
        alerts
            .iter()
            .map(|e| (e.stream, e.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![(mine, "raise-alert")]
    );
    let timers = store
        .claim_journey_timers(mine, now, secs(30), 10)
        .await
        .expect("claim failed");
    assert_eq!(
        timers.iter().map(|t| t.stream).collect::<Vec<_>>(),
        vec![mine]
    );
    let rest = store
        .claim_effects(now, secs(30), 10)
        .await
        .expect("claim failed");
    assert_eq!(rest.len(), 2, "the other journey's entries: {rest:?}");
    assert!(rest.iter().all(|e| e.stream == theirs));
    let rest = store
        .claim_timers(now, secs(30), 10)
        .await
        .expect("claim failed");
    assert_eq!(
        rest.iter().map(|t| t.stream).collect::<Vec<_>>(),
        vec![theirs]
    );
}

/// Crypto-shredding (ADR 0005): a key kept with the first append stays the first one, an
/// erasure destroys it once, scrubs the journey's row, deletes its outbox entries and
/// timers, leaves the chain intact, and an erased key is never brought back by a later
/// append. Retention lists only finished journeys older than its cut-off, not yet erased.
pub async fn personal_data_keys<S: EventStore>(store: S) {
    use passage_core::ports::StoredDataKey;
    let a = new_stream();
    let legacy = new_stream();
    assert_eq!(store.journey_key(a).await.expect("journey_key"), None);

    let mut first = request(a, 0, 2);
    first.data_key = Some("wrapped-1".into());
    first.effects = vec![effect(at(secs(1)))];
    first.timers = vec![timer(at(secs(60)))];
    first.summary.subject = Some("subject-a".into());
    append_ok(&store, first, "first append with a key").await;
    let mut second = request(a, 2, 1);
    second.data_key = Some("wrapped-2".into());
    append_ok(&store, second, "a later key is ignored").await;
    assert_eq!(
        store.journey_key(a).await.expect("journey_key"),
        Some(StoredDataKey::Live("wrapped-1".into())),
        "the first key stays"
    );
    append_ok(&store, request(legacy, 0, 1), "a journey without a key").await;

    let erased = store
        .erase_journey(a, "request #1", at(secs(5)))
        .await
        .expect("erase_journey");
    assert!(erased.key_destroyed, "{erased:?}");
    assert_eq!((erased.outbox_deleted, erased.timers_deleted), (1, 1));
    assert_eq!(
        store.journey_key(a).await.expect("journey_key"),
        Some(StoredDataKey::Erased)
    );
    let again = store
        .erase_journey(a, "again", at(secs(6)))
        .await
        .expect("erase twice");
    assert!(!again.key_destroyed, "nothing left to destroy: {again:?}");
    let mut late = request(a, 3, 1);
    late.data_key = Some("wrapped-3".into());
    late.summary.email_masked = None;
    append_ok(&store, late, "an append after erasure").await;
    assert_eq!(
        store.journey_key(a).await.expect("journey_key"),
        Some(StoredDataKey::Erased),
        "an erased key is never replaced"
    );
    let row = store
        .list_journeys(JourneyFilter::default())
        .await
        .expect("list")
        .into_iter()
        .find(|j| j.journey_id == a)
        .expect("the erased journey is still listed");
    assert_eq!(
        (row.email_masked, row.subject),
        (None, None),
        "row scrubbed"
    );
    assert!(
        store
            .journeys_by_subject("subject-a", T0)
            .await
            .expect("by subject")
            .is_empty()
    );
    assert!(
        claim(&store, at(secs(3600)), secs(30)).await.is_empty(),
        "nothing left to send about the person"
    );
    let mut verifier = Verifier::new();
    for e in read_everything(&store, 100).await {
        verifier
            .check(&e)
            .expect("the chain verifies after erasure");
    }

    let legacy_erased = store
        .erase_journey(legacy, "legacy", at(secs(7)))
        .await
        .expect("erase a journey without a key");
    assert!(!legacy_erased.key_destroyed);
    assert_eq!(
        store.journey_key(legacy).await.expect("journey_key"),
        Some(StoredDataKey::Erased)
    );

    // Retention: finished (by status) and started before the cut-off, not erased yet.
    let finished = |status: &str, started: u64| {
        let s = new_stream();
        let mut r = request(s, 0, 1);
        r.data_key = Some(format!("key-{s}"));
        r.summary.status = status.into();
        r.summary.started_at = at(secs(started));
        r.summary.updated_at = at(secs(1000));
        (s, r)
    };
    let (old_done, r1) = finished("completed", 10);
    let (old_failed, r2) = finished("failed", 20);
    let (old_active, r3) = finished("active", 10);
    let (new_done, r4) = finished("completed", 500);
    for r in [r1, r2, r3, r4] {
        append_ok(&store, r, "a journey for retention").await;
    }
    let due = store
        .retention_due(at(secs(100)), 10)
        .await
        .expect("retention_due");
    assert_eq!(due, vec![old_done, old_failed], "oldest first");
    assert!(!due.contains(&old_active) && !due.contains(&new_done));
    assert_eq!(
        store.retention_due(at(secs(100)), 1).await.expect("limit"),
        vec![old_done]
    );
    store
        .erase_journey(old_done, "retention", at(secs(200)))
        .await
        .expect("erase");
    assert_eq!(
        store.retention_due(at(secs(100)), 10).await.expect("again"),
        vec![old_failed],
        "erased journeys are done with"
    );
    store.purge_erased().await.expect("purge_erased");
}

/// Send budgets shared by two handles on one database (two nodes, or `serve` and `bot` on
/// one file; `a` and `b` may be the same handle where only one can exist): a budget admits
/// exactly `max` distinct messages per window whoever charges them and however they race, a
/// retry of a counted message is free, a refused charge counts against none of its budgets,
/// and a window that has passed frees the budget.
pub async fn send_budgets(a: crate::AnyStore, b: crate::AnyStore) {
    use crate::BudgetCharge;
    let hour = secs(3600);
    let budget = |key: &str, max: u32| BudgetCharge {
        key: key.to_owned(),
        max,
        window: hour,
    };
    let recipient = budget("recipient", 5);
    let global = budget("global", 1000);

    // 40 distinct messages race over both handles for a budget of 5.
    let mut racing = JoinSet::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let charges = vec![recipient.clone(), global.clone()];
        racing.spawn(async move {
            let token = Uuid::new_v4();
            let spent = store
                .charge_budgets(T0, token, &charges)
                .await
                .expect("charge");
            (token, spent)
        });
    }
    let mut admitted = Vec::new();
    while let Some(joined) = racing.join_next().await {
        let (token, spent) = joined.expect("charging task");
        match spent {
            None => admitted.push(token),
            Some(i) => assert_eq!(i, 0, "only the recipient budget can be spent"),
        }
    }
    assert_eq!(
        admitted.len(),
        5,
        "a budget of 5 admits exactly 5 of 40 racing messages across both handles"
    );

    // A retry of a counted message passes (on either handle) and counts nothing more.
    for store in [&a, &b] {
        assert_eq!(
            store
                .charge_budgets(at(secs(60)), admitted[0], std::slice::from_ref(&recipient))
                .await
                .expect("retry"),
            None,
            "a retry of a counted message is admitted"
        );
    }
    assert_eq!(
        b.charge_budgets(
            at(secs(60)),
            Uuid::new_v4(),
            std::slice::from_ref(&recipient)
        )
        .await
        .expect("charge"),
        Some(0),
        "the retries did not free or add a place"
    );

    // A refused charge counts against none of its budgets: `fresh` still has all 3 places.
    let fresh = budget("fresh", 3);
    assert_eq!(
        a.charge_budgets(
            at(secs(60)),
            Uuid::new_v4(),
            &[fresh.clone(), recipient.clone()]
        )
        .await
        .expect("charge"),
        Some(1),
        "the index of the spent budget"
    );
    for n in 0..3 {
        assert_eq!(
            b.charge_budgets(at(secs(61)), Uuid::new_v4(), std::slice::from_ref(&fresh))
                .await
                .expect("charge"),
            None,
            "place {n} of 3 was not taken by the refused charge"
        );
    }

    // A budget of 0 admits nothing; no budgets at all admits everything.
    assert_eq!(
        a.charge_budgets(T0, Uuid::new_v4(), &[global.clone(), budget("closed", 0)])
            .await
            .expect("charge"),
        Some(1)
    );
    assert_eq!(
        a.charge_budgets(T0, Uuid::new_v4(), &[])
            .await
            .expect("charge"),
        None
    );

    // Nothing has left its window yet: a sweep keeps every row.
    assert_eq!(b.sweep_budgets(at(secs(61))).await.expect("sweep"), 0);

    // The window slides: an hour after the first five the budget has room again, and a
    // message counted in the old window, whose row is still there, is counted anew in the
    // new one (its row moves to now).
    let later = T0.plus(hour + Duration::from_millis(1));
    assert_eq!(
        a.charge_budgets(later, admitted[0], std::slice::from_ref(&recipient))
            .await
            .expect("charge"),
        None
    );
    for _ in 0..4 {
        assert_eq!(
            b.charge_budgets(later, Uuid::new_v4(), std::slice::from_ref(&recipient))
                .await
                .expect("charge"),
            None
        );
    }
    assert_eq!(
        a.charge_budgets(later, Uuid::new_v4(), std::slice::from_ref(&recipient))
            .await
            .expect("charge"),
        Some(0),
        "the earlier message counts again in the new window: 1 + 4 = 5"
    );
    // A sweep (the explicit one, or one a charge ran) keeps the current window's rows.
    b.sweep_budgets(later).await.expect("sweep");
    assert_eq!(
        b.charge_budgets(later, Uuid::new_v4(), std::slice::from_ref(&recipient))
            .await
            .expect("charge"),
        Some(0),
        "the current window's rows are kept"
    );

    // Once every window has passed, a sweep leaves nothing behind.
    let end = T0.plus(hour * 3);
    assert!(a.sweep_budgets(end).await.expect("sweep") > 0);
    assert_eq!(b.sweep_budgets(end).await.expect("sweep"), 0);
}
