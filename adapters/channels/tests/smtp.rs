//! Email against real SMTP servers on loopback (MailDev, started by
//! `tests/smtp-server.sh start`), read back through MailDev's REST API.
//!
//! The servers are found through `PASSAGE_TEST_SMTP` / `PASSAGE_TEST_SMTP_API` (open) and
//! `PASSAGE_TEST_SMTP_AUTH` / `PASSAGE_TEST_SMTP_AUTH_API` (AUTH required), defaulting to
//! the script's fixed ports. When a server does not answer: outside CI the test is skipped
//! with a loud message; with `CI=true` it fails.
//!
//! Reply-code classification (4xx → transient, 5xx → permanent) is also tested against a
//! scripted SMTP responder in this file, because MailDev never answers 4xx.

use passage_channels::{SecretSource, SmtpChannel, SmtpConfig, SmtpSecurity};
use passage_core::ports::{Channel, JourneyId, MessageKind, OutboundMessage, SendError};
use serde_json::Value;
use std::io::Write as _;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

const AUTH_USER: &str = "passage";
const AUTH_PASS: &str = "passage-test-secret";

struct Server {
    host: String,
    port: u16,
    api: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The server, or `None` (skip) when it does not answer outside CI.
async fn server(smtp_var: &str, api_var: &str, smtp: &str, api: &str) -> Option<Server> {
    let addr = env_or(smtp_var, smtp);
    let api = env_or(api_var, api).trim_end_matches('/').to_owned();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let healthy = reqwest::Client::new()
        .get(format!("{api}/api/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if !healthy {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true but no MailDev answers at {api} ({smtp_var}={addr}); \
                 start it with adapters/channels/tests/smtp-server.sh start"
            );
        }
        // Straight to stderr: the test harness captures eprintln! of passing tests, and a
        // skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: no SMTP test server at {addr} / {api}.\n\
             !!!!!!!! Run `adapters/channels/tests/smtp-server.sh start` to test email \
             against a real SMTP server.\n"
        );
        return None;
    }
    Some(Server {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        api,
    })
}

async fn open_server() -> Option<Server> {
    server(
        "PASSAGE_TEST_SMTP",
        "PASSAGE_TEST_SMTP_API",
        "127.0.0.1:18025",
        "http://127.0.0.1:18080",
    )
    .await
}

async fn auth_server() -> Option<Server> {
    server(
        "PASSAGE_TEST_SMTP_AUTH",
        "PASSAGE_TEST_SMTP_AUTH_API",
        "127.0.0.1:18026",
        "http://127.0.0.1:18081",
    )
    .await
}

fn config(host: &str, port: u16) -> SmtpConfig {
    SmtpConfig {
        host: host.into(),
        port: Some(port),
        security: SmtpSecurity::Plain,
        username: None,
        password: None,
        from: "Enterprise Customer Portal <no-reply@portal.example>".into(),
        reply_to: Some("Service Desk <service-desk@portal.example>".into()),
        portal_name: "Enterprise Customer Portal".into(),
        timeout_secs: 5,
        ca_file: None,
        templates_dir: None,
    }
}

fn email(to: &str, code: &str) -> OutboundMessage {
    OutboundMessage {
        notice: false,
        idempotency_key: Uuid::new_v4(),
        journey_id: JourneyId(Uuid::new_v4()),
        kind: MessageKind::Email {
            to: to.into(),
            subject: "Enterprise Customer Portal: your verification code".into(),
            text: format!(
                "Your Enterprise Customer Portal verification code is:\n\n    {code}\n\n\
                 Enter it on the page where you asked to reset your password. It expires in \
                 5 minutes. <b>Not bold</b>\n"
            ),
        },
    }
}

