//! The serenity transport against a fake Discord REST API (axum on 127.0.0.1), reached with
//! `HttpBuilder::proxy(..)` + `ratelimiter_disabled(true)`. Interactions are built from JSON
//! fixtures with the fields serenity requires; the tests assert the exact routes and bodies
//! sent: `flags: 64`, custom ids, `allowed_mentions`, and that no code or password appears.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use passage_channels::DevOutbox;
use passage_core::definition::load;
use passage_core::ports::{Account, JourneyId, OutboundMessage};
use passage_core::secrets::{Argon2id, Keys};
use passage_core::time::Timestamp;
use passage_discord::{Discord, DiscordAlerts, DiscordConfig, WithDiscordAlerts};
use passage_runtime::{Engine, EngineOptions, ManualClock, Worker, WorkerOptions};
use passage_store::SqliteStore;
use serde_json::{Value, json};
use serenity::all::{ApplicationId, HttpBuilder, Interaction};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const APP: u64 = 900_000_000_000_000_001;
const GUILD: u64 = 900_000_000_000_000_002;
const SUPPORT_CHANNEL: u64 = 900_000_000_000_000_003;
const SUPPORT_ROLE: u64 = 900_000_000_000_000_004;
const PERSON: u64 = 900_000_000_000_000_010;
const AGENT: u64 = 900_000_000_000_000_011;
const OUTSIDER: u64 = 900_000_000_000_000_012;
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
    /// When the request arrived.
    at: std::time::Instant,
}

#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    next_id: Arc<AtomicU64>,
    /// Interaction callbacks still to refuse as Discord does a late one (404, code 10062).
    refuse_callbacks: Arc<AtomicU64>,
    /// Message edits still to refuse as Discord does for a deleted message (404, 10008).
    refuse_edits: Arc<AtomicU64>,
    /// Milliseconds every request to the support channel's messages takes to answer, as
    /// when Discord rate-limits the channel (serenity waits out the bucket).
    slow_support_ms: Arc<AtomicU64>,
}

fn message_json(id: u64, channel: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel,
        "author": {"id": APP.to_string(), "username": "passage", "discriminator": "0000", "avatar": null},
        "content": "", "timestamp": "2027-01-15T08:00:00.000000+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0
    })
}

async fn record(State(fake): State<Fake>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.calls.lock().unwrap().push(Call {
        method: method.to_string(),
        path: path.clone(),
        body,
        at: std::time::Instant::now(),
    });
    let slow = fake.slow_support_ms.load(Ordering::SeqCst);
    if slow > 0 && path.starts_with(&format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages")) {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    if path.ends_with("/callback") {
        let refuse = fake
            .refuse_callbacks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": "Unknown interaction", "code": 10062})),
            )
                .into_response();
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    if path == "/api/v10/users/@me/channels" {
        return axum::Json(
            json!({"id": "900000000000000777", "type": 1, "recipients": [
                {"id": PERSON.to_string(), "username": "p", "discriminator": "0000", "avatar": null}
            ]}),
        )
        .into_response();
    }
    if method == Method::PATCH
        && path.contains("/messages/")
        && fake
            .refuse_edits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Unknown Message", "code": 10008})),
        )
            .into_response();
    }
    let parts: Vec<&str> = path.split('/').collect();
    // PATCH /api/v10/channels/{c}/messages/{m}: the message keeps its id.
    let id = match (method.as_str(), parts.as_slice()) {
        ("PATCH", [.., "messages", mid]) => mid.parse().unwrap_or(1),
        _ => 1_000 + fake.next_id.fetch_add(1, Ordering::SeqCst),
    };
    let channel = match parts.as_slice() {
        [_, "api", "v10", "channels", c, ..] => (*c).to_owned(),
        _ => SUPPORT_CHANNEL.to_string(),
    };
    axum::Json(message_json(id, &channel)).into_response()
}

