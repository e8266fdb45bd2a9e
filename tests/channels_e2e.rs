//! Issue 4 end to end: the real `passage serve` binary with its channels switched to real
//! providers on loopback. Email goes over SMTP to MailDev (`adapters/channels/tests/
//! smtp-server.sh start`, read back through MailDev's REST API); SMS and calls go to the
//! stateful fake Twilio of `adapters/channels/tests/support`, whose phone fetches the call's
//! TwiML, presses keys and posts SIGNED callbacks to the node's `/webhooks/twilio/*`.
//!
//! * `seed_journey_over_smtp_and_twilio`: the seed journey through the JSON API, once with
//!   SMS and once with a call (press #), both completed; a forged gather callback (bad,
//!   missing or mismatched signature) is refused with 403 and changes nothing, while the
//!   same request signed with the account's token confirms the call. The timelines carry
//!   `MessageDelivered` with the provider references (SMTP message id, `SM…`, `CA…`).
//! * `carrier_and_call_outcomes_reach_the_timeline`: an undelivered SMS and a call taken
//!   by voicemail come back through signed callbacks as `MessageFailed` / `CallFailed`.
//! * `unsigned_key_presses_are_refused_when_twilio_is_configured`: the JSON API's unsigned
//!   call-keys route must not confirm a Twilio call (R26).
//! * `budgets_hold_under_a_burst`: 200 journeys for one account (one number) and 80 over 40
//!   accounts that share a prefix, with small SMS and call budgets. The fake never sees more
//!   than the budgets allow, and the API answers for journeys whose message was withheld
//!   are identical to those whose message was sent.
//!
//! When MailDev does not answer, the tests that need it are skipped with a loud message on
//! stderr (with `CI=true` they fail). The burst test needs no MailDev: it reads the email
//! codes from the dev outbox by journey (one address receives 200 codes at once, which
//! MailDev could not tell apart).

#[path = "../adapters/channels/tests/support/mod.rs"]
mod support;

use serde_json::{Value, json};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{ACCOUNT_SID, AUTH_TOKEN, FROM, FakeTwilio, Node as Twiml, Phone, Recorded};

const SECRET: &str = "channels-e2e-test-secret-0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "harbour lantern meadow copper violet";
const ALICE: &str = "alice@example.com";
const ALICE_PHONE: &str = "+61412345678";
const BOB: &str = "bob.smith@example.com";
const BOB_PHONE: &str = "+61298765432";
const SMTP_FROM: &str = "Enterprise Customer Portal <no-reply@portal.example>";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "passage-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `passage` binary with a clean environment: nothing `PASSAGE_*` leaks in from the
/// caller (a developer's channel settings must not reach real providers).
fn passage(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_passage"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PASSAGE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--db")
        .arg(dir.join("passage.db"))
        .arg("--outbox")
        .arg(dir.join("outbox.db"))
        .arg("--workflows")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"))
        .env("PASSAGE_SECRET", SECRET);
    cmd
}

/// A `passage serve` process. Its stderr goes to `node.log` in its directory, printed when
/// a test fails while the node runs.
struct Node {
    child: Child,
    base: String,
    dir: PathBuf,
    stopped: bool,
}

impl Node {
    /// Starts `passage serve` on a port chosen here, so the public base URL the Twilio
    /// callbacks need is known before the node starts. `env` gets that base URL.
    fn start(dir: &Path, env: impl Fn(&str) -> Vec<(String, String)>) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free port")
                .port();
            let base = format!("http://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.join("node.log")).unwrap();
            let mut child = passage(dir)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                // One test client plays hundreds of people: per-client limits are not under test.
                .args(["--limit-starts", "100000", "--limit-answers", "100000"])
                .env(
                    "RUST_LOG",
                    "warn,passage_channels=info,passage_runtime=info,passage=info",
                )
                .env("NO_COLOR", "1")
                .envs(env(&base))
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .expect("start passage serve");
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if line.trim() == format!("listening on {base}") {
                return Node {
                    child,
                    base,
                    dir: dir.to_owned(),
                    stopped: false,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = format!(
                "first line {line:?}; log:\n{}",
                std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
            );
            // Most likely the port was taken between choosing it and binding it: again.
        }
        panic!("passage serve did not start: {last}");
    }

    /// SIGTERM (graceful: the worker stops, SQLite checkpoints), then wait.
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("passage serve did not stop within 15 s of SIGTERM");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let _ = writeln!(
                std::io::stderr(),
                "--- node {} log (last 60 lines) ---\n{}",
                self.base,
                tail.join("\n")
            );
        }
    }
}

