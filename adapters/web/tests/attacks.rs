//! Attack tests of the web portal (security brief §4.1-4.4 and §4.6), through the reset
//! pages and the JSON API alike. Every case checks that nothing answers 5xx, the outcome a
//! person or attacker sees, and the audit event the journey's timeline records (R49).

mod support;

use axum::http::StatusCode;
use passage_channels::MessageFilter;
use passage_core::mask::mask_email;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Browser, Portal, Res, STRONG, portal, portal_with};

const ALICE: &str = "alice@example.com";
const NOBODY: &str = "nobody@example.com";
const DAVE: &str = "dave@example.com";
/// An existing, a missing and a disabled account (R1).
const CLASSES: [&str; 3] = [ALICE, NOBODY, DAVE];

// ---- helpers ------------------------------------------------------------------------------

fn no_5xx(res: &Res, what: &str) {
    assert!(
        !res.status.is_server_error(),
        "{what}: answered {}:\n{}",
        res.status,
        res.body
    );
}

/// Nothing of alice's masked phone (`+61 ••• ••• 678`) is on the page (R19).
fn no_phone(text: &str) -> bool {
    !text.contains("+61") && !text.contains("••• 678") && !text.contains("phone-masked")
}

fn is_uuid_at(b: &[u8], i: usize) -> bool {
    if b.len() < i + 36 {
        return false;
    }
    let shape_ok = b[i..i + 36].iter().enumerate().all(|(k, c)| match k {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    });
    shape_ok && b.get(i + 36).is_none_or(|c| !c.is_ascii_hexdigit())
}