/// All mail MailDev holds.
async fn mails(api: &str) -> Vec<Value> {
    reqwest::get(format!("{api}/api/email"))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

/// Mail whose any address (headers or envelope) or subject mentions `needle`.
async fn mails_mentioning(api: &str, needle: &str) -> Vec<Value> {
    mails(api)
        .await
        .into_iter()
        .filter(|m| {
            m["to"].to_string().contains(needle)
                || m["envelope"].to_string().contains(needle)
                || m["cc"].to_string().contains(needle)
                || m["bcc"].to_string().contains(needle)
                || m["calculatedBcc"].to_string().contains(needle)
                || m["headers"].to_string().contains(needle)
        })
        .collect()
}

async fn wait_for_mail(api: &str, to: &str) -> Value {
    for _ in 0..100 {
        let mut found = mails_mentioning(api, to).await;
        if let Some(m) = found.pop() {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mail for {to} arrived at {api}");
}

#[tokio::test]
async fn the_code_email_reaches_exactly_the_one_recipient() {
    let Some(s) = open_server().await else {
        return;
    };
    let channel = SmtpChannel::new(&config(&s.host, s.port)).unwrap();
    let to = format!("alice.{}@example.com", Uuid::new_v4().simple());
    let m = email(&to, "402917");
    let receipt = channel.deliver(&m).await.unwrap();
    let message_id = format!("<{}@portal.example>", m.idempotency_key);
    assert!(
        receipt
            .provider_ref
            .starts_with(&format!("smtp {message_id} 250")),
        "{receipt:?}"
    );
    let mail = wait_for_mail(&s.api, &to).await;
    assert_eq!(
        mail["subject"],
        "Enterprise Customer Portal: your verification code"
    );
    let to_list = mail["to"].as_array().unwrap();
    assert_eq!(to_list.len(), 1, "{mail}");
    assert_eq!(to_list[0]["address"], to.as_str());
    let envelope_to = mail["envelope"]["to"].as_array().unwrap();
    assert_eq!(envelope_to.len(), 1, "exactly one RCPT TO: {mail}");
    assert_eq!(envelope_to[0]["address"], to.as_str());
    assert!(mail["cc"].as_array().is_none_or(|c| c.is_empty()));
    assert!(
        mail["calculatedBcc"]
            .as_array()
            .is_none_or(|c| c.is_empty())
    );
    assert_eq!(mail["from"][0]["address"], "no-reply@portal.example");
    assert_eq!(mail["from"][0]["name"], "Enterprise Customer Portal");
    // The raw message: one To header, the Reply-To, a Date.
    let source = reqwest::get(format!(
        "{}/api/email/{}/source",
        s.api,
        mail["id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let headers = source.split("\r\n\r\n").next().unwrap_or(&source);
    let headers = headers.split("\n\n").next().unwrap_or(headers);
    let to_headers: Vec<&str> = headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("to:"))
        .collect();
    assert_eq!(to_headers, vec![format!("To: {to}")], "{headers}");
    assert!(!headers.to_ascii_lowercase().contains("\ncc:"), "{headers}");
    assert!(
        !headers.to_ascii_lowercase().contains("\nbcc:"),
        "{headers}"
    );
    assert!(
        headers.contains("Reply-To: \"Service Desk\" <service-desk@portal.example>"),
        "{headers}"
    );
    assert!(headers.contains("\nDate: "), "{headers}");
    assert_eq!(mail["headers"]["message-id"], message_id.as_str());
    assert_eq!(mail["headers"]["auto-submitted"], "auto-generated");
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("    402917"), "{text}");
    assert!(text.starts_with("Enterprise Customer Portal\n"), "{text}");
    assert!(
        text.contains("Replies to this address are not read"),
        "{text}"
    );
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains("<strong>402917</strong>"), "{html}");
    assert!(
        html.contains("&lt;b&gt;Not bold&lt;/b&gt;"),
        "escaped: {html}"
    );
    assert!(!html.contains("<b>Not bold</b>"), "{html}");
    assert!(
        html.contains("<title>Enterprise Customer Portal: your verification code</title>"),
        "{html}"
    );
}

#[tokio::test]
async fn header_injection_and_address_lists_are_refused_and_nothing_is_sent() {
    let Some(s) = open_server().await else {
        return;
    };
    let channel = SmtpChannel::new(&config(&s.host, s.port)).unwrap();
    let id = Uuid::new_v4().simple().to_string();
    let victim = format!("victim.{id}@example.com");
    let attacker = format!("attacker.{id}@evil.example");
    let tricks = [
        format!("{victim}\r\nBcc: {attacker}"),
        format!("{victim}\nBcc: {attacker}"),
        format!("{victim}\r\n\r\nInjected body"),
        format!("{victim}, {attacker}"),
        format!("{victim};{attacker}"),
        format!("{victim} {attacker}"),
        format!("Victim <{victim}>, {attacker}"),
        format!("Victim <{victim}>"),
        format!("{victim}>\r\nRCPT TO:<{attacker}"),
        "undisclosed-recipients:;".to_owned(),
    ];
    for to in &tricks {
        let e = channel.deliver(&email(to, "111111")).await.unwrap_err();
        let SendError::Permanent(text) = &e else {
            panic!("{to:?} must be refused permanently, got {e:?}");
        };
        assert!(text.contains("recipient refused"), "{text}");
        assert!(!text.contains(&id), "the refusal masks the address: {text}");
    }
    // Refused before any connection: nothing for either address ever arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mails_mentioning(&s.api, &id).await.is_empty());
}

#[tokio::test]
async fn credentials_are_used_and_a_wrong_password_is_permanent() {
    let Some(s) = auth_server().await else {
        return;
    };
    let secret = std::env::temp_dir().join(format!("passage-smtp-pass-{}", Uuid::new_v4()));
    std::fs::write(&secret, format!("{AUTH_PASS}\n")).unwrap();
    let mut c = config(&s.host, s.port);
    c.username = Some(AUTH_USER.into());
    c.password = Some(SecretSource::File(secret.clone()));
    let channel = SmtpChannel::new(&c).unwrap();
    assert!(!format!("{channel:?}").contains(AUTH_PASS));
    let to = format!("bob.{}@example.com", Uuid::new_v4().simple());
    channel.deliver(&email(&to, "222222")).await.unwrap();
    let mail = wait_for_mail(&s.api, &to).await;
    assert!(mail["text"].as_str().unwrap().contains("222222"));

    // A wrong password: 535, permanent, and the password appears nowhere.
    std::fs::write(&secret, "not-the-password").unwrap();
    let channel = SmtpChannel::new(&c).unwrap();
    let e = channel
        .deliver(&email(
            &format!("x.{}@example.com", Uuid::new_v4().simple()),
            "1",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Permanent(ref t) if t.contains("535")),
        "{e:?}"
    );
    assert!(!e.to_string().contains("not-the-password"));
    // No credentials where the server requires them: 530, permanent.
    let channel = SmtpChannel::new(&config(&s.host, s.port)).unwrap();
    let e = channel
        .deliver(&email(
            &format!("y.{}@example.com", Uuid::new_v4().simple()),
            "1",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Permanent(ref t) if t.contains("530")),
        "{e:?}"
    );
    let _ = std::fs::remove_file(secret);
}

// ---- against a scripted relay: reply classification, a send given up on ---------------

/// What a scripted relay accepted: the recipient of each transaction, in order.
#[derive(Clone, Default)]
struct RelayLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl RelayLog {
    fn accepted_for(&self, address: &str) -> usize {
        let log = self.0.lock().unwrap();
        log.iter().filter(|r| r.contains(address)).count()
    }
}

/// How a scripted relay behaves.
#[derive(Clone, Default)]
struct Script {
    /// The reply to `RCPT TO` (default `250 OK`).
    rcpt_reply: Option<&'static str>,
    /// How long its `354` to the first `DATA` is held.
    hold_first_data: Duration,
    log: RelayLog,
}

/// A minimal SMTP server on loopback that follows `script`. It speaks DATA properly,
/// discards a message cut off before its end (as relays do), and answers each accepted one
/// `250 queued T<n>`, where `n` indexes the log. Returns its port.
async fn scripted_smtp(script: Script) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (script, first) = (script.clone(), first.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
                let mut rcpt = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split([' ', ':']).next().unwrap_or("").to_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250 scripted\r\n".to_owned(),
                        "RCPT" => {
                            rcpt = line.clone();
                            format!("{}\r\n", script.rcpt_reply.unwrap_or("250 OK"))
                        }
                        "DATA" => {
                            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                                tokio::time::sleep(script.hold_first_data).await;
                            }
                            if w.write_all(b"354 go ahead\r\n").await.is_err() {
                                break;
                            }
                            let mut complete = false;
                            while let Ok(Some(body)) = lines.next_line().await {
                                if body == "." {
                                    complete = true;
                                    break;
                                }
                            }
                            if !complete {
                                break;
                            }
                            let mut log = script.log.0.lock().unwrap();
                            log.push(rcpt.clone());
                            format!("250 queued T{}\r\n", log.len() - 1)
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => "250 OK\r\n".to_owned(),
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_4xx_reply_is_transient_and_a_5xx_reply_is_permanent_with_the_address_masked() {
    let port = scripted_smtp(Script {
        rcpt_reply: Some("451 4.7.1 Greylisted, try again later"),
        ..Script::default()
    })
    .await;
    let channel = SmtpChannel::new(&config("127.0.0.1", port)).unwrap();
    let e = channel
        .deliver(&email("carol@example.com", "333333"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Transient(ref t) if t.contains("451")),
        "{e:?}"
    );

    let port = scripted_smtp(Script {
        rcpt_reply: Some("550 5.1.1 <carol@example.com>: Recipient address rejected"),
        ..Script::default()
    })
    .await;
    let channel = SmtpChannel::new(&config("127.0.0.1", port)).unwrap();
    let e = channel
        .deliver(&email("carol@example.com", "333333"))
        .await
        .unwrap_err();
    let SendError::Permanent(text) = &e else {
        panic!("{e:?}");
    };
    assert!(text.contains("550"), "{text}");
    assert!(
        !text.contains("carol@"),
        "the server's echo of the address is masked: {text}"
    );
}

#[tokio::test]
async fn a_relay_that_does_not_answer_is_transient() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let channel = SmtpChannel::new(&config("127.0.0.1", port)).unwrap();
    let e = channel
        .deliver(&email("dave@example.com", "444444"))
        .await
        .unwrap_err();
    assert!(matches!(e, SendError::Transient(_)), "{e:?}");
}

/// The worker drops a delivery that outlives its budget, and retries it about two seconds
/// later. The send given up on must end with it: a connection kept in a pool halfway
/// through a transaction would hand its late replies to the next message, and a send left
/// running would deliver beside its own retry.
#[tokio::test]
async fn a_send_given_up_on_ends_there_and_its_retry_is_the_only_copy() {
    let log = RelayLog::default();
    let port = scripted_smtp(Script {
        hold_first_data: Duration::from_millis(1500),
        log: log.clone(),
        ..Script::default()
    })
    .await;
    let channel = SmtpChannel::new(&config("127.0.0.1", port)).unwrap();
    let first = email("erin@example.com", "555555");
    let given_up = tokio::time::timeout(Duration::from_millis(300), channel.deliver(&first)).await;
    assert!(given_up.is_err(), "the relay holds its reply: {given_up:?}");

    // Long enough for a dropped connection to be back in a pool, were there one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let queued = |receipt: &str| -> usize {
        let t = receipt.rsplit(" T").next().unwrap();
        t.parse()
            .unwrap_or_else(|_| panic!("no queue id in {receipt}"))
    };
    // Bounded: a connection reused mid-transaction can leave both ends waiting for good.
    let bounded = Duration::from_secs(15);
    let second = email("frank@example.com", "666666");
    let receipt = tokio::time::timeout(bounded, channel.deliver(&second))
        .await
        .expect("the second send ended")
        .expect("the second email is sent");
    assert_eq!(
        channel.remembered(second.idempotency_key),
        Some(receipt.clone()),
        "a later redelivery gets this receipt"
    );
    let n = queued(&receipt.provider_ref);
    assert!(
        log.0.lock().unwrap()[n].contains("frank@example.com"),
        "the second email's receipt names its own transaction: {:?}",
        log.0.lock().unwrap()
    );
    // The retry comes while the relay still holds the first exchange's reply.
    let retry = tokio::time::timeout(bounded, channel.deliver(&first))
        .await
        .expect("the retry ended")
        .expect("the retry is sent");
    let n = queued(&retry.provider_ref);
    assert!(log.0.lock().unwrap()[n].contains("erin@example.com"));

    // After the hold, the abandoned exchange must not complete a second copy.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        log.accepted_for("erin@example.com"),
        1,
        "the first email was sent once: {:?}",
        log.0.lock().unwrap()
    );
    assert_eq!(log.accepted_for("frank@example.com"), 1);
}

#[tokio::test]
async fn a_timeout_of_zero_or_of_hours_is_a_configuration_error() {
    for secs in [0, 3600] {
        let e = SmtpChannel::new(&SmtpConfig {
            timeout_secs: secs,
            ..config("127.0.0.1", 25)
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!(
                "smtp timeout_secs must be 1 to 300 seconds, not {secs}"
            )),
            "{e}"
        );
    }
}
