//! The support console and the support API through the real router: sign-in, roles on
//! every route (a table), token revocation, search, timeline and replay, actions with a
//! reason recorded under the operator's name, the stalled list, the funnel.

mod support;

use axum::http::StatusCode;
use passage_core::ports::{JourneyId, OperatorStore};
use passage_core::roles::Role;
use passage_core::secrets::session_hash;
use passage_core::time::Timestamp;
use support::{Browser, Portal, Res, T0, add_operator, portal};

const PASSWORD: &str = support::OPERATOR_PASSWORD;

/// A browser signed in to the console as `name`.
async fn signed_in(p: &Portal, name: &str) -> Browser {
    let b = p.browser();
    let form = b.get("/console/sign-in").await;
    assert_eq!(form.status, StatusCode::OK);
    let res = b
        .post(
            "/console/sign-in",
            &[
                ("name", name),
                ("password", PASSWORD),
                ("csrf", &form.input("csrf")),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(res.location(), Some("/console/journeys"));
    b
}

/// An API token for `name` with `role`, stored as the CLI stores it (hash only).
async fn token(p: &Portal, name: &str, role: Role) -> String {
    let token = format!("pst_{}", uuid::Uuid::new_v4().simple());
    p.store
        .add_api_token(&session_hash(&token), name, role, "test", Timestamp(T0))
        .await
        .unwrap();
    token
}

async fn api(b: &Browser, method: &str, uri: &str, token: Option<&str>, json: Option<&str>) -> Res {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    if json.is_some() {
        headers.push(("content-type", "application/json"));
    }
    b.send(method, uri, json.map(str::to_owned), &headers).await
}

/// A journey for alice waiting on the email code.
async fn alice_journey(p: &Portal) -> String {
    let person = p.browser_at("203.0.113.50:5000");
    let (id, res) = person.start("alice@example.com").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    p.worker.drain().await.unwrap();
    id
}

/// Every console and API route, with the roles that may use it. Written out here rather
/// than derived from the role table, so a change to either shows up as a failure.
fn route_table(journey: &str) -> Vec<(&'static str, String, &'static [&'static str])> {
    const READ: &[&str] = &["support", "auditor", "admin"];
    const ACT: &[&str] = &["support", "admin"];
    const EXPORT: &[&str] = &["auditor", "admin"];
    vec![
        ("GET", "/console/journeys".into(), READ),
        (
            "GET",
            "/console/journeys?q=alice%40example.com".into(),
            READ,
        ),
        ("GET", format!("/console/journeys/{journey}"), READ),
        ("GET", format!("/console/journeys/{journey}?at=1"), READ),
        ("POST", format!("/console/journeys/{journey}/act"), ACT),
        ("GET", "/console/stalled".into(), READ),
        ("GET", "/console/funnel".into(), READ),
        ("GET", "/console/funnel?format=csv".into(), READ),
        ("GET", "/console/audit".into(), EXPORT),
        ("GET", "/console/audit/export?from=1&to=2".into(), EXPORT),
        ("GET", "/console/audit/manifest?from=1&to=2".into(), EXPORT),
        (
            "GET",
            "/console/api/journeys?q=alice%40example.com".into(),
            READ,
        ),
        ("GET", format!("/console/api/journeys/{journey}"), READ),
        ("POST", "/console/api/journeys/search".into(), READ),
        ("POST", "/console/journeys".into(), READ),
        (
            "POST",
            format!("/console/api/journeys/{journey}/actions"),
            ACT,
        ),
        ("GET", "/console/api/stalled".into(), READ),
        ("GET", "/console/api/funnel".into(), READ),
        (
            "GET",
            "/console/api/audit/export?from=1&to=2".into(),
            EXPORT,
        ),
        (
            "GET",
            "/console/api/audit/manifest?from=1&to=2".into(),
            EXPORT,
        ),
    ]
}

#[tokio::test]
async fn every_route_refuses_the_roles_that_must_not_use_it() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    let mut browsers = Vec::new();
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let name = format!("op-{role}");
        add_operator(&p, &name, role).await;
        browsers.push((role, signed_in(&p, &name).await));
        tokens.push((role, token(&p, &name, role).await));
    }
    let anonymous = p.browser();
    let mut checked = 0;
    for (method, path, allowed) in route_table(&journey) {
        let api_route = path.starts_with("/console/api/");
        // Nobody signed in: the sign-in page for browsers, 401 for scripts.
        let res = if api_route {
            api(&anonymous, method, &path, None, Some("{}")).await
        } else {
            anonymous
                .send(method, &path, Some(String::new()), &[])
                .await
        };
        if api_route {
            assert_eq!(
                res.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} anonymous"
            );
            assert!(res.has("\"unauthorized\""), "{}", res.body);
        } else {
            assert_eq!(
                res.status,
                StatusCode::SEE_OTHER,
                "{method} {path} anonymous"
            );
            assert_eq!(res.location(), Some("/console/sign-in"));
        }
        // A browser session must not open the API, nor a token the pages.
        let (_, support_browser) = &browsers[0];
        if api_route {
            let res = api(support_browser, method, &path, None, Some("{}")).await;
            assert_eq!(
                res.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: cookie on the API"
            );
        }
        for role in Role::ALL {
            let may = allowed.contains(&role.as_str());
            let res = if api_route {
                let t = &tokens.iter().find(|(r, _)| *r == role).unwrap().1;
                let body = r#"{"action":"nudge","reason":"table test"}"#;
                api(&anonymous, method, &path, Some(t), Some(body)).await
            } else {
                let b = &browsers.iter().find(|(r, _)| *r == role).unwrap().1;
                // Forms without a CSRF token: a permitted role gets past the role check
                // and is then refused for the token (403 "expired"), so compare bodies.
                b.send(
                    method,
                    &path,
                    Some(String::new()),
                    &[("content-type", "application/x-www-form-urlencoded")],
                )
                .await
            };
            let refused_for_role = res.status == StatusCode::FORBIDDEN
                && (res.has("\"forbidden\"") || res.has("id=\"forbidden\""));
            assert_eq!(
                !refused_for_role,
                may,
                "{method} {path} as {role}: {} {}",
                res.status,
                &res.body[..res.body.len().min(300)]
            );
            assert!(
                res.status != StatusCode::UNAUTHORIZED && !res.status.is_server_error()
                    || res.status == StatusCode::SERVICE_UNAVAILABLE
                        && res.has("export-unavailable"),
                "{method} {path} as {role}: {}",
                res.status
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 20 * 3);
}

#[tokio::test]
async fn revoked_tokens_and_ended_sessions_open_nothing() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    let t = token(&p, "sam", Role::Support).await;
    let b = p.browser();
    let ok = api(&b, "GET", "/console/api/stalled", Some(&t), None).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let listed = p.store.api_tokens().await.unwrap();
    assert!(
        p.store
            .revoke_api_token(&listed[0].token_id, Timestamp(T0))
            .await
            .unwrap()
    );
    let res = api(&b, "GET", "/console/api/stalled", Some(&t), None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let wrong = api(
        &b,
        "GET",
        "/console/api/stalled",
        Some("pst_not-a-token"),
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // A console session ends with sign-out: the same cookie opens nothing afterwards.
    let browser = signed_in(&p, "sam").await;
    let page = browser.get("/console/journeys").await;
    assert_eq!(page.status, StatusCode::OK);
    let cookie = browser.cookie("passage-console").unwrap();
    let bad = browser
        .post("/console/sign-out", &[("csrf", "forged")])
        .await;
    assert_eq!(
        bad.status,
        StatusCode::FORBIDDEN,
        "sign-out needs the session's CSRF token"
    );
    let out = browser
        .post("/console/sign-out", &[("csrf", &page.input("csrf"))])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let replay = p.browser();
    replay.set_cookie("passage-console", &cookie);
    let res = replay.get("/console/journeys").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.location(), Some("/console/sign-in"));
    assert!(
        p.store
            .operator_by_session(&session_hash(&cookie), Timestamp(T0))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn sign_in_refuses_wrong_passwords_and_unknown_operators_alike() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    for (name, password) in [("sam", "wrong password"), ("nobody", PASSWORD)] {
        let b = p.browser();
        let form = b.get("/console/sign-in").await;
        let res = b
            .post(
                "/console/sign-in",
                &[
                    ("name", name),
                    ("password", password),
                    ("csrf", &form.input("csrf")),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(res.has("The operator name or password is incorrect."));
        assert!(b.cookie("passage-console").is_none());
    }
    // A form without the visit's token (cross-site) is refused before any lookup.
    let b = p.browser();
    let res = b
        .post(
            "/console/sign-in",
            &[("name", "sam"), ("password", PASSWORD), ("csrf", "x")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // Duplicated fields are refused, not guessed at.
    let res = b
        .post_raw("/console/sign-in", "name=sam&name=eve&password=x&csrf=y")
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.has("more than once"));
}

#[tokio::test]
async fn support_finds_replays_and_cancels_a_journey_with_a_reason() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "sam", Role::Support).await;
    let b = signed_in(&p, "sam").await;

    // Found by the full address (exact person), by the masked form, and by id.
    let by_email = b.get("/console/journeys?q=Alice%40Example.com").await;
    assert_eq!(by_email.status, StatusCode::OK);
    assert!(
        by_email.has(&format!("/console/journeys/{journey}")),
        "{}",
        by_email.body
    );
    let masked = p
        .engine
        .load(journey.parse().unwrap())
        .await
        .unwrap()
        .0
        .email_masked
        .unwrap();
    let by_mask = b
        .get(&format!(
            "/console/journeys?q={}",
            form_urlencoded::byte_serialize(masked.as_bytes()).collect::<String>()
        ))
        .await;
    assert!(
        by_mask.has(&format!("/console/journeys/{journey}")),
        "{}",
        by_mask.body
    );
    let by_id = b.get(&format!("/console/journeys?q={journey}")).await;
    assert_eq!(
        by_id.location(),
        Some(format!("/console/journeys/{journey}").as_str())
    );
    // The search form is posted: the browser lands on results by the address's pseudonym,
    // and the address itself is in no URL (history, proxies' logs: R50).
    let form = b.get("/console/journeys").await;
    let posted = b
        .post(
            "/console/journeys",
            &[
                ("csrf", &form.input("csrf")),
                ("q", "Alice@Example.com"),
                ("status", "active"),
                ("step", ""),
            ],
        )
        .await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    let to = posted.location().unwrap().to_owned();
    assert!(to.starts_with("/console/journeys?who="), "{to}");
    assert!(
        to.contains("&status=active") && !to.contains("step="),
        "{to}"
    );
    assert!(
        !to.to_lowercase().contains("alice"),
        "the address in the URL: {to}"
    );
    let found = b.get(&to).await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(
        found.has(&format!("/console/journeys/{journey}")),
        "{}",
        found.body
    );
    assert!(found.has("id=\"by-address\""));
    // Ids and masked addresses go on as typed; a forged form is refused.
    let posted = b
        .post(
            "/console/journeys",
            &[("csrf", &form.input("csrf")), ("q", &journey)],
        )
        .await;
    assert_eq!(
        posted.location(),
        Some(format!("/console/journeys?q={journey}").as_str())
    );
    // Not quite an address is still kept out of the URL: the error is the POST's answer.
    let typo = b
        .post(
            "/console/journeys",
            &[("csrf", &form.input("csrf")), ("q", "alice@@example.com")],
        )
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    assert!(typo.location().is_none());
    assert!(typo.has("id=\"console-error\""), "{}", typo.body);
    assert!(
        !typo.has("alice@@"),
        "the typed address shown back: {}",
        typo.body
    );
    // A bullet pasted after an address does not make it a masked one.
    let pasted = b
        .post(
            "/console/journeys",
            &[("csrf", &form.input("csrf")), ("q", "alice@example.com •")],
        )
        .await;
    assert!(
        pasted.location().is_none_or(|to| !to.contains("alice")),
        "{:?}",
        pasted.location()
    );
    let in_step = b
        .post(
            "/console/journeys",
            &[("csrf", &form.input("csrf")), ("step", "alice@example.com")],
        )
        .await;
    assert_eq!(in_step.status, StatusCode::BAD_REQUEST);
    assert!(in_step.location().is_none());
    let forged = b
        .post(
            "/console/journeys",
            &[("csrf", "forged"), ("q", "alice@example.com")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let damaged = b.get("/console/journeys?who=not-hex").await;
    assert_eq!(damaged.status, StatusCode::BAD_REQUEST);
    assert!(damaged.has("search link is damaged"), "{}", damaged.body);
    let nobody = b.get("/console/journeys?q=carol%40example.com").await;
    assert!(nobody.has("id=\"no-results\""));
    let bad = b.get("/console/journeys?q=not+an+address").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.has("id=\"console-error\""));
    let bad_date = b
        .get("/console/journeys?status=active&from=yesterday")
        .await;
    assert_eq!(bad_date.status, StatusCode::BAD_REQUEST);
    assert!(bad_date.has("is not a date"), "{}", bad_date.body);
    let filtered = b
        .get("/console/journeys?status=active&step=email-code")
        .await;
    assert!(
        filtered.has(&format!("/console/journeys/{journey}")),
        "{}",
        filtered.body
    );

    // Replay: the state after the first event, then the latest.
    let first = b.get(&format!("/console/journeys/{journey}?at=1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.has("State after event 1 of"), "{}", first.body);
    assert!(first.has("id=\"state-status\">active<"));
    assert!(
        first.has("class=\"future\""),
        "later events are marked as not yet applied"
    );
    let latest = b.get(&format!("/console/journeys/{journey}")).await;
    assert!(
        latest.has("id=\"state-step\">email-code<"),
        "{}",
        latest.body
    );
    assert!(latest.has("data-event=\"CodeIssued\""));
    assert!(
        latest.has("data-event=\"MessageDelivered\""),
        "delivery outcomes are on the timeline"
    );

    // An action needs a reason and the session's CSRF token.
    let csrf = latest.input("csrf");
    let act = format!("/console/journeys/{journey}/act");
    let no_reason = b
        .post(
            &act,
            &[("csrf", &csrf), ("action", "cancel"), ("reason", " ")],
        )
        .await;
    assert_eq!(no_reason.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_reason.has("Give a reason"));
    let forged = b
        .post(
            &act,
            &[
                ("csrf", "forged"),
                ("action", "cancel"),
                ("reason", "caller asked"),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let unknown = b
        .post(
            &act,
            &[
                ("csrf", &csrf),
                ("action", "delete"),
                ("reason", "caller asked"),
            ],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let events_before = p.event_types(&journey).await;
    assert!(!events_before.contains(&"JourneyCancelled".to_owned()));

    let done = b
        .post(
            &act,
            &[
                ("csrf", &csrf),
                ("action", "cancel"),
                ("reason", "Caller asked to stop (ticket 4711)"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let after = b.get(done.location().unwrap()).await;
    assert!(after.has("The journey was cancelled."));
    assert!(after.has("id=\"state-status\">cancelled<"));
    let t = p.engine.timeline(journey.parse().unwrap()).await.unwrap();
    let cancel = t
        .iter()
        .find(|e| e.event_type == "JourneyCancelled")
        .unwrap();
    let actor = cancel.actor.as_ref().unwrap();
    assert_eq!(
        (
            actor.kind.as_str(),
            actor.id.as_deref(),
            actor.channel.as_str()
        ),
        ("support", Some("sam"), "console")
    );
    assert_eq!(
        actor.reason.as_deref(),
        Some("Caller asked to stop (ticket 4711)")
    );
    assert!(after.has("support sam via console"), "{}", after.body);

    // A finished journey offers no actions, and the API refuses them with a reason.
    assert!(!after.has("id=\"act\""));
    let t = token(&p, "sam", Role::Support).await;
    let res = api(
        &b,
        "POST",
        &format!("/console/api/journeys/{journey}/actions"),
        Some(&t),
        Some(r#"{"action":"nudge","reason":"checking in"}"#),
    )
    .await;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.body);
}

#[tokio::test]
async fn the_api_searches_reads_and_acts_with_a_token() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "sam", Role::Support).await;
    add_operator(&p, "ada", Role::Auditor).await;
    let support = token(&p, "sam", Role::Support).await;
    let auditor = token(&p, "ada", Role::Auditor).await;
    let b = p.browser();

    let list = api(
        &b,
        "GET",
        "/console/api/journeys?q=alice%40example.com",
        Some(&auditor),
        None,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    assert_eq!(v["journeys"][0]["journey_id"], journey.as_str());
    assert_eq!(v["journeys"][0]["status"], "active");
    // The same search with the address in a body, not in the URL (R50).
    let posted = api(
        &b,
        "POST",
        "/console/api/journeys/search",
        Some(&auditor),
        Some(r#"{"q": "Alice@Example.com", "status": "active"}"#),
    )
    .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.body);
    let w: serde_json::Value = serde_json::from_str(&posted.body).unwrap();
    assert_eq!(w["journeys"], v["journeys"]);
    let bad = api(
        &b,
        "POST",
        "/console/api/journeys/search",
        Some(&auditor),
        Some(r#"{"q": 5}"#),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("JSON object with the search's fields"),
        "{}",
        bad.body
    );
    // A misnamed field is refused, not ignored into a search of everyone.
    let misnamed = api(
        &b,
        "POST",
        "/console/api/journeys/search",
        Some(&auditor),
        Some(r#"{"email": "alice@example.com"}"#),
    )
    .await;
    assert_eq!(misnamed.status, StatusCode::BAD_REQUEST);
    assert!(
        misnamed.body.contains("unknown field `email`"),
        "{}",
        misnamed.body
    );
    let nulls = api(
        &b,
        "POST",
        "/console/api/journeys/search",
        Some(&auditor),
        Some(r#"{"q": "alice@example.com", "status": null}"#),
    )
    .await;
    assert_eq!(nulls.status, StatusCode::OK, "{}", nulls.body);

    let one = api(
        &b,
        "GET",
        &format!("/console/api/journeys/{journey}?at=1"),
        Some(&auditor),
        None,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&one.body).unwrap();
    assert_eq!(v["at"], 1);
    assert!(v["events_total"].as_u64().unwrap() >= 3);
    assert_eq!(v["events"][0]["event_type"], "JourneyStarted");

    let missing = api(
        &b,
        "GET",
        &format!("/console/api/journeys/{}", uuid::Uuid::new_v4()),
        Some(&auditor),
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let junk = api(
        &b,
        "GET",
        "/console/api/journeys/not-a-uuid",
        Some(&auditor),
        None,
    )
    .await;
    assert_eq!(junk.status, StatusCode::NOT_FOUND);

    let path = format!("/console/api/journeys/{journey}/actions");
    let bad = api(
        &b,
        "POST",
        &path,
        Some(&support),
        Some(r#"{"action":"explode","reason":"x"}"#),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let extra = api(
        &b,
        "POST",
        &path,
        Some(&support),
        Some(r#"{"action":"nudge","reason":"fine","as":"admin"}"#),
    )
    .await;
    assert_eq!(
        extra.status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
    let short = api(
        &b,
        "POST",
        &path,
        Some(&support),
        Some(r#"{"action":"nudge","reason":"x"}"#),
    )
    .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let early = api(
        &b,
        "POST",
        &path,
        Some(&support),
        Some(r#"{"action":"resend","reason":"person says no email"}"#),
    )
    .await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "support is held to the resend pacing too"
    );
    assert!(early.has("resend-too-soon"), "{}", early.body);
    p.clock.advance(std::time::Duration::from_secs(31));
    let nudged = api(
        &b,
        "POST",
        &path,
        Some(&support),
        Some(r#"{"action":"resend","reason":"person says no email"}"#),
    )
    .await;
    assert_eq!(nudged.status, StatusCode::OK, "{}", nudged.body);
    let t = p
        .engine
        .timeline(journey.parse::<JourneyId>().unwrap())
        .await
        .unwrap();
    let resent = t
        .iter()
        .rev()
        .find(|e| e.event_type == "CodeIssued")
        .unwrap();
    let actor = resent.actor.as_ref().unwrap();
    assert_eq!(actor.id.as_deref(), Some("sam"));
    assert_eq!(actor.channel, "api");
    assert_eq!(actor.reason.as_deref(), Some("person says no email"));

    let funnel = api(&b, "GET", "/console/api/funnel", Some(&auditor), None).await;
    let v: serde_json::Value = serde_json::from_str(&funnel.body).unwrap();
    assert_eq!(v["journeys"], 1);
    assert_eq!(v["steps"][0]["step"], "email");
}

#[tokio::test]
async fn the_stalled_list_and_the_funnel_render() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "sam", Role::Support).await;
    let b = signed_in(&p, "sam").await;
    let quiet = b.get("/console/stalled").await;
    assert!(quiet.has("No journey is stalled."), "{}", quiet.body);
    // An hour later the email step has stalled, and a scan alerts support.
    p.clock.advance(std::time::Duration::from_secs(3600));
    let listed = b.get("/console/stalled").await;
    assert!(
        listed.has(&format!("/console/journeys/{journey}")),
        "{}",
        listed.body
    );
    let escalate = std::time::Duration::from_secs(300);
    p.engine
        .scan_stalls(p.engine.now(), escalate, 100)
        .await
        .unwrap();
    let nudged = b.get("/console/stalled").await;
    assert!(
        nudged.has("<td>yes</td><td>not yet</td>"),
        "nudged, no alert yet: {}",
        nudged.body
    );
    p.clock.advance(std::time::Duration::from_secs(3600));
    p.engine
        .scan_stalls(p.engine.now(), escalate, 100)
        .await
        .unwrap();
    let alerted = b.get("/console/stalled").await;
    assert!(
        alerted.has(" · open"),
        "the alert is listed: {}",
        alerted.body
    );

    let f = b.get("/console/funnel").await;
    assert_eq!(f.status, StatusCode::OK);
    assert!(f.has("<svg id=\"funnel-chart\""), "{}", f.body);
    assert!(f.has("data-step=\"email\""));
    let csv = b.get("/console/funnel?format=csv").await;
    assert!(
        csv.body.starts_with(
            "step,reached,moved_on,abandoned,waiting,p50_seconds,p90_seconds\nemail,1,1,"
        ),
        "{}",
        csv.body
    );
    let bad = b.get("/console/funnel?from=31-12-2026").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let none = b.get("/console/funnel?from=2099-01-01").await;
    assert!(none.has("No journeys of this workflow"));
}

// ---------------------------------------------------------------------------------------
// Review fixes: each test below fails without its fix in console.rs.

/// A browser without the visit cookie is refused the first time (cross-site or stale), and
/// the form it is shown again must work: the refusal sets the cookie its token is bound to.
#[tokio::test]
async fn a_refused_sign_in_leaves_a_form_that_works() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    let b = p.browser();
    let refused = b
        .post(
            "/console/sign-in",
            &[("name", "sam"), ("password", PASSWORD), ("csrf", "stale")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let again = b
        .post(
            "/console/sign-in",
            &[
                ("name", "sam"),
                ("password", PASSWORD),
                ("csrf", &refused.input("csrf")),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert!(b.cookie("passage-console").is_some());
}

/// Signing in replaces the browser's console session: the session it held before ends in
/// the database instead of staying live until it expires.
#[tokio::test]
async fn signing_in_ends_the_session_the_browser_held() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    add_operator(&p, "ada", Role::Auditor).await;
    let sam = signed_in(&p, "sam").await;
    let old = sam.cookie("passage-console").unwrap();
    let b = p.browser();
    b.set_cookie("passage-console", &old);
    let form = p.browser();
    let page = form.get("/console/sign-in").await;
    b.set_cookie("passage-visit", &form.cookie("passage-visit").unwrap());
    let res = b
        .post(
            "/console/sign-in",
            &[
                ("name", "ada"),
                ("password", PASSWORD),
                ("csrf", &page.input("csrf")),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let new = b.cookie("passage-console").unwrap();
    assert_ne!(new, old);
    assert!(
        p.store
            .operator_by_session(&session_hash(&old), Timestamp(T0))
            .await
            .unwrap()
            .is_none(),
        "the replaced session still opens the console"
    );
    let again = sam.get("/console/journeys").await;
    assert_eq!(again.location(), Some("/console/sign-in"));
}

/// The reason is required as recorded (control characters are dropped before the minimum
/// is checked) and is never cut silently: over 500 characters is refused.
#[tokio::test]
async fn action_reasons_are_checked_as_they_are_recorded() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "sam", Role::Support).await;
    let t = token(&p, "sam", Role::Support).await;
    let b = p.browser();
    let path = format!("/console/api/journeys/{journey}/actions");
    let before = p.event_types(&journey).await;
    for (reason, code) in [
        ("\\u0001\\u0002\\u0003", "reason-required"),
        ("\\u0000\\u0000\\u0000\\u0000", "reason-required"),
        ("...", "reason-required"),
        (&"a".repeat(501), "reason-too-long"),
    ] {
        let body = format!(r#"{{"action":"cancel","reason":"{reason}"}}"#);
        let res = api(&b, "POST", &path, Some(&t), Some(&body)).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{reason}: {}",
            res.body
        );
        assert!(res.has(code), "{}", res.body);
    }
    assert_eq!(p.event_types(&journey).await, before, "nothing was done");
    // The console form is held to the same rule.
    let s = signed_in(&p, "sam").await;
    let page = s.get(&format!("/console/journeys/{journey}")).await;
    let long = "b".repeat(501);
    let res = s
        .post(
            &format!("/console/journeys/{journey}/act"),
            &[
                ("csrf", &page.input("csrf")),
                ("action", "cancel"),
                ("reason", &long),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Exactly 500 is recorded whole.
    let full = "c".repeat(500);
    let body = format!(r#"{{"action":"cancel","reason":"{full}"}}"#);
    let res = api(&b, "POST", &path, Some(&t), Some(&body)).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let timeline = p.engine.timeline(journey.parse().unwrap()).await.unwrap();
    let cancel = timeline
        .iter()
        .find(|e| e.event_type == "JourneyCancelled")
        .unwrap();
    assert_eq!(
        cancel.actor.as_ref().unwrap().reason.as_deref(),
        Some(full.as_str())
    );
}

/// The support API shows what the pages show: no person's client address or user agent
/// in the timeline, and no pseudonym of the address in listings.
#[tokio::test]
async fn the_api_shows_no_pseudonym_and_no_client_address() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "ada", Role::Auditor).await;
    let t = token(&p, "ada", Role::Auditor).await;
    let b = p.browser();
    let subject = p.engine.keys().subject("alice@example.com");
    let one = api(
        &b,
        "GET",
        &format!("/console/api/journeys/{journey}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert!(
        p.timeline_json(&journey).await.contains("203.0.113.50"),
        "the event log has the address the test looks for"
    );
    assert!(!one.has("203.0.113.50"), "{}", one.body);
    assert!(
        !one.has("\"ip\"") && !one.has("\"user_agent\""),
        "{}",
        one.body
    );
    let v: serde_json::Value = serde_json::from_str(&one.body).unwrap();
    assert_eq!(v["events"][0]["actor"]["kind"], "person");
    for q in ["alice%40example.com", "status=active"] {
        let uri = if q.contains('=') {
            format!("/console/api/journeys?{q}")
        } else {
            format!("/console/api/journeys?q={q}")
        };
        let list = api(&b, "GET", &uri, Some(&t), None).await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(list.has(&journey), "{}", list.body);
        assert!(
            !list.has("\"subject\"") && !list.has(&subject),
            "{}",
            list.body
        );
    }
    p.clock.advance(std::time::Duration::from_secs(3600));
    let stalled = api(&b, "GET", "/console/api/stalled", Some(&t), None).await;
    assert!(stalled.has(&journey), "{}", stalled.body);
    assert!(!stalled.has("\"subject\"") && !stalled.has(&subject));
}

/// After an action the browser goes to the journey's canonical address, whatever form of
/// the id the form was posted to.
#[tokio::test]
async fn an_action_redirects_to_the_canonical_journey() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "sam", Role::Support).await;
    let b = signed_in(&p, "sam").await;
    let page = b.get(&format!("/console/journeys/{journey}")).await;
    let res = b
        .post(
            &format!("/console/journeys/urn:uuid:{journey}/act"),
            &[
                ("csrf", &page.input("csrf")),
                ("action", "cancel"),
                ("reason", "caller asked"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(
        res.location(),
        Some(format!("/console/journeys/{journey}?done=cancel").as_str())
    );
    let after = b.get(res.location().unwrap()).await;
    assert!(after.has("The journey was cancelled."), "{}", after.body);
}

#[derive(Debug)]
struct OddExporter;

impl passage_web::AuditExporter for OddExporter {
    fn export(
        &self,
        from: u64,
        to: u64,
        _csv: bool,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<passage_web::ExportFiles, String>> + Send + '_>,
    > {
        Box::pin(async move {
            Ok(passage_web::ExportFiles {
                body: format!("{from}..{to}\n").into_bytes(),
                manifest: "{}".into(),
                file_name: "../x\"; y=.html".into(),
            })
        })
    }
}

/// The download's file name reaches `Content-Disposition` only as letters, digits, `.`,
/// `_` and `-`: no quote or `;` can add parameters, no path can lead out of the folder.
#[tokio::test]
async fn export_file_names_cannot_inject_header_parameters() {
    let p = support::portal_with(passage_web::WebOptions {
        audit: Some(std::sync::Arc::new(OddExporter)),
        ..support::options()
    })
    .await;
    alice_journey(&p).await;
    add_operator(&p, "ada", Role::Auditor).await;
    add_operator(&p, "sam", Role::Support).await;
    let auditor = token(&p, "ada", Role::Auditor).await;
    let b = p.browser();
    for (path, want) in [
        ("export", "attachment; filename=\"xy.html\""),
        ("manifest", "attachment; filename=\"xy.html.manifest.json\""),
    ] {
        let res = api(
            &b,
            "GET",
            &format!("/console/api/audit/{path}?from=1&to=2"),
            Some(&auditor),
            None,
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.body);
        let cd = res.headers.get("content-disposition").unwrap();
        assert_eq!(cd.to_str().unwrap(), want);
    }
    // With an exporter configured, support is still refused, and bad ranges are 400s.
    let console = signed_in(&p, "sam").await;
    let res = console.get("/console/audit/export?from=1&to=2").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(!res.has("1..2"));
    for bad in ["from=5&to=2", "from=x", "format=xml"] {
        let res = api(
            &b,
            "GET",
            &format!("/console/api/audit/export?{bad}"),
            Some(&auditor),
            None,
        )
        .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}: {}", res.body);
    }
}

/// Search text is bounded like an address (R6), on the pages and the API; pages go up to
/// 10000; a replay position out of range is clamped.
#[tokio::test]
async fn unbounded_inputs_are_refused_or_clamped() {
    let p = portal().await;
    let journey = alice_journey(&p).await;
    add_operator(&p, "sam", Role::Support).await;
    let b = signed_in(&p, "sam").await;
    let t = token(&p, "sam", Role::Support).await;
    let long = "*".repeat(300);
    let res = b.get(&format!("/console/journeys?q={long}")).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", &res.body[..200]);
    assert!(res.has("too long"));
    let res = api(
        &b,
        "GET",
        &format!("/console/api/journeys?q={long}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = b.get("/console/journeys?status=active&page=10001").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.has("Pages go up to 10000"));
    let res = api(
        &b,
        "GET",
        "/console/api/journeys?page=99999999999999999999999",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let far = b
        .get(&format!("/console/journeys/{journey}?at=999999"))
        .await;
    assert_eq!(far.status, StatusCode::OK);
    let total = p.event_types(&journey).await.len();
    assert!(far.has(&format!("State after event {total} of {total}")));
    let zero = b.get(&format!("/console/journeys/{journey}?at=0")).await;
    assert!(zero.has("State after event 1 of"));
}

/// The route table fails closed: a method or path it does not know needs the admin-only
/// permission, never the read permission every role has.
#[test]
fn route_permissions_fail_closed() {
    use passage_core::roles::Permission;
    use passage_web::route_permission;
    assert_eq!(
        route_permission("GET", "/console/journeys"),
        Some(Permission::ReadJourneys)
    );
    assert_eq!(
        route_permission("GET", "/console/api/audit/export"),
        Some(Permission::ExportAudit)
    );
    assert_eq!(
        route_permission("POST", "/console/api/journeys/x/actions"),
        Some(Permission::ActOnJourneys)
    );
    // The search form is posted to keep addresses out of URLs; it reads, as the GET does.
    assert_eq!(
        route_permission("POST", "/console/journeys"),
        Some(Permission::ReadJourneys)
    );
    assert_eq!(route_permission("POST", "/console/sign-out"), None);
    for (method, path) in [
        ("POST", "/console/stalled"),
        ("DELETE", "/console/api/journeys/x"),
        ("PUT", "/console/funnel"),
        ("GET", "/elsewhere"),
    ] {
        assert_eq!(
            route_permission(method, path),
            Some(Permission::ManageOperators),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_disabled_operator_loses_sessions_and_tokens_at_once() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    let t = token(&p, "sam", Role::Support).await;
    let b = signed_in(&p, "sam").await;
    assert_eq!(b.get("/console/stalled").await.status, StatusCode::OK);
    assert_eq!(
        api(&b, "GET", "/console/api/stalled", Some(&t), None)
            .await
            .status,
        StatusCode::OK
    );
    assert!(p.store.set_operator_disabled("sam", true).await.unwrap());
    let page = b.get("/console/stalled").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), Some("/console/sign-in"));
    assert_eq!(
        api(&b, "GET", "/console/api/stalled", Some(&t), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Nor can they sign in again, and the refusal is the one for a wrong password.
    let again = p.browser();
    let form = again.get("/console/sign-in").await;
    let res = again
        .post(
            "/console/sign-in",
            &[
                ("name", "sam"),
                ("password", PASSWORD),
                ("csrf", &form.input("csrf")),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.has("The operator name or password is incorrect."));
    // Enabled again, the unrevoked token works again.
    assert!(p.store.set_operator_disabled("sam", false).await.unwrap());
    assert_eq!(
        api(&b, "GET", "/console/api/stalled", Some(&t), None)
            .await
            .status,
        StatusCode::OK
    );
    assert!(!p.store.set_operator_disabled("nobody", true).await.unwrap());
}

/// ASVS 2.2.1: one client's failed sign-ins for one operator name are limited (10 per 15
/// minutes, far below the per-client answer limit), unknown names exactly like known ones
/// so the refusal tells no one which names exist. Only failures count, and per client: the
/// operator still signs in from elsewhere, and successes give their count back.
#[tokio::test]
async fn failed_sign_ins_are_limited_per_operator_name_and_client() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    add_operator(&p, "ada", Role::Auditor).await;
    let attempt = |b: &Browser, name: &'static str, password: &'static str| {
        let b = b.clone();
        async move {
            let form = b.get("/console/sign-in").await;
            b.post(
                "/console/sign-in",
                &[
                    ("name", name),
                    ("password", password),
                    ("csrf", &form.input("csrf")),
                ],
            )
            .await
        }
    };
    let guesser = p.browser_at("203.0.113.70:1");
    let mut refusals = Vec::new();
    for name in ["sam", "nobody"] {
        for i in 0..10 {
            let res = attempt(&guesser, name, "not the password").await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{name} attempt {i}");
        }
        let res = attempt(&guesser, name, "not the password").await;
        assert_eq!(
            res.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{name}: {}",
            res.body
        );
        assert!(
            res.has("Too many sign-in attempts for this operator name"),
            "{}",
            res.body
        );
        assert!(res.headers.get("retry-after").is_some());
        assert!(res.has("id=\"console-sign-in\""), "the form is shown again");
        refusals.push(res.body);
    }
    assert_eq!(
        refusals[0], refusals[1],
        "known and unknown names look alike"
    );
    // Even the right password waits out the window from that client: the limit is
    // checked before the password.
    let res = attempt(&guesser, "sam", PASSWORD).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(guesser.cookie("passage-console").is_none());
    // Another name from the same client is not held back.
    let res = attempt(&guesser, "ada", "not the password").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    // Leading and trailing spaces are the same name (the lookup trims them).
    let res = attempt(&guesser, " sam ", "not the password").await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    // The operator, elsewhere, is not locked out, and successes do not count.
    for _ in 0..12 {
        let desk = p.browser_at("198.51.100.70:1");
        let res = attempt(&desk, "sam", PASSWORD).await;
        assert_eq!(res.location(), Some("/console/journeys"), "{}", res.body);
    }
}

/// A journey id that is not even text (`%FF`) is a journey that does not exist, on the
/// pages and the API, not the framework's `text/plain` 400.
#[tokio::test]
async fn journey_ids_that_are_not_text_are_not_found() {
    let p = portal().await;
    add_operator(&p, "sam", Role::Support).await;
    let b = signed_in(&p, "sam").await;
    let page = b.get("/console/journeys/%FF").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(page.has("id=\"console-error\""), "{}", page.body);
    assert!(page.has("No journey with this id exists."));
    let form = b.get("/console/journeys").await;
    let res = b
        .post(
            "/console/journeys/%FF/act",
            &[
                ("csrf", &form.input("csrf")),
                ("action", "nudge"),
                ("reason", "checking on it"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND, "{}", res.body);
    assert!(res.has("No journey with this id exists."));
    let token = token(&p, "sam", Role::Support).await;
    for (method, uri, body) in [
        ("GET", "/console/api/journeys/%FF", None),
        (
            "POST",
            "/console/api/journeys/%C0%AF/actions",
            Some("{\"action\":\"nudge\",\"reason\":\"checking on it\"}"),
        ),
    ] {
        let res = api(&b, method, uri, Some(&token), body).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{uri}: {}", res.body);
        let v: serde_json::Value = serde_json::from_str(&res.body).unwrap();
        assert_eq!(v["error"]["code"], "journey-not-found", "{uri}");
    }
}
