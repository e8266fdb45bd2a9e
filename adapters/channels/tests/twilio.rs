//! SMS and voice through the whole channel stack (limits → set → breaker → Twilio client)
//! against a stateful fake Twilio on loopback, whose phone posts signed callbacks to the
//! real webhook router, which reports to an engine-like sink.

mod support;

use passage_channels::{
    BreakerConfig, ChannelsConfig, DevOutbox, EmailProvider, PhoneProvider, SystemClock,
    build_channels,
};
use passage_core::ports::{
    CallExpectation, Channel, JourneyId, MessageKind, OutboundMessage, SendError,
};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use uuid::Uuid;

const ALICE: &str = "+61412345678";

fn sms(to: &str) -> OutboundMessage {
    OutboundMessage {
        notice: false,
        idempotency_key: Uuid::new_v4(),
        journey_id: JourneyId(Uuid::new_v4()),
        kind: MessageKind::Sms {
            to: to.into(),
            text: "042917 is your Enterprise Customer Portal verification code. Do not share it."
                .into(),
        },
    }
}

fn call(to: &str, expect: CallExpectation) -> (OutboundMessage, Uuid) {
    let call_id = Uuid::new_v4();
    let say = match expect {
        CallExpectation::PressPound => {
            "This is the Enterprise Customer Portal. Someone is resetting your password. \
             If this is you, press the pound key now. If not, hang up."
        }
        CallExpectation::ListenOnly => {
            "This is the Enterprise Customer Portal. Your verification code is: 4, 0, 2, 9, 1, 7."
        }
    };
    (
        OutboundMessage {
            notice: false,
            idempotency_key: Uuid::new_v4(),
            journey_id: JourneyId(Uuid::new_v4()),
            kind: MessageKind::Call {
                to: to.into(),
                call_id,
                say: say.into(),
                expect,
            },
        },
        call_id,
    )
}

