//! The runtime against the real SQLite store: races, idempotency, timers, retries.

use passage_channels::DevOutbox;
use passage_core::definition::load;
use passage_core::journey::{JourneyEvent, Reply, Status};
use passage_core::ports::{
    Account, Channel, DirectoryError, EventStore, OutboundMessage, Receipt, SendError, Session,
};
use passage_core::secrets::{Argon2id, Keys};
use passage_core::time::Timestamp;
use passage_runtime::{
    Actor, Engine, EngineOptions, Input, ManualClock, Worker, WorkerOptions, delivery_budget,
};
use passage_store::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const SEED: &str = include_str!("../../../workflows/password-reset.toml");

struct Fixture {
    dir: PathBuf,
    engine: Engine<SqliteStore, SqliteStore>,
    clock: ManualClock,
    outbox: DevOutbox,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alice() -> Account {
    Account {
        account_id: "acct-alice".into(),
        email: "alice@example.com".into(),
        display_name: "Alice Nguyen".into(),
        phone: Some("+61412345678".into()),
        enabled: true,
    }
}

/// An engine on `store` and `directory` with the tests' keys, light hashing and `clock`.
fn engine_on<D: passage_core::ports::AccountDirectory>(
    store: SqliteStore,
    directory: D,
    clock: &ManualClock,
) -> Engine<SqliteStore, D> {
    engine_with_secret(store, directory, clock, b"runtime test secret")
}

/// [`engine_on`] with keys derived from `secret`.
fn engine_with_secret<D: passage_core::ports::AccountDirectory>(
    store: SqliteStore,
    directory: D,
    clock: &ManualClock,
    secret: &[u8],
) -> Engine<SqliteStore, D> {
    Engine::new(
        store,
        directory,
        Arc::new(clock.clone()),
        EngineOptions {
            keys: Keys::derive(secret),
            hasher: Argon2id::new(256, 1, 1),
        },
    )
}

async fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("passage-runtime-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("passage.db")).await.unwrap();
    store
        .insert_account_if_missing(&alice(), "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
        .await
        .unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_795_000_000_000));
    let engine = engine_on(store.clone(), store, &clock);
    engine
        .register(load("password-reset.toml", SEED).unwrap())
        .await
        .unwrap();
    let outbox = DevOutbox::open(&dir.join("outbox.db")).await.unwrap();
    Fixture {
        dir,
        engine,
        clock,
        outbox,
    }
}

fn worker<C: Channel>(f: &Fixture, channel: C) -> Worker<SqliteStore, SqliteStore, C> {
    Worker::new(f.engine.clone(), channel, WorkerOptions::default())
}

async fn started(f: &Fixture) -> passage_core::ports::JourneyId {
    started_on(&f.engine).await
}

/// A journey for Alice, past the email step.
async fn started_on<D: passage_core::ports::AccountDirectory>(
    engine: &Engine<SqliteStore, D>,
) -> passage_core::ports::JourneyId {
    let o = engine
        .start("password-reset", Actor::person("test"), None)
        .await
        .unwrap();
    let o = engine
        .submit(
            o.journey_id,
            Input::Email("alice@example.com".into()),
            Actor::person("test"),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(o.reply, Reply::Accepted { .. }));
    o.journey_id
}