struct Harness {
    fake: Fake,
    discord: Arc<Discord<SqliteStore, SqliteStore>>,
    engine: Engine<SqliteStore, SqliteStore>,
    worker:
        Worker<SqliteStore, SqliteStore, WithDiscordAlerts<DevOutbox, SqliteStore, SqliteStore>>,
    outbox: DevOutbox,
    clock: ManualClock,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn harness(defer_after: Duration) -> Harness {
    let fake = Fake::default();
    let app = Router::new().fallback(record).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("passage-discord-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("passage.db")).await.unwrap();
    let account = Account {
        account_id: "acct-alice".into(),
        email: "alice@example.com".into(),
        display_name: "Alice Nguyen".into(),
        phone: Some("+61412345678".into()),
        enabled: true,
    };
    store
        .insert_account_if_missing(&account, "$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
        .await
        .unwrap();
    let clock = ManualClock::new(Timestamp(T0));
    let engine = Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(clock.clone()),
        EngineOptions {
            keys: Keys::derive(b"discord test secret"),
            hasher: Argon2id::new(256, 1, 1),
        },
    );
    let src = include_str!("../../../workflows/password-reset.toml");
    engine
        .register(load("password-reset.toml", src).unwrap())
        .await
        .unwrap();
    let http = HttpBuilder::new("fake-token")
        .proxy(format!("http://{addr}"))
        .ratelimiter_disabled(true)
        .application_id(ApplicationId::new(APP))
        .build();
    let config = DiscordConfig {
        token: "fake-token".into(),
        support_channel: SUPPORT_CHANNEL,
        support_role: SUPPORT_ROLE,
        public_url: "https://portal.example.com".into(),
        guild: None,
    };
    let discord = Discord::with_defer(Arc::new(http), engine.clone(), config, defer_after);
    let outbox = DevOutbox::open(&dir.join("outbox.db")).await.unwrap();
    let worker = Worker::new(
        engine.clone(),
        WithDiscordAlerts {
            channels: outbox.clone(),
            alerts: DiscordAlerts(discord.clone()),
        },
        WorkerOptions::default(),
    );
    Harness {
        fake,
        discord,
        engine,
        worker,
        outbox,
        clock,
        dir,
    }
}

impl Harness {
    fn calls(&self) -> Vec<Call> {
        self.fake.calls.lock().unwrap().clone()
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.fake.calls.lock().unwrap())
    }

    async fn interact(&self, fixture: Value) {
        let interaction: Interaction = serde_json::from_value(fixture).expect("fixture");
        self.discord.handle_interaction(interaction).await;
    }

    async fn code(&self, journey: JourneyId, channel: &str) -> String {
        self.worker.drain().await.unwrap();
        self.outbox
            .latest(journey, channel)
            .await
            .unwrap()
            .and_then(|m| m.code())
            .expect("a code in the dev outbox")
    }
}

fn user(id: u64) -> Value {
    json!({"id": id.to_string(), "username": format!("user{id}"), "discriminator": "0000",
           "global_name": null, "avatar": null})
}

fn member(id: u64, roles: &[u64]) -> Value {
    json!({"user": user(id), "roles": roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
           "joined_at": "2026-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false,
           "flags": 0, "nick": null, "avatar": null, "premium_since": null, "pending": false,
           "permissions": "0"})
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn base(kind: u8, who: u64, roles: &[u64], data: Value) -> (Value, String, String) {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let id = (800_000_000_000_000_000u64 + n).to_string();
    let token = format!("tok-{n}");
    let v = json!({
        "id": id, "application_id": APP.to_string(), "type": kind, "data": data,
        "guild_id": GUILD.to_string(), "channel_id": "900000000000000100",
        "member": member(who, roles), "token": token, "version": 1,
        "app_permissions": "0", "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {}, "context": 0,
        "attachment_size_limit": 10485760
    });
    (v, id, token)
}

/// `/reset` (type 2, APPLICATION_COMMAND), optionally with `email`.
fn reset_command(who: u64, email: Option<&str>) -> (Value, String, String) {
    let options = match email {
        Some(e) => json!([{"name": "email", "type": 3, "value": e}]),
        None => json!([]),
    };
    base(
        2,
        who,
        &[],
        json!({"id": "900000000000000200", "name": "reset", "type": 1, "options": options}),
    )
}

fn support_command(
    who: u64,
    roles: &[u64],
    name: &str,
    sub: &str,
    options: Value,
) -> (Value, String, String) {
    base(
        2,
        who,
        roles,
        json!({"id": "900000000000000201", "name": name, "type": 1,
               "options": [{"name": sub, "type": 1, "options": options}]}),
    )
}

/// A button press (type 3, MESSAGE_COMPONENT).
fn press(who: u64, roles: &[u64], custom_id: &str) -> (Value, String, String) {
    let (mut v, id, token) = base(
        3,
        who,
        roles,
        json!({"custom_id": custom_id, "component_type": 2}),
    );
    v["message"] = message_json(1, "900000000000000100");
    (v, id, token)
}

/// A modal submission (type 5, MODAL_SUBMIT).
fn submit(who: u64, custom_id: &str, value: &str) -> (Value, String, String) {
    base(
        5,
        who,
        &[],
        json!({"custom_id": custom_id, "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "value", "value": value}]}
        ]}),
    )
}

fn callback_path(id: &str, token: &str) -> String {
    format!("/api/v10/interactions/{id}/{token}/callback")
}

/// The one callback of an interaction.
fn callback<'a>(calls: &'a [Call], id: &str, token: &str) -> &'a Call {
    let path = callback_path(id, token);
    let found: Vec<&Call> = calls.iter().filter(|c| c.path == path).collect();
    assert_eq!(found.len(), 1, "exactly one callback to {path}: {calls:#?}");
    assert_eq!(found[0].method, "POST");
    found[0]
}

fn custom_ids(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let rows = body["components"].as_array().cloned().unwrap_or_default();
    for row in rows {
        for c in row["components"].as_array().cloned().unwrap_or_default() {
            if let Some(id) = c["custom_id"].as_str() {
                out.push(id.to_owned());
            }
        }
    }
    out
}

fn assert_ephemeral_message(call: &Call) -> &Value {
    assert_eq!(
        call.body["type"], 4,
        "a channel message response: {:#}",
        call.body
    );
    let data = &call.body["data"];
    assert_eq!(data["flags"], 64, "ephemeral: {data:#}");
    assert_eq!(data["allowed_mentions"]["parse"], json!([]), "{data:#}");
    data
}

fn assert_no_secret(calls: &[Call], secrets: &[&str]) {
    for c in calls {
        let text = c.body.to_string();
        for s in secrets {
            assert!(
                !text.contains(s),
                "{s:?} leaked in {} {}: {text}",
                c.method,
                c.path
            );
        }
    }
}