/// Replaces the per-request tokens with placeholders: journey ids (UUIDs) and hex tags or
/// tokens of 32 digits and more (flow-cookie tags, CSRF tokens, visit nonces).
fn normalize(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let run_start = i == 0 || !b[i - 1].is_ascii_hexdigit();
        if run_start && is_uuid_at(b, i) {
            out.push_str("<uuid>");
            i += 36;
            continue;
        }
        if run_start {
            let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
            if run >= 32 {
                out.push_str("<hex>");
                i += run;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Status, headers (sorted, without `date` and the named ones) and body, with the per-request
/// tokens and the masked addresses of all three classes replaced.
fn shape(res: &Res, skip_headers: &[&str]) -> String {
    let mut headers: Vec<String> = res
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != "date" && !skip_headers.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("<binary>")))
        .collect();
    headers.sort();
    let text = format!("{}\n{}\n\n{}", res.status, headers.join("\n"), res.body);
    normalize(&unmask(&text))
}

fn unmask(text: &str) -> String {
    let mut text = text.to_owned();
    for email in CLASSES {
        text = text.replace(&mask_email(email), "<masked address>");
    }
    text
}

/// Where two texts first differ, with some context.
fn first_diff(a: &str, b: &str) -> String {
    let at = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map(|((i, _), _)| i)
        .unwrap_or(a.len().min(b.len()));
    let window = |s: &str| {
        let start = s.floor_char_boundary(at.saturating_sub(80));
        let end = s.ceil_char_boundary((at + 80).min(s.len()));
        s[start..end].to_owned()
    };
    format!("…{}…\n    vs\n…{}…", window(a), window(b))
}

/// Records, for each class after the first, whether its text differs from the first's.
fn compare(what: &str, texts: &[String], diffs: &mut Vec<String>) {
    for (i, t) in texts.iter().enumerate().skip(1) {
        if *t != texts[0] {
            diffs.push(format!(
                "{what}: {} differs from {}:\n{}",
                CLASSES[i],
                CLASSES[0],
                first_diff(&texts[0], t)
            ));
        }
    }
}

async fn count(p: &Portal, id: &str, event_type: &str) -> usize {
    p.event_types(id)
        .await
        .iter()
        .filter(|t| *t == event_type)
        .count()
}

/// A well-formed code that is not `real`.
fn wrong(real: &str) -> String {
    if real == "000000" { "111111" } else { "000000" }.to_owned()
}

async fn post_code(b: &Browser, id: &str, csrf: &str, code: &str) -> Res {
    b.post(
        &format!("/reset/{id}/code"),
        &[("code", code), ("csrf", csrf)],
    )
    .await
}

/// A JSON API request from this browser's address (cookies are sent but ignored by the
/// API), with `Authorization: Bearer {token}` when a token is given.
async fn api_send(
    b: &Browser,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (Res, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    let res = b.send(method, uri, body, &headers).await;
    let v = serde_json::from_str(&res.body).unwrap_or(Value::Null);
    (res, v)
}

/// A JSON API POST without a journey token (a start, or a journey the caller has no token
/// for).
async fn api(b: &Browser, uri: &str, body: Option<Value>) -> (Res, Value) {
    api_send(b, "POST", uri, None, body.map(|v| v.to_string())).await
}

/// A journey started through the API: its id and the bearer token its start response
/// handed out (journeys started on the pages have none).
#[derive(Debug, Clone)]
struct ApiJourney {
    id: String,
    token: String,
}

impl ApiJourney {
    /// `/api/journeys/{id}/{route}`.
    fn uri(&self, route: &str) -> String {
        format!("/api/journeys/{}/{route}", self.id)
    }

    /// POSTs `body` to the journey's `route`, with its token.
    async fn post(&self, b: &Browser, route: &str, body: Option<Value>) -> (Res, Value) {
        self.post_raw(b, route, body.map(|v| v.to_string())).await
    }

    async fn post_raw(&self, b: &Browser, route: &str, body: Option<String>) -> (Res, Value) {
        api_send(b, "POST", &self.uri(route), Some(&self.token), body).await
    }

    /// `GET /api/journeys/{id}`, with its token.
    async fn view(&self, b: &Browser) -> (Res, Value) {
        let uri = format!("/api/journeys/{}", self.id);
        api_send(b, "GET", &uri, Some(&self.token), None).await
    }
}

async fn api_start(b: &Browser, email: &str) -> ApiJourney {
    let (res, v) = api(b, "/api/journeys", Some(json!({ "email": email }))).await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let token = v["journey_token"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        token.len() == 64 && token.bytes().all(|c| c.is_ascii_hexdigit()),
        "{v}"
    );
    ApiJourney {
        id: v["journey_id"].as_str().unwrap().to_owned(),
        token: token.to_owned(),
    }
}

/// Walks `email`'s journey through the API to the set-password step, by SMS.
async fn api_to_password(p: &Portal, b: &Browser, email: &str) -> ApiJourney {
    let j = api_start(b, email).await;
    let code = p.code(&j.id, "email").await;
    let (res, v) = j.post(b, "code", Some(json!({ "code": code }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let (res, v) = j.post(b, "choice", Some(json!({ "option": "sms" }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let sms = p.code(&j.id, "sms").await;
    let (res, v) = j.post(b, "code", Some(json!({ "code": sms }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    assert_eq!(v["journey"]["step"]["kind"], "set-password", "{v}");
    j
}

/// Walks `email`'s journey through the pages to the Reset Password page, by SMS.
async fn to_password_page(p: &Portal, b: &Browser, email: &str) -> String {
    let (id, res) = b.start(email).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let code = p.code(&id, "email").await;
    let res = b.answer(&id, "code", &[("code", &code)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let res = b.answer(&id, "choose", &[("option", "sms")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let sms = p.code(&id, "sms").await;
    let res = b.answer(&id, "code", &[("code", &sms)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(b.page(&id).await.has("data-kind=\"set-password\""));
    id
}

async fn set_password(b: &Browser, id: &str, csrf: &str, new: &str, confirm: &str) -> Res {
    b.post(
        &format!("/reset/{id}/password"),
        &[
            ("new_password", new),
            ("confirm_password", confirm),
            ("csrf", csrf),
        ],
    )
    .await
}

/// Signs in from a fresh browser.
async fn sign_in(p: &Portal, email: &str, password: &str) -> (Browser, Res) {
    let b = p.browser_at("198.51.100.99:5000");
    let page = b.get("/").await;
    let res = b
        .post(
            "/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &page.input("csrf")),
            ],
        )
        .await;
    no_5xx(&res, "sign-in");
    (b, res)
}

/// The `passage-session` cookies a response sets (not the ones it clears).
fn sessions_minted(res: &Res) -> usize {
    res.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|c| c.starts_with("passage-session=") && !c.starts_with("passage-session=;"))
        .count()
}

async fn check(b: &Browser, id: &str, csrf: &str, new: &str, confirm: &str) -> Value {
    let body = json!({ "new_password": new, "confirm_password": confirm }).to_string();
    let res = b
        .send(
            "POST",
            &format!("/reset/{id}/check"),
            Some(body),
            &[("content-type", "application/json"), ("x-csrf-token", csrf)],
        )
        .await;
    no_5xx(&res, "check");
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    serde_json::from_str(&res.body).unwrap()
}

fn met(v: &Value, requirement: &str) -> bool {
    v["requirements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == requirement)
        .unwrap_or_else(|| panic!("no requirement {requirement} in {v}"))["met"]
        .as_bool()
        .unwrap()
}

/// A passphrase of exactly `n` code points, of ordinary words (not blocklisted, no name).
fn of_len(n: usize) -> String {
    "harbour lantern meadow copper violet glacier pebble saffron thimble orchard "
        .chars()
        .cycle()
        .take(n)
        .collect()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---- 4.1 enumeration and information leaks --------------------------------------------------

/// R1, attack 1: "Send verification code" answers identically for an existing, a missing and
/// a disabled account, through the form and through the API (attack 4).
#[tokio::test]
async fn send_code_answers_identically_for_existing_missing_and_disabled_accounts() {
    let p = portal().await;
    let mut forms = Vec::new();
    let mut posts = Vec::new();
    let mut apis = Vec::new();
    let mut ids = Vec::new();
    for (i, email) in CLASSES.iter().enumerate() {
        let b = p.browser_at(&format!("198.51.100.{}:4000", 50 + i));
        let form = b.get("/reset").await;
        assert_eq!(form.status, StatusCode::OK);
        forms.push(shape(&form, &[]));
        let res = b
            .post("/reset", &[("email", email), ("csrf", &form.input("csrf"))])
            .await;
        no_5xx(&res, email);
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{email}: {}", res.body);
        let id = res.location().unwrap().strip_prefix("/reset/").unwrap();
        let cookie = res.headers["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with(&format!("passage-flow={id}.")),
            "{cookie}"
        );
        ids.push(id.to_owned());
        posts.push(shape(&res, &[]));
        let (res, _) = api(&b, "/api/journeys", Some(json!({ "email": email }))).await;
        no_5xx(&res, email);
        assert_eq!(res.status, StatusCode::CREATED, "{email}: {}", res.body);
        apis.push(shape(&res, &[]));
    }
    let mut diffs = Vec::new();
    compare("GET /reset", &forms, &mut diffs);
    compare("POST /reset", &posts, &mut diffs);
    compare("POST /api/journeys", &apis, &mut diffs);
    assert!(diffs.is_empty(), "R1 differences:\n{}", diffs.join("\n\n"));
    for (email, id) in CLASSES.iter().zip(&ids) {
        let types = p.event_types(id).await;
        assert_eq!(
            types,
            ["JourneyStarted", "EmailSubmitted", "CodeIssued"],
            "{email}: the same audit trail for every class"
        );
    }
    // Only the existing account gets a message, and only after the response (R2).
    p.worker.drain().await.unwrap();
    assert!(
        p.outbox
            .latest(ids[0].parse().unwrap(), "email")
            .await
            .unwrap()
            .is_some()
    );
    for id in &ids[1..] {
        assert!(
            p.outbox
                .latest(id.parse().unwrap(), "email")
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// R3, attack 2: the code page, the journey's status and a wrong code's answer and attempt
/// counter are identical for the three classes, also after the worker has delivered the
/// email to the existing account (as it does at once in production). The same holds for the
/// API's view and answers, on a journey of each class started through the API (a journey
/// started on the pages cannot be read or answered through the API).
#[tokio::test]
async fn code_page_and_wrong_codes_look_the_same_for_every_account_state() {
    let p = portal().await;
    let mut browsers = Vec::new();
    let mut ids = Vec::new();
    let mut api_journeys = Vec::new();
    for (i, email) in CLASSES.iter().enumerate() {
        let b = p.browser_at(&format!("198.51.100.{}:4000", 60 + i));
        let (id, res) = b.start(email).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        api_journeys.push(api_start(&b, email).await);
        browsers.push(b);
        ids.push(id);
    }
    let mut diffs = Vec::new();
    let pages = |label: &'static str| {
        let browsers = browsers.clone();
        let ids = ids.clone();
        let api_journeys = api_journeys.clone();
        async move {
            let mut pages = Vec::new();
            let mut statuses = Vec::new();
            let mut views = Vec::new();
            for ((b, id), j) in browsers.iter().zip(&ids).zip(&api_journeys) {
                let page = b.page(id).await;
                assert_eq!(page.status, StatusCode::OK, "{label}");
                assert!(page.has("data-kind=\"code\""), "{}", page.body);
                assert!(no_phone(&page.body), "no phone before the email code (R19)");
                pages.push(shape(&page, &[]));
                statuses.push(shape(&b.get(&format!("/reset/{id}/status")).await, &[]));
                let (view, v) = j.view(b).await;
                assert_eq!(view.status, StatusCode::OK, "{label}: {v}");
                assert!(no_phone(&view.body), "no phone in the API view (R19)");
                views.push(shape(&view, &[]));
            }
            (pages, statuses, views)
        }
    };
    let (before, status_before, view_before) = pages("before delivery").await;
    compare("code page before delivery", &before, &mut diffs);
    compare("status before delivery", &status_before, &mut diffs);
    compare("API view before delivery", &view_before, &mut diffs);

    // The worker sends alice's emails, as it would right after the responses.
    p.worker.drain().await.unwrap();
    let mut real = Vec::new();
    for id in [&ids[0], &api_journeys[0].id] {
        let message = p.outbox.latest(id.parse().unwrap(), "email").await.unwrap();
        real.push(message.unwrap().code().unwrap());
    }
    let (after, status_after, view_after) = pages("after delivery").await;
    compare("code page after delivery", &after, &mut diffs);
    compare(
        "/reset/{id}/status after delivery",
        &status_after,
        &mut diffs,
    );
    compare("API view after delivery", &view_after, &mut diffs);

    // Two wrong codes through the form, three through the API: same answers, same counters.
    let bad = ["000000", "111111", "222222"]
        .into_iter()
        .find(|c| !real.iter().any(|r| r == c))
        .unwrap();
    for (n, left) in [(1, 4), (2, 3)] {
        let mut answers = Vec::new();
        for (b, id) in browsers.iter().zip(&ids) {
            let csrf = b.page(id).await.input("csrf");
            let res = post_code(b, id, &csrf, bad).await;
            no_5xx(&res, "wrong code");
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(res.has(&format!("{left} attempts left")), "{}", res.body);
            answers.push(shape(&res, &[]));
        }
        compare(&format!("wrong code #{n} (form)"), &answers, &mut diffs);
    }
    for (n, left) in [(1, 4), (2, 3), (3, 2)] {
        let mut answers = Vec::new();
        for (b, j) in browsers.iter().zip(&api_journeys) {
            let (res, v) = j.post(b, "code", Some(json!({ "code": bad }))).await;
            no_5xx(&res, "wrong code (API)");
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(v["error"]["code"], "invalid-code", "{v}");
            assert_eq!(v["journey"]["step"]["attempts_left"], left, "{v}");
            answers.push(shape(&res, &[]));
        }
        compare(&format!("wrong code #{n} (API)"), &answers, &mut diffs);
    }
    for id in &ids {
        assert_eq!(count(&p, id, "CodeAttemptFailed").await, 2, "R49");
        assert_eq!(count(&p, id, "CodeVerified").await, 0);
    }
    for j in &api_journeys {
        assert_eq!(count(&p, &j.id, "CodeAttemptFailed").await, 3, "R49");
        assert_eq!(count(&p, &j.id, "CodeVerified").await, 0);
    }
    assert!(
        diffs.is_empty(),
        "R1/R3 differences an attacker can see:\n{}",
        diffs.join("\n\n")
    );
}

/// R2, attack 1: ≥200 timed "Send verification code" per class, interleaved, with medians
/// within 5 ms of each other.
#[tokio::test]
async fn send_code_takes_the_same_time_for_existing_missing_and_disabled_accounts() {
    const SAMPLES: usize = 200;
    const WARM_UP: usize = 10;
    let p = portal().await;
    let mut clients = Vec::new();
    for i in 0..CLASSES.len() {
        let b = p.browser_at(&format!("198.51.100.{}:4000", 70 + i));
        let token = b.get("/reset").await.input("csrf");
        clients.push((b, token));
    }
    let mut samples = vec![Vec::with_capacity(SAMPLES); CLASSES.len()];
    for round in 0..WARM_UP + SAMPLES {
        // Round-robin, rotating which class goes first so none always follows another.
        for k in 0..CLASSES.len() {
            let i = (round + k) % CLASSES.len();
            let (b, token) = &clients[i];
            let t = Instant::now();
            let res = b
                .post("/reset", &[("email", CLASSES[i]), ("csrf", token)])
                .await;
            let elapsed = t.elapsed();
            assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
            if round >= WARM_UP {
                samples[i].push(elapsed);
            }
        }
    }
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    for (email, m) in CLASSES.iter().zip(&medians) {
        println!("R2 median of {SAMPLES} starts for {email}: {m:?}");
    }
    for i in 0..medians.len() {
        for j in i + 1..medians.len() {
            let d = medians[i].abs_diff(medians[j]);
            assert!(
                d < Duration::from_millis(5),
                "R2: medians of {} and {} differ by {d:?} ({medians:?})",
                CLASSES[i],
                CLASSES[j]
            );
        }
    }
}

/// Attack 3 and 33: rate-limit answers are per client and the same for real and unknown
/// addresses; a spoofed X-Forwarded-For does not buy a fresh budget, while clients behind a
/// trusted proxy each get their own.
#[tokio::test]
async fn rate_limits_are_per_client_identical_for_every_address_and_not_spoofable() {
    let mut opts = support::options();
    opts.limits.starts_per_client = 3;
    opts.trusted_proxies = support::trusted("10.0.0.0/8");
    let p = portal_with(opts).await;

    let limited = |res: &Res, what: &str| {
        no_5xx(res, what);
        assert_eq!(
            res.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{what}: {}",
            res.body
        );
        let retry: u64 = res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=600).contains(&retry), "{what}: Retry-After {retry}");
    };

    let real = p.browser_at("198.51.100.41:1000");
    let unknown = p.browser_at("198.51.100.42:1000");
    let mut form_429 = Vec::new();
    let mut api_429 = Vec::new();
    for (b, email) in [(&real, ALICE), (&unknown, NOBODY)] {
        for _ in 0..3 {
            let (id, res) = b.start(email).await;
            assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
            assert_eq!(count(&p, &id, "EmailSubmitted").await, 1);
            let page = b.page(&id).await;
            assert!(
                no_phone(&page.body),
                "the masked phone is not shown before the email code is verified (R19)"
            );
        }
        let (_, res) = b.start(email).await;
        limited(&res, email);
        assert!(
            res.has("Too many requests from your network"),
            "{}",
            res.body
        );
        assert!(!res.has(email) && !res.has(&mask_email(email)));
        form_429.push(shape(&res, &["retry-after"]));
        let (res, v) = api(b, "/api/journeys", Some(json!({ "email": email }))).await;
        limited(&res, "API start");
        assert_eq!(v["error"]["code"], "rate-limited", "{v}");
        api_429.push(shape(&res, &["retry-after"]));
    }
    assert_eq!(
        form_429[0], form_429[1],
        "same 429 page for a real and an unknown address"
    );
    assert_eq!(api_429[0], api_429[1], "same 429 body from the API");
    // The budget is the client's, whatever address it names next.
    let (_, res) = real.start(NOBODY).await;
    limited(&res, "real client, other address");
    assert_eq!(shape(&res, &["retry-after"]), form_429[0]);

    // Another client is unaffected.
    let other = p.browser_at("198.51.100.43:1000");
    let (id, res) = other.start(ALICE).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let (_, v) = api(&other, "/api/journeys", Some(json!({ "email": ALICE }))).await;
    assert_eq!(v["result"], "accepted", "{v}");
    assert!(
        no_phone(&v.to_string()),
        "no phone in the API view (R19): {v}"
    );
    assert_eq!(count(&p, &id, "CodeIssued").await, 1);

    // Spoofed forwarding headers from an untrusted peer change nothing.
    let mut spoof = p.browser_at("198.51.100.41:2000");
    spoof.extra = vec![
        ("x-forwarded-for".into(), "203.0.113.77".into()),
        ("x-real-ip".into(), "203.0.113.78".into()),
        ("forwarded".into(), "for=203.0.113.79".into()),
    ];
    let (_, res) = spoof.start(ALICE).await;
    limited(&res, "spoofed X-Forwarded-For");

    // Behind a trusted proxy, each forwarded client has its own budget...
    let behind = |port: u16, xff: &str| {
        let mut b = p.browser_at(&format!("10.0.0.1:{port}"));
        b.extra = vec![("x-forwarded-for".into(), xff.into())];
        b
    };
    let first = behind(1, "203.0.113.1");
    for _ in 0..3 {
        let (_, res) = first.start(ALICE).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    }
    let (_, res) = first.start(ALICE).await;
    limited(&res, "first client behind the proxy");
    let second = behind(2, "203.0.113.2");
    let (id, res) = second.start(NOBODY).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let timeline = p.timeline_json(&id).await;
    assert!(
        timeline.contains("203.0.113.2"),
        "R49: the forwarded client:\n{timeline}"
    );
    // ...and what a client writes to the left of the proxy's entry is not believed.
    let sneaky = behind(3, "203.0.113.9, 203.0.113.1");
    let (_, res) = sneaky.start(ALICE).await;
    limited(&res, "client-written X-Forwarded-For behind the proxy");
}

// ---- 4.2 code brute force and lifetime ------------------------------------------------------

/// Attack 5: five wrong codes end the journey; a sixth, even the right one, is refused.
#[tokio::test]
async fn five_wrong_codes_end_the_journey_and_a_sixth_is_refused() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start(ALICE).await;
    let real = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    for n in 1..=5 {
        let res = post_code(&b, &id, &csrf, &wrong(&real)).await;
        no_5xx(&res, "wrong code");
        assert_ne!(res.status, StatusCode::SEE_OTHER);
        if n < 5 {
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(res.has(&format!("{} attempt", 5 - n)), "{}", res.body);
        } else {
            assert!(res.has("could not be completed"), "{}", res.body);
        }
    }
    assert_eq!(count(&p, &id, "JourneyFailed").await, 1);
    let res = post_code(&b, &id, &csrf, &real).await;
    no_5xx(&res, "sixth code");
    assert_ne!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(res.has("could not be completed"), "{}", res.body);
    assert_eq!(count(&p, &id, "CodeAttemptFailed").await, 5);
    assert_eq!(count(&p, &id, "CodeVerified").await, 0);
    assert_eq!(p.event_types(&id).await.last().unwrap(), "InputRejected");
    assert!(
        p.timeline_json(&id)
            .await
            .contains("submit-code refused: journey-finished")
    );

    // The API: the same rule.
    let j = api_start(&b, "bob@example.com").await;
    let id = &j.id;
    let real = p.code(id, "email").await;
    for n in 1..=5 {
        let (res, v) = j
            .post(&b, "code", Some(json!({ "code": wrong(&real) })))
            .await;
        no_5xx(&res, "API wrong code");
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        let expected = if n < 5 {
            "invalid-code"
        } else {
            "too-many-attempts"
        };
        assert_eq!(v["error"]["code"], expected, "{v}");
    }
    let (res, v) = j.post(&b, "code", Some(json!({ "code": real }))).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "journey-finished", "{v}");
    assert_eq!(count(&p, id, "CodeAttemptFailed").await, 5);
    assert_eq!(count(&p, id, "JourneyFailed").await, 1);
    assert_eq!(count(&p, id, "CodeVerified").await, 0);
}

/// Attack 6, R13: 50 concurrent wrong codes on one journey let at most 5 reach the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_wrong_codes_count_at_most_five_attempts() {
    let p = portal().await;
    let b = p.browser();
    let (form_id, _) = b.start(ALICE).await;
    let real = p.code(&form_id, "email").await;
    let csrf = b.page(&form_id).await.input("csrf");
    let api_j = api_start(&b, "bob@example.com").await;
    let api_id = api_j.id.clone();
    let api_real = p.code(&api_id, "email").await;

    let mut tasks = Vec::new();
    for i in 0..50 {
        let b = b.clone();
        let (form_id, api_j, csrf) = (form_id.clone(), api_j.clone(), csrf.clone());
        let (bad, api_bad) = (wrong(&real), wrong(&api_real));
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                post_code(&b, &form_id, &csrf, &bad).await
            } else {
                api_j
                    .post(&b, "code", Some(json!({ "code": api_bad })))
                    .await
                    .0
            }
        }));
    }
    let mut more = Vec::new();
    for i in 0..50 {
        let b = b.clone();
        let (form_id, csrf, bad) = (form_id.clone(), csrf.clone(), wrong(&real));
        let api_j = api_j.clone();
        let api_bad = wrong(&api_real);
        more.push(tokio::spawn(async move {
            if i % 2 == 0 {
                api_j
                    .post(&b, "code", Some(json!({ "code": api_bad })))
                    .await
                    .0
            } else {
                post_code(&b, &form_id, &csrf, &bad).await
            }
        }));
    }
    tasks.extend(more);
    for t in tasks {
        let res = t.await.unwrap();
        no_5xx(&res, "parallel wrong code");
        assert_ne!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    }
    for id in [&form_id, &api_id] {
        let failed = count(&p, id, "CodeAttemptFailed").await;
        assert!(failed <= 5, "R13: {failed} attempts reached the comparison");
        assert_eq!(failed, 5);
        assert_eq!(count(&p, id, "JourneyFailed").await, 1);
        assert_eq!(count(&p, id, "CodeVerified").await, 0);
        assert!(
            count(&p, id, "InputRejected").await >= 40,
            "the rest are recorded refusals"
        );
    }
}

/// Attack 7, R16: a new journey per few guesses does not reset the count: after 10 failures
/// for an address in an hour, even the right code is refused, for a real address and an
/// unknown one alike; an hour later the address may try again.
#[tokio::test]
async fn guesses_spread_over_journeys_are_capped_per_address_for_real_and_unknown_alike() {
    let p = portal().await;
    let mut refusals = Vec::new();
    for (n, email) in [ALICE, NOBODY].into_iter().enumerate() {
        let b = p.browser_at(&format!("198.51.100.{}:4000", 80 + n));
        let mut ids = Vec::new();
        // 4 + 4 + 2 wrong guesses over three journeys: none of them reaches its own limit.
        for guesses in [4, 4, 2] {
            let (id, _) = b.start(email).await;
            let csrf = b.page(&id).await.input("csrf");
            for _ in 0..guesses {
                let res = post_code(&b, &id, &csrf, "000000").await;
                no_5xx(&res, "guess");
                assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
            }
            ids.push((id, csrf));
        }
        // The third journey still has 3 attempts of its own, but the address has none.
        let (id, csrf) = &ids[2];
        let code = if email == ALICE {
            p.code(id, "email").await
        } else {
            "123456".to_owned()
        };
        let res = post_code(&b, id, csrf, &code).await;
        no_5xx(&res, "capped");
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert!(
            res.has("Too many failed attempts for this address"),
            "{}",
            res.body
        );
        assert_eq!(count(&p, id, "CodeVerified").await, 0);
        assert!(
            p.timeline_json(id)
                .await
                .contains("submit-code refused: too-many-attempts"),
            "R49"
        );
        refusals.push(shape(&res, &[]));
        // A fourth journey is capped from its first code.
        let (id, _) = b.start(email).await;
        let code = if email == ALICE {
            p.code(&id, "email").await
        } else {
            "123456".to_owned()
        };
        let res = b.answer(&id, "code", &[("code", &code)]).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert!(res.has("Too many failed attempts for this address"));
        assert_eq!(
            count(&p, &id, "CodeAttemptFailed").await,
            0,
            "not counted either"
        );
        let j = api_start(&b, email).await;
        let (res, v) = j.post(&b, "code", Some(json!({ "code": "123456" }))).await;
        no_5xx(&res, "capped API");
        assert_eq!(v["error"]["code"], "too-many-attempts", "{v}");
        let total: usize = {
            let mut t = 0;
            for (id, _) in &ids {
                t += count(&p, id, "CodeAttemptFailed").await;
            }
            t
        };
        assert_eq!(total, 10, "{email}");
    }
    assert_eq!(
        refusals[0], refusals[1],
        "the cap answers a real and an unknown address alike"
    );

    // The journeys expire at their 15-minute lifetime (the worker fires the timers then, as
    // in production); an hour after that the address may try again.
    p.clock.advance(Duration::from_secs(16 * 60));
    p.worker.drain().await.unwrap();
    p.clock.advance(Duration::from_secs(3601));
    let b = p.browser_at("198.51.100.89:4000");
    let (id, _) = b.start(ALICE).await;
    let code = p.code(&id, "email").await;
    let res = b.answer(&id, "code", &[("code", &code)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(count(&p, &id, "CodeVerified").await, 1);
    let (id, _) = b.start(NOBODY).await;
    let res = b.answer(&id, "code", &[("code", "123456")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        res.has("4 attempts left"),
        "back to the ordinary answer: {}",
        res.body
    );
}

/// Attacks 8 and 9, R14: a resend replaces the code and keeps the failure count.
#[tokio::test]
async fn resend_keeps_the_failure_count_and_kills_the_old_code() {
    let p = portal().await;
    let b = p.browser();
    // 4 wrong, resend, 1 wrong: the fifth failure ends the journey.
    let (id, _) = b.start(ALICE).await;
    let first = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    for _ in 0..4 {
        post_code(&b, &id, &csrf, &wrong(&first)).await;
    }
    assert!(b.page(&id).await.has("Re-send code"));
    p.clock.advance(Duration::from_secs(31));
    let res = b.answer(&id, "resend", &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let second = p.code(&id, "email").await;
    let res = post_code(&b, &id, &csrf, &wrong(&second)).await;
    no_5xx(&res, "fifth failure");
    assert!(
        res.has("could not be completed"),
        "R14: no counter reset: {}",
        res.body
    );
    assert_eq!(count(&p, &id, "CodeIssued").await, 2);
    assert_eq!(count(&p, &id, "CodeAttemptFailed").await, 5);
    assert_eq!(count(&p, &id, "JourneyFailed").await, 1);
    let res = post_code(&b, &id, &csrf, &second).await;
    assert_ne!(
        res.status,
        StatusCode::SEE_OTHER,
        "the new code is dead too"
    );
    assert_eq!(count(&p, &id, "CodeVerified").await, 0);

    // The old code after a resend is wrong; the new one works (form, then the API).
    let (id, _) = b.start("bob@example.com").await;
    let old = p.code(&id, "email").await;
    p.clock.advance(Duration::from_secs(31));
    b.answer(&id, "resend", &[]).await;
    let new = p.code(&id, "email").await;
    if old != new {
        let res = b.answer(&id, "code", &[("code", &old)]).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert!(res.has("not right"), "{}", res.body);
        assert_eq!(count(&p, &id, "CodeAttemptFailed").await, 1);
    }
    let res = b.answer(&id, "code", &[("code", &new)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(count(&p, &id, "CodeVerified").await, 1);

    let j = api_start(&b, "bob@example.com").await;
    let old = p.code(&j.id, "email").await;
    p.clock.advance(Duration::from_secs(31));
    let (res, v) = j.post(&b, "resend", None).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let new = p.code(&j.id, "email").await;
    if old != new {
        let (_, v) = j.post(&b, "code", Some(json!({ "code": old }))).await;
        assert_eq!(v["error"]["code"], "invalid-code", "{v}");
    }
    let (_, v) = j.post(&b, "code", Some(json!({ "code": new }))).await;
    assert_eq!(v["result"], "accepted", "{v}");
    assert_eq!(count(&p, &j.id, "CodeVerified").await, 1);
}

/// Attack 10, R8: 4:59 after issue the code works; at 5:00 it has expired.
#[tokio::test]
async fn codes_work_until_four_fifty_nine_and_expire_at_five_minutes() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start(ALICE).await;
    let code = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    p.clock.advance(Duration::from_secs(4 * 60 + 59));
    let res = post_code(&b, &id, &csrf, &code).await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "4:59 accepts: {}",
        res.body
    );
    assert_eq!(count(&p, &id, "CodeVerified").await, 1);

    let (id, _) = b.start("bob@example.com").await;
    let code = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    p.clock.advance(Duration::from_secs(5 * 60));
    let res = post_code(&b, &id, &csrf, &code).await;
    no_5xx(&res, "expired code");
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "5:00 rejects");
    assert!(res.has("expired"), "{}", res.body);
    assert!(res.has("id=\"code-expired\""), "{}", res.body);
    assert_eq!(count(&p, &id, "CodeVerified").await, 0);
    assert!(
        p.timeline_json(&id).await.contains("failed (expired)"),
        "R15"
    );

    let j = api_start(&b, "bob@example.com").await;
    let code = p.code(&j.id, "email").await;
    p.clock.advance(Duration::from_secs(5 * 60));
    let (res, v) = j.post(&b, "code", Some(json!({ "code": code }))).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "code-expired", "{v}");
    assert_eq!(count(&p, &j.id, "CodeAttemptFailed").await, 1);
}

/// Attack 11, R9, R10: a used code does not work again, nor as the SMS code.
#[tokio::test]
async fn a_used_code_is_refused_again_and_in_another_step() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start(ALICE).await;
    let email_code = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    assert_eq!(
        post_code(&b, &id, &csrf, &email_code).await.status,
        StatusCode::SEE_OTHER
    );
    // A code for a step the journey has left is a stale form: back to the journey's page,
    // which shows the step it is at.
    let res = post_code(&b, &id, &csrf, &email_code).await;
    no_5xx(&res, "reused code");
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(res.location(), Some(format!("/reset/{id}").as_str()));
    let page = b.page(&id).await;
    assert!(
        page.has("data-kind=\"choose\""),
        "still choosing: {}",
        page.body
    );
    assert_eq!(count(&p, &id, "CodeVerified").await, 1);
    assert!(
        p.timeline_json(&id)
            .await
            .contains("submit-code refused: step-not-allowed")
    );
    // Purpose confusion: the email code as the SMS code.
    b.answer(&id, "choose", &[("option", "sms")]).await;
    let sms = p.code(&id, "sms").await;
    if sms != email_code {
        let res = post_code(&b, &id, &csrf, &email_code).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert_eq!(count(&p, &id, "CodeAttemptFailed").await, 1);
    }
    assert_eq!(
        post_code(&b, &id, &csrf, &sms).await.status,
        StatusCode::SEE_OTHER
    );
    let res = post_code(&b, &id, &csrf, &sms).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let page = b.page(&id).await;
    assert!(page.has("data-kind=\"set-password\""), "{}", page.body);
    assert_eq!(count(&p, &id, "CodeVerified").await, 2);

    // Through the API: the used email code again, then as the SMS code.
    let j = api_start(&b, "bob@example.com").await;
    let email_code = p.code(&j.id, "email").await;
    let (res, v) = j
        .post(&b, "code", Some(json!({ "code": email_code })))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let (res, v) = j
        .post(&b, "code", Some(json!({ "code": email_code })))
        .await;
    no_5xx(&res, "reused code (API)");
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "step-not-allowed", "{v}");
    assert_eq!(v["journey"]["step"]["kind"], "choose", "{v}");
    assert_eq!(count(&p, &j.id, "CodeVerified").await, 1);
    assert!(
        p.timeline_json(&j.id)
            .await
            .contains("submit-code refused: step-not-allowed")
    );
    j.post(&b, "choice", Some(json!({ "option": "sms" }))).await;
    let sms = p.code(&j.id, "sms").await;
    if sms != email_code {
        let (_, v) = j
            .post(&b, "code", Some(json!({ "code": email_code })))
            .await;
        assert_eq!(v["error"]["code"], "invalid-code", "{v}");
        assert_eq!(count(&p, &j.id, "CodeAttemptFailed").await, 1);
    }
    let (res, v) = j.post(&b, "code", Some(json!({ "code": sms }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let (res, v) = j.post(&b, "code", Some(json!({ "code": sms }))).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["journey"]["step"]["kind"], "set-password", "{v}");
    assert_eq!(count(&p, &j.id, "CodeVerified").await, 2);
}

/// Attack 12, R12: malformed codes are refused before any check, through the form and the
/// API, and do not count as attempts.
#[tokio::test]
async fn malformed_codes_are_refused_and_not_counted() {
    let malformed = [
        "",
        " 123456",
        "123456 ",
        "12345",
        "1234567",
        "１２３４５６",
        "١٢٣٤٥٦",
        "123456\n",
        "0x1E240",
        "+123456",
        "123e4",
        "%",
        "_",
        "%%%%%%",
        "______",
        "12345%",
        "123\u{0}56",
        "123456\u{0}",
        "\u{0}",
    ];
    let huge = "1".repeat(1024 * 1024);
    let p = portal().await;
    let b = p.browser();

    let (id, _) = b.start(ALICE).await;
    let real = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    for code in malformed {
        let res = post_code(&b, &id, &csrf, code).await;
        no_5xx(&res, &format!("form {code:?}"));
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{code:?}");
        assert!(res.has("digits only"), "{code:?}: {}", res.body);
        assert!(
            !res.has("attempts left") && !res.has("attempt left"),
            "{code:?} was counted: {}",
            res.body
        );
    }
    let res = post_code(&b, &id, &csrf, &huge).await;
    no_5xx(&res, "form 1 MB code");
    assert!(
        [
            StatusCode::BAD_REQUEST,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNPROCESSABLE_ENTITY
        ]
        .contains(&res.status),
        "1 MB: {}",
        res.status
    );
    if res.status == StatusCode::BAD_REQUEST {
        assert!(res.has("too large"), "{}", res.body);
    }
    assert_eq!(count(&p, &id, "CodeAttemptFailed").await, 0);
    assert_eq!(count(&p, &id, "InputRejected").await, malformed.len());
    assert!(
        p.timeline_json(&id)
            .await
            .contains("submit-code refused: malformed-code")
    );
    let res = post_code(&b, &id, &csrf, &real).await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "the real code still works"
    );

    let j = api_start(&b, "bob@example.com").await;
    let real = p.code(&j.id, "email").await;
    for code in malformed.iter().copied().chain([huge.as_str()]) {
        let (res, v) = j.post(&b, "code", Some(json!({ "code": code }))).await;
        let label: String = code.chars().take(12).collect();
        no_5xx(&res, &format!("API {label:?}"));
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{label:?}");
        assert_eq!(v["error"]["code"], "malformed-code", "{label:?}: {v}");
        assert_eq!(v["journey"]["step"]["attempts_left"], 5, "{label:?}");
    }
    for raw in [
        r#"{"code": null}"#,
        "[]",
        "{}",
        "null",
        r#""123456""#,
        r#"{"code": ["123456"]}"#,
        r#"{"code": 123456}"#,
        r#"{"code": {}}"#,
        r#"{"code": "123456", "code": "654321"}"#,
        r#"{"code": "123456", "account_id": "acct-bob"}"#,
        r#"{"code": "123456""#,
    ] {
        let (res, v) = j.post_raw(&b, "code", Some(raw.to_owned())).await;
        no_5xx(&res, raw);
        assert!(
            res.status == StatusCode::BAD_REQUEST || res.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{raw}: {}",
            res.status
        );
        assert!(v["error"]["code"].is_string(), "{raw}: {v}");
    }
    assert_eq!(count(&p, &j.id, "CodeAttemptFailed").await, 0);
    let (_, v) = j.post(&b, "code", Some(json!({ "code": real }))).await;
    assert_eq!(v["result"], "accepted", "{v}");
}

// ---- 4.3 races and double submit ------------------------------------------------------------

/// Attack 13, R9: the right code submitted ten times at once verifies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_double_submitted_code_verifies_once() {
    let p = portal().await;
    let b = p.browser();
    let (form_id, _) = b.start(ALICE).await;
    let code = p.code(&form_id, "email").await;
    let csrf = b.page(&form_id).await.input("csrf");
    let api_j = api_start(&b, "bob@example.com").await;
    let api_id = api_j.id.clone();
    let api_code = p.code(&api_id, "email").await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (b, id, csrf, code) = (b.clone(), form_id.clone(), csrf.clone(), code.clone());
        tasks.push(tokio::spawn(async move {
            post_code(&b, &id, &csrf, &code).await
        }));
    }
    let mut api_tasks = Vec::new();
    for _ in 0..10 {
        let (b, j, code) = (b.clone(), api_j.clone(), api_code.clone());
        api_tasks.push(tokio::spawn(async move {
            j.post(&b, "code", Some(json!({ "code": code }))).await.0
        }));
    }
    // Through the pages every submission goes on to the journey's page: the one that
    // verified, and the nine refused as a stale form (`step-not-allowed`); the events
    // below show that one verified.
    for t in tasks {
        let res = t.await.unwrap();
        no_5xx(&res, "double submit");
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
        assert_eq!(res.location(), Some(format!("/reset/{form_id}").as_str()));
    }
    let mut api_ok = 0;
    for t in api_tasks {
        let res = t.await.unwrap();
        no_5xx(&res, "API double submit");
        if res.status == StatusCode::OK {
            api_ok += 1;
        } else {
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        }
    }
    assert_eq!(api_ok, 1);
    for id in [&form_id, &api_id] {
        assert_eq!(count(&p, id, "CodeVerified").await, 1);
        assert_eq!(count(&p, id, "CodeAttemptFailed").await, 0);
        assert_eq!(count(&p, id, "InputRejected").await, 9);
    }
}

/// Attack 14, R31: two tabs submitting the password at once change it once and mint one
/// session; so do concurrent API clients on a journey started through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tabs_setting_the_password_at_once_complete_once_with_one_session() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    let api_j = api_to_password(&p, &b, "bob@example.com").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (b, id, csrf, api_j) = (b.clone(), id.clone(), csrf.clone(), api_j.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 1 {
                let body = json!({ "new_password": STRONG, "confirm_password": STRONG });
                let (res, v) = api_j.post(&b, "password", Some(body)).await;
                (res, v["session_token"].is_string())
            } else {
                let res = set_password(&b, &id, &csrf, STRONG, STRONG).await;
                let minted = sessions_minted(&res) > 0;
                (res, minted)
            }
        }));
    }
    let (mut form_minted, mut api_minted) = (0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        let (res, session) = t.await.unwrap();
        no_5xx(&res, "concurrent password");
        if i % 2 == 1 {
            assert!(
                res.status == StatusCode::OK || res.status == StatusCode::UNPROCESSABLE_ENTITY,
                "{}: {}",
                res.status,
                res.body
            );
            api_minted += usize::from(session);
        } else if session {
            form_minted += 1;
            assert_eq!(res.location(), Some("/portal"));
            assert_eq!(sessions_minted(&res), 1);
        } else {
            assert_eq!(sessions_minted(&res), 0, "{}", res.body);
        }
    }
    assert_eq!(
        (form_minted, api_minted),
        (1, 1),
        "exactly one response per journey carries a session"
    );
    for id in [&id, &api_j.id] {
        assert_eq!(count(&p, id, "PasswordChanged").await, 1);
        assert_eq!(count(&p, id, "JourneyCompleted").await, 1);
    }
}

/// Attack 16: "Re-send code" hammered in parallel, on the page and through the API, sends at
/// most 1 + 3 codes per journey, and only the newest one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hammered_resend_sends_at_most_the_cap() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start(ALICE).await;
    let first = p.code(&id, "email").await;
    let csrf = b.page(&id).await.input("csrf");
    let api_j = api_start(&b, "bob@example.com").await;
    let api_first = p.code(&api_j.id, "email").await;
    for _ in 0..5 {
        // The worker runs all the time in production: each round's code goes out before the
        // next (one pass delivers its batch concurrently, in no particular order).
        p.worker.drain().await.unwrap();
        p.clock.advance(Duration::from_secs(31));
        let mut tasks = Vec::new();
        for i in 0..24 {
            let (b, id, csrf, api_j) = (b.clone(), id.clone(), csrf.clone(), api_j.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    b.post(&format!("/reset/{id}/resend"), &[("csrf", &csrf)])
                        .await
                } else {
                    api_j.post(&b, "resend", None).await.0
                }
            }));
        }
        for t in tasks {
            let res = t.await.unwrap();
            no_5xx(&res, "resend");
            assert!(
                res.status == StatusCode::SEE_OTHER
                    || res.status == StatusCode::OK
                    || res.status == StatusCode::UNPROCESSABLE_ENTITY,
                "{}",
                res.status
            );
        }
    }
    for id in [&id, &api_j.id] {
        let issued = count(&p, id, "CodeIssued").await;
        assert!(issued <= 4, "{issued} codes issued");
        assert_eq!(issued, 4);
        p.worker.drain().await.unwrap();
        let sent = p
            .outbox
            .list(&MessageFilter {
                journey: Some(id.parse().unwrap()),
                channel: Some("email".into()),
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(sent.len(), 4, "messages actually sent");
        let timeline = p.timeline_json(id).await;
        assert!(
            timeline.contains("resend refused: resend-too-soon"),
            "{timeline}"
        );
        assert!(
            timeline.contains("resend refused: resend-limit"),
            "{timeline}"
        );
    }
    let latest = p.code(&id, "email").await;
    let api_latest = p.code(&api_j.id, "email").await;
    let (_, v) = api_j.view(&b).await;
    assert_eq!(v["journey"]["step"]["resends_left"], 0, "{v}");
    if api_first != api_latest {
        let (_, v) = api_j
            .post(&b, "code", Some(json!({ "code": api_first })))
            .await;
        assert_eq!(v["error"]["code"], "invalid-code", "{v}");
    }
    let (res, v) = api_j
        .post(&b, "code", Some(json!({ "code": api_latest })))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let page = b.page(&id).await;
    assert!(page.has("id=\"resend-none\""), "{}", page.body);
    if first != latest {
        let res = post_code(&b, &id, &csrf, &first).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let res = post_code(&b, &id, &csrf, &latest).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
}

/// Attack 15, R44: two resets of one account: the later password wins, and a journey of
/// the same address left open from before is cancelled.
#[tokio::test]
async fn of_two_resets_the_later_wins_and_older_open_journeys_are_cancelled() {
    let p = portal().await;
    let open = p.browser_at("198.51.100.31:1");
    let (open_id, _) = open.start(ALICE).await;
    let open_csrf = open.page(&open_id).await.input("csrf");
    let a = p.browser_at("198.51.100.32:1");
    let b = p.browser_at("198.51.100.33:1");
    let first_id = to_password_page(&p, &a, ALICE).await;
    let second_id = to_password_page(&p, &b, ALICE).await;
    let earlier = "first harbour lantern velvet comet";
    let later = "second meadow copper violet glacier";
    let csrf = a.page(&first_id).await.input("csrf");
    let res = set_password(&a, &first_id, &csrf, earlier, earlier).await;
    assert_eq!(res.location(), Some("/portal"), "{}", res.body);
    p.clock.advance(Duration::from_secs(1));
    let csrf = b.page(&second_id).await.input("csrf");
    let res = set_password(&b, &second_id, &csrf, later, later).await;
    assert_eq!(res.location(), Some("/portal"), "{}", res.body);

    p.worker.drain().await.unwrap();
    let (_, res) = sign_in(&p, ALICE, later).await;
    assert_eq!(
        res.location(),
        Some("/portal"),
        "the later password is set: {}",
        res.body
    );
    let (_, res) = sign_in(&p, ALICE, earlier).await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "the earlier one is not"
    );

    assert_eq!(count(&p, &open_id, "JourneyCancelled").await, 1, "R44");
    let page = open.page(&open_id).await;
    assert!(page.has("was cancelled"), "{}", page.body);
    let res = post_code(&open, &open_id, &open_csrf, "123456").await;
    no_5xx(&res, "cancelled journey");
    assert_ne!(res.status, StatusCode::SEE_OTHER);
    // The earlier reset's session ended with its password (R45). Whether the later one's
    // survives depends on the order the worker applied the two resets: see
    // `the_later_resets_session_survives_when_the_earlier_reset_is_applied_first`.
    assert_eq!(a.get("/portal").await.location(), Some("/"));
}

/// Attack 15, R45: two resets completed before the worker applies either. Applied in the
/// order they were recorded (one effect per pass), the earlier reset's revocation must not
/// end the later reset's session: the later password is the account's, so that session is
/// not one of the "other sessions" R45 is about.
#[tokio::test]
async fn the_later_resets_session_survives_when_the_earlier_reset_is_applied_first() {
    let p = portal().await;
    let a = p.browser_at("198.51.100.34:1");
    let b = p.browser_at("198.51.100.35:1");
    let first_id = to_password_page(&p, &a, ALICE).await;
    let second_id = to_password_page(&p, &b, ALICE).await;
    let earlier = "first harbour lantern velvet comet";
    let later = "second meadow copper violet glacier";
    let csrf = a.page(&first_id).await.input("csrf");
    set_password(&a, &first_id, &csrf, earlier, earlier).await;
    p.clock.advance(Duration::from_secs(1));
    let csrf = b.page(&second_id).await.input("csrf");
    let res = set_password(&b, &second_id, &csrf, later, later).await;
    assert_eq!(sessions_minted(&res), 1);
    assert_eq!(b.get("/portal").await.status, StatusCode::OK);

    // A worker that applies one effect per pass, oldest first.
    let in_order = passage_runtime::Worker::new(
        p.engine.clone(),
        p.outbox.clone(),
        passage_runtime::WorkerOptions {
            batch: 1,
            ..passage_runtime::WorkerOptions::default()
        },
    );
    in_order.drain().await.unwrap();
    let (_, res) = sign_in(&p, ALICE, later).await;
    assert_eq!(res.location(), Some("/portal"), "the later password is set");
    assert_eq!(a.get("/portal").await.location(), Some("/"), "R45");
    let own = b.get("/portal").await;
    no_5xx(&own, "later reset's session");
    assert_eq!(
        own.status,
        StatusCode::OK,
        "the later reset's own session was revoked by the earlier reset's revocation \
         (engine/runtime/src/worker.rs revoke_after_reset)"
    );
    assert_eq!(count(&p, &second_id, "JourneyCompleted").await, 1);
}

// ---- 4.4 replay and state-machine abuse -----------------------------------------------------

/// Attack 18, R28: the password and choice steps cannot be reached before their turn.
#[tokio::test]
async fn later_steps_cannot_be_force_browsed() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start(ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    // A form for a step the journey is not at goes back to the journey's page, which
    // shows the step it is at.
    let res = set_password(&b, &id, &csrf, STRONG, STRONG).await;
    no_5xx(&res, "early password");
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(res.location(), Some(format!("/reset/{id}").as_str()));
    assert!(b.page(&id).await.has("data-kind=\"code\""));
    let res = b
        .post(
            &format!("/reset/{id}/choose"),
            &[("option", "sms"), ("csrf", &csrf)],
        )
        .await;
    no_5xx(&res, "early choice");
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(no_phone(&res.body), "no phone (R19)");
    assert!(no_phone(&b.page(&id).await.body), "no phone (R19)");
    let check = b
        .send(
            "POST",
            &format!("/reset/{id}/check"),
            Some(json!({ "new_password": STRONG, "confirm_password": STRONG }).to_string()),
            &[
                ("content-type", "application/json"),
                ("x-csrf-token", &csrf),
            ],
        )
        .await;
    no_5xx(&check, "early check");
    assert_eq!(check.status, StatusCode::CONFLICT, "{}", check.body);
    let timeline = p.timeline_json(&id).await;
    assert!(
        timeline.contains("set-password refused: step-not-allowed"),
        "{timeline}"
    );
    assert!(
        timeline.contains("choose refused: step-not-allowed"),
        "{timeline}"
    );
    assert_eq!(count(&p, &id, "InputRejected").await, 2);

    // After the email code, the password is still two steps away.
    let code = p.code(&id, "email").await;
    post_code(&b, &id, &csrf, &code).await;
    let res = set_password(&b, &id, &csrf, STRONG, STRONG).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    b.answer(&id, "choose", &[("option", "sms")]).await;
    let res = set_password(&b, &id, &csrf, STRONG, STRONG).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    for ty in ["PasswordChanged", "OptionChosen", "JourneyCompleted"] {
        let n = count(&p, &id, ty).await;
        assert_eq!(n, usize::from(ty == "OptionChosen"), "{ty}");
    }
    assert_eq!(count(&p, &id, "InputRejected").await, 4);

    // The same through the API, on a journey started there.
    let j = api_start(&b, "bob@example.com").await;
    let password = json!({ "new_password": STRONG, "confirm_password": STRONG });
    let (res, v) = j.post(&b, "password", Some(password.clone())).await;
    no_5xx(&res, "API early password");
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "step-not-allowed", "{v}");
    let (res, v) = j.post(&b, "choice", Some(json!({ "option": "sms" }))).await;
    no_5xx(&res, "API early choice");
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "step-not-allowed", "{v}");
    assert!(no_phone(&res.body), "no phone (R19)");
    let timeline = p.timeline_json(&j.id).await;
    assert!(
        timeline.contains("set-password refused: step-not-allowed"),
        "{timeline}"
    );
    assert!(
        timeline.contains("choose refused: step-not-allowed"),
        "{timeline}"
    );
    let code = p.code(&j.id, "email").await;
    let (res, v) = j.post(&b, "code", Some(json!({ "code": code }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let (res, v) = j.post(&b, "password", Some(password.clone())).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "step-not-allowed", "{v}");
    let (res, v) = j.post(&b, "choice", Some(json!({ "option": "sms" }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    let (res, v) = j.post(&b, "password", Some(password)).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "step-not-allowed", "{v}");
    for ty in ["PasswordChanged", "OptionChosen", "JourneyCompleted"] {
        let n = count(&p, &j.id, ty).await;
        assert_eq!(n, usize::from(ty == "OptionChosen"), "{ty}");
    }
    assert_eq!(count(&p, &j.id, "InputRejected").await, 4);
}

/// Every way to read or answer `journey` through the API (`GET /api/journeys/{id}` and the
/// answer routes with bodies that would be accepted or recorded), each with
/// `authorization` as the `Authorization` header (none when `None`).
async fn drive_through_the_api(
    b: &Browser,
    journey: &str,
    code: &str,
    authorization: Option<&str>,
) -> Vec<(String, Res)> {
    let uri = |route: &str| format!("/api/journeys/{journey}{route}");
    let attempts: [(&str, String, Option<Value>); 6] = [
        ("GET", uri(""), None),
        (
            "POST",
            uri("/email"),
            Some(json!({ "email": "mallory@example.com" })),
        ),
        ("POST", uri("/code"), Some(json!({ "code": code }))),
        ("POST", uri("/resend"), None),
        ("POST", uri("/choice"), Some(json!({ "option": "sms" }))),
        (
            "POST",
            uri("/password"),
            Some(json!({ "new_password": STRONG, "confirm_password": STRONG })),
        ),
    ];
    let mut answers = Vec::new();
    for (method, uri, body) in attempts {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        if let Some(value) = authorization {
            headers.push(("authorization", value));
        }
        let body = body.map(|v| v.to_string());
        let res = b.send(method, &uri, body, &headers).await;
        answers.push((format!("{method} {uri} [{authorization:?}]"), res));
    }
    answers
}

/// Attacks 18 and 23 through the API, R32: knowing a journey's id is not enough to drive it
/// through the API. A journey started on the pages hands out no API token, so its id with
/// no token, a guessed one, another journey's token or its own flow-cookie tag or CSRF token
/// neither reads nor answers it; a journey started through the API with token A cannot be
/// driven with token B. Each answer is the unknown journey's `404`, and nothing is recorded.
#[tokio::test]
async fn a_journey_id_alone_does_not_drive_a_journey_through_the_api() {
    let p = portal().await;
    let b = p.browser();
    let mallory = p.browser_at("203.0.113.66:1");
    let (page_id, res) = b.start(ALICE).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let page_code = p.code(&page_id, "email").await;
    let flow = b.cookie("passage-flow").unwrap();
    let flow_tag = flow.split_once('.').unwrap().1.to_owned();
    let csrf = b.page(&page_id).await.input("csrf");
    let a = api_start(&b, "bob@example.com").await;
    let a_code = p.code(&a.id, "email").await;
    let token_b = api_start(&mallory, NOBODY).await.token;
    // Past the resend cooldown: an accepted resend would show too.
    p.clock.advance(Duration::from_secs(31));

    let unknown = format!("/api/journeys/{}", uuid::Uuid::new_v4());
    let (res, v) = api_send(&mallory, "GET", &unknown, Some(&token_b), None).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "journey-not-found", "{v}");
    let not_found = shape(&res, &[]);

    let bearer = |t: &str| format!("Bearer {t}");
    let guessed = [
        "0".repeat(64),
        "f".repeat(64),
        uuid::Uuid::new_v4().simple().to_string(),
    ];
    let mut tries: Vec<(&str, &str, Vec<Option<String>>)> = vec![(
        "page journey",
        page_id.as_str(),
        vec![
            None,
            Some(String::new()),
            Some("Bearer".into()),
            Some(bearer(&guessed[0])),
            Some(bearer(&guessed[1])),
            Some(bearer(&guessed[2])),
            Some(bearer(&a.token)),
            Some(bearer(&token_b)),
            Some(bearer(&flow_tag)),
            Some(bearer(&flow)),
            Some(bearer(&csrf)),
            Some(flow_tag.clone()),
        ],
    )];
    tries.push((
        "API journey",
        a.id.as_str(),
        vec![
            None,
            Some(bearer(&token_b)),
            Some(bearer(&guessed[0])),
            Some(bearer(&a.token.to_ascii_uppercase())),
            Some(bearer(&a.token[..63])),
            Some(format!("Bearer {}0", a.token)),
            Some(format!("Basic {}", a.token)),
            Some(a.token.clone()),
        ],
    ));
    for (what, id, authorizations) in &tries {
        let before = p.event_types(id).await;
        let code = if *id == page_id { &page_code } else { &a_code };
        for authorization in authorizations {
            for client in [&b, &mallory] {
                let answers = drive_through_the_api(client, id, code, authorization.as_deref());
                for (attempt, res) in answers.await {
                    no_5xx(&res, &attempt);
                    assert_eq!(
                        shape(&res, &[]),
                        not_found,
                        "{what}: {attempt} must answer as an unknown journey"
                    );
                }
            }
        }
        assert_eq!(
            p.event_types(id).await,
            before,
            "{what}: nothing recorded:\n{}",
            p.timeline_json(id).await
        );
    }

    // The journeys are untouched: the page journey goes on in its browser, the API journey
    // with its own token.
    let res = post_code(&b, &page_id, &csrf, &page_code).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let (res, v) = a.post(&b, "code", Some(json!({ "code": a_code }))).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    assert_eq!(v["journey"]["step"]["kind"], "choose", "{v}");
    for id in [&page_id, &a.id] {
        assert_eq!(count(&p, id, "CodeIssued").await, 1);
        assert_eq!(count(&p, id, "CodeVerified").await, 1);
        assert_eq!(count(&p, id, "CodeAttemptFailed").await, 0);
        assert_eq!(count(&p, id, "InputRejected").await, 0);
    }
}

/// Attacks 19 and 22: after completion, the password form sent again (back button, replayed
/// flow cookie, the API) changes nothing and mints no session.
#[tokio::test]
async fn resubmitting_the_password_after_completion_changes_nothing() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    let flow = b.cookie("passage-flow").unwrap();
    let res = set_password(&b, &id, &csrf, STRONG, STRONG).await;
    assert_eq!(res.location(), Some("/portal"));
    assert_eq!(sessions_minted(&res), 1);
    let other = "another lantern harbour velvet";

    // Back button: the form again, from the browser whose flow cookie was cleared.
    let res = set_password(&b, &id, &csrf, other, other).await;
    no_5xx(&res, "back button");
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert_eq!(sessions_minted(&res), 0);
    // The flow cookie replayed, with and without the session.
    b.set_cookie("passage-flow", &flow);
    let res = set_password(&b, &id, &csrf, other, other).await;
    no_5xx(&res, "replayed flow cookie");
    assert_eq!(sessions_minted(&res), 0, "{}", res.body);
    assert!(res.status == StatusCode::SEE_OTHER || res.status.is_success());
    let thief = p.browser_at("203.0.113.50:1");
    thief.set_cookie("passage-flow", &flow);
    let res = set_password(&thief, &id, &csrf, other, other).await;
    no_5xx(&res, "replayed flow cookie elsewhere");
    assert_eq!(sessions_minted(&res), 0, "{}", res.body);
    assert!(res.has("Your password is reset"), "{}", res.body);
    // The API does not drive a journey of the pages: it has no token to show.
    let events = p.event_types(&id).await;
    let again = json!({ "new_password": other, "confirm_password": other });
    let (res, v) = api(
        &thief,
        &format!("/api/journeys/{id}/password"),
        Some(again.clone()),
    )
    .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "journey-not-found", "{v}");
    assert_eq!(p.event_types(&id).await, events, "nothing recorded");

    assert_eq!(count(&p, &id, "PasswordChanged").await, 1);
    assert_eq!(count(&p, &id, "JourneyCompleted").await, 1);
    assert!(
        p.timeline_json(&id)
            .await
            .contains("set-password refused: journey-finished")
    );

    // Through the API, with the journey's own token: the answer is replayed as refused.
    let bob = "bob@example.com";
    let j = api_to_password(&p, &b, bob).await;
    let set = json!({ "new_password": STRONG, "confirm_password": STRONG });
    let (res, v) = j.post(&b, "password", Some(set)).await;
    assert_eq!(res.status, StatusCode::OK, "{v}");
    assert!(v["session_token"].is_string(), "{v}");
    let (res, v) = j.post(&b, "password", Some(again)).await;
    no_5xx(&res, "API password after completion");
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "journey-finished", "{v}");
    assert!(v.get("session_token").is_none());
    assert_eq!(count(&p, &j.id, "PasswordChanged").await, 1);
    assert_eq!(count(&p, &j.id, "JourneyCompleted").await, 1);
    assert!(
        p.timeline_json(&j.id)
            .await
            .contains("set-password refused: journey-finished")
    );

    p.worker.drain().await.unwrap();
    for email in [ALICE, bob] {
        let (_, res) = sign_in(&p, email, STRONG).await;
        assert_eq!(res.location(), Some("/portal"), "{email}");
        let (_, res) = sign_in(&p, email, other).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{email}");
    }
}