async fn events(f: &Fixture, id: passage_core::ports::JourneyId) -> Vec<JourneyEvent> {
    f.engine
        .store()
        .read_stream(id)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_guesses_are_all_counted_and_stop_at_the_limit() {
    // Attack case 6 / R13: 50 concurrent wrong submissions let at most 5 reach the comparison.
    let f = fixture("guesses").await;
    let id = started(&f).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let engine = f.engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .submit(
                    id,
                    Input::Code(format!("{:06}", 999_000 + i)),
                    Actor::person("test"),
                    None,
                )
                .await
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        if let Reply::Rejected(r) = t.await.unwrap().unwrap().reply {
            codes.push(r.code);
        }
    }
    let evs = events(&f, id).await;
    let attempts = evs
        .iter()
        .filter(|e| matches!(e, JourneyEvent::CodeAttemptFailed { .. }))
        .count();
    assert_eq!(attempts, 5, "exactly the limit of attempts was judged");
    assert_eq!(codes.len(), 50, "every guess was refused");
    assert_eq!(
        codes.iter().filter(|c| *c == "too-many-attempts").count(),
        1
    );
    let (state, _, _) = f.engine.load(id).await.unwrap();
    assert_eq!(state.status, Status::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_submit_of_the_right_code_succeeds_once() {
    // Attack case 13 / R9, R31.
    let f = fixture("double").await;
    let id = started(&f).await;
    worker(&f, f.outbox.clone()).drain().await.unwrap();
    let code = f
        .outbox
        .latest(id, "email")
        .await
        .unwrap()
        .unwrap()
        .code()
        .unwrap();
    let a = f
        .engine
        .submit(id, Input::Code(code.clone()), Actor::person("tab-1"), None);
    let b = f
        .engine
        .submit(id, Input::Code(code.clone()), Actor::person("tab-2"), None);
    let (a, b) = tokio::join!(a, b);
    let replies = [a.unwrap().reply, b.unwrap().reply];
    let ok = replies
        .iter()
        .filter(|r| matches!(r, Reply::Accepted { .. }))
        .count();
    assert_eq!(ok, 1, "one success, one clean refusal: {replies:?}");
    let verified = events(&f, id)
        .await
        .iter()
        .filter(|e| matches!(e, JourneyEvent::CodeVerified { .. }))
        .count();
    assert_eq!(verified, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_command_id_returns_the_first_outcome() {
    let f = fixture("idempotent").await;
    let id = started(&f).await;
    let cmd = uuid::Uuid::new_v4();
    let first = f
        .engine
        .submit(
            id,
            Input::Code("000000".into()),
            Actor::person("t"),
            Some(cmd),
        )
        .await
        .unwrap();
    let again = f
        .engine
        .submit(
            id,
            Input::Code("000000".into()),
            Actor::person("t"),
            Some(cmd),
        )
        .await
        .unwrap();
    assert!(first.fresh);
    assert!(!again.fresh);
    assert_eq!(first.reply, again.reply);
    let attempts = events(&f, id)
        .await
        .iter()
        .filter(|e| matches!(e, JourneyEvent::CodeAttemptFailed { .. }))
        .count();
    assert_eq!(attempts, 1, "the retry was not counted as a second attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_timers_fire_when_due_and_not_before() {
    let f = fixture("timers").await;
    let id = started(&f).await;
    let w = worker(&f, f.outbox.clone());
    let r = w.drain().await.unwrap();
    assert_eq!(
        (r.delivered, r.timers_fired),
        (1, 0),
        "the email goes out; no timer is due yet"
    );
    f.clock.advance(Duration::from_secs(5 * 60));
    let r = w.drain().await.unwrap();
    assert_eq!(r.timers_fired, 1, "the code expiry timer fired at 5:00");
    assert!(matches!(
        events(&f, id).await.last(),
        Some(JourneyEvent::CodeExpired { issue: 1, .. })
    ));
    f.clock.advance(Duration::from_secs(10 * 60));
    let r = w.drain().await.unwrap();
    assert_eq!(
        r.timers_fired, 1,
        "the journey lifetime timer fired at 15:00"
    );
    let (state, _, _) = f.engine.load(id).await.unwrap();
    assert_eq!(state.status, Status::Expired);
    assert_eq!(
        f.engine.store().next_due().await.unwrap(),
        None,
        "nothing left pending"
    );
}

/// Fails the first `failures` deliveries with the given error, then delegates.
#[derive(Clone)]
struct Flaky<C> {
    inner: C,
    failures: Arc<AtomicU32>,
    permanent: bool,
}

impl<C: Channel> Channel for Flaky<C> {
    async fn deliver(&self, m: &OutboundMessage) -> Result<Receipt, SendError> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(if self.permanent {
                SendError::Permanent("550 mailbox unavailable".into())
            } else {
                SendError::Transient("connection reset".into())
            });
        }
        self.inner.deliver(m).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_backoff_and_recorded() {
    let f = fixture("retry").await;
    let id = started(&f).await;
    let flaky = Flaky {
        inner: f.outbox.clone(),
        failures: Arc::new(AtomicU32::new(2)),
        permanent: false,
    };
    let w = worker(&f, flaky);
    let r = w.drain().await.unwrap();
    assert_eq!(
        (r.delivered, r.retried),
        (0, 1),
        "first failure is rescheduled, not retried at once"
    );
    f.clock.advance(Duration::from_secs(3));
    assert_eq!(
        w.drain().await.unwrap().retried,
        1,
        "second attempt fails too"
    );
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        w.drain().await.unwrap().delivered,
        0,
        "backoff grows: not yet due after 1 s"
    );
    f.clock.advance(Duration::from_secs(10));
    assert_eq!(w.drain().await.unwrap().delivered, 1);
    let evs = events(&f, id).await;
    let failed = evs
        .iter()
        .filter(|e| {
            matches!(
                e,
                JourneyEvent::MessageFailed {
                    permanent: false,
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 2);
    assert!(
        evs.iter()
            .any(|e| matches!(e, JourneyEvent::MessageDelivered { .. }))
    );
    assert_eq!(
        f.outbox.counts().await.unwrap(),
        (1, 0),
        "delivered exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_stop_at_once_and_show_on_the_journey() {
    let f = fixture("permanent").await;
    let id = started(&f).await;
    let flaky = Flaky {
        inner: f.outbox.clone(),
        failures: Arc::new(AtomicU32::new(1)),
        permanent: true,
    };
    let w = worker(&f, flaky);
    assert_eq!(w.drain().await.unwrap().failed, 1);
    f.clock.advance(Duration::from_secs(600));
    let r = w.drain().await.unwrap();
    assert_eq!(r.delivered, 0, "a dead entry is not retried");
    let (state, _, _) = f.engine.load(id).await.unwrap();
    assert_eq!(state.delivery_failures, 1);
    assert!(events(&f, id).await.iter().any(|e| matches!(
        e,
        JourneyEvent::MessageFailed {
            permanent: true,
            ..
        }
    )));
}

/// A provider that accepts the connection and never answers.
#[derive(Clone)]
struct Silent;

impl Channel for Silent {
    async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
        std::future::pending().await
    }
}

/// A delivery still waiting when the lease lapses would be made again by another node
/// while the first may still succeed: the worker gives up at 3/4 of its lease and records a
/// transient failure while the entry is still its own, and the retry is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_without_an_answer_is_given_up_before_the_lease_lapses() {
    let f = fixture("silent").await;
    let id = started(&f).await;
    let lease = Duration::from_secs(4);
    let options = WorkerOptions {
        lease,
        ..WorkerOptions::default()
    };
    let silent = Worker::new(f.engine.clone(), Silent, options.clone());
    let began = std::time::Instant::now();
    // Bounded here too, so that a worker that never gives up fails the test, not hangs it.
    let r = tokio::time::timeout(lease * 2, silent.pass())
        .await
        .expect("the worker was still waiting on the provider after twice its lease")
        .unwrap();
    let took = began.elapsed();
    assert_eq!((r.delivered, r.retried), (0, 1), "{r:?}");
    assert!(
        took >= delivery_budget(lease) && took < lease,
        "gave up after {took:?}, lease {lease:?}"
    );
    // The timeline opens the sealed error (delivery errors are personal fields, R49).
    let failure = f
        .engine
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.event {
            Some(JourneyEvent::MessageFailed {
                error, permanent, ..
            }) => Some((error, permanent)),
            _ => None,
        })
        .expect("the failure is on the journey");
    assert!(
        failure
            .0
            .contains("no answer from the provider within 3000 ms")
            && !failure.1,
        "{failure:?}"
    );
    // Rescheduled by backoff, not left to the lease: nobody claims it before it is due.
    let healthy = Worker::new(f.engine.clone(), f.outbox.clone(), options);
    assert_eq!(healthy.pass().await.unwrap().delivered, 0);
    f.clock.advance(Duration::from_secs(3));
    assert_eq!(healthy.drain().await.unwrap().delivered, 1);
    assert_eq!(f.outbox.counts().await.unwrap(), (1, 0), "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_committed_before_a_crash_are_delivered_after_restart() {
    // The process "dies" between commit and dispatch: nothing was delivered. A new engine and
    // worker on the same file deliver it.
    let f = fixture("restart").await;
    let id = started(&f).await;
    let db = f.dir.join("passage.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let engine = engine_on(store.clone(), store, &f.clock);
    let w = Worker::new(engine, f.outbox.clone(), WorkerOptions::default());
    assert_eq!(w.drain().await.unwrap().delivered, 1);
    let m = f
        .outbox
        .latest(id, "email")
        .await
        .unwrap()
        .expect("the email arrived after restart");
    assert!(m.code().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_delivers_promptly_and_stops_cleanly() {
    let f = fixture("run").await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = tokio::spawn(worker(&f, f.outbox.clone()).run(rx));
    let id = started(&f).await;
    let mut found = None;
    for _ in 0..100 {
        if let Some(m) = f.outbox.latest(id, "email").await.unwrap() {
            found = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        found.is_some(),
        "the worker delivered within 2 s of the commit"
    );
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("stops within 5 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_database_settle_races_by_optimistic_concurrency() {
    // Two engines with their own store handles stand for two processes: their per-process
    // queues do not see each other, so conflicting appends must be retried on fresh state.
    let f = fixture("two-engines").await;
    let id = started(&f).await;
    let store_b = SqliteStore::open(&f.dir.join("passage.db")).await.unwrap();
    let engine_b = engine_on(store_b.clone(), store_b, &f.clock);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let engine = if i % 2 == 0 {
            f.engine.clone()
        } else {
            engine_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            engine
                .submit(
                    id,
                    Input::Code(format!("{:06}", 998_000 + i)),
                    Actor::person("t"),
                    None,
                )
                .await
        }));
    }
    for t in tasks {
        let outcome = t
            .await
            .unwrap()
            .expect("conflicts are retried, not surfaced");
        assert!(matches!(outcome.reply, Reply::Rejected(_)));
    }
    let evs = events(&f, id).await;
    let attempts = evs
        .iter()
        .filter(|e| matches!(e, JourneyEvent::CodeAttemptFailed { .. }))
        .count();
    assert_eq!(attempts, 5, "R13 holds across processes");
    let versions: Vec<u64> = f
        .engine
        .store()
        .read_stream(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "no lost or duplicated event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_is_answered_exactly_like_a_missing_one() {
    // R1: same reply, same view, nothing sent.
    let f = fixture("disabled").await;
    let dave = Account {
        account_id: "acct-dave".into(),
        email: "dave@example.com".into(),
        display_name: "Dave".into(),
        phone: Some("+61400000004".into()),
        enabled: false,
    };
    f.engine
        .store()
        .insert_account_if_missing(&dave, "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
        .await
        .unwrap();
    let mut views = Vec::new();
    for email in ["dave@example.com", "dora@example.com"] {
        let o = f
            .engine
            .start("password-reset", Actor::person("t"), None)
            .await
            .unwrap();
        let o = f
            .engine
            .submit(
                o.journey_id,
                Input::Email(email.into()),
                Actor::person("t"),
                None,
            )
            .await
            .unwrap();
        assert!(matches!(o.reply, Reply::Accepted { .. }));
        views.push(serde_json::to_value(&o.view).unwrap());
    }
    // The masked address differs (it is the address typed); everything else is identical.
    for v in &mut views {
        v["step"]["sent_to"] = serde_json::Value::Null;
        v["expires_at"] = serde_json::Value::Null;
        v["step"]["expires_at"] = serde_json::Value::Null;
        v["step"]["resend_available_at"] = serde_json::Value::Null;
    }
    assert_eq!(views[0], views[1]);
    let r = worker(&f, f.outbox.clone()).drain().await.unwrap();
    assert_eq!(r.delivered, 0, "nothing is sent to a disabled account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_setting_the_password_change_it_once() {
    // R31 / attack case 14: concurrent set-password in one journey gives one change, and a
    // replay of the completing command mints no second session.
    let f = fixture("two-tabs").await;
    let id = started(&f).await;
    let w = worker(&f, f.outbox.clone());
    w.drain().await.unwrap();
    let code = f
        .outbox
        .latest(id, "email")
        .await
        .unwrap()
        .unwrap()
        .code()
        .unwrap();
    f.engine
        .submit(id, Input::Code(code), Actor::person("t"), None)
        .await
        .unwrap();
    f.engine
        .submit(id, Input::Choose("sms".into()), Actor::person("t"), None)
        .await
        .unwrap();
    w.drain().await.unwrap();
    let sms = f
        .outbox
        .latest(id, "sms")
        .await
        .unwrap()
        .unwrap()
        .code()
        .unwrap();
    f.engine
        .submit(id, Input::Code(sms), Actor::person("t"), None)
        .await
        .unwrap();
    let pw = |p: &str| Input::Password {
        new: p.into(),
        confirm: p.into(),
    };
    let cmd = uuid::Uuid::new_v4();
    let a = f.engine.submit(
        id,
        pw("lantern harbour velvet comet"),
        Actor::person("tab-1"),
        Some(cmd),
    );
    let b = f.engine.submit(
        id,
        pw("meadow copper violet glacier"),
        Actor::person("tab-2"),
        None,
    );
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    let tokens = [&a.reply, &b.reply]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Reply::Accepted {
                    session_token: Some(_)
                }
            )
        })
        .count();
    assert_eq!(
        tokens, 1,
        "exactly one tab succeeds: {:?} / {:?}",
        a.reply, b.reply
    );
    // The winner's token opens a recovery session, stored with the completing events.
    let token = [&a.reply, &b.reply]
        .into_iter()
        .find_map(|r| match r {
            Reply::Accepted {
                session_token: Some(t),
            } => Some(t.clone()),
            _ => None,
        })
        .expect("one token");
    let hash = passage_core::secrets::session_hash(&token);
    let session = passage_core::ports::AccountDirectory::find_session(f.engine.directory(), &hash)
        .await
        .unwrap()
        .expect("the token's session is stored");
    assert_eq!(session.kind, "recovery");
    assert_eq!(session.amr, "email-otp sms-otp");
    assert_eq!(session.journey_id, Some(id.to_string()));
    assert!(session.is_live(f.engine.now()));
    let changes = events(&f, id)
        .await
        .iter()
        .filter(|e| matches!(e, JourneyEvent::PasswordChanged { .. }))
        .count();
    assert_eq!(changes, 1);
    let replay = f
        .engine
        .submit(
            id,
            pw("lantern harbour velvet comet"),
            Actor::person("tab-1"),
            Some(cmd),
        )
        .await
        .unwrap();
    assert!(!replay.fresh);
    assert!(
        !matches!(
            replay.reply,
            Reply::Accepted {
                session_token: Some(_)
            }
        ),
        "a replayed command never hands out a session"
    );
}

/// Chat-ops stall detection with an injected clock: a journey idle past its step's
/// `stall_after` is nudged, then alerted once, the alert is refreshed (same dedup key, not a
/// second alert) on the next scan, an acknowledgement stops escalation, and scans cost
/// nothing for healthy journeys.
#[tokio::test]
async fn a_stalled_journey_is_nudged_then_alerted_once_then_updated_and_ack_stops_it() {
    let f = fixture("stall").await;
    let w = worker(&f, f.outbox.clone());
    let escalate = Duration::from_secs(600);
    // `started` answers the email step for alice.
    let id = started(&f).await;
    w.drain().await.unwrap();
    let types = |id| {
        let f = &f;
        async move {
            f.engine
                .timeline(id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
        }
    };
    let scan = || f.engine.scan_stalls(f.engine.now(), escalate, 100);

    f.clock.advance(Duration::from_secs(179));
    assert_eq!(scan().await.unwrap().due, 0, "not stalled before 3 minutes");
    f.clock.advance(Duration::from_secs(1));
    let r = scan().await.unwrap();
    assert_eq!((r.due, r.handled), (1, 1));
    assert!(types(id).await.contains(&"PersonNudged".to_owned()));
    w.drain().await.unwrap();
    let nudge = f.outbox.latest(id, "email").await.unwrap().unwrap();
    assert!(
        nudge
            .subject
            .as_deref()
            .unwrap_or("")
            .contains("still resetting"),
        "{nudge:?}"
    );
    assert_eq!(
        scan().await.unwrap().due,
        0,
        "the next look is one stall_after later"
    );

    f.clock.advance(Duration::from_secs(180));
    assert_eq!(scan().await.unwrap().handled, 1);
    w.drain().await.unwrap();
    let alerts = |id| {
        let f = &f;
        async move {
            f.outbox
                .list(&passage_channels::MessageFilter {
                    journey: Some(id),
                    channel: Some("support".into()),
                    limit: 0,
                })
                .await
                .unwrap()
        }
    };
    let first = alerts(id).await;
    assert_eq!(first.len(), 1, "one alert");
    let key = first[0].recipient.clone();
    assert_eq!(
        key,
        format!("{id}:email-code"),
        "dedup key: journey and step"
    );
    assert!(
        first[0].body.contains("a•••e@e•••.com"),
        "masked only: {}",
        first[0].body
    );
    assert!(!first[0].body.contains("alice@example.com"));

    f.clock.advance(Duration::from_secs(180));
    assert_eq!(scan().await.unwrap().handled, 1);
    w.drain().await.unwrap();
    let t = types(id).await;
    assert_eq!(
        t.iter().filter(|e| *e == "SupportAlerted").count(),
        1,
        "{t:?}"
    );
    assert_eq!(
        t.iter().filter(|e| *e == "SupportAlertUpdated").count(),
        1,
        "{t:?}"
    );
    let after_update = alerts(id).await;
    assert_eq!(after_update.len(), 2);
    assert!(
        after_update.iter().all(|m| m.recipient == key),
        "updates reuse the key"
    );

    // Support acknowledges: recorded with the actor, and no escalation follows.
    f.engine
        .submit(
            id,
            Input::AcknowledgeAlert,
            Actor::support("discord:42", "discord"),
            None,
        )
        .await
        .unwrap();
    let ack = f
        .engine
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "SupportAlertAcknowledged")
        .expect("ack recorded");
    assert_eq!(ack.actor.and_then(|a| a.id).as_deref(), Some("discord:42"));
    f.clock.advance(Duration::from_secs(900));
    assert_eq!(scan().await.unwrap().due, 0, "acknowledged: no more scans");
    assert!(
        !types(id)
            .await
            .contains(&"SupportAlertEscalated".to_owned())
    );
    // A second acknowledgement is refused, not recorded twice.
    let again = f
        .engine
        .submit(
            id,
            Input::AcknowledgeAlert,
            Actor::support("discord:43", "discord"),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(again.reply, Reply::Rejected(_)));
}

#[tokio::test]
async fn an_unacknowledged_alert_escalates_once_and_person_activity_restarts_the_clock() {
    let f = fixture("escalate").await;
    let w = worker(&f, f.outbox.clone());
    let escalate = Duration::from_secs(300);
    let id = started(&f).await;
    w.drain().await.unwrap();
    // Deliveries are not progress; a wrong code is.
    f.clock.advance(Duration::from_secs(170));
    f.engine
        .submit(id, Input::Code("000000".into()), Actor::person("web"), None)
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(170));
    let scan = || f.engine.scan_stalls(f.engine.now(), escalate, 100);
    assert_eq!(
        scan().await.unwrap().due,
        0,
        "the wrong code restarted the clock"
    );
    f.clock.advance(Duration::from_secs(10));
    assert_eq!(scan().await.unwrap().handled, 1, "nudge");
    f.clock.advance(Duration::from_secs(180));
    assert_eq!(scan().await.unwrap().handled, 1, "alert");
    f.clock.advance(Duration::from_secs(180));
    assert_eq!(
        scan().await.unwrap().handled,
        1,
        "update (3 min < 5 min escalation)"
    );
    f.clock.advance(Duration::from_secs(180));
    assert_eq!(scan().await.unwrap().handled, 1, "escalation");
    w.drain().await.unwrap();
    let t: Vec<String> = f
        .engine
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        t.iter().filter(|e| *e == "SupportAlertEscalated").count(),
        1,
        "{t:?}"
    );
    f.clock.advance(Duration::from_secs(180));
    assert_eq!(
        scan().await.unwrap().due,
        0,
        "escalated: nothing more to do"
    );

    // An unknown address is never nudged or alerted on (R1).
    let unknown = f
        .engine
        .start("password-reset", Actor::person("web"), None)
        .await
        .unwrap()
        .journey_id;
    f.engine
        .submit(
            unknown,
            Input::Email("nobody@example.com".into()),
            Actor::person("web"),
            None,
        )
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(3600));
    assert_eq!(scan().await.unwrap().due, 0);
}

/// An SMS (here: the email) that cannot be delivered is alerted at once, without waiting
/// for the step's stall_after and without a pointless nudge.
#[tokio::test]
async fn an_undeliverable_message_alerts_support_at_once() {
    let f = fixture("undeliverable").await;
    let id = started(&f).await;
    let broken = Flaky {
        inner: f.outbox.clone(),
        failures: Arc::new(AtomicU32::new(1)),
        permanent: true,
    };
    worker(&f, broken).drain().await.unwrap();
    let r = f
        .engine
        .scan_stalls(f.engine.now(), Duration::from_secs(600), 100)
        .await
        .unwrap();
    assert_eq!(r.handled, 1, "due at once");
    let events = events(&f, id).await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, JourneyEvent::PersonNudged { .. }))
    );
    let reason = events
        .iter()
        .find_map(|e| match e {
            JourneyEvent::SupportAlerted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("alerted");
    assert!(reason.contains("could not be delivered"), "{reason}");
}

/// The real directory, except that reading several accounts at once fails (`None`: a
/// directory outage hitting the worker's batch read) or takes the given time.
#[derive(Clone)]
struct BatchRead(SqliteStore, Option<Duration>);

impl passage_core::ports::AccountDirectory for BatchRead {
    async fn find_by_email(&self, email: &str) -> Result<Option<Account>, DirectoryError> {
        self.0.find_by_email(email).await
    }
    async fn get(&self, account_id: &str) -> Result<Option<Account>, DirectoryError> {
        self.0.get(account_id).await
    }
    async fn get_many(&self, ids: &[&str]) -> Result<Vec<Account>, DirectoryError> {
        match self.1 {
            Some(slow) => {
                tokio::time::sleep(slow).await;
                self.0.get_many(ids).await
            }
            None => Err(DirectoryError("the directory timed out".into())),
        }
    }
    async fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        changed_at: Timestamp,
    ) -> Result<bool, DirectoryError> {
        self.0.set_password_hash(account_id, phc, changed_at).await
    }
    async fn password_hash(&self, account_id: &str) -> Result<Option<String>, DirectoryError> {
        passage_core::ports::AccountDirectory::password_hash(&self.0, account_id).await
    }
    async fn create_session(&self, session: &Session) -> Result<(), DirectoryError> {
        self.0.create_session(session).await
    }
    async fn find_session(&self, hash: &str) -> Result<Option<Session>, DirectoryError> {
        self.0.find_session(hash).await
    }
    async fn revoke_sessions(
        &self,
        account_id: &str,
        keep_journey: Option<&str>,
        recovery_until: Timestamp,
        now: Timestamp,
        reason: &str,
    ) -> Result<u64, DirectoryError> {
        self.0
            .revoke_sessions(account_id, keep_journey, recovery_until, now, reason)
            .await
    }
    async fn revoke_session(
        &self,
        hash: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<(), DirectoryError> {
        self.0.revoke_session(hash, now, reason).await
    }
    async fn erase_account(&self, account_id: &str) -> Result<bool, DirectoryError> {
        self.0.erase_account(account_id).await
    }
}

/// When the worker's one read of a batch's accounts fails, each delivery looks its account
/// up alone: the code still goes out, rather than the whole batch waiting for its leases to
/// lapse, or worse, the accounts looking missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_read_of_accounts_falls_back_to_one_read_per_delivery() {
    let f = fixture("batch-read").await;
    let store = f.engine.store().clone();
    let engine = engine_on(store.clone(), BatchRead(store, None), &f.clock);
    engine
        .register(load("password-reset.toml", SEED).unwrap())
        .await
        .unwrap();
    let id = started_on(&engine).await;
    let w = Worker::new(engine, f.outbox.clone(), WorkerOptions::default());
    let report = w.drain().await.unwrap();
    assert_eq!((report.delivered, report.failed), (1, 0), "{report:?}");
    let m = f
        .outbox
        .latest(id, "email")
        .await
        .unwrap()
        .expect("the code email went out");
    assert_eq!(m.recipient, "alice@example.com");
    assert!(m.code().is_some());
}

/// R44 with a clock that does not move: a journey started before the reset completed is a
/// leftover and is cancelled, one started after it is a new request and stays open, even
/// when both start in the very millisecond of the completion (the log orders them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_started_in_the_millisecond_of_a_reset_are_ordered_by_the_log() {
    let f = fixture("same-ms").await;
    let w = worker(&f, f.outbox.clone());
    let code = |channel: &'static str, id| {
        let outbox = f.outbox.clone();
        async move {
            outbox
                .latest(id, channel)
                .await
                .unwrap()
                .and_then(|m| m.code())
                .expect("a code")
        }
    };
    let person = || Actor::person("t");
    let a = started(&f).await;
    w.drain().await.unwrap();
    f.engine
        .submit(a, Input::Code(code("email", a).await), person(), None)
        .await
        .unwrap();
    f.engine
        .submit(a, Input::Choose("sms".into()), person(), None)
        .await
        .unwrap();
    w.drain().await.unwrap();
    f.engine
        .submit(a, Input::Code(code("sms", a).await), person(), None)
        .await
        .unwrap();
    let before = started(&f).await;
    let pw = "lantern harbour velvet comet";
    let done = f
        .engine
        .submit(
            a,
            Input::Password {
                new: pw.into(),
                confirm: pw.into(),
            },
            person(),
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(
            done.reply,
            Reply::Accepted {
                session_token: Some(_)
            }
        ),
        "{:?}",
        done.reply
    );
    let after = started(&f).await;
    w.drain().await.unwrap();
    let status = |id| {
        let engine = f.engine.clone();
        async move { engine.load(id).await.unwrap().0.status }
    };
    assert_eq!(
        status(before).await,
        Status::Cancelled,
        "a leftover is cancelled"
    );
    assert_eq!(
        status(after).await,
        Status::Active,
        "a new request stays open"
    );
}

/// Counts the calls made to it, and accepts each.
#[derive(Clone, Default)]
struct Counting(Arc<std::sync::atomic::AtomicU32>);

impl Channel for Counting {
    async fn deliver(&self, _: &OutboundMessage) -> Result<Receipt, SendError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Receipt {
            provider_ref: "counted".into(),
        })
    }
}