async fn journey_of_person(h: &Harness) -> JourneyId {
    let list = h
        .engine
        .store()
        .list_journeys(passage_core::ports::JourneyFilter {
            email_masked: None,
            status: None,
            definition_id: None,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    list.first().expect("a journey").journey_id
}

use passage_core::ports::EventStore as _;

#[tokio::test]
async fn reset_buttons_and_code_modal_are_ephemeral_and_never_echo_codes() {
    let h = harness(Duration::from_secs(5)).await;

    // /reset with the address: starts the journey and sends the email code.
    let (fx, id, token) = reset_command(PERSON, Some("alice@example.com"));
    h.interact(fx).await;
    let journey = journey_of_person(&h).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token)).clone();
    let ids = custom_ids(&data);
    assert!(
        ids.contains(&format!("passage:code:{journey}:email-code")),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("passage:resend:{journey}:email-code")),
        "{ids:?}"
    );
    assert!(
        !data.to_string().contains("alice@example.com"),
        "the address is masked"
    );

    // "Enter code" opens a modal (type 9) with one short input.
    let (fx, id, token) = press(PERSON, &[], &format!("passage:code:{journey}:email-code"));
    h.interact(fx).await;
    let calls = h.take();
    let modal = callback(&calls, &id, &token);
    assert_eq!(modal.body["type"], 9, "{:#}", modal.body);
    assert_eq!(
        modal.body["data"]["custom_id"],
        format!("passage:code:{journey}:email-code")
    );
    assert_eq!(
        modal.body["data"]["components"][0]["components"][0]["type"],
        4
    );

    // The modal comes back with the code: accepted, the choice of second factor follows.
    let email_code = h.code(journey, "email").await;
    let (fx, id, token) = submit(
        PERSON,
        &format!("passage:code:{journey}:email-code"),
        &email_code,
    );
    h.interact(fx).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token)).clone();
    let ids = custom_ids(&data);
    assert!(
        ids.contains(&format!("passage:choose:{journey}:sms")),
        "{ids:?}"
    );
    assert!(
        ids.contains(&format!("passage:choose:{journey}:call")),
        "{ids:?}"
    );
    assert_no_secret(&calls, &[&email_code]);

    // "Send SMS to my mobile".
    let (fx, id, token) = press(PERSON, &[], &format!("passage:choose:{journey}:sms"));
    h.interact(fx).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token)).clone();
    assert!(custom_ids(&data).contains(&format!("passage:code:{journey}:sms-code")));

    // The SMS code in the modal: the new password is asked for on the page, by link.
    let sms_code = h.code(journey, "sms").await;
    let (fx, id, token) = submit(
        PERSON,
        &format!("passage:code:{journey}:sms-code"),
        &sms_code,
    );
    h.interact(fx).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token)).clone();
    let link = data["components"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["components"].as_array().unwrap().clone())
        .find_map(|b| b["url"].as_str().map(str::to_owned))
        .expect("a link button");
    assert!(
        link.starts_with(&format!(
            "https://portal.example.com/reset/{journey}/continue?t="
        )),
        "{link}"
    );
    assert_no_secret(&calls, &[&sms_code, &email_code]);

    // A code typed into a modal for a step already left changes nothing.
    let before = h.engine.timeline(journey).await.unwrap().len();
    let (fx, id, token) = submit(
        PERSON,
        &format!("passage:code:{journey}:sms-code"),
        "123456",
    );
    h.interact(fx).await;
    let calls = h.take();
    assert_ephemeral_message(callback(&calls, &id, &token));
    assert_eq!(h.engine.timeline(journey).await.unwrap().len(), before);
}

#[tokio::test]
async fn reset_without_address_asks_in_a_modal_and_slow_engine_is_deferred() {
    let h = harness(Duration::ZERO).await;
    let (fx, id, token) = reset_command(PERSON, None);
    h.interact(fx).await;
    let calls = h.take();
    let modal = callback(&calls, &id, &token);
    assert_eq!(modal.body["type"], 9);
    assert_eq!(modal.body["data"]["custom_id"], "passage-discord:email");

    // The address comes back in the modal; with a zero budget the answer is deferred
    // (type 5, ephemeral) and then edits the original response.
    let (fx, id, token) = submit(PERSON, "passage-discord:email", "alice@example.com");
    h.interact(fx).await;
    let calls = h.take();
    let deferred = callback(&calls, &id, &token);
    assert_eq!(deferred.body["type"], 5, "{:#}", deferred.body);
    assert_eq!(deferred.body["data"]["flags"], 64);
    let edit = calls
        .iter()
        .find(|c| c.path == format!("/api/v10/webhooks/{APP}/{token}/messages/@original"))
        .expect("the deferred response edited");
    assert_eq!(edit.method, "PATCH");
    assert_eq!(edit.body["allowed_mentions"]["parse"], json!([]));
    assert!(
        custom_ids(&edit.body)
            .iter()
            .any(|c| c.starts_with("passage:code:")),
        "{:#}",
        edit.body
    );
    assert_no_secret(&calls, &["alice@example.com"]);
}