/// Attack 19, R45: a session opened before a reset is dead once the reset is applied; the
/// resetting browser's own new session lives.
#[tokio::test]
async fn a_reset_ends_older_sessions_but_not_its_own() {
    let p = portal().await;
    // A first reset gives alice a password to sign in with.
    let first = p.browser_at("198.51.100.21:1");
    let id = to_password_page(&p, &first, ALICE).await;
    let csrf = first.page(&id).await.input("csrf");
    set_password(&first, &id, &csrf, STRONG, STRONG).await;
    p.worker.drain().await.unwrap();
    let (signed_in, res) = sign_in(&p, ALICE, STRONG).await;
    assert_eq!(res.location(), Some("/portal"));
    assert_eq!(signed_in.get("/portal").await.status, StatusCode::OK);
    assert_eq!(first.get("/portal").await.status, StatusCode::OK);

    // A second reset, from another browser.
    let resetter = p.browser_at("198.51.100.22:1");
    let id = to_password_page(&p, &resetter, ALICE).await;
    let csrf = resetter.page(&id).await.input("csrf");
    let new = "fresh meadow copper violet glacier";
    let res = set_password(&resetter, &id, &csrf, new, new).await;
    assert_eq!(res.location(), Some("/portal"));
    p.worker.drain().await.unwrap();

    let res = signed_in.get("/portal").await;
    no_5xx(&res, "old session");
    assert_eq!(
        res.location(),
        Some("/"),
        "R45: the sign-in session is dead"
    );
    assert_eq!(
        signed_in.get("/portal/connections").await.location(),
        Some("/?return_to=%2Fportal%2Fconnections")
    );
    assert_eq!(
        first.get("/portal").await.location(),
        Some("/"),
        "the first reset's recovery session is dead too"
    );
    let own = resetter.get("/portal").await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert!(own.has("data-session=\"recovery\""));
    assert_eq!(count(&p, &id, "JourneyCompleted").await, 1);
}

