//! Support alerts through Discord and Slack incoming webhooks, against a capture server on
//! loopback that records every request (method, path, query, body) and answers as scripted:
//! 200 with a message id, 429 with `Retry-After`, 404, 410, 500, or too late.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use passage_channels::{
    AlertWebhookKind, AlertsConfig, ChannelsConfig, DevOutbox, SecretSource, SystemClock,
    WebhookAlerts, build_channels, install_crypto_provider,
};
use passage_core::ports::{Channel, JourneyId, MessageKind, OutboundMessage, SendError};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const DISCORD_TOKEN: &str = "s3cr3t-T0KEN-discord-abcdef0123456789";
const SLACK_TOKEN: &str = "s3cr3tSlackT0KENxyz0123";
const ROLE: &str = "987654321098765432";
const GROUP: &str = "S0123ABCD";
const CONSOLE: &str = "https://support.portal.example/";
const JOURNEY: &str = "0b6b9c1e-2f4d-4a7e-9c3b-5d8e1f2a3b4c";

// ---------------------------------------------------------------------------------------
// The capture server

#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Captured {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Option<Duration>,
}

impl Reply {
    fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: None,
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Default)]
struct Capture {
    requests: Mutex<Vec<Captured>>,
    script: Mutex<VecDeque<Reply>>,
    next_id: AtomicU64,
}

#[derive(Clone)]
struct Server {
    base: String,
    state: Arc<Capture>,
}

impl Server {
    async fn start() -> Self {
        let state = Arc::new(Capture::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, state }
    }

    /// The next answers, in order; then the default ones.
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    fn requests(&self) -> Vec<Captured> {
        self.state.requests.lock().unwrap().clone()
    }

    fn discord_url(&self) -> String {
        format!("{}/api/webhooks/123456789/{DISCORD_TOKEN}", self.base)
    }

    fn slack_url(&self) -> String {
        format!("{}/services/T000/B000/{SLACK_TOKEN}", self.base)
    }
}