/// The budget counts from the claim: when the account read before the send has used it up,
/// the provider is not called at all (the call would be cut off at once, and behind a
/// circuit breaker it could take the one probe), and the delivery is retried later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_spent_before_the_send_calls_no_provider() {
    let f = fixture("spent-budget").await;
    let store = f.engine.store().clone();
    let lease = Duration::from_millis(200);
    let engine = engine_on(
        store.clone(),
        BatchRead(store, Some(delivery_budget(lease) * 2)),
        &f.clock,
    );
    engine
        .register(load("password-reset.toml", SEED).unwrap())
        .await
        .unwrap();
    let id = started_on(&engine).await;
    let calls = Counting::default();
    let options = WorkerOptions {
        lease,
        ..WorkerOptions::default()
    };
    let report = Worker::new(engine.clone(), calls.clone(), options)
        .pass()
        .await
        .unwrap();
    assert_eq!((report.delivered, report.retried), (0, 1), "{report:?}");
    assert_eq!(calls.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    let error = engine
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.event {
            Some(JourneyEvent::MessageFailed { error, .. }) => Some(error),
            _ => None,
        })
        .expect("the failure is on the journey");
    assert!(
        error.contains("no answer from the provider within 150 ms of the claim"),
        "{error}"
    );
}

/// Passes messages on to the dev outbox and notes each one's channel and `notice` flag.
#[derive(Clone)]
struct Noting<C>(C, Arc<std::sync::Mutex<Vec<(&'static str, bool)>>>);

impl<C: Channel> Channel for Noting<C> {
    async fn deliver(&self, m: &OutboundMessage) -> Result<Receipt, SendError> {
        self.1.lock().unwrap().push((m.kind.channel(), m.notice));
        self.0.deliver(m).await
    }
}

/// R46: of everything a reset sends, only "your password was changed" is a notice (the one
/// message no per-recipient budget may hold back); codes are not.
#[tokio::test]
async fn only_the_password_changed_email_is_a_notice() {
    let f = fixture("notice").await;
    let id = started(&f).await;
    let noted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let w = worker(&f, Noting(f.outbox.clone(), noted.clone()));
    let latest = |channel: &'static str| {
        let outbox = f.outbox.clone();
        async move {
            outbox
                .latest(id, channel)
                .await
                .unwrap()
                .unwrap()
                .code()
                .unwrap()
        }
    };
    w.drain().await.unwrap();
    let submit = |input: Input| f.engine.submit(id, input, Actor::person("t"), None);
    submit(Input::Code(latest("email").await)).await.unwrap();
    submit(Input::Choose("sms".into())).await.unwrap();
    w.drain().await.unwrap();
    submit(Input::Code(latest("sms").await)).await.unwrap();
    submit(Input::Password {
        new: "lantern harbour velvet comet".into(),
        confirm: "lantern harbour velvet comet".into(),
    })
    .await
    .unwrap();
    w.drain().await.unwrap();
    let noted = noted.lock().unwrap().clone();
    assert_eq!(
        noted,
        vec![("email", false), ("sms", false), ("email", true)],
        "the email code, the SMS code, then the notice"
    );
}

/// A journey this engine cannot record outcomes on (here: started by a node with another
/// secret, whose codes it cannot unseal nor its personal data unwrap) must not become a
/// poison entry that fails every pass and comes back every lease forever: the entry is
/// retried with backoff, counted, and given up after the worker's attempts, and its
/// journey's timers, which can never fire either, are given up at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_outcome_cannot_be_recorded_is_retried_then_given_up() {
    let f = fixture("poison").await;
    let foreign = engine_with_secret(
        f.engine.store().clone(),
        f.engine.store().clone(),
        &f.clock,
        b"another deployment's secret",
    );
    foreign
        .register(load("password-reset.toml", SEED).unwrap())
        .await
        .unwrap();
    let poisoned = started_on(&foreign).await;
    let w = worker(&f, f.outbox.clone());
    let options = WorkerOptions::default();
    for attempt in 1..=options.max_attempts {
        let r = w.pass().await.expect("the pass itself succeeds");
        let last = attempt == options.max_attempts;
        assert_eq!(
            (r.delivered, r.retried, r.failed),
            (0, u32::from(!last) as usize, usize::from(last)),
            "attempt {attempt}"
        );
        // Past any backoff (at most five minutes and a quarter).
        f.clock.advance(Duration::from_secs(400));
    }
    assert_eq!(
        f.engine.store().next_due().await.unwrap(),
        None,
        "given up: nothing of it is left pending"
    );
    assert_eq!(
        w.pass().await.unwrap().delivered + w.pass().await.unwrap().retried,
        0,
        "and it is not claimed again"
    );
    assert!(
        f.outbox
            .list(&passage_channels::MessageFilter {
                journey: Some(poisoned),
                channel: None,
                limit: 10,
            })
            .await
            .unwrap()
            .is_empty(),
        "nothing was sent for the journey this deployment cannot read"
    );
    assert_eq!(events(&f, poisoned).await.len(), 3, "its log is untouched");

    // A message that needs nothing sealed (support's nudge) is sent, but its outcome
    // cannot be recorded either: the entry is completed all the same, not sent again.
    let nudged = started_on(&foreign).await;
    foreign
        .submit(
            nudged,
            Input::Nudge,
            Actor::support("desk-1", "console"),
            None,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        let _ = w.pass().await;
        f.clock.advance(Duration::from_secs(400));
    }
    let sent = f
        .outbox
        .list(&passage_channels::MessageFilter {
            journey: Some(nudged),
            channel: None,
            limit: 10,
        })
        .await
        .unwrap();
    let deliveries: Vec<i64> = sent.iter().map(|m| m.deliveries).collect();
    assert_eq!(
        deliveries,
        [1],
        "the nudge went out once, over three passes past any backoff (the code, which \
         cannot be unsealed, never): {sent:#?}"
    );

    // Meanwhile the pass goes on for everyone else: a code of this deployment's journey is
    // sent in the same pass as a poisoned entry is put off.
    let ok = started(&f).await;
    let _ = started_on(&foreign).await;
    let r = w.pass().await.expect("the pass succeeds");
    assert_eq!(r.delivered, 1, "{r:?}");
    assert!(r.retried >= 1, "the poisoned entries are put off: {r:?}");
    assert!(
        events(&f, ok).await.len() > 3,
        "this deployment's code was recorded"
    );
}