/// R45 whatever the timing: a sign-in that verified the old password while a reset was
/// being applied can create its session after the reset's revocation ran (a review
/// reproduced 11 such sessions out of 43 under a sign-in loop). That session must open
/// nothing once the password changed, revoked or not.
#[tokio::test]
async fn a_session_signed_in_with_the_old_password_dies_with_the_change_even_unrevoked() {
    use passage_core::ports::AccountDirectory as _;
    let p = portal().await;
    let first = p.browser_at("198.51.100.31:1");
    let id = to_password_page(&p, &first, ALICE).await;
    let csrf = first.page(&id).await.input("csrf");
    set_password(&first, &id, &csrf, STRONG, STRONG).await;
    p.worker.drain().await.unwrap();
    let (late, res) = sign_in(&p, ALICE, STRONG).await;
    assert_eq!(res.location(), Some("/portal"));
    assert_eq!(late.get("/portal").await.status, StatusCode::OK);

    // The password changes with no revocation at all: the interleaving in which the
    // session was created after the revocation had already run.
    let later = passage_runtime::Clock::now(&p.clock).plus(Duration::from_secs(60));
    assert!(
        p.store
            .set_password_hash(
                "acct-alice",
                "$argon2id$v=19$m=256,t=1,p=1$bmV3c2FsdA$bmV3",
                later
            )
            .await
            .expect("set the password")
    );
    let res = late.get("/portal").await;
    no_5xx(&res, "a session of the old password");
    assert_eq!(res.location(), Some("/"), "R45: it opens nothing");
    // The first reset's recovery session is the revocation's business, not this check's.
    assert_eq!(first.get("/portal").await.status, StatusCode::OK);
}