/// Records the request, then answers from the script or like the service would: Discord
/// returns the message (with a fresh id for a post, the same id for an edit), Slack `ok`.
async fn handle(
    State(state): State<Arc<Capture>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.lock().unwrap().push(Captured {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let scripted = state.script.lock().unwrap().pop_front();
    if let Some(reply) = scripted {
        if let Some(delay) = reply.delay {
            tokio::time::sleep(delay).await;
        }
        let mut response = (
            StatusCode::from_u16(reply.status).unwrap(),
            reply.body.clone(),
        )
            .into_response();
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    let content = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("content").cloned())
        .unwrap_or(Value::Null);
    if method == Method::PATCH {
        let id = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
        return axum::Json(json!({ "id": id, "content": content })).into_response();
    }
    if uri.query().is_some_and(|q| q.contains("wait=true")) {
        let id = state.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        return axum::Json(json!({ "id": id.to_string(), "channel_id": "42", "content": content }))
            .into_response();
    }
    (StatusCode::OK, "ok").into_response()
}

// ---------------------------------------------------------------------------------------
// Helpers

fn secret_file(value: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("passage-alert-url-{}", Uuid::new_v4()));
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

fn config(
    url: &str,
    kind: Option<AlertWebhookKind>,
    role: Option<&str>,
    console: Option<&str>,
) -> AlertsConfig {
    AlertsConfig {
        webhook_url: SecretSource::File(secret_file(url)),
        kind,
        mention_role: role.map(Into::into),
        console_url: console.map(Into::into),
        request_timeout_secs: 1,
    }
}

fn webhook(config: &AlertsConfig) -> WebhookAlerts {
    install_crypto_provider();
    WebhookAlerts::new(config).unwrap()
}

fn journey() -> JourneyId {
    JOURNEY.parse().unwrap()
}

fn alert(key: &str, text: &str, update: bool, mention: bool) -> OutboundMessage {
    OutboundMessage {
        notice: false,
        idempotency_key: Uuid::new_v4(),
        journey_id: journey(),
        kind: MessageKind::Alert {
            dedup_key: key.into(),
            text: text.into(),
            update,
            mention,
            resolved: false,
        },
    }
}

fn link() -> String {
    format!("https://support.portal.example/console/journeys/{JOURNEY}")
}

/// No error text may quote the webhook URL or its token.
fn assert_no_secret(text: &str, server: &Server) {
    for secret in [
        DISCORD_TOKEN,
        SLACK_TOKEN,
        &server.discord_url(),
        &server.slack_url(),
    ] {
        assert!(!text.contains(secret), "leaks {secret}: {text}");
    }
}

const STALLED: &str = "Journey 0b6b9c1e: a•••e@e•••.com, no progress at step `email-code` for 3m or more; the person was nudged.";

// ---------------------------------------------------------------------------------------
// Discord

#[tokio::test]
async fn discord_alerts_are_posted_then_edited_in_place_and_escalations_ping_the_role() {
    let server = Server::start().await;
    let channel = webhook(&config(
        &server.discord_url(),
        Some(AlertWebhookKind::Discord),
        Some(ROLE),
        Some(CONSOLE),
    ));
    let key = format!("{JOURNEY}:email-code");

    // 1. Raised: POST ?wait=true, mentions off.
    let raised = alert(&key, STALLED, false, false);
    let r = channel.deliver(&raised).await.unwrap();
    assert_eq!(r.provider_ref, "discord-message-1");
    // 2. Refreshed: PATCH the message from the first POST.
    let text2 = "Journey 0b6b9c1e: still no progress at step `email-code` (6m). @everyone";
    let r = channel
        .deliver(&alert(&key, text2, true, false))
        .await
        .unwrap();
    assert_eq!(r.provider_ref, "discord-message-1");
    // 3. Escalated: an edit would not notify, so a new message pings the role.
    let text3 = "Journey 0b6b9c1e: not acknowledged for 10m.";
    let r = channel
        .deliver(&alert(&key, text3, true, true))
        .await
        .unwrap();
    assert_eq!(r.provider_ref, "discord-message-2");
    // 4. Acknowledged: edits the escalation message.
    let text4 = "Journey 0b6b9c1e — acknowledged by support.";
    let r = channel
        .deliver(&alert(&key, text4, true, false))
        .await
        .unwrap();
    assert_eq!(r.provider_ref, "discord-message-2");
    // A redelivery of the first message (same idempotency key) posts nothing; the circuit
    // breaker in front asks for that receipt first.
    assert_eq!(
        channel.deliver(&raised).await.unwrap().provider_ref,
        "discord-message-1"
    );
    assert_eq!(
        channel
            .remembered(raised.idempotency_key)
            .unwrap()
            .provider_ref,
        "discord-message-1"
    );

    let reqs = server.requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    let base_path = format!("/api/webhooks/123456789/{DISCORD_TOKEN}");

    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, base_path);
    assert_eq!(reqs[0].query.as_deref(), Some("wait=true"));
    assert_eq!(reqs[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        reqs[0].json(),
        json!({
            "content": format!("{STALLED}\nJourney: <{}>", link()),
            "allowed_mentions": { "parse": [] }
        })
    );

    assert_eq!(reqs[1].method, "PATCH");
    assert_eq!(reqs[1].path, format!("{base_path}/messages/1"));
    assert_eq!(reqs[1].query, None);
    assert_eq!(
        reqs[1].json(),
        json!({
            "content": format!("{text2}\nJourney: <{}>", link()),
            "allowed_mentions": { "parse": [] }
        })
    );

    assert_eq!(reqs[2].method, "POST");
    assert_eq!(reqs[2].path, base_path);
    assert_eq!(reqs[2].query.as_deref(), Some("wait=true"));
    assert_eq!(
        reqs[2].json(),
        json!({
            "content": format!("<@&{ROLE}> Update: {text3}\nJourney: <{}>", link()),
            "allowed_mentions": { "parse": [], "roles": [ROLE] }
        })
    );

    assert_eq!(reqs[3].method, "PATCH");
    assert_eq!(reqs[3].path, format!("{base_path}/messages/2"));
    assert_eq!(
        reqs[3].json(),
        json!({
            "content": format!("{text4}\nJourney: <{}>", link()),
            "allowed_mentions": { "parse": [] }
        })
    );

    // Never pings everyone: `parse` is empty in every body, and only the escalation names
    // a role.
    for (i, r) in reqs.iter().enumerate() {
        let body = r.json();
        assert_eq!(body["allowed_mentions"]["parse"], json!([]), "{i}");
        assert_eq!(
            body.get("allowed_mentions").unwrap().get("roles").is_some(),
            i == 2
        );
        assert_eq!(body["content"].as_str().unwrap().contains("<@&"), i == 2);
    }
}

#[tokio::test]
async fn without_a_role_an_escalation_is_an_edit_that_mentions_nobody() {
    let server = Server::start().await;
    let channel = webhook(&config(
        &server.discord_url(),
        Some(AlertWebhookKind::Discord),
        None,
        None,
    ));
    channel
        .deliver(&alert("k", "raised", false, false))
        .await
        .unwrap();
    channel
        .deliver(&alert("k", "escalated", true, true))
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].method, "PATCH");
    // No console configured: no link either.
    assert_eq!(
        reqs[1].json(),
        json!({ "content": "escalated", "allowed_mentions": { "parse": [] } })
    );
}