/// Discord shows no client address, so starts are limited per Discord user (the portal's
/// per-client limit, R17): past the budget a /reset or an email form starts nothing, with
/// the same words whatever the address; another user is not affected.
#[tokio::test]
async fn resets_started_from_discord_are_limited_per_user() {
    let h = harness(Duration::from_secs(5)).await;
    let count = || async {
        h.engine
            .store()
            .list_journeys(passage_core::ports::JourneyFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    for i in 0..passage_discord::STARTS_PER_USER {
        let email = if i % 2 == 0 {
            "alice@example.com"
        } else {
            "nobody@example.com"
        };
        let (fx, _, _) = reset_command(PERSON, Some(email));
        h.interact(fx).await;
    }
    assert_eq!(count().await, passage_discord::STARTS_PER_USER);
    h.take();
    let mut answers = Vec::new();
    for email in ["alice@example.com", "nobody@example.com"] {
        let (fx, id, token) = reset_command(PERSON, Some(email));
        h.interact(fx).await;
        let calls = h.take();
        let body = assert_ephemeral_message(callback(&calls, &id, &token)).clone();
        assert!(
            body["content"].as_str().is_some_and(
                |t| t.starts_with("You have started 5 password resets in the last 10 minutes.")
            ),
            "{body:#}"
        );
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1], "the same words for any address");
    // The email form counts too.
    let (fx, id, token) = submit(PERSON, "passage-discord:email", "alice@example.com");
    h.interact(fx).await;
    let calls = h.take();
    assert_ephemeral_message(callback(&calls, &id, &token));
    assert_eq!(
        count().await,
        passage_discord::STARTS_PER_USER,
        "nothing more started"
    );
    // Another user starts as usual.
    let (fx, _, _) = reset_command(OUTSIDER, Some("alice@example.com"));
    h.interact(fx).await;
    assert_eq!(count().await, passage_discord::STARTS_PER_USER + 1);
}

/// Discord refusing a deferral (the interaction came too late, or the network failed) must
/// not strand the press: the engine action finishes, and the same button works again
/// instead of answering "Already on it" until the bot restarts.
#[tokio::test]
async fn a_refused_deferral_does_not_lock_the_button() {
    let h = harness(Duration::ZERO).await;
    let (fx, _, _) = reset_command(PERSON, Some("alice@example.com"));
    h.interact(fx).await;
    let journey = journey_of_person(&h).await;
    h.take();
    let resend = format!("passage:resend:{journey}:email-code");
    // Past the resend cool-down, so the press appends (and waits for the write lock).
    h.clock.advance(Duration::from_secs(60));
    h.fake.refuse_callbacks.store(1, Ordering::SeqCst);
    // Another connection holds the write lock, so the engine's append waits and the press
    // outlasts the (zero) deferral budget: the deferral is sent, and refused.
    use sqlx::Connection as _;
    let mut blocker = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        h.dir.join("passage.db").display()
    ))
    .await
    .expect("a second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .expect("take the write lock");
    let (fx, _, _) = press(PERSON, &[], &resend);
    let first = h.interact(fx);
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT")
            .execute(&mut blocker)
            .await
            .expect("release the write lock");
    };
    tokio::join!(first, release);
    assert!(
        h.take()
            .iter()
            .any(|c| c.path.ends_with("/callback") && c.body["type"] == 5),
        "the first press was deferred"
    );
    let (fx, id, token) = press(PERSON, &[], &resend);
    h.interact(fx).await;
    let calls = h.take();
    let answered = calls
        .iter()
        .filter(|c| c.path == callback_path(&id, &token) || c.path.contains(&token))
        .map(|c| c.body.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !answered.is_empty(),
        "the second press was answered: {calls:#?}"
    );
    assert!(
        !answered.contains("Already on it"),
        "the first, refused press still holds the button: {answered}"
    );
}

/// Starts a journey from Discord and lets it stall until the engine raises its alert,
/// delivered by the worker to the support channel. Returns the journey and the alert's
/// message id.
async fn stalled(h: &Harness) -> (JourneyId, String) {
    let (fx, _, _) = reset_command(PERSON, Some("alice@example.com"));
    h.interact(fx).await;
    let journey = journey_of_person(h).await;
    h.worker.drain().await.unwrap();
    h.take();
    let post_path = format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages");
    for _ in 0..6 {
        h.clock.advance(Duration::from_secs(100));
        h.engine
            .scan_stalls(h.engine.now(), Duration::from_secs(600), 100)
            .await
            .unwrap();
        h.worker.drain().await.unwrap();
        let calls = h.calls();
        if let Some(post) = calls.iter().find(|c| c.path == post_path) {
            assert_eq!(post.method, "POST");
            let mid = match h
                .discord
                .alerts()
                .message_of(&format!("{journey}:email-code"))
                .await
            {
                Some(m) => m.to_string(),
                None => panic!("the alert's message id is remembered"),
            };
            return (journey, mid);
        }
    }
    panic!("no alert was posted: {:#?}", h.calls());
}