/// ASVS 2.2.1: one client's failed guesses at one address are limited (10 per 15 minutes,
/// far below the per-client answer limit); unknown addresses are limited the same way, so
/// the answer says nothing about registration (R1). Failures elsewhere do not lock the
/// person out: another client, and the right password, still get in.
#[tokio::test]
async fn failed_sign_ins_are_limited_per_address_and_client_without_locking_the_person_out() {
    let p = portal().await;
    // A first reset gives alice a password to sign in with.
    let first = p.browser_at("198.51.100.51:1");
    let id = to_password_page(&p, &first, ALICE).await;
    let csrf = first.page(&id).await.input("csrf");
    set_password(&first, &id, &csrf, STRONG, STRONG).await;
    p.worker.drain().await.unwrap();

    let attempt = |email: &'static str, ip: &'static str, password: &'static str| {
        let b = p.browser_at(ip);
        async move {
            let page = b.get("/").await;
            b.post(
                "/sign-in",
                &[
                    ("email", email),
                    ("password", password),
                    ("csrf", &page.input("csrf")),
                ],
            )
            .await
        }
    };
    let wrong = "not the password at all";
    let mut refusals = Vec::new();
    for email in [ALICE, "nobody-here@example.com"] {
        for i in 0..10 {
            let res = attempt(email, "203.0.113.7:1", wrong).await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{email} attempt {i}");
        }
        let res = attempt(email, "203.0.113.7:1", wrong).await;
        no_5xx(&res, "throttled sign-in");
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{email}");
        assert!(res.has("Too many sign-in attempts for this email address"));
        assert!(res.headers.get("retry-after").is_some());
        refusals.push(res.body.clone());
    }
    assert_eq!(
        refusals[0], refusals[1],
        "known and unknown addresses look alike"
    );
    // The throttled client is throttled for that address only.
    let other = attempt("bob.smith@example.com", "203.0.113.7:1", wrong).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    // The person, elsewhere, is not locked out; successes do not count.
    for _ in 0..12 {
        let res = attempt(ALICE, "198.51.100.52:1", STRONG).await;
        assert_eq!(res.location(), Some("/portal"), "{}", res.body);
    }

    // Thirty guesses at once from one client: each takes its count before the hash, so
    // they cannot all pass a count still at 0 while they wait for a hashing slot.
    let burst = p.browser_at("203.0.113.9:1");
    let csrf = burst.get("/").await.input("csrf");
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (b, csrf) = (burst.clone(), csrf.clone());
        tasks.push(tokio::spawn(async move {
            b.post(
                "/sign-in",
                &[
                    ("email", "bob.smith@example.com"),
                    ("password", "not the password at all"),
                    ("csrf", csrf.as_str()),
                ],
            )
            .await
            .status
        }));
    }
    let mut guessed = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::UNAUTHORIZED => guessed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(guessed, 10, "guesses checked out of 30 sent at once");
}