#[tokio::test]
async fn an_update_after_a_restart_or_a_deleted_message_is_posted_anew() {
    let server = Server::start().await;
    let cfg = config(
        &server.discord_url(),
        Some(AlertWebhookKind::Discord),
        None,
        None,
    );
    let channel = webhook(&cfg);
    channel
        .deliver(&alert("k", "raised", false, false))
        .await
        .unwrap();
    // Someone deleted the message: Discord answers 404 Unknown Message to the edit.
    server.script([Reply::new(
        404,
        r#"{"message": "Unknown Message", "code": 10008}"#,
    )]);
    let r = channel
        .deliver(&alert("k", "refreshed", true, false))
        .await
        .unwrap();
    assert_eq!(r.provider_ref, "discord-message-2");
    // A restarted process knows no message id: the update is a new message too.
    let restarted = webhook(&cfg);
    let r = restarted
        .deliver(&alert("k", "refreshed again", true, false))
        .await
        .unwrap();
    assert_eq!(r.provider_ref, "discord-message-3");
    let reqs = server.requests();
    let summary: Vec<_> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.ends_with("/messages/1")))
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", false),
            ("PATCH", true),
            ("POST", false),
            ("POST", false)
        ]
    );
    assert_eq!(reqs[2].json()["content"], "Update: refreshed");
    assert_eq!(reqs[3].json()["content"], "Update: refreshed again");
}

/// The dev outbox takes support alerts only in a development setup. A node with a real
/// provider and no webhook has no alert route: every node's worker claims from one outbox,
/// and a dev route there would take its share of the alerts into a local file support
/// never reads, while `passage bot` posts the rest.
#[tokio::test]
async fn only_a_development_setup_sends_alerts_to_the_dev_outbox() {
    let path = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
    let dev = DevOutbox::open(&path).await.unwrap();
    let route = |toml: &str| {
        let channels = build_channels(
            &ChannelsConfig::from_toml(toml).unwrap(),
            Some(dev.clone()),
            Arc::new(SystemClock),
        )
        .unwrap();
        channels.inner().route("support").map(|r| r.provider())
    };
    assert_eq!(route(""), Some("dev"));
    let smtp = r#"
        email = "smtp"
        [smtp]
        host = "smtp.example.net"
        from = "Portal <no-reply@portal.example>"
    "#;
    assert_eq!(route(smtp), None);
    let token = path.with_extension("token");
    std::fs::write(&token, "test-auth-token").unwrap();
    let twilio_voice = format!(
        r#"
        voice = "twilio"
        [twilio]
        account_sid = "AC0123456789abcdef0123456789abcdef"
        auth_token = {{ file = "{}" }}
        from = "+15005550006"
        public_base_url = "https://portal.example"
    "#,
        token.display()
    );
    assert_eq!(route(&twilio_voice), None);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&token);
}

#[tokio::test]
async fn rate_limits_surface_the_retry_hint_and_the_retry_succeeds() {
    // The whole stack: limits → set → breaker → webhook; the support route is the webhook,
    // not the dev outbox.
    let server = Server::start().await;
    let path = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
    let dev = DevOutbox::open(&path).await.unwrap();
    let channels = build_channels(
        &ChannelsConfig {
            alerts: Some(config(
                &server.discord_url(),
                Some(AlertWebhookKind::Discord),
                None,
                Some(CONSOLE),
            )),
            ..Default::default()
        },
        Some(dev.clone()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let route = channels.inner().route("support").unwrap();
    assert_eq!(route.provider(), "discord-webhook");
    assert_eq!(
        channels.inner().describe(),
        "email=dev sms=dev voice=dev support=discord-webhook"
    );

    let limited =
        r#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#;
    server.script([
        // The header wins over the body.
        Reply::new(429, limited).header("retry-after", "2"),
        // Only Discord's JSON `retry_after` (seconds, fractional).
        Reply::new(
            429,
            r#"{"message": "You are being rate limited.", "retry_after": 0.75}"#,
        ),
    ]);
    let m = alert("k", STALLED, false, false);
    match channels.deliver(&m).await {
        Err(SendError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(2)));
        }
        other => panic!("{other:?}"),
    }
    match channels.deliver(&m).await {
        Err(SendError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_millis(750)));
        }
        other => panic!("{other:?}"),
    }
    // The worker retries after the hint: the same message now goes through.
    let r = channels.deliver(&m).await.unwrap();
    assert_eq!(r.provider_ref, "discord-message-1");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.json() == reqs[0].json()));
    // Rate limiting is neutral for the breaker; nothing went to the dev outbox.
    if let passage_channels::Route::Webhook(b) = route {
        assert_eq!(
            b.state(),
            passage_channels::CircuitState::Closed {
                consecutive_failures: 0
            }
        );
    } else {
        panic!("support route is not the webhook");
    }
    assert_eq!(dev.counts().await.unwrap().0, 0);
    dev.close().await;
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", path.display()));
    }
}