#[tokio::test]
async fn alert_is_posted_with_buttons_and_updated_in_place() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    let calls = h.take();
    let post = calls
        .iter()
        .find(|c| c.path == format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages"))
        .unwrap();
    // Nobody is pinged by a fresh alert.
    assert_eq!(
        post.body["allowed_mentions"],
        json!({"parse": [], "users": [], "roles": []})
    );
    let ids = custom_ids(&post.body);
    let key = format!("{journey}:email-code");
    assert_eq!(
        ids,
        vec![
            format!("passage:ack:{key}"),
            format!("passage:nudge:{key}"),
            format!("passage:show:{journey}"),
            format!("passage:cancel:{journey}"),
        ]
    );
    let labels: Vec<&str> = post.body["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["Acknowledge", "Nudge user", "Replay", "Cancel journey"]
    );

    // The engine escalates the alert: Discord notifies nobody of a mention added by an
    // edit, so the escalation is a new message in which only the support role may be
    // mentioned; later updates edit that one.
    let escalate = |text: &str, mention: bool| OutboundMessage {
        notice: false,
        idempotency_key: uuid::Uuid::new_v4(),
        journey_id: journey,
        kind: passage_core::ports::MessageKind::Alert {
            dedup_key: key.clone(),
            text: text.into(),
            update: true,
            mention,
            resolved: false,
        },
    };
    let receipt = passage_core::ports::Channel::deliver(
        &DiscordAlerts(h.discord.clone()),
        &escalate("Still waiting for the email code (escalated).", true),
    )
    .await
    .unwrap();
    assert_ne!(receipt.provider_ref, format!("discord-message:{mid}"));
    let calls = h.take();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].method, "POST");
    assert_eq!(
        calls[0].path,
        format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages")
    );
    assert_eq!(
        calls[0].body["allowed_mentions"],
        json!({"parse": [], "users": [], "roles": [SUPPORT_ROLE.to_string()]})
    );
    assert!(
        calls[0].body["content"]
            .as_str()
            .unwrap()
            .starts_with(&format!("<@&{SUPPORT_ROLE}>"))
    );
    // The message it replaces loses its buttons and points to the new one, so nobody acts
    // on a stale copy.
    assert_eq!(calls[1].method, "PATCH");
    assert_eq!(
        calls[1].path,
        format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages/{mid}")
    );
    assert_eq!(calls[1].body["components"], json!([]), "{:#?}", calls[1]);
    assert!(
        calls[1].body["content"]
            .as_str()
            .unwrap()
            .contains("continues in a newer message"),
        "{:#?}",
        calls[1]
    );
    assert_eq!(
        calls[1].body["allowed_mentions"],
        json!({"parse": [], "users": [], "roles": []})
    );
    let escalated = receipt
        .provider_ref
        .strip_prefix("discord-message:")
        .unwrap()
        .to_owned();
    passage_core::ports::Channel::deliver(
        &DiscordAlerts(h.discord.clone()),
        &escalate("Acknowledged.", false),
    )
    .await
    .unwrap();
    let calls = h.take();
    assert_eq!(calls[0].method, "PATCH");
    assert_eq!(
        calls[0].path,
        format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages/{escalated}")
    );
    assert_eq!(
        calls[0].body["allowed_mentions"],
        json!({"parse": [], "users": [], "roles": []})
    );
    // The escalated alert keeps showing whom it was escalated to; the edit pings nobody.
    assert!(
        calls[0].body["content"]
            .as_str()
            .unwrap()
            .starts_with(&format!("<@&{SUPPORT_ROLE}> ")),
        "{:#?}",
        calls[0]
    );
}

/// Someone deleted the alert's first message by hand: the escalation is still posted and
/// delivered; only retiring the old message fails, which fails nothing.
#[tokio::test]
async fn an_escalation_is_delivered_when_the_message_it_replaces_is_gone() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    h.take();
    h.fake.refuse_edits.store(1, Ordering::SeqCst);
    let key = format!("{journey}:email-code");
    let receipt = passage_core::ports::Channel::deliver(
        &DiscordAlerts(h.discord.clone()),
        &OutboundMessage {
            notice: false,
            idempotency_key: uuid::Uuid::new_v4(),
            journey_id: journey,
            kind: passage_core::ports::MessageKind::Alert {
                dedup_key: key.clone(),
                text: "Still waiting for the email code (escalated).".into(),
                update: true,
                mention: true,
                resolved: false,
            },
        },
    )
    .await
    .expect("the escalation is delivered");
    let calls = h.take();
    let methods: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    let posts = format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages");
    let old = format!("{posts}/{mid}");
    assert_eq!(
        methods,
        [("POST", posts.as_str()), ("PATCH", old.as_str())],
        "posted, then the old message's retirement tried (and refused)"
    );
    let new = h
        .discord
        .alerts()
        .message_of(&key)
        .await
        .expect("remembered");
    assert_eq!(receipt.provider_ref, format!("discord-message:{new}"));
    assert_ne!(new.to_string(), mid);
}