/// An operator's cancellation note is for the log and the console, not for the person: the
/// pages and the API say only that the reset was cancelled. A reset superseded by another
/// one that completed says so, and sends the person to sign in, not to get a new code.
#[tokio::test]
async fn the_person_never_sees_an_operators_cancellation_note() {
    let p = portal().await;
    let b = p.browser_at("198.51.100.41:1");
    let (id, _) = b.start(ALICE).await;
    let api_journey = api_start(&b, "bob.smith@example.com").await;
    for journey in [id.as_str(), api_journey.id.as_str()] {
        p.engine
            .submit(
                journey.parse().unwrap(),
                passage_runtime::Input::Cancel {
                    reason: "fraud team: suspected account takeover, ticket 4411".into(),
                },
                passage_runtime::Actor::support("ada", "console"),
                None,
            )
            .await
            .unwrap();
    }
    let page = b.page(&id).await;
    no_5xx(&page, "a cancelled journey's page");
    assert!(page.has("This reset was cancelled"), "{}", page.body);
    assert!(
        !page.body.contains("fraud") && !page.body.contains("4411"),
        "{}",
        page.body
    );
    let (_, v) = api_journey.view(&b).await;
    assert_eq!(v["journey"]["status"], "cancelled", "{v}");
    assert!(!v.to_string().contains("fraud"), "{v}");

    // Two resets of one account: completing one cancels the other (R44).
    let first = p.browser_at("198.51.100.42:1");
    let other = p.browser_at("198.51.100.43:1");
    let (left_open, _) = other.start(ALICE).await;
    let done = to_password_page(&p, &first, ALICE).await;
    let csrf = first.page(&done).await.input("csrf");
    set_password(&first, &done, &csrf, STRONG, STRONG).await;
    p.worker.drain().await.unwrap();
    let page = other.page(&left_open).await;
    assert!(
        page.has("Your password was reset in another window or on another device"),
        "{}",
        page.body
    );
    assert!(!page.has("get a new code"), "{}", page.body);
}