fn field<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn sms_is_sent_and_its_delivery_reported() {
    let r = rig().await;
    let m = sms(ALICE);
    let receipt = r.channels.deliver(&m).await.unwrap();
    assert!(is_sid(&receipt.provider_ref, "SM"), "{receipt:?}");
    let reqs = r.fake.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(
        req.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert!(
        req.content_type
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(field(&req.form, "To"), Some(ALICE));
    assert_eq!(field(&req.form, "From"), Some(FROM));
    assert!(
        field(&req.form, "Body")
            .unwrap()
            .starts_with("042917 is your")
    );
    assert_eq!(
        field(&req.form, "StatusCallback").unwrap(),
        format!(
            "{}/webhooks/twilio/message-status?journey={}&effect={}",
            r.webhooks, m.journey_id, m.idempotency_key
        )
    );
    eventually("delivered status", || {
        r.sink.statuses().iter().any(|(j, e, s)| {
            *j == m.journey_id && *e == m.idempotency_key && s.status == "delivered"
        })
    })
    .await;
    let statuses = r.sink.statuses();
    assert_eq!(statuses[0].2.status, "sent");
    assert_eq!(statuses[1].2.sid, receipt.provider_ref);
    assert!(r.fake.callbacks().iter().all(|c| c.status == 204));
    assert!(r.sink.rejected().is_empty());
}

#[tokio::test]
async fn sms_through_a_messaging_service() {
    let r = rig_with(|c| {
        let t = c.twilio.as_mut().unwrap();
        t.messaging_service_sid = Some(SERVICE_SID.into());
        t.message_status_callbacks = false;
    })
    .await;
    r.channels.deliver(&sms(ALICE)).await.unwrap();
    let form = &r.fake.requests()[0].form;
    assert_eq!(field(form, "MessagingServiceSid"), Some(SERVICE_SID));
    assert_eq!(field(form, "From"), None);
    assert_eq!(field(form, "StatusCallback"), None);
}

#[tokio::test]
async fn undelivered_sms_is_reported_with_its_error_code() {
    let r = rig().await;
    r.fake
        .phone(ALICE, Phone::Unreachable { error_code: 30003 });
    let m = sms(ALICE);
    r.channels.deliver(&m).await.unwrap();
    eventually("undelivered status", || {
        r.sink.statuses().iter().any(|(_, _, s)| s.is_failure())
    })
    .await;
    let (_, effect, status) = r.sink.statuses().pop().unwrap();
    assert_eq!(effect, m.idempotency_key);
    assert_eq!(status.status, "undelivered");
    assert_eq!(status.error_code.as_deref(), Some("30003"));
}

#[tokio::test]
async fn a_number_twilio_refuses_is_a_permanent_failure_with_a_masked_number() {
    let r = rig().await;
    r.fake.phone("+61400000009", Phone::Invalid);
    let e = r.channels.deliver(&sms("+61400000009")).await.unwrap_err();
    let SendError::Permanent(text) = &e else {
        panic!("expected permanent, got {e:?}");
    };
    assert!(text.contains("21211"), "{text}");
    assert!(text.contains("+61 ••• ••• 009"), "{text}");
    assert!(!text.contains("400000009"), "the number is masked: {text}");
}

#[tokio::test]
async fn rate_limiting_carries_retry_after() {
    let r = rig().await;
    r.fake.script(Scripted::Status {
        status: 429,
        retry_after: Some(7),
        code: 20429,
        message: "Too Many Requests".into(),
    });
    let m = sms(ALICE);
    let e = r.channels.deliver(&m).await.unwrap_err();
    assert!(
        matches!(e, SendError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{e:?}"
    );
    // The worker retries the same effect later: it goes through and is counted once.
    r.channels.deliver(&m).await.unwrap();
}

#[tokio::test]
async fn a_server_error_is_transient_and_the_retry_succeeds_once() {
    let r = rig().await;
    r.fake.script(Scripted::Status {
        status: 503,
        retry_after: None,
        code: 20503,
        message: "Service Unavailable".into(),
    });
    let m = sms(ALICE);
    let e = r.channels.deliver(&m).await.unwrap_err();
    assert!(
        matches!(e, SendError::Transient(ref t) if t.contains("503")),
        "{e:?}"
    );
    let first = r.channels.deliver(&m).await.unwrap();
    // A redelivery of the same effect (the worker could not record the receipt) returns
    // the first receipt without a second SMS.
    let again = r.channels.deliver(&m).await.unwrap();
    assert_eq!(first, again);
    let statuses: Vec<u16> = r.fake.requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![503, 201]);
}

#[tokio::test]
async fn a_timeout_is_transient() {
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let r = rig_with(|c| {
        let t = c.twilio.as_mut().unwrap();
        t.api_base = base;
        t.request_timeout_secs = 1;
    })
    .await;
    let e = r.channels.deliver(&sms(ALICE)).await.unwrap_err();
    assert!(
        matches!(e, SendError::Transient(ref t) if t.contains("timed out")),
        "{e:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_the_token_never_appears() {
    let r = rig().await;
    let bad_token = std::env::temp_dir().join(format!("passage-bad-token-{}", Uuid::new_v4()));
    std::fs::write(&bad_token, "wrong-token-xyz").unwrap();
    let mut config = ChannelsConfig {
        sms: PhoneProvider::Twilio,
        twilio: Some(twilio_config(&r.fake, &r.webhooks, bad_token.clone())),
        ..Default::default()
    };
    config.email = EmailProvider::Dev;
    let outbox = std::env::temp_dir().join(format!("passage-outbox-{}.db", Uuid::new_v4()));
    let dev = DevOutbox::open(&outbox).await.unwrap();
    let channels = build_channels(&config, Some(dev), Arc::new(SystemClock)).unwrap();
    let e = channels.deliver(&sms(ALICE)).await.unwrap_err();
    assert!(
        matches!(e, SendError::Permanent(ref t) if t.contains("20003")),
        "{e:?}"
    );
    assert!(!format!("{e} {channels:?}").contains("wrong-token-xyz"));
    assert_eq!(r.fake.state.lock().unwrap().unauthorized, 1);
    let _ = std::fs::remove_file(bad_token);
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", outbox.display()));
    }
}

#[tokio::test]
async fn the_circuit_opens_after_repeated_server_errors() {
    let r = rig_with(|c| {
        c.breaker = BreakerConfig {
            failures: 2,
            cool_down_secs: 60,
        }
    })
    .await;
    for _ in 0..2 {
        r.fake.script(Scripted::Status {
            status: 500,
            retry_after: None,
            code: 20500,
            message: "Internal Server Error".into(),
        });
    }
    for _ in 0..2 {
        assert!(r.channels.deliver(&sms(ALICE)).await.is_err());
    }
    let e = r.channels.deliver(&sms(ALICE)).await.unwrap_err();
    assert!(e.to_string().contains("circuit open"), "{e}");
    assert_eq!(
        r.fake.requests().len(),
        2,
        "the provider is not called while open"
    );
}

#[tokio::test]
async fn destinations_outside_the_allowed_prefixes_are_never_sent() {
    let r = rig().await;
    let e = r.channels.deliver(&sms("+88213456789")).await.unwrap_err();
    assert!(matches!(e, SendError::Permanent(ref t) if t.contains("destination not allowed")));
    let (c, _) = call("+4420123456789", CallExpectation::PressPound);
    assert!(r.channels.deliver(&c).await.is_err());
    assert!(r.fake.requests().is_empty());
}

#[tokio::test]
async fn the_sms_budget_per_number_stops_a_burst() {
    let r = rig().await;
    // Default: 5 SMS per number per hour.
    for _ in 0..5 {
        r.channels.deliver(&sms(ALICE)).await.unwrap();
    }
    let e = r.channels.deliver(&sms(ALICE)).await.unwrap_err();
    assert!(
        e.to_string().contains("budget exceeded: sms per recipient"),
        "{e}"
    );
    assert_eq!(r.fake.requests().len(), 5);
}

// ---- voice -----------------------------------------------------------------------------

async fn place(r: &Rig, to: &str, expect: CallExpectation) -> (OutboundMessage, Uuid) {
    let (m, call_id) = call(to, expect);
    r.sink.open_call(call_id);
    let receipt = r.channels.deliver(&m).await.unwrap();
    assert!(is_sid(&receipt.provider_ref, "CA"), "{receipt:?}");
    (m, call_id)
}

async fn call_finished(r: &Rig) {
    eventually("the call's status callback", || {
        r.fake
            .callbacks()
            .iter()
            .any(|c| c.url.contains("/webhooks/twilio/call-status"))
    })
    .await;
}

#[tokio::test]
async fn pressing_pound_confirms_the_call() {
    let r = rig().await;
    let (m, call_id) = place(&r, ALICE, CallExpectation::PressPound).await;
    call_finished(&r).await;
    assert_eq!(r.sink.events(), vec![format!("CallConfirmed({call_id})")]);
    // What was asked of Twilio.
    let req = &r.fake.requests()[0];
    assert_eq!(
        req.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json")
    );
    assert_eq!(field(&req.form, "To"), Some(ALICE));
    assert_eq!(field(&req.form, "From"), Some(FROM));
    assert_eq!(field(&req.form, "Timeout"), Some("30"));
    assert_eq!(field(&req.form, "MachineDetection"), Some("Enable"));
    assert_eq!(field(&req.form, "StatusCallbackEvent"), Some("completed"));
    let twiml = parse_twiml(field(&req.form, "Twiml").unwrap()).unwrap();
    let Node::Gather { attrs, children } = &twiml[0] else {
        panic!("{twiml:?}");
    };
    assert_eq!(attrs["input"], "dtmf");
    assert_eq!(attrs["numDigits"], "1");
    assert_eq!(attrs["finishOnKey"], "");
    assert_eq!(attrs["timeout"], "10");
    assert_eq!(
        attrs["action"],
        format!(
            "{}/webhooks/twilio/gather?journey={}&call={call_id}&expect=press-pound",
            r.webhooks, m.journey_id
        )
    );
    assert!(
        matches!(&children[0], Node::Say { text, attrs } if text.contains("press the pound key") && attrs["language"] == "en-AU")
    );
    assert!(matches!(&twiml[1], Node::Say { .. }));
    assert_eq!(twiml[2], Node::Hangup);
    // What the person heard after pressing #.
    let gather = r
        .fake
        .callbacks()
        .into_iter()
        .find(|c| c.url.contains("/gather"))
        .unwrap();
    assert_eq!(gather.status, 200);
    let answer = parse_twiml(&gather.body).unwrap();
    assert!(
        matches!(&answer[0], Node::Say { text, .. } if text == "Thank you, your sign-in has been confirmed. Goodbye."),
        "{answer:?}"
    );
    assert_eq!(answer[1], Node::Hangup);
    // The completed status after a confirmation changes nothing.
    assert_eq!(r.sink.call(call_id), Some(CallState::Confirmed));
}

#[tokio::test]
async fn the_default_finish_key_would_swallow_a_lone_pound() {
    // Why the TwiML sets finishOnKey="": with Twilio's default, `#` never reaches action.
    let default = std::collections::HashMap::from([("numDigits".to_string(), "1".to_string())]);
    assert_eq!(gather_digits(&default, "#"), None);
    let ours = std::collections::HashMap::from([
        ("numDigits".to_string(), "1".to_string()),
        ("finishOnKey".to_string(), String::new()),
    ]);
    assert_eq!(gather_digits(&ours, "#").as_deref(), Some("#"));
}

#[tokio::test]
async fn pound_pressed_twice_confirms_once_and_a_replayed_callback_changes_nothing() {
    let r = rig().await;
    r.fake.phone(ALICE, Phone::Answer { keys: "##".into() });
    let (_, call_id) = place(&r, ALICE, CallExpectation::PressPound).await;
    call_finished(&r).await;
    assert_eq!(r.fake.state.lock().unwrap().gathers, vec!["#".to_string()]);
    assert_eq!(r.sink.events(), vec![format!("CallConfirmed({call_id})")]);
    // Replay the very same signed gather request.
    let gather = r
        .fake
        .callbacks()
        .into_iter()
        .find(|c| c.url.contains("/gather"))
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(gather.params.iter())
        .finish();
    let replay = reqwest::Client::new()
        .post(&gather.url)
        .header(
            "X-Twilio-Signature",
            sign(AUTH_TOKEN, &gather.url, &gather.params),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    let answer = replay.text().await.unwrap();
    assert!(answer.contains("was not confirmed"), "{answer}");
    assert_eq!(r.sink.events().len(), 1);
}

#[tokio::test]
async fn a_wrong_key_fails_the_call_closed() {
    let r = rig().await;
    r.fake.phone(ALICE, Phone::Answer { keys: "5".into() });
    let (_, call_id) = place(&r, ALICE, CallExpectation::PressPound).await;
    call_finished(&r).await;
    assert_eq!(
        r.sink.events(),
        vec![format!("CallFailed({call_id}, wrong-key)")]
    );
    let gather = r
        .fake
        .callbacks()
        .into_iter()
        .find(|c| c.url.contains("/gather"))
        .unwrap();
    assert!(
        gather.body.contains("Your sign-in was not confirmed"),
        "{}",
        gather.body
    );
}

#[tokio::test]
async fn no_answer_busy_voicemail_and_silence_fail_the_call() {
    let r = rig().await;
    let cases = [
        ("+61400000001", Phone::NoAnswer, "no-answer"),
        ("+61400000002", Phone::Busy, "busy"),
        ("+61400000003", Phone::Voicemail, "voicemail"),
        // Answered, nothing pressed: the call ends unconfirmed ("no answer" to the prompt).
        ("+61400000004", Phone::Silent, "no-answer"),
    ];
    for (number, phone, reason) in cases {
        r.fake.phone(number, phone);
        let (_, call_id) = place(&r, number, CallExpectation::PressPound).await;
        eventually(reason, || {
            r.sink
                .events()
                .contains(&format!("CallFailed({call_id}, {reason})"))
        })
        .await;
    }
    assert_eq!(r.sink.events().len(), 4);
    assert!(r.fake.state.lock().unwrap().gathers.is_empty());
}

#[tokio::test]
async fn a_spoken_code_call_stays_open_after_a_person_hangs_up() {
    let r = rig().await;
    let (_, call_id) = place(&r, ALICE, CallExpectation::ListenOnly).await;
    call_finished(&r).await;
    let twiml = parse_twiml(field(&r.fake.requests()[0].form, "Twiml").unwrap()).unwrap();
    assert!(
        matches!(&twiml[0], Node::Say { attrs, text } if attrs["loop"] == "2" && text.contains("4, 0, 2, 9, 1, 7"))
    );
    assert_eq!(twiml[1], Node::Hangup);
    // The person types the code they heard; the call must still be open for it.
    assert_eq!(r.sink.call(call_id), Some(CallState::Open));
    assert!(r.sink.events().is_empty());
    // A voicemail that recorded the code fails the call, so that code dies (R26).
    r.fake.phone("+61400000005", Phone::Voicemail);
    let (_, vm) = place(&r, "+61400000005", CallExpectation::ListenOnly).await;
    eventually("voicemail", || {
        r.sink
            .events()
            .contains(&format!("CallFailed({vm}, voicemail)"))
    })
    .await;
}

// ---- webhook security ------------------------------------------------------------------

async fn post_form(
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
    host: Option<&str>,
) -> (u16, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(s) = signature {
        req = req.header("X-Twilio-Signature", s);
    }
    if let Some(h) = host {
        req = req.header("Host", h);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn callbacks_without_a_valid_signature_are_rejected_recorded_and_change_nothing() {
    let r = rig().await;
    let journey = Uuid::new_v4();
    let call_id = Uuid::new_v4();
    r.sink.open_call(call_id);
    let url = format!(
        "{}/webhooks/twilio/gather?journey={journey}&call={call_id}&expect=press-pound",
        r.webhooks
    );
    let params = pairs(&[
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "in-progress"),
        ("Digits", "#"),
    ]);
    // 1. A signature made with another token.
    let forged = sign("not-the-token", &url, &params);
    assert_eq!(post_form(&url, &params, Some(&forged), None).await.0, 403);
    // 2. No signature at all.
    assert_eq!(post_form(&url, &params, None, None).await.0, 403);
    // 3. Signed for the URL an attacker's Host header would produce (R22): the router
    //    checks against the configured public URL, not the Host header.
    let evil = format!(
        "https://evil.example/webhooks/twilio/gather?journey={journey}&call={call_id}&expect=press-pound"
    );
    let evil_sig = sign(AUTH_TOKEN, &evil, &params);
    assert_eq!(
        post_form(&url, &params, Some(&evil_sig), Some("evil.example"))
            .await
            .0,
        403
    );
    // 4. A valid signature over other parameters (Digits changed after signing).
    let signed = sign(AUTH_TOKEN, &url, &pairs(&[("Digits", "5")]));
    assert_eq!(post_form(&url, &params, Some(&signed), None).await.0, 403);
    // 5. Correctly signed, but for another account.
    let foreign = pairs(&[
        ("AccountSid", "ACffffffffffffffffffffffffffffffff"),
        ("Digits", "#"),
    ]);
    let sig = sign(AUTH_TOKEN, &url, &foreign);
    assert_eq!(post_form(&url, &foreign, Some(&sig), None).await.0, 403);
    // 6. Status and message callbacks are checked the same way.
    let status_url = format!(
        "{}/webhooks/twilio/call-status?journey={journey}&call={call_id}",
        r.webhooks
    );
    let completed = pairs(&[("CallStatus", "no-answer")]);
    assert_eq!(
        post_form(&status_url, &completed, Some("AAAA"), None)
            .await
            .0,
        403
    );
    let message_url = format!(
        "{}/webhooks/twilio/message-status?journey={journey}&effect={}",
        r.webhooks,
        Uuid::new_v4()
    );
    assert_eq!(
        post_form(
            &message_url,
            &pairs(&[("MessageStatus", "delivered")]),
            Some("x"),
            None
        )
        .await
        .0,
        403
    );

    let rejected = r.sink.rejected();
    let reasons: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "bad signature",
            "missing signature",
            "bad signature",
            "bad signature",
            "foreign account",
            "bad signature",
            "bad signature"
        ]
    );
    assert_eq!(rejected[0].path, "/webhooks/twilio/gather");
    assert_eq!(rejected[5].path, "/webhooks/twilio/call-status");
    assert_eq!(rejected[6].path, "/webhooks/twilio/message-status");
    // No state change.
    assert_eq!(r.sink.call(call_id), Some(CallState::Open));
    assert!(r.sink.events().is_empty());
    assert!(r.sink.statuses().is_empty());
    assert!(r.sink.0.lock().unwrap().keys.is_empty());

    // The same request correctly signed is accepted: the rejections were about the
    // signature, not the request.
    let good = sign(AUTH_TOKEN, &url, &params);
    let (status, body) = post_form(&url, &params, Some(&good), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("has been confirmed"), "{body}");
}

#[tokio::test]
async fn a_signed_callback_with_a_malformed_query_is_rejected() {
    let r = rig().await;
    let url = format!("{}/webhooks/twilio/gather?journey=nope&call=1", r.webhooks);
    let params = pairs(&[("Digits", "#")]);
    let sig = sign(AUTH_TOKEN, &url, &params);
    assert_eq!(post_form(&url, &params, Some(&sig), None).await.0, 400);
    assert_eq!(r.sink.rejected()[0].reason, "bad query");
}