#[tokio::test]
async fn support_buttons_check_the_role_on_every_interaction() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    h.take();
    let ack = format!("passage:ack:{journey}:email-code");
    let events = h.engine.timeline(journey).await.unwrap().len();

    // Without the role: refused, ephemerally, and nothing reaches the journey.
    let (fx, id, token) = press(OUTSIDER, &[], &ack);
    h.interact(fx).await;
    let calls = h.take();
    assert_eq!(calls.len(), 1, "only the refusal: {calls:#?}");
    let data = assert_ephemeral_message(callback(&calls, &id, &token));
    assert!(
        data["content"]
            .as_str()
            .unwrap()
            .contains("Only the service desk"),
        "{data:#}"
    );
    assert_eq!(h.engine.timeline(journey).await.unwrap().len(), events);

    // The "Cancel journey" button and the support commands too.
    let (fx, id, token) = press(OUTSIDER, &[], &format!("passage:cancel:{journey}"));
    h.interact(fx).await;
    let (fx2, id2, token2) = support_command(
        OUTSIDER,
        &[],
        "journey",
        "show",
        json!([{"name": "id", "type": 3, "value": journey.to_string()}]),
    );
    h.interact(fx2).await;
    let calls = h.take();
    for (i, t) in [(&id, &token), (&id2, &token2)] {
        let data = assert_ephemeral_message(callback(&calls, i, t));
        assert!(
            data["content"].as_str().unwrap().contains("support role"),
            "{data:#}"
        );
    }
    assert_eq!(h.engine.timeline(journey).await.unwrap().len(), events);

    // With the role: acknowledged, recorded with the Discord user as the actor, and the
    // alert message edited in place.
    let (fx, id, token) = press(AGENT, &[SUPPORT_ROLE], &ack);
    h.interact(fx).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token));
    assert!(
        data["content"].as_str().unwrap().contains("acknowledged"),
        "{data:#}"
    );
    let edit = calls
        .iter()
        .find(|c| c.method == "PATCH")
        .expect("the alert edited");
    assert_eq!(
        edit.path,
        format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages/{mid}")
    );
    assert_eq!(edit.body["allowed_mentions"]["parse"], json!([]));
    assert!(
        !custom_ids(&edit.body).contains(&ack),
        "no second acknowledge"
    );
    let timeline = h.engine.timeline(journey).await.unwrap();
    let acked = timeline
        .iter()
        .find(|e| e.event_type == "SupportAlertAcknowledged")
        .expect("the acknowledgement is a journey event");
    let actor = acked.actor.as_ref().unwrap();
    assert_eq!(actor.kind, "support");
    assert_eq!(
        actor.id.as_deref(),
        Some(format!("discord:{AGENT}").as_str())
    );
    assert_eq!(actor.channel, "discord");

    // The worker delivers the engine's own "acknowledged" refresh: the same message again.
    h.worker.drain().await.unwrap();
    for c in h.take() {
        if c.path
            .starts_with(&format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages"))
        {
            assert_eq!(c.method, "PATCH", "{c:#?}");
            assert!(c.path.ends_with(&mid));
        }
    }

    // Cancel: the button opens a modal for the reason; its submission cancels, as the agent.
    let (fx, id, token) = press(AGENT, &[SUPPORT_ROLE], &format!("passage:cancel:{journey}"));
    h.interact(fx).await;
    let calls = h.take();
    let modal = callback(&calls, &id, &token);
    assert_eq!(modal.body["type"], 9);
    let (mut fx, id, token) = submit(
        AGENT,
        &format!("passage:cancel:{journey}"),
        "duplicate request",
    );
    fx["member"] = member(AGENT, &[SUPPORT_ROLE]);
    h.interact(fx).await;
    let calls = h.take();
    assert_ephemeral_message(callback(&calls, &id, &token));
    let timeline = h.engine.timeline(journey).await.unwrap();
    let cancelled = timeline
        .iter()
        .find(|e| e.event_type == "JourneyCancelled")
        .expect("cancelled");
    assert_eq!(
        cancelled.actor.as_ref().unwrap().id.as_deref(),
        Some(format!("discord:{AGENT}").as_str())
    );

    // /journey replay ID by support: the redacted timeline, ephemeral.
    let (fx, id, token) = support_command(
        AGENT,
        &[SUPPORT_ROLE],
        "journey",
        "replay",
        json!([{"name": "id", "type": 3, "value": journey.to_string()}]),
    );
    h.interact(fx).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token));
    assert!(!data.to_string().contains("alice@example.com"));
}

#[tokio::test]
async fn progress_outside_the_conversation_reaches_the_person() {
    let h = harness(Duration::from_secs(5)).await;
    let (fx, _, token) = reset_command(PERSON, Some("alice@example.com"));
    h.interact(fx).await;
    let journey = journey_of_person(&h).await;
    let after = h.discord.catch_up(0).await;
    h.take();
    // The person enters the code on the web page instead.
    let code = h.code(journey, "email").await;
    h.engine
        .submit(
            journey,
            passage_runtime::Input::Code(code.clone()),
            passage_runtime::Actor::person("web"),
            None,
        )
        .await
        .unwrap();
    h.discord.catch_up(after).await;
    let calls = h.take();
    let followup = calls
        .iter()
        .find(|c| c.path == format!("/api/v10/webhooks/{APP}/{token}"))
        .unwrap_or_else(|| panic!("an ephemeral followup: {calls:#?}"));
    assert_eq!(followup.method, "POST");
    assert_eq!(followup.body["flags"], 64);
    assert!(custom_ids(&followup.body).contains(&format!("passage:choose:{journey}:sms")));
    assert_no_secret(&calls, &[&code]);
}

/// An engine alert for `journey`, as the worker hands it to the alert sink.
fn alert_message(
    journey: JourneyId,
    key: &str,
    text: &str,
    update: bool,
    mention: bool,
) -> OutboundMessage {
    OutboundMessage {
        notice: false,
        idempotency_key: uuid::Uuid::new_v4(),
        journey_id: journey,
        kind: passage_core::ports::MessageKind::Alert {
            dedup_key: key.to_owned(),
            text: text.into(),
            update,
            mention,
            resolved: false,
        },
    }
}