// ---- 4.6 password-field inputs -----------------------------------------------------------------

/// Attacks 28, 29, 31, 32 on the live check: lengths in code points, NFC, emoji, NUL,
/// blocklist and context words.
#[tokio::test]
async fn the_password_check_counts_code_points_normalizes_and_gives_reasons() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    for (n, ok) in [
        (14, false),
        (15, true),
        (64, true),
        (65, true),
        (128, true),
        (129, false),
        (10_000, false),
        (1024 * 1024, false),
    ] {
        let new = of_len(n);
        // Two 1 MB fields would pass axum's 2 MB body limit: one is enough here.
        let confirm = if n > 100_000 {
            "x".to_owned()
        } else {
            new.clone()
        };
        let v = check(&b, &id, &csrf, &new, &confirm).await;
        assert_eq!(met(&v, "length"), ok, "{n} characters: {v}");
        assert_eq!(v["all_met"], ok, "{n} characters");
    }
    // Code points, not bytes: 15 × "é" is 30 bytes; 14 decomposed "é" are 28 code points
    // before NFC and 14 after.
    let v = check(&b, &id, &csrf, &"é".repeat(15), &"é".repeat(15)).await;
    assert!(met(&v, "length"), "{v}");
    let d = "e\u{301}".repeat(14);
    assert!(!met(&check(&b, &id, &csrf, &d, &d).await, "length"));
    // Composed new, decomposed confirm: equal after NFC (R39).
    let composed = "caf\u{e9} au lait tous les jours";
    let decomposed = "cafe\u{301} au lait tous les jours";
    let v = check(&b, &id, &csrf, composed, decomposed).await;
    assert!(met(&v, "match"), "{v}");
    assert_eq!(v["all_met"], true, "{v}");
    // Emoji and ZWJ sequences, RTL override and zero-width space are just characters (R37).
    for pw in [
        "👩\u{200d}👩\u{200d}👧\u{200d}👦 family picnic by the lake 🦀",
        "\u{202e}reversed meadow copper violet",
        "zero\u{200b}width lantern harbour comet",
    ] {
        let v = check(&b, &id, &csrf, pw, pw).await;
        assert_eq!(v["all_met"], true, "{pw:?}: {v}");
    }
    // NUL: a clean answer either way.
    let nul = "lantern\u{0}harbour velvet comet";
    let v = check(&b, &id, &csrf, nul, nul).await;
    assert!(v["all_met"].is_boolean(), "{v}");
    // Blocklist and context words, each with a reason; no composition rule.
    let v = check(&b, &id, &csrf, "Password1!", "Password1!").await;
    assert!(!met(&v, "not-common") && !met(&v, "length"), "{v}");
    let v = check(
        &b,
        &id,
        &csrf,
        "Connections Portal 2026",
        "Connections Portal 2026",
    )
    .await;
    assert!(!met(&v, "no-personal-words"), "{v}");
    assert!(met(&v, "length") && met(&v, "not-common"), "{v}");
    let staple = "correct horse battery staple";
    let v = check(&b, &id, &csrf, staple, staple).await;
    assert!(met(&v, "not-common"), "{v}");
    assert_eq!(v["all_met"], true, "{v}");
    let v = check(&b, &id, &csrf, STRONG, "lantern harbour velvet comet embe").await;
    assert!(!met(&v, "match"), "{v}");
    // Malformed bodies: refused, not crashed.
    for raw in [
        r#"{"new_password": "x"}"#,
        r#"{"new_password": "\ud800 lone surrogate here", "confirm_password": "x"}"#,
        r#"{"new_password": null, "confirm_password": null}"#,
        "not json",
    ] {
        let res = b
            .send(
                "POST",
                &format!("/reset/{id}/check"),
                Some(raw.to_owned()),
                &[
                    ("content-type", "application/json"),
                    ("x-csrf-token", &csrf),
                ],
            )
            .await;
        no_5xx(&res, raw);
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{raw}");
    }
    // Nothing was recorded or decided by the checks.
    assert_eq!(count(&p, &id, "PasswordRejected").await, 0);
    assert_eq!(count(&p, &id, "PasswordChanged").await, 0);
}