/// The JSON API: (status, body). `token` is the journey's bearer token from its start's
/// answer, sent as `Authorization: Bearer …` (every journey route but the start needs it).
async fn api(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{base}{path}");
    let req = match method {
        "GET" => http.get(&url),
        "POST" => http.post(&url),
        other => panic!("method {other}"),
    };
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A form POST to a webhook, as Twilio sends it: (status, body).
async fn post_form(
    http: &reqwest::Client,
    url: &str,
    params: &[(String, String)],
    signature: Option<String>,
) -> (u16, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let mut req = http
        .post(url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body);
    if let Some(s) = signature {
        req = req.header("X-Twilio-Signature", s);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The one run of exactly six digits in a message: the code.
fn six_digits(text: &str) -> String {
    let runs: Vec<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 6)
        .collect();
    assert_eq!(runs.len(), 1, "one 6-digit code in {text:?}");
    runs[0].to_owned()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The journey a request to the fake was made for (its status callback names it).
fn request_journey(r: &Recorded) -> Option<String> {
    query_param(field(&r.form, "StatusCallback")?, "journey")
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Polls `probe` every 25 ms until it returns something, or panics after `secs`.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The fake's answered request of `resource` (`Messages`, `Calls`) for `journey`.
async fn provider_request(fake: &FakeTwilio, resource: &str, journey: &str) -> Recorded {
    wait_for(&format!("a {resource} request for {journey}"), 20, || {
        let found = fake
            .requests()
            .into_iter()
            .find(|r| r.resource == resource && request_journey(r).as_deref() == Some(journey));
        async move { found }
    })
    .await
}

// --- MailDev --------------------------------------------------------------------------------

struct MailDev {
    host: String,
    port: u16,
    api: String,
}

/// MailDev's open instance, or `None` (skip) when it does not answer outside CI.
async fn maildev(http: &reqwest::Client) -> Option<MailDev> {
    let addr = env_or("PASSAGE_TEST_SMTP", "127.0.0.1:18025");
    let api = env_or("PASSAGE_TEST_SMTP_API", "http://127.0.0.1:18080")
        .trim_end_matches('/')
        .to_owned();
    let healthy = http
        .get(format!("{api}/api/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if !healthy {
        if in_ci() {
            panic!(
                "CI=true but no MailDev answers at {api} (PASSAGE_TEST_SMTP={addr}); \
                 start it with adapters/channels/tests/smtp-server.sh start"
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: channels_e2e needs MailDev at {addr} / {api}.\n\
             !!!!!!!! Run `bash adapters/channels/tests/smtp-server.sh start` and test again.\n"
        );
        return None;
    }
    let (host, port) = addr
        .rsplit_once(':')
        .expect("PASSAGE_TEST_SMTP is host:port");
    Some(MailDev {
        host: host.to_owned(),
        port: port.parse().expect("SMTP port"),
        api,
    })
}

impl MailDev {
    async fn all(&self, http: &reqwest::Client) -> Vec<Value> {
        http.get(format!("{}/api/email", self.api))
            .send()
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
    }

    /// The mail whose Message-ID is `<effect@portal.example>` (the SMTP channel names a
    /// message after the effect that sent it), checked to be to `to` about `subject`.
    /// Identifying it by effect keeps other runs' mail to the same demo address apart.
    async fn mail_of(
        &self,
        http: &reqwest::Client,
        effect: &str,
        to: &str,
        subject: &str,
    ) -> Value {
        let message_id = format!("<{effect}@portal.example>");
        let what = format!("mail {message_id} to {to} about {subject:?}");
        let mail = wait_for(&what, 20, || async {
            let found: Vec<Value> = self
                .all(http)
                .await
                .into_iter()
                .filter(|m| m["headers"]["message-id"].as_str() == Some(message_id.as_str()))
                .collect();
            assert!(found.len() <= 1, "{what} arrived twice: {found:?}");
            found.into_iter().next()
        })
        .await;
        let to_addresses: Vec<&str> = mail["to"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["address"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(to_addresses, [to], "{mail}");
        assert_eq!(mail["envelope"]["to"][0]["address"], to, "{mail}");
        assert!(
            mail["subject"]
                .as_str()
                .is_some_and(|s| s.contains(subject)),
            "{mail}"
        );
        assert_eq!(
            mail["from"][0]["address"], "no-reply@portal.example",
            "{mail}"
        );
        mail
    }
}

// --- Test 1: the seed journey through the real SMTP server and the fake Twilio -------------

struct Journey<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    store: &'a SqlitePool,
    id: String,
    /// The bearer token of the start's answer, sent on every later call.
    token: String,
}

/// The `journey_token` of a start's answer (64 hexadecimal characters).
fn journey_token(start: &Value) -> String {
    let token = start["journey_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no journey token in {start}"));
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{start}"
    );
    token.to_owned()
}

impl Journey<'_> {
    /// The effect id of the journey's outbox entry of `kind` (e.g. the notice email).
    async fn outbox_effect(&self, kind: &str) -> String {
        wait_for(&format!("a {kind} effect of {}", self.id), 10, || async {
            sqlx::query_scalar::<_, String>(
                "SELECT effect_id FROM outbox WHERE stream = ? AND kind = ?",
            )
            .bind(&self.id)
            .bind(kind)
            .fetch_optional(self.store)
            .await
            .unwrap()
        })
        .await
    }

    /// The effect id of the journey's latest `event_type` event (read from the event
    /// store, which the node shares with this test in WAL mode).
    async fn effect_of(&self, event_type: &str) -> String {
        wait_for(&format!("{event_type} on {}", self.id), 10, || async {
            let payload: Option<String> = sqlx::query_scalar(
                "SELECT payload FROM events WHERE stream = ? AND event_type = ? \
                 ORDER BY position DESC LIMIT 1",
            )
            .bind(&self.id)
            .bind(event_type)
            .fetch_optional(self.store)
            .await
            .unwrap();
            payload.map(|p| {
                serde_json::from_str::<Value>(&p).unwrap()["effect_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .await
    }

    async fn post(&self, what: &str, body: Value) -> (u16, Value) {
        api(
            self.http,
            self.base,
            "POST",
            &format!("/api/journeys/{}/{what}", self.id),
            Some(&self.token),
            Some(body),
        )
        .await
    }

    async fn view(&self) -> Value {
        let (status, v) = api(
            self.http,
            self.base,
            "GET",
            &format!("/api/journeys/{}", self.id),
            Some(&self.token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

/// Start with `email`, read the code from MailDev, submit it, choose `option`.
/// Returns the journey and the MailDev mail of the code.
async fn to_second_factor<'a>(
    http: &'a reqwest::Client,
    base: &'a str,
    store: &'a SqlitePool,
    mail: &MailDev,
    email: &str,
    option: &str,
) -> (Journey<'a>, Value) {
    let (status, v) = api(
        http,
        base,
        "POST",
        "/api/journeys",
        None,
        Some(json!({ "email": email })),
    )
    .await;
    assert_eq!(status, 201, "start: {v}");
    assert_eq!(v["journey"]["step"]["kind"], "code", "{v}");
    assert_eq!(v["journey"]["step"]["channel"], "email", "{v}");
    let j = Journey {
        http,
        base,
        store,
        id: v["journey_id"].as_str().unwrap().to_owned(),
        token: journey_token(&v),
    };
    let effect = j.effect_of("CodeIssued").await;
    let code_mail = mail
        .mail_of(http, &effect, email, "your verification code")
        .await;
    let code = six_digits(code_mail["text"].as_str().expect("a text part"));
    let (status, v) = j.post("code", json!({ "code": code })).await;
    assert_eq!(status, 200, "email code: {v}");
    assert_eq!(v["journey"]["step"]["kind"], "choose", "{v}");
    let (status, v) = j.post("choice", json!({ "option": option })).await;
    assert_eq!(status, 200, "choice {option}: {v}");
    (j, code_mail)
}

/// Reset Password → completed, and the "password changed" notice arrives at MailDev.
async fn set_password(j: &Journey<'_>, mail: &MailDev, email: &str) -> Value {
    let pw = json!({ "new_password": PASSWORD, "confirm_password": PASSWORD });
    let (status, v) = j.post("password", pw).await;
    assert_eq!(status, 200, "password: {v}");
    assert_eq!(v["journey"]["status"], "completed", "{v}");
    assert_eq!(v["session_token"].as_str().map(str::len), Some(64), "{v}");
    assert_eq!(
        v["journey"]["step"]["tiles"][0]["portal"], "Connections Portal",
        "{v}"
    );
    // The notice is sent by the effect that applies the password, right after it (F7).
    let effect = j.outbox_effect("apply-password").await;
    let notice = mail
        .mail_of(j.http, &effect, email, "your password was changed")
        .await;
    assert!(
        notice["text"]
            .as_str()
            .is_some_and(|t| t.contains("was changed")),
        "{notice}"
    );
    notice
}

/// `passage journey show ID --json`, one event per line.
fn timeline(dir: &Path, id: &str) -> Vec<Value> {
    let out = passage(dir)
        .args(["journey", "show", id, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "journey show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn events<'a>(timeline: &'a [Value], kind: &str) -> Vec<&'a Value> {
    timeline
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| &e["event"])
        .collect()
}

/// The provider references of the journey's `MessageDelivered` events on `channel`.
fn delivered(timeline: &[Value], channel: &str) -> Vec<String> {
    events(timeline, "MessageDelivered")
        .into_iter()
        .filter(|e| e["channel"] == channel)
        .map(|e| e["provider_ref"].as_str().unwrap().to_owned())
        .collect()
}

fn names(timeline: &[Value]) -> Vec<String> {
    timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// `passage serve` with email over SMTP to MailDev and SMS and calls through the fake
/// Twilio, configured the documented way: `PASSAGE_*` environment variables.
fn smtp_twilio_node(dir: &Path, mail: &MailDev, fake: &FakeTwilio) -> Node {
    let env = |base: &str| -> Vec<(String, String)> {
        [
            ("PASSAGE_EMAIL_CHANNEL", "smtp"),
            ("PASSAGE_SMTP_HOST", mail.host.as_str()),
            ("PASSAGE_SMTP_PORT", &mail.port.to_string()),
            ("PASSAGE_SMTP_SECURITY", "plain"),
            ("PASSAGE_SMTP_FROM", SMTP_FROM),
            ("PASSAGE_SMS_CHANNEL", "twilio"),
            ("PASSAGE_VOICE_CHANNEL", "twilio"),
            ("PASSAGE_TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("PASSAGE_TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("PASSAGE_TWILIO_FROM", FROM),
            ("PASSAGE_TWILIO_API_BASE", &fake.base),
            ("PASSAGE_PUBLIC_BASE_URL", base),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    };
    tokio::task::block_in_place(|| Node::start(dir, env))
}

async fn open_store(dir: &Path) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect(&format!("sqlite://{}", dir.join("passage.db").display()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_journey_over_smtp_and_twilio() {
    let t0 = Instant::now();
    let http = reqwest::Client::new();
    let Some(mail) = maildev(&http).await else {
        return;
    };
    let fake = FakeTwilio::start().await;
    // Bob's phone rings on: his call stays open while forged callbacks are tried on it.
    fake.phone(BOB_PHONE, Phone::Ringing);
    let dir = scratch_dir("channels-e2e");
    let mut node = smtp_twilio_node(&dir, &mail, &fake);
    let base = node.base.clone();
    let started = t0.elapsed();
    let store = open_store(&dir).await;

    // --- SMS -------------------------------------------------------------------------------
    let t = Instant::now();
    let (sms_j, sms_code_mail) = to_second_factor(&http, &base, &store, &mail, ALICE, "sms").await;
    let v = sms_j.view().await;
    assert_eq!(v["journey"]["step"]["kind"], "code", "{v}");
    assert_eq!(v["journey"]["step"]["channel"], "sms", "{v}");
    assert_eq!(v["journey"]["step"]["sent_to"], "+61 ••• ••• 678", "{v}");
    let sms = provider_request(&fake, "Messages", &sms_j.id).await;
    assert_eq!(sms.status, 201, "{sms:?}");
    assert_eq!(field(&sms.form, "To"), Some(ALICE_PHONE));
    assert_eq!(field(&sms.form, "From"), Some(FROM));
    let sms_sid = serde_json::from_str::<Value>(&sms.body).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(is_sid(&sms_sid, "SM"), "{sms_sid}");
    let code = six_digits(field(&sms.form, "Body").unwrap());
    let (status, v) = sms_j.post("code", json!({ "code": code })).await;
    assert_eq!(status, 200, "sms code: {v}");
    assert_eq!(v["journey"]["step"]["kind"], "set-password", "{v}");
    assert_eq!(v["journey"]["step"]["prompt"], "Reset Password", "{v}");
    let sms_notice = set_password(&sms_j, &mail, ALICE).await;
    // The fake reported the SMS as sent, then delivered: both signed, both accepted.
    let status_url = field(&sms.form, "StatusCallback").unwrap().to_owned();
    assert!(
        status_url.starts_with(&format!("{base}/webhooks/twilio/message-status?")),
        "{status_url}"
    );
    let statuses = wait_for("two message-status callbacks", 10, || {
        let cbs: Vec<_> = fake
            .callbacks()
            .into_iter()
            .filter(|c| c.url == status_url)
            .collect();
        async move { (cbs.len() >= 2).then_some(cbs) }
    })
    .await;
    assert!(
        statuses.iter().all(|c| c.status == 204),
        "message-status callbacks: {statuses:?}"
    );
    let sms_time = t.elapsed();

    // --- Voice: the fake places the call, reads the TwiML, presses #, posts the gather ----
    let t = Instant::now();
    let (call_j, _) = to_second_factor(&http, &base, &store, &mail, ALICE, "call").await;
    let call = provider_request(&fake, "Calls", &call_j.id).await;
    assert_eq!(call.status, 201, "{call:?}");
    assert_eq!(field(&call.form, "To"), Some(ALICE_PHONE));
    let call_sid = serde_json::from_str::<Value>(&call.body).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(is_sid(&call_sid, "CA"), "{call_sid}");
    let gather_url = gather_action(&call);
    assert!(
        gather_url.starts_with(&format!(
            "{base}/webhooks/twilio/gather?journey={}&",
            call_j.id
        )),
        "{gather_url}"
    );
    let v = wait_for("the call to confirm the journey", 20, || async {
        let v = call_j.view().await;
        (v["journey"]["step"]["kind"] == "set-password").then_some(v)
    })
    .await;
    assert_eq!(v["journey"]["step"]["prompt"], "Reset Password", "{v}");
    // The journey moves on while the portal answers the gather; the fake records the
    // callback once it has read that answer, a moment later.
    let gather = wait_for("the phone's gather callback", 10, || {
        let found = fake.callbacks().into_iter().find(|c| c.url == gather_url);
        async move { found }
    })
    .await;
    assert_eq!(gather.status, 200, "{gather:?}");
    assert!(gather.body.contains("Thank you"), "{gather:?}");
    assert_eq!(field(&gather.params, "Digits"), Some("#"));
    // Then the call ends and Twilio reports it `completed`: signed, accepted, and (the call
    // being closed by the #) nothing more is recorded about it (checked in the timeline).
    let call_status_url = field(&call.form, "StatusCallback").unwrap().to_owned();
    assert!(
        call_status_url.starts_with(&format!("{base}/webhooks/twilio/call-status?")),
        "{call_status_url}"
    );
    let ended = wait_for("the call-status callback", 10, || {
        let cb = fake
            .callbacks()
            .into_iter()
            .find(|c| c.url == call_status_url);
        async move { cb }
    })
    .await;
    assert_eq!(field(&ended.params, "CallStatus"), Some("completed"));
    assert_eq!(ended.status, 204, "{ended:?}");
    set_password(&call_j, &mail, ALICE).await;
    let voice_time = t.elapsed();

    // --- A forged gather callback on an open call is refused and changes nothing ----------
    let t = Instant::now();
    let (bob_j, _) = to_second_factor(&http, &base, &store, &mail, BOB, "call").await;
    let bob_call = provider_request(&fake, "Calls", &bob_j.id).await;
    assert_eq!(field(&bob_call.form, "To"), Some(BOB_PHONE));
    let bob_sid = serde_json::from_str::<Value>(&bob_call.body).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_gather = gather_action(&bob_call);
    let before = bob_j.view().await;
    assert_eq!(before["journey"]["step"]["kind"], "voice", "{before}");
    assert_eq!(before["journey"]["step"]["call_open"], true, "{before}");
    let count_events = |id: String| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE stream = ?")
                .bind(id)
                .fetch_one(&store)
                .await
                .unwrap()
        }
    };
    // The fake has the call request, but the worker may not yet have recorded its outcome
    // (an event): count once Bob's due outbox entries are all handled.
    wait_for("Bob's call to be recorded", 10, || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE stream = ? AND status = 'pending' \
             AND available_at <= ?",
        )
        .bind(&bob_j.id)
        .bind(now)
        .fetch_one(&store)
        .await
        .unwrap();
        (pending == 0).then_some(())
    })
    .await;
    let events_before = count_events(bob_j.id.clone()).await;
    assert!(events_before > 0, "the stream column holds the journey id");
    let params = |digits: &str| {
        support::pairs(&[
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", &bob_sid),
            ("CallStatus", "in-progress"),
            ("Digits", digits),
            ("Direction", "outbound-api"),
            ("FinishedOnKey", ""),
            ("From", FROM),
            ("To", BOB_PHONE),
        ])
    };
    let forgeries = [
        (
            "signed with another token",
            Some(support::sign(
                "not-the-auth-token",
                &bob_gather,
                &params("#"),
            )),
        ),
        ("no signature", None),
        (
            "signature of other parameters (Digits=5)",
            Some(support::sign(AUTH_TOKEN, &bob_gather, &params("5"))),
        ),
        (
            "signature of another URL",
            Some(support::sign(
                AUTH_TOKEN,
                &bob_gather.replace("127.0.0.1", "localhost"),
                &params("#"),
            )),
        ),
        ("garbage signature", Some("AAAA".to_owned())),
    ];
    for (what, signature) in forgeries {
        let (status, body) = post_form(&http, &bob_gather, &params("#"), signature).await;
        assert_eq!(status, 403, "forged gather ({what}): {body}");
        assert!(!body.contains("Thank you"), "{what}: {body}");
    }
    // The webhooks sit under the portal's security layer: its headers on every answer (R52).
    let refused = http.post(&bob_gather).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    for name in [
        "x-frame-options",
        "content-security-policy",
        "cache-control",
    ] {
        assert!(
            refused.headers().contains_key(name),
            "a webhook answer without {name}: {:?}",
            refused.headers()
        );
    }
    let after = bob_j.view().await;
    assert_eq!(after, before, "a forged callback changed the journey");
    assert_eq!(
        count_events(bob_j.id.clone()).await,
        events_before,
        "a forged callback appended events"
    );
    // The same request, signed with the account's token, is Twilio's: it confirms.
    let (status, body) = post_form(
        &http,
        &bob_gather,
        &params("#"),
        Some(support::sign(AUTH_TOKEN, &bob_gather, &params("#"))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Thank you"), "{body}");
    let v = bob_j.view().await;
    assert_eq!(v["journey"]["step"]["kind"], "set-password", "{v}");
    store.close().await;
    let forged_time = t.elapsed();

    // --- The timelines, read with the node stopped -----------------------------------------
    tokio::task::block_in_place(|| node.stop());
    let log = node.log();
    // Six forgeries within the minute: logged once, not once each.
    assert_eq!(
        log.matches("twilio callback rejected").count(),
        1,
        "the refusals are logged, at most once a minute: {log}"
    );

    let sms_tl = timeline(&dir, &sms_j.id);
    let email_refs = delivered(&sms_tl, "email");
    assert_eq!(email_refs.len(), 2, "code + notice: {:?}", names(&sms_tl));
    for (r, m) in email_refs.iter().zip([&sms_code_mail, &sms_notice]) {
        let message_id = m["headers"]["message-id"].as_str().unwrap();
        assert!(
            r.starts_with(&format!("smtp {message_id} 250")),
            "email provider_ref {r:?} names the mail MailDev got ({message_id})"
        );
    }
    // Accepted by the provider, then confirmed by the carrier's status callback.
    assert_eq!(
        delivered(&sms_tl, "sms"),
        vec![
            sms_sid.clone(),
            format!("{sms_sid} delivered to the handset")
        ]
    );
    assert!(events(&sms_tl, "MessageFailed").is_empty(), "{sms_tl:?}");
    for kind in ["CodeVerified", "PasswordChanged", "JourneyCompleted"] {
        assert!(
            !events(&sms_tl, kind).is_empty(),
            "{kind} missing: {:?}",
            names(&sms_tl)
        );
    }

    let call_tl = timeline(&dir, &call_j.id);
    assert_eq!(
        delivered(&call_tl, "email").len(),
        2,
        "{:?}",
        names(&call_tl)
    );
    assert_eq!(delivered(&call_tl, "voice"), vec![call_sid.clone()]);
    assert_eq!(events(&call_tl, "CallConfirmed").len(), 1);
    assert!(events(&call_tl, "MessageFailed").is_empty(), "{call_tl:?}");
    let confirmed = call_tl
        .iter()
        .find(|e| e["type"] == "CallConfirmed")
        .unwrap();
    assert!(
        confirmed["metadata"].to_string().contains("twilio"),
        "the confirmation is the provider's: {confirmed}"
    );
    // After the #, Twilio reports the call `completed`: the call is closed already, so
    // nothing else should be recorded about it.
    let after_confirm: Vec<String> = names(&call_tl)
        .into_iter()
        .skip_while(|n| n != "CallConfirmed")
        .skip(1)
        .collect();
    assert!(
        !after_confirm.iter().any(|n| n == "CallFailed"),
        "the completed status callback failed a confirmed call: {after_confirm:?}"
    );

    let bob_tl = timeline(&dir, &bob_j.id);
    assert_eq!(
        events(&bob_tl, "CallConfirmed").len(),
        1,
        "{:?}",
        names(&bob_tl)
    );
    assert_eq!(delivered(&bob_tl, "voice"), vec![bob_sid]);

    let out = passage(&dir).args(["audit", "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "channels_e2e: node up in {started:?}; SMS journey {sms_time:?}; voice journey \
         {voice_time:?}; forged callbacks {forged_time:?}; total {:?}",
        t0.elapsed()
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `action` of the call's `<Gather>`.
fn gather_action(call: &Recorded) -> String {
    let twiml = field(&call.form, "Twiml").expect("inline TwiML");
    let doc = support::parse_twiml(twiml).expect("the TwiML parses");
    doc.iter()
        .find_map(|n| match n {
            Twiml::Gather { attrs, .. } => attrs.get("action").cloned(),
            _ => None,
        })
        .expect("a <Gather> with an action")
}

/// What the carrier and the phone report comes back through signed callbacks and lands in
/// the timeline (src/callbacks.rs): an undelivered SMS is a `MessageFailed` with the
/// carrier's error, a call taken by voicemail is `CallFailed { voicemail }` (R26).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carrier_and_call_outcomes_reach_the_timeline() {
    let http = reqwest::Client::new();
    let Some(mail) = maildev(&http).await else {
        return;
    };
    let fake = FakeTwilio::start().await;
    fake.phone(ALICE_PHONE, Phone::Unreachable { error_code: 30003 });
    let dir = scratch_dir("channels-outcomes");
    let mut node = smtp_twilio_node(&dir, &mail, &fake);
    let base = node.base.clone();
    let store = open_store(&dir).await;

    let (sms_j, _) = to_second_factor(&http, &base, &store, &mail, ALICE, "sms").await;
    let sms = provider_request(&fake, "Messages", &sms_j.id).await;
    assert_eq!(
        sms.status, 201,
        "Twilio accepts it; the carrier fails it later"
    );
    let status_url = field(&sms.form, "StatusCallback").unwrap().to_owned();
    let statuses = wait_for("sent + undelivered callbacks", 10, || {
        let cbs: Vec<_> = fake
            .callbacks()
            .into_iter()
            .filter(|c| c.url == status_url)
            .collect();
        async move { (cbs.len() >= 2).then_some(cbs) }
    })
    .await;
    assert!(statuses.iter().all(|c| c.status == 204), "{statuses:?}");
    assert_eq!(
        field(&statuses[1].params, "MessageStatus"),
        Some("undelivered")
    );

    fake.phone(ALICE_PHONE, Phone::Voicemail);
    let (call_j, _) = to_second_factor(&http, &base, &store, &mail, ALICE, "call").await;
    let v = wait_for("the voicemail to fail the call", 20, || async {
        let v = call_j.view().await;
        (v["journey"]["step"]["call_open"] == false).then_some(v)
    })
    .await;
    assert_eq!(v["journey"]["step"]["kind"], "voice", "{v}");
    assert_eq!(v["journey"]["step"]["calls_left"], 2, "{v}");
    store.close().await;

    tokio::task::block_in_place(|| node.stop());
    let sms_tl = timeline(&dir, &sms_j.id);
    let sms_sid = serde_json::from_str::<Value>(&sms.body).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        delivered(&sms_tl, "sms"),
        vec![sms_sid],
        "accepted by Twilio"
    );
    let failed = events(&sms_tl, "MessageFailed");
    assert_eq!(failed.len(), 1, "{:?}", names(&sms_tl));
    assert_eq!(failed[0]["channel"], "sms", "{}", failed[0]);
    assert_eq!(
        failed[0]["error"], "carrier: undelivered (30003)",
        "{}",
        failed[0]
    );
    assert_eq!(failed[0]["permanent"], true, "{}", failed[0]);
    let call_tl = timeline(&dir, &call_j.id);
    let call_failed = events(&call_tl, "CallFailed");
    assert_eq!(call_failed.len(), 1, "{:?}", names(&call_tl));
    assert_eq!(call_failed[0]["reason"], "voicemail", "{}", call_failed[0]);
    assert!(events(&call_tl, "CallConfirmed").is_empty());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// R26 (docs/security.md): "In production, key presses must come from an authenticated
/// provider callback". With Twilio configured, the JSON API's unsigned stand-in for the
/// gather webhook (`POST /api/journeys/{id}/call`) must not confirm a call either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsigned_key_presses_are_refused_when_twilio_is_configured() {
    let http = reqwest::Client::new();
    let Some(mail) = maildev(&http).await else {
        return;
    };
    let fake = FakeTwilio::start().await;
    fake.phone(BOB_PHONE, Phone::Ringing);
    let dir = scratch_dir("channels-unsigned");
    let node = smtp_twilio_node(&dir, &mail, &fake);
    let base = node.base.clone();
    let store = open_store(&dir).await;
    let (j, _) = to_second_factor(&http, &base, &store, &mail, BOB, "call").await;
    let call = provider_request(&fake, "Calls", &j.id).await;
    // The call id travels in every callback URL Twilio is given (and in its request logs):
    // the webhooks treat it as public and rely on the signature.
    let call_id = query_param(field(&call.form, "StatusCallback").unwrap(), "call").unwrap();
    let before = j.view().await;
    assert_eq!(before["journey"]["step"]["call_open"], true, "{before}");
    let (status, body) = j
        .post("call", json!({ "call_id": call_id, "digits": "#" }))
        .await;
    let after = j.view().await;
    assert_eq!(
        after["journey"]["step"]["kind"], "voice",
        "POST /api/journeys/{{id}}/call confirmed a Twilio call without a provider \
         signature (answered {status}: {body})"
    );
    assert_ne!(status, 200, "{body}");
    store.close().await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

// --- Test 3: budgets under a burst -----------------------------------------------------------

// Below the defaults (5 and 3 per recipient, 1000 and 300 global), so passing proves the
// configuration file is read.
const SMS_PER_RECIPIENT: usize = 4;
const SMS_GLOBAL: usize = 10;
const CALLS_PER_RECIPIENT: usize = 2;
const CALLS_GLOBAL: usize = 6;
const BURST: usize = 200;
const ACCOUNTS: usize = 40;
const CONCURRENCY: usize = 16;

fn burst_config(fake: &FakeTwilio, base: &str) -> String {
    format!(
        r#"
email = "dev"
sms = "twilio"
voice = "twilio"

[twilio]
api_base = "{api}"
account_sid = "{ACCOUNT_SID}"
auth_token = {{ env = "PASSAGE_TWILIO_AUTH_TOKEN" }}
from = "{FROM}"
public_base_url = "{base}"

[limits]
allowed_prefixes = ["+61", "+64"]

[limits.email]   # out of the way: 200 codes go to one address here
per_recipient = {{ max = 1000, window_secs = 3600 }}
global = {{ max = 10000, window_secs = 3600 }}

[limits.sms]
per_recipient = {{ max = {SMS_PER_RECIPIENT}, window_secs = 3600 }}
per_journey = {{ max = 4, window_secs = 3600 }}
per_prefix = {{ max = 200, window_secs = 3600 }}
global = {{ max = {SMS_GLOBAL}, window_secs = 3600 }}

[limits.voice]
per_recipient = {{ max = {CALLS_PER_RECIPIENT}, window_secs = 3600 }}
per_journey = {{ max = 3, window_secs = 3600 }}
per_prefix = {{ max = 100, window_secs = 3600 }}
global = {{ max = {CALLS_GLOBAL}, window_secs = 3600 }}
"#,
        api = fake.base
    )
}

fn burst_phone(i: usize) -> String {
    format!("+614915701{i:02}")
}

/// What a person sees of a journey, without what differs between any two journeys anyway
/// (ids, times; with `mask_recipient`, whose number it is).
fn normalize(v: &Value, mask_recipient: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "journey_id")
                .map(|(k, v)| {
                    let v = if v.is_null() {
                        Value::Null
                    } else if k.ends_with("_at") {
                        json!("<time>")
                    } else if mask_recipient
                        && matches!(k.as_str(), "sent_to" | "calling" | "phone_masked")
                    {
                        json!("<recipient>")
                    } else {
                        normalize(v, mask_recipient)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize(x, mask_recipient)).collect()),
        other => other.clone(),
    }
}

#[derive(Debug, Clone)]
struct BurstJourney {
    id: String,
    /// The bearer token of the start's answer.
    token: String,
    option: &'static str,
    /// The answer to the choice (status, body).
    choice: (u16, Value),
}

async fn outbox_code(outbox: &SqlitePool, journey: &str) -> String {
    let body = wait_for(&format!("the email code of {journey}"), 30, || async {
        sqlx::query_scalar::<_, String>(
            "SELECT body FROM messages WHERE journey_id = ? AND channel = 'email' ORDER BY id",
        )
        .bind(journey)
        .fetch_optional(outbox)
        .await
        .ok()
        .flatten()
    })
    .await;
    six_digits(&body)
}

async fn burst_journey(
    http: &reqwest::Client,
    base: &str,
    outbox: &SqlitePool,
    email: &str,
    option: &'static str,
) -> BurstJourney {
    let (status, v) = api(
        http,
        base,
        "POST",
        "/api/journeys",
        None,
        Some(json!({ "email": email })),
    )
    .await;
    assert_eq!(status, 201, "start: {v}");
    let id = v["journey_id"].as_str().unwrap().to_owned();
    let token = journey_token(&v);
    let auth = Some(token.as_str());
    let code = outbox_code(outbox, &id).await;
    let path = format!("/api/journeys/{id}/code");
    let code = Some(json!({ "code": code }));
    let (status, v) = api(http, base, "POST", &path, auth, code).await;
    assert_eq!(status, 200, "email code: {v}");
    let path = format!("/api/journeys/{id}/choice");
    let option_body = Some(json!({ "option": option }));
    let choice = api(http, base, "POST", &path, auth, option_body).await;
    BurstJourney {
        id,
        token,
        option,
        choice,
    }
}

/// Drives `jobs` (email, option) through the API, `CONCURRENCY` at a time.
async fn burst(
    http: &reqwest::Client,
    base: &str,
    outbox: &SqlitePool,
    jobs: Vec<(String, &'static str)>,
) -> Vec<BurstJourney> {
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, base, outbox) = (http.clone(), base.to_owned(), outbox.clone());
        let (jobs, next) = (jobs.clone(), next.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((email, option)) = jobs.get(i) else {
                    return mine;
                };
                mine.push(burst_journey(&http, &base, &outbox, email, option).await);
            }
        });
    }
    let mut done = Vec::new();
    while let Some(r) = tasks.join_next().await {
        done.extend(r.expect("a burst task panicked"));
    }
    assert_eq!(done.len(), jobs.len());
    done
}

/// Waits until the worker has handled every outbox entry (delivered or refused).
async fn drained(store: &SqlitePool) {
    wait_for("the outbox to drain", 60, || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
                .fetch_one(store)
                .await
                .unwrap();
        (pending == 0).then_some(())
    })
    .await;
}

/// `MessageFailed` errors recorded on `journeys`, by error text. Read through an engine on
/// the node's database: provider errors are sealed with each journey's key (they may quote
/// a recipient), and the engine opens them.
async fn failures(dir: &Path, journeys: &[BurstJourney]) -> BTreeMap<String, usize> {
    let store = passage_store::SqliteStore::open(&dir.join("passage.db"))
        .await
        .unwrap();
    let engine = passage_runtime::Engine::new(
        store.clone(),
        store.clone(),
        Arc::new(passage_runtime::SystemClock),
        passage_runtime::EngineOptions {
            keys: passage_core::secrets::Keys::derive(SECRET.as_bytes()),
            hasher: passage_core::secrets::Argon2id::new(256, 1, 1),
        },
    );
    let mut by_error = BTreeMap::new();
    for j in journeys {
        let id: passage_core::ports::JourneyId = j.id.parse().unwrap();
        for e in engine.timeline(id).await.unwrap() {
            let Some(passage_core::journey::JourneyEvent::MessageFailed {
                error, permanent, ..
            }) = e.event
            else {
                continue;
            };
            assert!(permanent, "{error}");
            // "permanent delivery failure: budget exceeded: sms per recipient (+61 ••• •••
            // 678), 4 per 1h" → "budget exceeded: sms per recipient".
            let error = &error[error.find("budget exceeded").unwrap_or(0)..];
            let kind = error
                .split(" (")
                .next()
                .unwrap()
                .split(", ")
                .next()
                .unwrap();
            *by_error.entry(kind.to_owned()).or_insert(0) += 1;
        }
    }
    store.close().await;
    by_error
}

/// Journeys of `wave` whose message the fake received, per option.
fn sent(fake: &FakeTwilio, wave: &[BurstJourney]) -> (HashSet<String>, Vec<Recorded>) {
    let ids: HashSet<&str> = wave.iter().map(|j| j.id.as_str()).collect();
    let reqs: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| request_journey(r).is_some_and(|j| ids.contains(j.as_str())))
        .collect();
    let journeys = reqs.iter().filter_map(request_journey).collect();
    (journeys, reqs)
}

/// Every journey of one option answered alike, whether its message was sent or withheld.
async fn assert_indistinguishable(
    http: &reqwest::Client,
    base: &str,
    wave: &[BurstJourney],
    sent: &HashSet<String>,
    mask_recipient: bool,
) {
    for option in ["sms", "call"] {
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for j in wave.iter().filter(|j| j.option == option) {
            let path = format!("/api/journeys/{}", j.id);
            let (status, view) = api(http, base, "GET", &path, Some(&j.token), None).await;
            assert_eq!(status, 200, "{view}");
            let shown = json!({
                "choice_status": j.choice.0,
                "choice": normalize(&j.choice.1, mask_recipient),
                "view_later": normalize(&view, mask_recipient),
            })
            .to_string();
            let entry = seen.entry(shown).or_default();
            if sent.contains(&j.id) {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        assert_eq!(
            seen.len(),
            1,
            "{option}: the answers differ between journeys (sent, withheld per variant): {seen:#?}"
        );
        let (shown, (s, w)) = seen.into_iter().next().unwrap();
        assert!(s > 0 && w > 0, "{option}: {s} sent, {w} withheld");
        assert!(shown.contains("\"choice_status\":200"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budgets_hold_under_a_burst() {
    let t0 = Instant::now();
    let http = reqwest::Client::new();
    let fake = FakeTwilio::start().await;
    // Phones that ring on: a call that got through and one that was withheld look the same
    // to the journey afterwards too (nobody answers either).
    fake.phone(ALICE_PHONE, Phone::Ringing);
    for i in 0..ACCOUNTS {
        fake.phone(&burst_phone(i), Phone::Ringing);
    }
    let dir = scratch_dir("channels-burst");

    // The schema (a journey for an address nobody has: no message, no budget spent), then
    // 40 more accounts whose mobiles share +61491570.
    let out = passage(&dir)
        .args([
            "journey",
            "start",
            "--email",
            "schema-only@example.com",
            "--no-deliver",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = SqlitePoolOptions::new()
        .max_connections(2)
        .connect(&format!("sqlite://{}", dir.join("passage.db").display()))
        .await
        .unwrap();
    for i in 0..ACCOUNTS {
        sqlx::query(
            "INSERT INTO accounts (account_id, email, display_name, phone, password_phc, enabled, updated_at) \
             VALUES (?, ?, ?, ?, ?, 1, 0)",
        )
        .bind(format!("acct-burst-{i:02}"))
        .bind(format!("burst{i:02}@example.com"))
        .bind(format!("Burst Account {i:02}"))
        .bind(burst_phone(i))
        .bind("$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
        .execute(&store)
        .await
        .unwrap();
    }

    let config = dir.join("channels.toml");
    let mut node = tokio::task::block_in_place(|| {
        Node::start(&dir, |base| {
            std::fs::write(&config, burst_config(&fake, base)).unwrap();
            vec![
                (
                    "PASSAGE_CHANNELS_CONFIG".to_owned(),
                    config.display().to_string(),
                ),
                (
                    "PASSAGE_TWILIO_AUTH_TOKEN".to_owned(),
                    AUTH_TOKEN.to_owned(),
                ),
            ]
        })
    });
    let base = node.base.clone();
    let outbox = SqlitePoolOptions::new()
        .max_connections(4)
        .connect(&format!("sqlite://{}", dir.join("outbox.db").display()))
        .await
        .unwrap();

    // Wave 1: 200 reset requests for one account, one number: half SMS, half calls.
    let t = Instant::now();
    let jobs = (0..BURST)
        .map(|i| (ALICE.to_owned(), if i % 2 == 0 { "sms" } else { "call" }))
        .collect();
    let wave1 = burst(&http, &base, &outbox, jobs).await;
    drained(&store).await;
    let wave1_time = t.elapsed();
    let (sent1, reqs1) = sent(&fake, &wave1);
    let texts = reqs1.iter().filter(|r| r.resource == "Messages").count();
    let calls = reqs1.iter().filter(|r| r.resource == "Calls").count();
    assert!(
        reqs1
            .iter()
            .all(|r| field(&r.form, "To") == Some(ALICE_PHONE) && r.status == 201),
        "{reqs1:?}"
    );
    assert!(
        texts <= SMS_PER_RECIPIENT,
        "{texts} SMS to one number, budget {SMS_PER_RECIPIENT}"
    );
    assert!(
        calls <= CALLS_PER_RECIPIENT,
        "{calls} calls to one number, budget {CALLS_PER_RECIPIENT}"
    );
    // Demand far exceeds the budgets, so they are used up exactly.
    assert_eq!(texts, SMS_PER_RECIPIENT);
    assert_eq!(calls, CALLS_PER_RECIPIENT);
    let failed = failures(&dir, &wave1).await;
    assert_eq!(
        failed,
        BTreeMap::from([
            (
                "budget exceeded: sms per recipient".to_owned(),
                BURST / 2 - SMS_PER_RECIPIENT
            ),
            (
                "budget exceeded: voice per recipient".to_owned(),
                BURST / 2 - CALLS_PER_RECIPIENT
            ),
        ]),
        "every withheld message is recorded for support"
    );
    assert_indistinguishable(&http, &base, &wave1, &sent1, false).await;

    // Wave 2: 40 accounts, each one SMS and one call journey: the global budgets hold.
    let t = Instant::now();
    let jobs = (0..ACCOUNTS)
        .flat_map(|i| {
            let email = format!("burst{i:02}@example.com");
            [(email.clone(), "sms"), (email, "call")]
        })
        .collect();
    let wave2 = burst(&http, &base, &outbox, jobs).await;
    drained(&store).await;
    let wave2_time = t.elapsed();
    let all = fake.requests();
    let texts = all.iter().filter(|r| r.resource == "Messages").count();
    let calls = all.iter().filter(|r| r.resource == "Calls").count();
    assert!(
        texts <= SMS_GLOBAL,
        "{texts} SMS in all, global budget {SMS_GLOBAL}"
    );
    assert!(
        calls <= CALLS_GLOBAL,
        "{calls} calls in all, global budget {CALLS_GLOBAL}"
    );
    assert_eq!(texts, SMS_GLOBAL);
    assert_eq!(calls, CALLS_GLOBAL);
    let (sent2, reqs2) = sent(&fake, &wave2);
    for resource in ["Messages", "Calls"] {
        let to: Vec<&str> = reqs2
            .iter()
            .filter(|r| r.resource == resource)
            .filter_map(|r| field(&r.form, "To"))
            .collect();
        let distinct: BTreeSet<&str> = to.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            to.len(),
            "{resource}: one per number: {to:?}"
        );
    }
    let failed = failures(&dir, &wave2).await;
    assert_eq!(
        failed,
        BTreeMap::from([
            (
                "budget exceeded: sms global".to_owned(),
                ACCOUNTS - (SMS_GLOBAL - SMS_PER_RECIPIENT)
            ),
            (
                "budget exceeded: voice global".to_owned(),
                ACCOUNTS - (CALLS_GLOBAL - CALLS_PER_RECIPIENT)
            ),
        ]),
    );
    assert_indistinguishable(&http, &base, &wave2, &sent2, true).await;

    // The spent global budgets were raised as alerts.
    tokio::task::block_in_place(|| node.stop());
    let log = node.log();
    assert!(
        log.contains("budget exceeded: sms global"),
        "the spent global budget is logged for alerting"
    );
    let out = passage(&dir).args(["audit", "verify"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "channels_e2e burst: wave 1 ({BURST} journeys, one number) {wave1_time:?}; wave 2 \
         ({} journeys, {ACCOUNTS} accounts) {wave2_time:?}; total {:?}",
        ACCOUNTS * 2,
        t0.elapsed()
    );
    outbox.close().await;
    store.close().await;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