/// Discord fails an interaction that is not answered within 3 seconds ("This interaction
/// failed", although the engine recorded the action). With the support channel slow (rate
/// limited) and the worker busy updating the alert, a support member's "Nudge user" is
/// still answered at once; the DM to the person and the alert's note follow the answer.
#[tokio::test]
async fn support_presses_are_answered_before_dms_and_alert_edits() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    h.take();
    let key = format!("{journey}:email-code");
    h.fake.slow_support_ms.store(2000, Ordering::SeqCst);
    // The worker is editing the alert (and holds the alert board) when the press arrives.
    let sink = DiscordAlerts(h.discord.clone());
    let refresh = alert_message(
        journey,
        &key,
        "Still waiting for the email code.",
        true,
        false,
    );
    let worker =
        tokio::spawn(async move { passage_core::ports::Channel::deliver(&sink, &refresh).await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (fx, id, token) = press(AGENT, &[SUPPORT_ROLE], &format!("passage:nudge:{key}"));
    let pressed = std::time::Instant::now();
    h.interact(fx).await;
    worker.await.unwrap().expect("the refresh is delivered");
    let calls = h.take();
    let answer = callback(&calls, &id, &token);
    let waited = answer.at.duration_since(pressed);
    assert!(
        waited < Duration::from_secs(1),
        "answered after {waited:?}, behind the support channel"
    );
    let data = assert_ephemeral_message(answer);
    assert!(
        data["content"]
            .as_str()
            .unwrap()
            .starts_with("Nudged the person"),
        "{data:#}"
    );
    let at = |pred: &dyn Fn(&Call) -> bool| calls.iter().position(pred);
    let answered = at(&|c| c.path == callback_path(&id, &token)).unwrap();
    let dm = at(&|c| c.path == "/api/v10/users/@me/channels").expect("the person is DMed");
    let note = at(&|c| {
        c.method == "PATCH"
            && c.path == format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages/{mid}")
            && c.body["content"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("Nudged by discord:{AGENT}.")))
    })
    .expect("the alert notes the nudge");
    assert!(answered < dm && answered < note, "{calls:#?}");
}

/// Someone deleted the alert's message by hand: the next update cannot edit it (404, Unknown
/// Message), so the alert is posted anew and later updates edit the new message, instead of
/// every update of the alert failing for good.
#[tokio::test]
async fn an_update_of_an_alert_whose_message_was_deleted_is_posted_again() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    h.take();
    let key = format!("{journey}:email-code");
    let sink = DiscordAlerts(h.discord.clone());
    h.fake.refuse_edits.store(1, Ordering::SeqCst);
    let receipt = passage_core::ports::Channel::deliver(
        &sink,
        &alert_message(
            journey,
            &key,
            "Still waiting for the email code.",
            true,
            false,
        ),
    )
    .await
    .expect("delivered, not failed for good");
    let calls = h.take();
    let posts = format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages");
    let old = format!("{posts}/{mid}");
    let methods: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    assert_eq!(
        methods,
        [("PATCH", old.as_str()), ("POST", posts.as_str())],
        "the edit refused, then the alert posted again"
    );
    assert_eq!(
        custom_ids(&calls[1].body),
        vec![
            format!("passage:ack:{key}"),
            format!("passage:nudge:{key}"),
            format!("passage:show:{journey}"),
            format!("passage:cancel:{journey}"),
        ]
    );
    assert_eq!(
        calls[1].body["allowed_mentions"],
        json!({"parse": [], "users": [], "roles": []}),
        "posting it again pings nobody"
    );
    let new = h
        .discord
        .alerts()
        .message_of(&key)
        .await
        .expect("remembered");
    assert_ne!(new.to_string(), mid);
    assert_eq!(receipt.provider_ref, format!("discord-message:{new}"));
    // Later updates edit the new message.
    passage_core::ports::Channel::deliver(
        &sink,
        &alert_message(journey, &key, "Still waiting (2).", true, false),
    )
    .await
    .unwrap();
    let calls = h.take();
    let methods: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    let edited = format!("{posts}/{new}");
    assert_eq!(methods, [("PATCH", edited.as_str())]);
}

/// The person finished the stalled step on the web page: the engine closes the alert, and
/// the worker's update shows it resolved, without buttons. A refresh written before that
/// and delivered late is shown resolved too, not reopened with buttons.
#[tokio::test]
async fn an_alert_shows_resolved_without_buttons_once_the_journey_moves_on() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    // The first code has expired by the time support is alerted: the person asks for a
    // new one on the web page, then enters it there.
    let web = || passage_runtime::Actor::person("web");
    let resent = h
        .engine
        .submit(journey, passage_runtime::Input::Resend, web(), None)
        .await
        .unwrap();
    assert!(matches!(
        resent.reply,
        passage_core::journey::Reply::Accepted { .. }
    ));
    let code = h.code(journey, "email").await;
    h.take();
    let entered = h
        .engine
        .submit(
            journey,
            passage_runtime::Input::Code(code.clone()),
            web(),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        entered.reply,
        passage_core::journey::Reply::Accepted { .. }
    ));
    h.worker.drain().await.unwrap();
    let calls = h.take();
    let message = format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages/{mid}");
    let resolved = |calls: &[Call]| {
        let edits: Vec<Call> = calls
            .iter()
            .filter(|c| {
                c.path
                    .starts_with(&format!("/api/v10/channels/{SUPPORT_CHANNEL}/"))
            })
            .cloned()
            .collect();
        assert_eq!(edits.len(), 1, "one edit of the alert: {edits:#?}");
        assert_eq!(
            (edits[0].method.as_str(), edits[0].path.as_str()),
            ("PATCH", message.as_str())
        );
        assert_eq!(
            edits[0].body["components"],
            json!([]),
            "{:#}",
            edits[0].body
        );
        let content = edits[0].body["content"].as_str().unwrap().to_owned();
        assert!(
            content.starts_with("**Password reset alert — Resolved**\n"),
            "{content}"
        );
        content
    };
    let content = resolved(&calls);
    assert!(
        content.contains("resolved, the journey moved on to `second-factor`."),
        "{content}"
    );
    assert_no_secret(&calls, &[&code, "alice@example.com"]);
    // A refresh from before the code was entered, delivered late.
    passage_core::ports::Channel::deliver(
        &DiscordAlerts(h.discord.clone()),
        &alert_message(
            journey,
            &format!("{journey}:email-code"),
            "Still waiting for the email code.",
            true,
            false,
        ),
    )
    .await
    .unwrap();
    resolved(&h.take());
}