/// Attacks 28, 31, 32 through the form: each refusal says why and is recorded; a missing
/// confirm field is a bad form.
#[tokio::test]
async fn refused_passwords_through_the_form_say_why() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    let long = of_len(10_000);
    let cases: [(&str, &str, &[&str], &str); 6] = [
        (
            &of_len(14),
            &of_len(14),
            &["At least 15 characters"],
            "length",
        ),
        (
            &of_len(129),
            &of_len(129),
            &["At least 15 characters"],
            "length",
        ),
        (&long, &long, &["At least 15 characters"], "length"),
        (
            "Password1!",
            "Password1!",
            &[
                "At least 15 characters",
                "Not a common or breached password",
            ],
            "length, not-common",
        ),
        (
            "Connections Portal 2026",
            "Connections Portal 2026",
            &["Does not contain your name, your email or the portal&#39;s name"],
            "no-personal-words",
        ),
        (
            STRONG,
            "something else entirely",
            &["Both passwords match"],
            "match",
        ),
    ];
    for (new, confirm, reasons, recorded) in cases {
        let label: String = new.chars().take(24).collect();
        let res = set_password(&b, &id, &csrf, new, confirm).await;
        no_5xx(&res, &label);
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{label}: {}",
            res.body
        );
        assert!(res.has("id=\"password-error\""), "{label}");
        for reason in reasons {
            assert!(res.has(reason), "{label}: no {reason:?} in {}", res.body);
        }
        assert!(
            p.timeline_json(&id)
                .await
                .contains(&format!("new password refused: {recorded}\"")),
            "{label}: R49"
        );
        assert!(!res.has(new), "the password is not echoed");
    }
    // 1 MB: the form parser refuses it.
    let huge = "a".repeat(1024 * 1024);
    let res = set_password(&b, &id, &csrf, &huge, "x").await;
    no_5xx(&res, "1 MB password");
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.has("too large"), "{}", res.body);
    // Confirm omitted: a bad form, in the form and in the API.
    let res = b
        .post(
            &format!("/reset/{id}/password"),
            &[("new_password", STRONG), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(
        res.has("missing the field `confirm_password`"),
        "{}",
        res.body
    );
    let j = api_to_password(&p, &b, "bob@example.com").await;
    let (res, v) = j
        .post(&b, "password", Some(json!({ "new_password": STRONG })))
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad-request", "{v}");
    assert_eq!(count(&p, &j.id, "PasswordRejected").await, 0);
    assert_eq!(count(&p, &id, "PasswordRejected").await, 6);
    assert_eq!(count(&p, &id, "PasswordChanged").await, 0);
    // Still at the password step, and a good password is then accepted.
    let res = set_password(&b, &id, &csrf, STRONG, STRONG).await;
    assert_eq!(res.location(), Some("/portal"), "{}", res.body);
}

/// Attack 30, R39: spaces are kept as typed, and composed and decomposed é are one password
/// at set time and at sign-in.
#[tokio::test]
async fn spaces_are_kept_and_normalization_applies_at_set_and_sign_in() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    let spaced = "  lantern harbour velvet comet ember ";
    let res = set_password(&b, &id, &csrf, spaced, spaced).await;
    assert_eq!(res.location(), Some("/portal"), "{}", res.body);
    p.worker.drain().await.unwrap();
    for (attempt, ok) in [
        (spaced, true),
        ("lantern harbour velvet comet ember", false),
        ("  lantern harbour velvet comet ember", false),
        ("lantern harbour velvet comet ember ", false),
    ] {
        let (_, res) = sign_in(&p, ALICE, attempt).await;
        if ok {
            assert_eq!(res.location(), Some("/portal"), "{attempt:?}");
        } else {
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{attempt:?}: trimmed");
        }
    }

    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    let composed = "caf\u{e9} au lait tous les jours";
    let decomposed = "cafe\u{301} au lait tous les jours";
    let res = set_password(&b, &id, &csrf, composed, decomposed).await;
    assert_eq!(res.location(), Some("/portal"), "{}", res.body);
    p.worker.drain().await.unwrap();
    for attempt in [composed, decomposed] {
        let (_, res) = sign_in(&p, ALICE, attempt).await;
        assert_eq!(res.location(), Some("/portal"), "{attempt:?}");
    }
}

/// Attack 29: a NUL in the new password gets a clean answer, and if it is accepted it is
/// the password (nothing cut at the NUL).
#[tokio::test]
async fn a_nul_in_the_new_password_is_handled_cleanly() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b, ALICE).await;
    let csrf = b.page(&id).await.input("csrf");
    let nul = "lantern\u{0}harbour velvet comet";
    let res = set_password(&b, &id, &csrf, nul, nul).await;
    no_5xx(&res, "NUL password");
    if res.status == StatusCode::SEE_OTHER {
        assert_eq!(count(&p, &id, "PasswordChanged").await, 1);
        p.worker.drain().await.unwrap();
        let (_, ok) = sign_in(&p, ALICE, nul).await;
        assert_eq!(ok.location(), Some("/portal"));
        let (_, cut) = sign_in(&p, ALICE, "lantern").await;
        assert_eq!(
            cut.status,
            StatusCode::UNAUTHORIZED,
            "not truncated at the NUL"
        );
    } else {
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
        assert!(res.has("id=\"password-error\""));
        assert_eq!(count(&p, &id, "PasswordRejected").await, 1);
    }
}