#[tokio::test]
async fn a_deleted_webhook_is_a_permanent_failure_with_a_clear_message() {
    let server = Server::start().await;
    let discord = webhook(&config(
        &server.discord_url(),
        Some(AlertWebhookKind::Discord),
        None,
        None,
    ));
    let slack = webhook(&config(
        &server.slack_url(),
        Some(AlertWebhookKind::Slack),
        None,
        None,
    ));
    server.script([
        Reply::new(404, r#"{"message": "Unknown Webhook", "code": 10015}"#),
        Reply::new(410, "channel_is_archived"),
        Reply::new(404, "no_service"),
        Reply::new(
            401,
            r#"{"message": "Invalid Webhook Token", "code": 50027}"#,
        ),
    ]);
    let cases = [
        (&discord, "404", "10015 Unknown Webhook"),
        (&slack, "410", "channel_is_archived"),
        (&slack, "404", "no_service"),
        (&discord, "401", "50027 Invalid Webhook Token"),
    ];
    for (channel, status, detail) in cases {
        let e = channel
            .deliver(&alert("k", "x", false, false))
            .await
            .unwrap_err();
        assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
        let text = e.to_string();
        if status == "401" {
            assert!(text.contains("token is wrong or was revoked"), "{text}");
        } else {
            assert!(text.contains("the webhook no longer exists"), "{text}");
            assert!(text.contains("PASSAGE_ALERT_WEBHOOK_URL"), "{text}");
        }
        assert!(text.contains(status) && text.contains(detail), "{text}");
        assert_no_secret(&text, &server);
    }
}

#[tokio::test]
async fn server_errors_and_timeouts_are_transient() {
    let server = Server::start().await;
    let channel = webhook(&config(
        &server.discord_url(),
        Some(AlertWebhookKind::Discord),
        None,
        None,
    ));
    let mut slow = Reply::new(200, r#"{"id": "9"}"#);
    slow.delay = Some(Duration::from_secs(3));
    server.script([
        Reply::new(
            500,
            r#"{"message": "500: Internal Server Error", "code": 0}"#,
        ),
        Reply::new(502, "<html>bad gateway</html>"),
        slow,
    ]);
    let m = alert("k", "x", false, false);
    for expect in ["500", "502", "timed out"] {
        let e = channel.deliver(&m).await.unwrap_err();
        assert!(matches!(e, SendError::Transient(_)), "{e:?}");
        assert!(e.to_string().contains(expect), "{e}");
        assert_no_secret(&e.to_string(), &server);
    }
    // Nobody listening: a connection error, transient, without the URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{closed}/api/webhooks/123456789/{DISCORD_TOKEN}");
    let gone = webhook(&config(&url, Some(AlertWebhookKind::Discord), None, None));
    let e = gone.deliver(&m).await.unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
    assert!(!e.to_string().contains(DISCORD_TOKEN), "{e}");
    assert!(!e.to_string().contains("/api/webhooks"), "{e}");
}

#[tokio::test]
async fn only_alerts_are_carried() {
    let server = Server::start().await;
    let channel = webhook(&config(
        &server.discord_url(),
        Some(AlertWebhookKind::Discord),
        None,
        None,
    ));
    let sms = OutboundMessage {
        notice: false,
        idempotency_key: Uuid::new_v4(),
        journey_id: journey(),
        kind: MessageKind::Sms {
            to: "+61412345678".into(),
            text: "123456".into(),
        },
    };
    let e = channel.deliver(&sms).await.unwrap_err();
    assert!(matches!(e, SendError::Permanent(_)), "{e:?}");
    assert!(server.requests().is_empty());
}

// ---------------------------------------------------------------------------------------
// Slack

#[tokio::test]
async fn slack_updates_are_new_messages_and_escalations_mention_the_group() {
    let server = Server::start().await;
    let channel = webhook(&config(
        &server.slack_url(),
        Some(AlertWebhookKind::Slack),
        Some(GROUP),
        Some(CONSOLE),
    ));
    let sneaky = "Journey 0b6b9c1e: <!channel> & <@U123> no progress at step `sms-code`.";
    let r = channel
        .deliver(&alert("k", sneaky, false, false))
        .await
        .unwrap();
    assert_eq!(r.provider_ref, "slack-webhook");
    channel
        .deliver(&alert("k", "still stuck", true, false))
        .await
        .unwrap();
    channel
        .deliver(&alert("k", "not acknowledged for 10m.", true, true))
        .await
        .unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, format!("/services/T000/B000/{SLACK_TOKEN}"));
        assert_eq!(r.query, None);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let l = link();
    assert_eq!(
        reqs[0].json(),
        json!({ "text": format!(
            "Journey 0b6b9c1e: &lt;!channel&gt; &amp; &lt;@U123&gt; no progress at step `sms-code`.\nJourney: <{l}>"
        ) })
    );
    assert_eq!(
        reqs[1].json(),
        json!({ "text": format!("Update: still stuck\nJourney: <{l}>") })
    );
    assert_eq!(
        reqs[2].json(),
        json!({ "text": format!("<!subteam^{GROUP}> Update: not acknowledged for 10m.\nJourney: <{l}>") })
    );
}

#[tokio::test]
async fn slack_without_a_group_mentions_nobody() {
    let server = Server::start().await;
    let channel = webhook(&config(
        &server.slack_url(),
        Some(AlertWebhookKind::Slack),
        None,
        None,
    ));
    channel
        .deliver(&alert("k", "escalated", true, true))
        .await
        .unwrap();
    assert_eq!(
        server.requests()[0].json(),
        json!({ "text": "Update: escalated" })
    );
}

// ---------------------------------------------------------------------------------------
// Configuration

/// URL, kind, role, console URL, and what the error must say.
type BadCase<'a> = (
    &'a str,
    Option<AlertWebhookKind>,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
);

fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |name| map.get(name).cloned()
}

#[tokio::test]
async fn configuration_from_variables_and_toml_is_checked_at_start_up() {
    install_crypto_provider();
    let discord = "https://discord.com/api/webhooks/1234567890/AbCdEf-secret-token-0123456789";
    let file = secret_file(discord);

    // Variables: the URL is a secret source (variable or file), never copied into the config.
    let c = ChannelsConfig::from_lookup(lookup(&[
        ("PASSAGE_ALERT_WEBHOOK_URL", discord.into()),
        ("PASSAGE_ALERT_WEBHOOK_KIND", "Discord".into()),
        ("PASSAGE_ALERT_MENTION_ROLE", ROLE.into()),
        ("PASSAGE_CONSOLE_URL", CONSOLE.into()),
    ]))
    .unwrap();
    let alerts = c.alerts.clone().unwrap();
    assert_eq!(
        alerts.webhook_url,
        SecretSource::Env("PASSAGE_ALERT_WEBHOOK_URL".into())
    );
    assert_eq!(alerts.kind, Some(AlertWebhookKind::Discord));
    assert_eq!(alerts.mention_role.as_deref(), Some(ROLE));
    assert_eq!(alerts.console_url.as_deref(), Some(CONSOLE));
    assert!(!format!("{c:?}").contains("secret-token"));
    let c = ChannelsConfig::from_lookup(lookup(&[(
        "PASSAGE_ALERT_WEBHOOK_URL_FILE",
        file.display().to_string(),
    )]))
    .unwrap();
    let alerts = c.alerts.unwrap();
    assert_eq!(alerts.webhook_url, SecretSource::File(file.clone()));
    assert_eq!(alerts.kind, None);
    // Discord's host tells the kind; the token shows nowhere.
    let w = WebhookAlerts::new(&alerts).unwrap();
    assert_eq!(w.kind(), AlertWebhookKind::Discord);
    assert_eq!(
        w.masked_url(),
        "https://discord.com/api/webhooks/1234567890/***"
    );
    assert!(!format!("{w:?}").contains("secret-token"), "{w:?}");
    // No webhook configured: no [alerts] section.
    assert!(
        ChannelsConfig::from_lookup(lookup(&[]))
            .unwrap()
            .alerts
            .is_none()
    );

    let err = |vars: &[(&str, String)]| {
        ChannelsConfig::from_lookup(lookup(vars))
            .unwrap_err()
            .to_string()
    };
    let e = err(&[
        ("PASSAGE_ALERT_WEBHOOK_URL", discord.into()),
        ("PASSAGE_ALERT_WEBHOOK_KIND", "teams".into()),
    ]);
    assert!(e.contains("must be discord or slack, not teams"), "{e}");
    let e = err(&[("PASSAGE_ALERT_WEBHOOK_KIND", "slack".into())]);
    assert!(
        e.contains("PASSAGE_ALERT_WEBHOOK_KIND is set but PASSAGE_ALERT_WEBHOOK_URL"),
        "{e}"
    );
    let e = err(&[("PASSAGE_ALERT_MENTION_ROLE", ROLE.into())]);
    assert!(e.contains("PASSAGE_ALERT_MENTION_ROLE is set"), "{e}");
    let e = err(&[
        ("PASSAGE_ALERT_WEBHOOK_URL", discord.into()),
        ("PASSAGE_ALERT_WEBHOOK_URL_FILE", "/run/secrets/x".into()),
    ]);
    assert!(e.contains("not both"), "{e}");

    // TOML.
    let toml = format!(
        r#"
        [alerts]
        webhook_url = {{ file = "{}" }}
        kind = "slack"
        mention_role = "{GROUP}"
        console_url = "https://support.portal.example"
        "#,
        file.display()
    );
    let c = ChannelsConfig::from_toml(&toml).unwrap();
    let alerts = c.alerts.unwrap();
    assert_eq!(alerts.kind, Some(AlertWebhookKind::Slack));
    assert_eq!(alerts.request_timeout_secs, 10);
    assert!(
        ChannelsConfig::from_toml("[alerts]\nwebhook_url = { env = \"X\" }\nkind = \"teams\"")
            .is_err()
    );
    assert!(
        ChannelsConfig::from_toml(
            "[alerts]\nwebhook_url = { env = \"X\" }\nchannel = \"#support\""
        )
        .is_err()
    );

    // Start-up checks, each naming the setting and never quoting the URL.
    let build =
        |url: &str, kind: Option<AlertWebhookKind>, role: Option<&str>, console: Option<&str>| {
            WebhookAlerts::new(&config(url, kind, role, console))
                .map(|w| w.provider())
                .map_err(|e| e.to_string())
        };
    assert_eq!(
        build(
            "https://hooks.slack.com/services/T0/B0/Xsecret-token",
            None,
            Some(GROUP),
            None
        ),
        Ok("slack-webhook")
    );
    assert_eq!(
        build(discord, None, Some(ROLE), Some(CONSOLE)),
        Ok("discord-webhook")
    );
    let bad: &[BadCase] = &[
        (
            "http://discord.com/api/webhooks/1/secret-token",
            None,
            None,
            None,
            "must be https",
        ),
        (
            "discord.com/api/webhooks/1/secret-token",
            None,
            None,
            None,
            "is not a URL",
        ),
        (
            "https://chat.example/hooks/secret-token",
            None,
            None,
            None,
            "set alerts.kind (PASSAGE_ALERT_WEBHOOK_KIND)",
        ),
        (
            "https://discord.com/api/webhooks/1/secret-token/slack",
            None,
            None,
            None,
            "is not a Discord webhook URL",
        ),
        (
            "https://discord.com/channels/1/secret-token",
            None,
            None,
            None,
            "is not a Discord webhook URL",
        ),
        (
            discord,
            None,
            Some("@support"),
            None,
            "must be a Discord role id",
        ),
        (
            "https://hooks.slack.com/services/T0/B0/Xsecret-token",
            None,
            Some("support-team"),
            None,
            "must be a Slack user group id",
        ),
        (
            discord,
            None,
            None,
            Some("ftp://support.portal.example"),
            "PASSAGE_CONSOLE_URL",
        ),
        (
            discord,
            None,
            None,
            Some("https://support.portal.example/?x=1"),
            "must not carry a query",
        ),
    ];
    for (url, kind, role, console, expect) in bad {
        let e = build(url, *kind, *role, *console).unwrap_err();
        assert!(e.contains(expect), "{url}: {e}");
        assert!(!e.contains("secret-token"), "{e}");
    }
    let _ = std::fs::remove_file(file);
}