/// The engine's closing update carries its own `resolved` flag: it is shown resolved even
/// when the journey cannot say so itself (here it is still on the alerted step).
#[tokio::test]
async fn the_closing_updates_flag_alone_shows_the_alert_resolved() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, mid) = stalled(&h).await;
    h.take();
    let mut closing = alert_message(
        journey,
        &format!("{journey}:email-code"),
        "Waiting for the email code: resolved, the journey was cancelled.",
        true,
        false,
    );
    if let passage_core::ports::MessageKind::Alert { resolved, .. } = &mut closing.kind {
        *resolved = true;
    }
    passage_core::ports::Channel::deliver(&DiscordAlerts(h.discord.clone()), &closing)
        .await
        .unwrap();
    let calls = h.take();
    let edit = calls
        .iter()
        .find(|c| c.path == format!("/api/v10/channels/{SUPPORT_CHANNEL}/messages/{mid}"))
        .unwrap_or_else(|| panic!("no edit of the alert: {calls:#?}"));
    assert_eq!(edit.method, "PATCH");
    assert_eq!(edit.body["components"], json!([]), "{:#}", edit.body);
    assert!(
        edit.body["content"]
            .as_str()
            .unwrap()
            .starts_with("**Password reset alert — Resolved**\n"),
        "{:#}",
        edit.body
    );
}

/// `/journeys stalled` reads the store's due-stalls index, most overdue first: 500 newer
/// active journeys do not push out the one that has waited longest.
#[tokio::test]
async fn journeys_stalled_finds_the_most_overdue_among_many_active_journeys() {
    let h = harness(Duration::from_secs(5)).await;
    let (fx, _, _) = reset_command(PERSON, Some("alice@example.com"));
    h.interact(fx).await;
    let overdue = journey_of_person(&h).await;
    // Past the email code's 3-minute stall deadline; not scanned, so no alert yet.
    h.clock.advance(Duration::from_secs(200));
    for _ in 0..500 {
        h.engine
            .start(
                "password-reset",
                passage_runtime::Actor::person("web"),
                None,
            )
            .await
            .unwrap();
    }
    h.take();
    let (fx, id, token) = support_command(AGENT, &[SUPPORT_ROLE], "journeys", "stalled", json!([]));
    h.interact(fx).await;
    let calls = h.take();
    let data = assert_ephemeral_message(callback(&calls, &id, &token));
    let content = data["content"].as_str().unwrap();
    assert!(
        content.contains(&format!("• {overdue} at `email-code`: a•••e@e•••.com;")),
        "{content}"
    );
    assert!(content.contains("; no alert yet"), "{content}");
    assert_no_secret(&calls, &["alice@example.com"]);
}

/// The cancel reason follows the CLI's and the console's rule (passage_core::reason): the
/// modal's bounds are the rule's, and what comes back is cleaned and checked by the core.
#[tokio::test]
async fn a_cancel_reason_from_discord_follows_the_shared_reason_rule() {
    let h = harness(Duration::from_secs(5)).await;
    let (journey, _) = stalled(&h).await;
    h.take();
    let cancel = format!("passage:cancel:{journey}");
    let (fx, id, token) = press(AGENT, &[SUPPORT_ROLE], &cancel);
    h.interact(fx).await;
    let calls = h.take();
    let input = &callback(&calls, &id, &token).body["data"]["components"][0]["components"][0];
    assert_eq!(
        (input["min_length"].clone(), input["max_length"].clone()),
        (json!(3), json!(500)),
        "{input:#}"
    );
    let submit_reason = |reason: &str| {
        let (mut fx, id, token) = submit(AGENT, &cancel, reason);
        fx["member"] = member(AGENT, &[SUPPORT_ROLE]);
        (fx, id, token)
    };
    for reason in ["...", "a  ", "\u{202e}\u{202e}\u{202e}", "ab\n\n"] {
        let (fx, id, token) = submit_reason(reason);
        h.interact(fx).await;
        let calls = h.take();
        let data = assert_ephemeral_message(callback(&calls, &id, &token));
        assert!(
            data["content"].as_str().unwrap().starts_with("Say why"),
            "{reason:?}: {data:#}"
        );
    }
    let (state, _, _) = h.engine.load(journey).await.unwrap();
    assert_eq!(state.status, passage_core::journey::Status::Active);
    let (fx, _, _) = submit_reason("ticket\u{202e} 42\n");
    h.interact(fx).await;
    let (state, _, _) = h.engine.load(journey).await.unwrap();
    assert_eq!(state.status, passage_core::journey::Status::Cancelled);
    assert_eq!(state.finish_reason.as_deref(), Some("ticket 42"));
}
