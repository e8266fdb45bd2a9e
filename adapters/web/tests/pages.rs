//! Router-level tests of the portal pages: every page and form route, with its error paths.

mod support;

use axum::http::StatusCode;
use support::{Browser, Portal, STRONG, portal, portal_with};

/// Walks alice's journey through the pages up to the Reset Password page, by SMS.
async fn to_password_page(p: &Portal, b: &Browser) -> String {
    let (id, res) = b.start("alice@example.com").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let code = p.code(&id, "email").await;
    let res = b.answer(&id, "code", &[("code", &code)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let res = b.answer(&id, "choose", &[("option", "sms")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let sms = p.code(&id, "sms").await;
    let res = b.answer(&id, "code", &[("code", &sms)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    id
}

#[tokio::test]
async fn the_seed_journey_completes_through_the_pages_by_sms() {
    let p = portal().await;
    let b = p.browser();
    let home = b.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.has("id=\"forgot-password\" href=\"/reset\">Forgot Password?</a>"));

    let (id, res) = b.start("  Alice@Example.com ").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(b.cookie("passage-flow").unwrap().starts_with(&id));

    let page = b.page(&id).await;
    assert!(
        page.has("data-kind=\"code\" data-step=\"email-code\""),
        "{}",
        page.body
    );
    assert!(page.has("Enter the 6-digit code provided in the email"));
    assert!(page.has("a•••e@e•••.com"), "the address as typed, masked");
    assert!(page.has(">Re-send code</button>"));
    // Not a bare "678": the page carries random ids and tokens, which may contain it.
    assert!(
        !page.has("••• 678") && !page.has("+61") && !page.has("phone-masked"),
        "no phone before the email code is verified (R19)"
    );

    let wrong = b.answer(&id, "code", &[("code", "000000")]).await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.has("id=\"code-error\""), "{}", wrong.body);
    assert!(wrong.has("4 attempts left"), "{}", wrong.body);
    assert!(wrong.has("aria-invalid=\"true\""));

    let code = p.code(&id, "email").await;
    let res = b.answer(&id, "code", &[("code", &code)]).await;
    assert_eq!(res.location(), Some(format!("/reset/{id}").as_str()));

    let choose = b.page(&id).await;
    assert!(choose.has("data-kind=\"choose\""));
    assert!(
        choose.has("id=\"phone-masked\">+61 ••• ••• 678</strong>"),
        "{}",
        choose.body
    );
    assert!(choose.has("id=\"option-sms\" class=\"choice\">Send SMS to my mobile</button>"));
    assert!(
        choose.has("id=\"option-call\" class=\"choice\">Call me on my landline or mobile</button>")
    );
    assert!(choose.has("id=\"risk-notice\""), "R25 notice");

    let res = b.answer(&id, "choose", &[("option", "sms")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let sms_page = b.page(&id).await;
    assert!(sms_page.has("data-step=\"sms-code\""));
    assert!(sms_page.has("Enter the 6-digit verification code you received via SMS"));
    let sms = p.code(&id, "sms").await;
    let res = b.answer(&id, "code", &[("code", &sms)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);

    let pw = b.page(&id).await;
    assert!(pw.has("data-kind=\"set-password\""));
    for req in ["length", "not-common", "no-personal-words", "match"] {
        assert!(
            pw.has(&format!("id=\"req-{req}\" data-met=\"false\"")),
            "grey tick {req}: {}",
            pw.body
        );
    }
    assert!(pw.has("autocomplete=\"new-password\""), "R40");
    assert!(pw.has("id=\"toggle-new-password\""));
    assert!(pw.has("id=\"toggle-confirm-password\""));
    assert!(pw.has(">Update Password</button>"));

    let csrf = pw.input("csrf");
    let check = |new: &'static str, confirm: &'static str| {
        let b = b.clone();
        let id = id.clone();
        let csrf = csrf.clone();
        async move {
            let body =
                serde_json::json!({"new_password": new, "confirm_password": confirm}).to_string();
            let res = b
                .send(
                    "POST",
                    &format!("/reset/{id}/check"),
                    Some(body),
                    &[
                        ("content-type", "application/json"),
                        ("x-csrf-token", &csrf),
                    ],
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.body);
            serde_json::from_str::<serde_json::Value>(&res.body).unwrap()
        }
    };
    let short = check("short", "short").await;
    assert_eq!(short["all_met"], false);
    assert_eq!(short["requirements"][0]["id"], "length");
    assert_eq!(short["requirements"][0]["met"], false);
    let personal = check(
        "Alice Nguyen harbour lantern",
        "Alice Nguyen harbour lantern",
    )
    .await;
    assert_eq!(personal["requirements"][2]["met"], false, "{personal}");
    let good = check(STRONG, STRONG).await;
    assert_eq!(good["all_met"], true, "{good}");

    let mismatch = b
        .answer(
            &id,
            "password",
            &[
                ("new_password", STRONG),
                ("confirm_password", "something else entirely"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(mismatch.has("id=\"password-error\""), "{}", mismatch.body);

    let done = b
        .answer(
            &id,
            "password",
            &[("new_password", STRONG), ("confirm_password", STRONG)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), Some("/portal"));
    assert!(b.cookie("passage-session").is_some(), "signed in (R47)");
    assert!(
        b.cookie("passage-flow").is_none(),
        "the journey's cookie is cleared"
    );

    let portal = b.get("/portal").await;
    assert_eq!(portal.status, StatusCode::OK, "{}", portal.body);
    assert!(portal.has("Welcome, Alice Nguyen"));
    assert!(portal.has("data-session=\"recovery\""));
    assert!(portal.has("id=\"recovery-notice\""), "R47: not a step-up");
    assert!(portal.has("class=\"tile\" href=\"/portal/connections\""));
    assert!(portal.has("Manage a Network Application"));
    assert!(portal.has("Engagement of Contracted Services and Equipment"));
    let dest = b.get("/portal/contractor-booking").await;
    assert_eq!(dest.status, StatusCode::OK);
    assert!(dest.has("Contractor Booking System"));

    // The worker applies the password and sends the notice (R46); then it signs in.
    p.worker.drain().await.unwrap();
    let notice = p
        .outbox
        .latest(id.parse().unwrap(), "email")
        .await
        .unwrap()
        .unwrap();
    assert!(notice.body.contains("password"), "{}", notice.body);
    assert!(
        !notice.body.contains(STRONG),
        "R46: no password in the notice"
    );

    let fresh = p.browser();
    let sign_in = fresh.get("/").await;
    let res = fresh
        .post(
            "/sign-in",
            &[
                ("email", "alice@example.com"),
                ("password", STRONG),
                ("csrf", &sign_in.input("csrf")),
            ],
        )
        .await;
    assert_eq!(res.location(), Some("/portal"), "{}", res.body);
    let portal = fresh.get("/portal").await;
    assert!(portal.has("data-session=\"sign-in\""));

    let types = p.event_types(&id).await;
    assert_eq!(types.first().map(String::as_str), Some("JourneyStarted"));
    assert!(types.contains(&"JourneyCompleted".to_owned()), "{types:?}");
    let timeline = p.timeline_json(&id).await;
    assert!(
        timeline.contains("198.51.100.10"),
        "R49: the client address is recorded:\n{timeline}"
    );
}

#[tokio::test]
async fn the_voice_branch_moves_on_when_hash_is_pressed_on_the_dev_phone() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    let code = p.code(&id, "email").await;
    b.answer(&id, "code", &[("code", &code)]).await;
    let res = b.answer(&id, "choose", &[("option", "call")]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let call = b.page(&id).await;
    assert!(call.has("data-kind=\"voice\""), "{}", call.body);
    assert!(call.has("id=\"call-status\""));
    assert!(
        call.has("http-equiv=\"refresh\""),
        "moves on without JavaScript too"
    );
    let status = b.get(&format!("/reset/{id}/status")).await;
    let s: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(s["step"], "voice-call");

    p.worker.drain().await.unwrap();
    let inbox = b.get("/dev/inbox").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(
        inbox.has("class=\"message\" data-channel=\"voice\""),
        "{}",
        inbox.body
    );
    let call_id = {
        let at = inbox.body.find("name=\"call\" value=\"").unwrap() + 19;
        inbox.body[at..at + 36].to_owned()
    };
    let res = b
        .post(
            "/dev/phone",
            &[
                ("csrf", &inbox.input("csrf")),
                ("journey", &id),
                ("call", &call_id),
            ],
        )
        .await;
    assert_eq!(res.location(), Some("/dev/inbox"), "{}", res.body);
    let s: serde_json::Value =
        serde_json::from_str(&b.get(&format!("/reset/{id}/status")).await.body).unwrap();
    assert_eq!(s["step"], "new-password", "{s}");
    assert!(b.page(&id).await.has("data-kind=\"set-password\""));
}

#[tokio::test]
async fn pages_carry_the_security_headers_and_assets_are_served() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    for uri in [
        "/",
        "/reset".to_owned().as_str(),
        &format!("/reset/{id}"),
        "/dev/inbox",
    ] {
        let res = b.get(uri).await;
        let h = |k: &str| {
            res.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(h("cache-control"), "no-store", "{uri}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{uri}");
        assert_eq!(h("x-frame-options"), "DENY", "{uri}");
        assert!(
            h("content-security-policy").contains("frame-ancestors 'none'"),
            "{uri}"
        );
        assert!(
            h("content-security-policy").contains("script-src 'self'"),
            "{uri}"
        );
        assert!(!res.body.contains("<script>"), "no inline script on {uri}");
        assert!(
            !res.body.contains("http://") && !res.body.contains("https://"),
            "no external asset on {uri}"
        );
    }
    let css = b.get("/assets/portal.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.has("--navy"));
    let js = b.get("/assets/portal.js").await;
    assert!(
        js.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // Cookies: HttpOnly and SameSite; `__Host-` and Secure once served over TLS.
    let set = b.post("/reset", &[("email", "a@b.c"), ("csrf", "x")]).await;
    assert_eq!(set.status, StatusCode::FORBIDDEN);
    let tls = portal_with(support::options_secure()).await;
    let tb = tls.browser();
    let page = tb.get("/reset").await;
    let cookie = page.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-passage-visit="), "{cookie}");
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax")
    );
    assert_eq!(
        page.headers["strict-transport-security"],
        "max-age=31536000"
    );
}

#[tokio::test]
async fn a_journey_opens_only_in_the_browser_that_started_it() {
    let p = portal().await;
    let owner = p.browser();
    let (id, _) = owner.start("alice@example.com").await;
    let other = p.browser_at("203.0.113.5:1000");
    // Forced browsing with someone else's journey id (attacks 18, 23).
    let res = other.page(&id).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.has("not open in this browser"));
    // A cookie for another journey does not open this one.
    let (mine, _) = other.start("bob@example.com").await;
    assert_ne!(mine, id);
    assert_eq!(other.page(&id).await.status, StatusCode::FORBIDDEN);
    let res = other
        .post(
            &format!("/reset/{id}/code"),
            &[("code", "123456"), ("csrf", "x")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // A forged tag.
    other.set_cookie("passage-flow", &format!("{id}.{}", "0".repeat(64)));
    assert_eq!(other.page(&id).await.status, StatusCode::FORBIDDEN);
    // Not a journey id at all, and a journey that does not exist.
    assert_eq!(
        owner.get("/reset/not-a-uuid").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        owner
            .get(&format!("/reset/{}", uuid::Uuid::new_v4()))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Status and check are bound the same way.
    assert_eq!(
        other.get(&format!("/reset/{id}/status")).await.status,
        StatusCode::FORBIDDEN
    );
    // Nothing reached the owner's journey.
    let types = p.event_types(&id).await;
    assert!(!types.iter().any(|t| t == "CodeAttemptFailed"), "{types:?}");
}

#[tokio::test]
async fn forms_need_their_journeys_csrf_token_and_single_values() {
    let p = portal().await;
    let b = p.browser();
    let (a, _) = b.start("alice@example.com").await;
    let page = b.page(&a).await;
    let token_a = page.input("csrf");
    // No token, a wrong token (attack 21).
    let res = b
        .post(&format!("/reset/{a}/code"), &[("code", "123456")])
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.has("missing the field `csrf`"), "{}", res.body);
    let res = b
        .post(
            &format!("/reset/{a}/code"),
            &[("code", "123456"), ("csrf", &"f".repeat(64))],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // Another journey's token, in a browser holding both journeys' ids.
    let c = p.browser_at("198.51.100.20:1");
    let (other, _) = c.start("bob@example.com").await;
    let other_token = c.page(&other).await.input("csrf");
    assert_ne!(other_token, token_a);
    let res = b
        .post(
            &format!("/reset/{a}/code"),
            &[("code", "123456"), ("csrf", &other_token)],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // R5: duplicated and array parameters, unknown fields (user_id tampering, attack 20).
    let res = b
        .post_raw(
            &format!("/reset/{a}/code"),
            &format!("code=1&code=2&csrf={token_a}"),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.has("more than once"));
    let res = b
        .post_raw(
            &format!("/reset/{a}/code"),
            &format!("code[]=1&csrf={token_a}"),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = b
        .post_raw(
            &format!("/reset/{a}/password"),
            &format!("new_password=x&confirm_password=x&user_id=acct-bob&csrf={token_a}"),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.has("unexpected field"));
    let start = b.get("/reset").await;
    let res = b
        .post_raw(
            "/reset",
            &format!(
                "email=alice%40example.com&email=evil%40example.com&csrf={}",
                start.input("csrf")
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "R5");
    // Without the visit cookie the start form is refused.
    let fresh = p.browser();
    let res = fresh
        .post(
            "/reset",
            &[
                ("email", "alice@example.com"),
                ("csrf", &start.input("csrf")),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // None of it reached the journey as an answer.
    assert!(
        !p.event_types(&a)
            .await
            .iter()
            .any(|t| t == "CodeAttemptFailed")
    );
}

#[tokio::test]
async fn refused_answers_show_the_reason_next_to_the_field() {
    let p = portal().await;
    let b = p.browser();
    // An invalid address: recorded, refused, shown on the identify page.
    let (id, res) = b.start("not an address").await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.has("id=\"email-error\""), "{}", res.body);
    assert!(
        res.has(&format!(
            "action=\"/reset/{}/email\"",
            res.attr("data-journey").unwrap_or_default()
        )) || res.has("/email\"")
    );
    let _ = id;
    // Answering the identify step again on the same journey works.
    let journey = b.cookie("passage-flow").unwrap();
    let jid = journey.split('.').next().unwrap().to_owned();
    let res = b
        .answer(&jid, "email", &[("email", "alice@example.com")])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    // Malformed code, unknown option, resend too soon.
    let res = b.answer(&jid, "code", &[("code", "12ab56")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.has("digits only"), "{}", res.body);
    let res = b.answer(&jid, "resend", &[]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let code = p.code(&jid, "email").await;
    b.answer(&jid, "code", &[("code", &code)]).await;
    let res = b.answer(&jid, "choose", &[("option", "pigeon")]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.has("id=\"choose-error\""), "{}", res.body);
    let types = p.event_types(&jid).await;
    assert!(
        types.iter().filter(|t| *t == "InputRejected").count() >= 3,
        "R49: refusals are recorded: {types:?}"
    );
}

#[tokio::test]
async fn the_code_page_says_when_the_code_timed_out_and_resend_issues_a_new_one() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    let first = p.code(&id, "email").await;
    p.clock.advance(std::time::Duration::from_secs(301));
    let page = b.page(&id).await;
    assert!(page.has("id=\"code-expired\""), "{}", page.body);
    assert!(page.has("The code has timed out"));
    let res = b.answer(&id, "code", &[("code", &first)]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
    let res = b.answer(&id, "resend", &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let second = p.code(&id, "email").await;
    let res = b.answer(&id, "code", &[("code", &second)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(b.page(&id).await.has("data-kind=\"choose\""));
}

#[tokio::test]
async fn a_finished_journey_says_so_and_offers_a_new_start() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    for _ in 0..5 {
        b.answer(&id, "code", &[("code", "000000")]).await;
    }
    let page = b.page(&id).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.has("could not be completed"), "{}", page.body);
    assert!(page.has("href=\"/reset\""));
    // Journey lifetime (R30).
    let (id2, _) = b.start("alice@example.com").await;
    p.clock.advance(std::time::Duration::from_secs(16 * 60));
    p.worker.drain().await.unwrap();
    let page = b.page(&id2).await;
    assert!(page.has("timed out"), "{}", page.body);
}

#[tokio::test]
async fn sign_in_refuses_wrong_passwords_alike_and_sign_out_ends_the_session() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b).await;
    b.answer(
        &id,
        "password",
        &[("new_password", STRONG), ("confirm_password", STRONG)],
    )
    .await;
    p.worker.drain().await.unwrap();
    let c = p.browser_at("198.51.100.30:2");
    let mut bodies = Vec::new();
    for (email, pw) in [
        ("alice@example.com", "wrong password here"),
        ("nobody@example.com", STRONG),
        ("dave@example.com", STRONG),
    ] {
        let page = c.get("/").await;
        let res = c
            .post(
                "/sign-in",
                &[
                    ("email", email),
                    ("password", pw),
                    ("csrf", &page.input("csrf")),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{email}");
        assert!(res.has("The email address or password is incorrect."));
        bodies.push(res.body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "same page for a wrong password, an unknown and a disabled account"
    );
    assert_eq!(c.get("/portal").await.location(), Some("/"));
    let page = c.get("/").await;
    let res = c
        .post(
            "/sign-in",
            &[
                ("email", "alice@example.com"),
                ("password", STRONG),
                ("csrf", &page.input("csrf")),
                ("return_to", "/portal/connections"),
            ],
        )
        .await;
    assert_eq!(
        res.location(),
        Some("/portal/connections"),
        "allow-listed return (R48)"
    );
    let page = c.get("/").await;
    assert_eq!(page.location(), Some("/portal"), "signed in already");
    // Sign-out needs the page's token (R32): a bare POST is refused and ends nothing.
    let forged = c.post("/sign-out", &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get("/portal").await.status,
        StatusCode::OK,
        "still signed in"
    );
    let portal_page = c.get("/portal").await;
    let res = c
        .post("/sign-out", &[("csrf", &portal_page.input("csrf"))])
        .await;
    assert_eq!(res.location(), Some("/?signed-out=1"));
    assert_eq!(c.get("/portal").await.location(), Some("/"));
    // Unknown destination, and destination without a session.
    assert_eq!(c.get("/portal/nowhere").await.status, StatusCode::NOT_FOUND);
    let res = c.get("/portal/connections").await;
    assert_eq!(res.location(), Some("/?return_to=%2Fportal%2Fconnections"));
}

#[tokio::test]
async fn tile_redirects_accept_only_the_portals_own_targets() {
    let p = portal().await;
    let b = p.browser();
    let ok = b.get("/portal/go?to=/portal/connections").await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location(), Some("/portal/connections"));
    for evil in [
        "//evil.com",
        "https:evil.com",
        "/\\evil.com",
        "https://evil.com/portal/connections",
        "/portal/connections/../../evil",
        "",
    ] {
        let enc: String = form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let res = b.get(&format!("/portal/go?to={enc}")).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{evil}");
        assert!(res.location().is_none(), "{evil}");
    }
    assert_eq!(b.get("/portal/go").await.status, StatusCode::BAD_REQUEST);
    // A return_to outside the list is dropped from the sign-in form (attack 43).
    let page = b.get("/?return_to=//evil.com").await;
    assert!(!page.has("evil.com"));
}

#[tokio::test]
async fn the_dev_inbox_exists_only_with_the_dev_outbox() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    let code = p.code(&id, "email").await;
    let inbox = b.get("/dev/inbox").await;
    assert!(
        inbox.has(&format!("<strong class=\"code\">{code}</strong>")),
        "{}",
        inbox.body
    );
    let mut opts = support::options();
    opts.dev_outbox = None;
    let real = support::portal_without_dev(opts).await;
    let rb = real.browser();
    assert_eq!(rb.get("/dev/inbox").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        rb.post(
            "/dev/phone",
            &[("csrf", "x"), ("journey", &id), ("call", "y")]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_live_check_and_the_status_poll_refuse_what_is_not_theirs() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b).await;
    let csrf = b.page(&id).await.input("csrf");
    let body = serde_json::json!({"new_password": STRONG, "confirm_password": STRONG}).to_string();
    let post = |b: &Browser, token: &str, body: &str| {
        let (b, id, token, body) = (b.clone(), id.clone(), token.to_owned(), body.to_owned());
        async move {
            b.send(
                "POST",
                &format!("/reset/{id}/check"),
                Some(body),
                &[
                    ("content-type", "application/json"),
                    ("x-csrf-token", &token),
                ],
            )
            .await
        }
    };
    let ok = post(&b, &csrf, &body).await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad_token = post(&b, "nope", &body).await;
    assert_eq!(bad_token.status, StatusCode::FORBIDDEN);
    assert!(bad_token.has("bad-csrf-token"));
    let other = p.browser_at("203.0.113.9:1");
    let not_bound = post(&other, &csrf, &body).await;
    assert_eq!(not_bound.status, StatusCode::FORBIDDEN);
    assert!(not_bound.has("not-your-journey"));
    let bad_body = post(&b, &csrf, "{\"new_password\": 1}").await;
    assert_eq!(bad_body.status, StatusCode::BAD_REQUEST);
    let extra = post(
        &b,
        &csrf,
        "{\"new_password\":\"a\",\"confirm_password\":\"a\",\"user\":\"x\"}",
    )
    .await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST);
    // The check never records anything: the journey is where it was.
    let before = p.event_types(&id).await.len();
    post(&b, &csrf, &body).await;
    assert_eq!(p.event_types(&id).await.len(), before);
    // The status poll: bound, and identical in shape for every step.
    let status = other.get(&format!("/reset/{id}/status")).await;
    assert_eq!(status.status, StatusCode::FORBIDDEN);
    let mine: serde_json::Value =
        serde_json::from_str(&b.get(&format!("/reset/{id}/status")).await.body).unwrap();
    assert_eq!(mine["status"], "active");
    assert_eq!(mine["step"], "new-password");
    assert_eq!(mine["view"], "active.new-password.none");
    assert!(
        mine.get("version").is_none(),
        "no stream version: it differs for unknown accounts"
    );
    // The dev phone refuses a forged form and an unknown call.
    // (The inbox's forms carry the browser's visit token, as the start form does.)
    let visit_token = b.get("/reset").await.input("csrf");
    let res = b
        .post(
            "/dev/phone",
            &[("csrf", "x"), ("journey", &id), ("call", "y")],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = b
        .post(
            "/dev/phone",
            &[
                ("csrf", &visit_token),
                ("journey", &id),
                ("call", "not-a-uuid"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    // Code pages point at the dev inbox while the dev channels are on.
    let (j2, _) = b.start("bob@example.com").await;
    assert!(b.page(&j2).await.has("id=\"dev-hint\""));
}

/// The chat bot's hand-off: a single-use, short-lived link bound to one journey. Opening it
/// (as a link preview would) changes nothing; the Continue button takes the journey over
/// in this browser, once.
#[tokio::test]
async fn a_handoff_link_opens_its_journey_once_and_only_while_fresh() {
    use passage_core::secrets::handoff_token;
    let p = portal().await;
    // A journey the chat bot started: no browser holds it.
    let started = p
        .engine
        .start(
            "password-reset",
            passage_runtime::Actor::person("chat"),
            None,
        )
        .await
        .unwrap();
    let id = started.journey_id;
    p.engine
        .submit(
            id,
            passage_runtime::Input::Email("alice@example.com".into()),
            passage_runtime::Actor::person("chat"),
            None,
        )
        .await
        .unwrap();
    let expires = p.engine.now().plus(std::time::Duration::from_secs(600));
    let token = handoff_token(p.engine.keys(), id.0, expires);
    let link = format!("/reset/{id}/continue?t={token}");

    let b = p.browser();
    assert_eq!(b.page(&id.to_string()).await.status, StatusCode::FORBIDDEN);
    let before = p.event_types(&id.to_string()).await.len();
    let preview = b.get(&link).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(preview.has("id=\"continue\""));
    assert_eq!(
        p.event_types(&id.to_string()).await.len(),
        before,
        "a GET consumes nothing (R24)"
    );
    let res = b
        .post(
            &format!("/reset/{id}/continue"),
            &[("csrf", &preview.input("csrf")), ("t", &token)],
        )
        .await;
    assert_eq!(
        res.location(),
        Some(format!("/reset/{id}").as_str()),
        "{}",
        res.body
    );
    assert!(b.page(&id.to_string()).await.has("data-kind=\"code\""));
    assert!(
        p.event_types(&id.to_string())
            .await
            .contains(&"HandoffLinkOpened".to_owned())
    );

    // Once only, even from another browser.
    let other = p.browser_at("203.0.113.77:1");
    let page = other.get(&link).await;
    let again = other
        .post(
            &format!("/reset/{id}/continue"),
            &[("csrf", &page.input("csrf")), ("t", &token)],
        )
        .await;
    assert_eq!(again.status, StatusCode::GONE);
    assert_eq!(
        other.page(&id.to_string()).await.status,
        StatusCode::FORBIDDEN
    );

    // Forged, for another journey, and expired links are dead on sight.
    let forged = format!("{}-{}", expires.as_millis(), "0".repeat(32));
    assert_eq!(
        other
            .get(&format!("/reset/{id}/continue?t={forged}"))
            .await
            .status,
        StatusCode::GONE
    );
    let another = uuid::Uuid::new_v4();
    assert_eq!(
        other
            .get(&format!("/reset/{another}/continue?t={token}"))
            .await
            .status,
        StatusCode::GONE
    );
    assert_eq!(
        other.get(&format!("/reset/{id}/continue")).await.status,
        StatusCode::GONE
    );
    let fresh = handoff_token(
        p.engine.keys(),
        id.0,
        p.engine.now().plus(std::time::Duration::from_secs(60)),
    );
    p.clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(
        other
            .get(&format!("/reset/{id}/continue?t={fresh}"))
            .await
            .status,
        StatusCode::GONE
    );
}

// ---------------------------------------------------------------------------------------
// Review fixes in the web layer: each test below fails without its fix.

/// A portal whose journey is `workflows/email-voice-code.toml`: the call reads out a code
/// that the person types on the page (R26).
async fn spoken_code_portal() -> Portal {
    let p = portal_with(passage_web::WebOptions {
        default_workflow: "email-voice-code".into(),
        ..support::options()
    })
    .await;
    let src = include_str!("../../../workflows/email-voice-code.toml");
    p.engine
        .register(passage_core::definition::load("email-voice-code.toml", src).unwrap())
        .await
        .unwrap();
    p
}

/// A `spoken-code` call step is completed on the page: a code form posting to
/// `/reset/{id}/code`, worded for the code, and no reload (meta refresh or the script's
/// poll) that would throw away what is being typed.
#[tokio::test]
async fn a_spoken_code_call_is_answered_by_typing_the_code_on_the_page() {
    let p = spoken_code_portal().await;
    let b = p.browser();
    let (id, res) = b.start("alice@example.com").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let code = p.code(&id, "email").await;
    let res = b.answer(&id, "code", &[("code", &code)]).await;
    assert_eq!(res.location(), Some(format!("/reset/{id}").as_str()));

    let call = b.page(&id).await;
    assert_eq!(call.status, StatusCode::OK);
    assert!(call.has("data-kind=\"voice\""), "{}", call.body);
    assert!(
        call.has(&format!(
            "id=\"call-code-form\" method=\"post\" action=\"/reset/{id}/code\""
        )),
        "{}",
        call.body
    );
    assert!(call.has("<input id=\"code\" name=\"code\""));
    assert!(call.has("6-digit code"));
    assert!(call.has("listen for the 6-digit code, and type it below"));
    assert!(!call.has("press #"), "{}", call.body);
    assert!(
        !call.has("http-equiv=\"refresh\""),
        "no reload while typing"
    );
    assert!(!call.has("data-watch"), "no poll reload while typing");
    // The call's code lives 2 minutes; a new call is the way to a new one.
    assert!(call.has("data-remaining-ms=\"120000\""), "{}", call.body);
    assert!(call.has("Select \u{201c}Call me again\u{201d} to get a new one."));
    // The dev inbox shows the code the call reads out, and no "press #" for this call.
    p.worker.drain().await.unwrap();
    let inbox = b.get("/dev/inbox").await;
    assert!(
        inbox.has(&format!("data-channel=\"voice\" data-journey=\"{id}\"")),
        "{}",
        inbox.body
    );
    assert!(!inbox.has("press-hash"), "{}", inbox.body);

    let spoken = p.code(&id, "voice").await;
    let wrong = if spoken == "000000" {
        "111111"
    } else {
        "000000"
    };
    let res = b.answer(&id, "code", &[("code", wrong)]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(
        res.has("id=\"code-error\""),
        "next to the field: {}",
        res.body
    );
    assert!(res.has("id=\"call-code-form\""), "and the form stays");
    let res = b.answer(&id, "code", &[("code", &spoken)]).await;
    assert_eq!(
        res.location(),
        Some(format!("/reset/{id}").as_str()),
        "{}",
        res.body
    );
    assert!(b.page(&id).await.has("data-kind=\"set-password\""));
}

/// A press-# call page reloads to the journey's own page (`/reset/{id}`), never to its own
/// address: after a refusal it is shown at the POST route it answered, and a GET there was
/// a bare 405. A second "Call me" (a double click, a stale tab) goes back to the journey.
#[tokio::test]
async fn a_stale_form_and_the_call_pages_reload_lead_back_to_the_journey() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    let code = p.code(&id, "email").await;
    b.answer(&id, "code", &[("code", &code)]).await;
    let choose = b.page(&id).await;
    let csrf = choose.input("csrf");
    let first = b
        .post(
            &format!("/reset/{id}/choose"),
            &[("option", "call"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(first.location(), Some(format!("/reset/{id}").as_str()));
    // The same form again, without the page's nonce (as a stale copy of it would be).
    let second = b
        .post(
            &format!("/reset/{id}/choose"),
            &[("option", "call"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(second.status, StatusCode::SEE_OTHER, "{}", second.body);
    assert_eq!(second.location(), Some(format!("/reset/{id}").as_str()));
    assert!(
        p.timeline_json(&id)
            .await
            .contains("choose refused: step-not-allowed"),
        "the stale answer is still recorded (R49)"
    );

    let call = b.page(&id).await;
    assert!(
        call.has(&format!(
            "<meta http-equiv=\"refresh\" content=\"5; url=/reset/{id}\">"
        )),
        "{}",
        call.body
    );
    assert!(call.has(&format!("data-page-url=\"/reset/{id}\"")));
    assert!(call.has("data-watch=\"true\""));
    // A GET of an answer's address is sent to the journey, not refused with a 405.
    for action in ["choose", "code", "resend", "email", "password"] {
        let res = b.get(&format!("/reset/{id}/{action}")).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{action}");
        assert_eq!(res.location(), Some(format!("/reset/{id}").as_str()));
    }
    // A refusal on the call page (too soon for another call) is still shown in place, with
    // the reload pointing at the journey.
    let res = b.answer(&id, "resend", &[]).await;
    assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", res.body);
    assert!(res.has("id=\"call-error\""));
    assert!(res.has(&format!("content=\"5; url=/reset/{id}\"")));
    // The script reloads the page's own journey URL, not `location.pathname`.
    let js = b.get("/assets/portal.js").await;
    assert!(js.has("data-page-url"), "{}", js.body);
    assert!(!js.has("location.pathname"), "{}", js.body);
}

/// F5 on the page a refused code was shown on sends the same form again: it returns the
/// first answer and does not count the code a second time (R13). A code typed on a new
/// rendering of the page is a new attempt.
#[tokio::test]
async fn resubmitting_a_refused_code_does_not_count_it_twice() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    let page = b.page(&id).await;
    let form = [
        ("code", "000000"),
        ("csrf", &page.input("csrf")),
        ("form", &page.input("form")),
    ];
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let first = b.post_raw(&format!("/reset/{id}/code"), &body).await;
    assert_eq!(first.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(first.has("4 attempts left"), "{}", first.body);
    let again = b.post_raw(&format!("/reset/{id}/code"), &body).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.has("4 attempts left"), "{}", again.body);
    let failed = |types: Vec<String>| types.iter().filter(|t| *t == "CodeAttemptFailed").count();
    assert_eq!(failed(p.event_types(&id).await), 1, "counted once");
    // The refusal's page carries a new nonce: the same code typed there is a new attempt.
    assert_ne!(again.input("form"), page.input("form"));
    let next = b
        .post(
            &format!("/reset/{id}/code"),
            &[
                ("code", "000000"),
                ("csrf", &again.input("csrf")),
                ("form", &again.input("form")),
            ],
        )
        .await;
    assert!(next.has("3 attempts left"), "{}", next.body);
    assert_eq!(failed(p.event_types(&id).await), 2);
}

/// Ids that are not text, duplicated query parameters, unknown routes, methods a route does
/// not take and a rate-limited JSON endpoint all answer in the documented format: JSON for
/// the API and the page scripts' endpoints, a page elsewhere; never the framework's empty
/// or `text/plain` body.
#[tokio::test]
async fn malformed_requests_and_unknown_routes_answer_in_the_documented_format() {
    let p = portal_with(passage_web::WebOptions {
        limits: passage_web::Limits {
            checks_per_client: 1,
            ..support::options().limits
        },
        ..support::options()
    })
    .await;
    let b = p.browser();
    let kind = |res: &support::Res| {
        res.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let json = |res: &support::Res| -> serde_json::Value {
        assert!(
            kind(res).starts_with("application/json"),
            "{} {}: {}",
            res.status,
            kind(res),
            res.body
        );
        serde_json::from_str(&res.body).unwrap()
    };
    let html = |res: &support::Res| {
        assert!(
            kind(res).starts_with("text/html") && res.has("data-kind=\"message\""),
            "{} {}: {}",
            res.status,
            kind(res),
            res.body
        );
    };

    // Journey ids that are not text: answered as any id that names no journey.
    let res = b.get("/api/journeys/%FF").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&res)["error"]["code"], "journey-not-found");
    let res = b
        .send(
            "POST",
            "/api/journeys/%FF/code",
            Some("{\"code\":\"123456\"}".into()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&res)["error"]["code"], "journey-not-found");
    let res = b.get("/reset/%FF").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    html(&res);
    assert!(res.has("not open in this browser"));
    let res = b
        .post("/reset/%FF/code", &[("code", "1"), ("csrf", "x")])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    html(&res);
    let res = b.get("/reset/%FF/status").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(json(&res)["error"]["code"], "not-your-journey");
    let res = b.get("/reset/%FF/continue?t=x").await;
    assert_eq!(res.status, StatusCode::GONE);
    html(&res);
    let res = b.get("/portal/%FF").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    html(&res);

    // A hand-off link whose token appears twice.
    let (id, _) = b.start("alice@example.com").await;
    let res = b.get(&format!("/reset/{id}/continue?t=a&t=b")).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    html(&res);
    assert!(res.has("This link is damaged"), "{}", res.body);

    // Unknown routes, and methods a route does not take.
    let res = b.get("/api/nope").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&res)["error"]["code"], "not-found");
    let res = b.send("DELETE", "/console/api/nope", None, &[]).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(json(&res)["error"]["code"], "not-found");
    let res = b.get("/nope").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    html(&res);
    assert!(res.has("Page not found"));
    assert_eq!(
        res.headers["x-frame-options"], "DENY",
        "under the security layer"
    );
    let res = b.send("PUT", "/api/journeys", None, &[]).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json(&res)["error"]["code"], "method-not-allowed");
    assert_eq!(res.headers["allow"], "POST");
    let res = b.send("DELETE", "/reset", None, &[]).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    html(&res);
    assert!(res.headers.get("allow").is_some());
    // A form over the framework's body limit (2 MB): refused before the handler runs.
    let huge = format!("code={}&csrf=x", "1".repeat(3 * 1024 * 1024));
    let res = b.post_raw(&format!("/reset/{id}/code"), &huge).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    html(&res);

    // The live password check is JSON, its refusal by the limiter too.
    let page = b.page(&id).await;
    let check = |csrf: String| {
        let (b, id) = (b.clone(), id.clone());
        async move {
            b.send(
                "POST",
                &format!("/reset/{id}/check"),
                Some("{\"new_password\":\"a\",\"confirm_password\":\"a\"}".into()),
                &[
                    ("content-type", "application/json"),
                    ("x-csrf-token", csrf.as_str()),
                ],
            )
            .await
        }
    };
    let first = check(page.input("csrf")).await;
    assert_ne!(first.status, StatusCode::TOO_MANY_REQUESTS);
    let limited = check(page.input("csrf")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(&limited)["error"]["code"], "rate-limited");
    assert!(limited.headers.get("retry-after").is_some());
}

/// The session store failing is an outage (503), not a sign-out: the portal does not send
/// a signed-in person to sign in again.
#[tokio::test]
async fn a_session_store_outage_is_a_503_not_a_sign_out() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b).await;
    b.answer(
        &id,
        "password",
        &[("new_password", STRONG), ("confirm_password", STRONG)],
    )
    .await;
    assert_eq!(b.get("/portal").await.status, StatusCode::OK);
    p.store.close().await;
    for uri in ["/portal", "/", "/portal/connections"] {
        let res = b.get(uri).await;
        assert_eq!(
            res.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            res.body
        );
        assert!(res.location().is_none(), "{uri}");
        assert!(res.has("temporarily unavailable"), "{uri}");
    }
    // A browser without a session still gets the sign-in page: nothing to read.
    assert_eq!(p.browser().get("/").await.status, StatusCode::OK);
}

/// A finished journey's page sends the browser to the portal only when its session is
/// live; a revoked or forged cookie gets the page that says the reset worked.
#[tokio::test]
async fn a_finished_journeys_page_goes_to_the_portal_only_with_a_live_session() {
    let p = portal().await;
    let b = p.browser();
    let id = to_password_page(&p, &b).await;
    let flow = b.cookie("passage-flow").unwrap();
    b.answer(
        &id,
        "password",
        &[("new_password", STRONG), ("confirm_password", STRONG)],
    )
    .await;
    // The journey's cookie is cleared at completion; put it back to see its page.
    b.set_cookie("passage-flow", &flow);
    assert_eq!(b.page(&id).await.location(), Some("/portal"));
    b.set_cookie("passage-session", &"0".repeat(64));
    let page = b.page(&id).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.has("Your password is reset"), "{}", page.body);
    b.forget("passage-session");
    assert!(b.page(&id).await.has("Your password is reset"));
}

/// The code's timeout is given to the script as the time left (the browser's clock may be
/// off the server's) with the words to show, which follow the step's resend label and say
/// to start again once no code can be sent any more.
#[tokio::test]
async fn the_code_timeout_is_sent_as_time_left_with_words_for_what_can_be_done() {
    let p = portal().await;
    let b = p.browser();
    let (id, _) = b.start("alice@example.com").await;
    let page = b.page(&id).await;
    assert!(!page.has("data-expires-at"), "{}", page.body);
    assert_eq!(page.attr("data-remaining-ms").as_deref(), Some("300000"));
    assert_eq!(
        page.attr("data-expired-message").as_deref(),
        Some("The code has timed out. Select \u{201c}Re-send code\u{201d} to get a new one.")
    );
    p.clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(
        b.page(&id).await.attr("data-remaining-ms").as_deref(),
        Some("240000")
    );
    // Spend every resend (3, 30 s apart).
    for _ in 0..3 {
        p.clock.advance(std::time::Duration::from_secs(31));
        let res = b.answer(&id, "resend", &[]).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    }
    let page = b.page(&id).await;
    assert!(page.has("id=\"resend-none\""), "{}", page.body);
    let message = page.attr("data-expired-message").unwrap();
    assert!(message.contains("no more codes can be sent"), "{message}");
    assert!(!message.contains("Re-send"), "{message}");
    p.clock.advance(std::time::Duration::from_secs(301));
    let page = b.page(&id).await;
    assert!(page.has("id=\"code-expired\""), "{}", page.body);
    assert!(
        !page.has("Select \u{201c}Re-send code\u{201d}"),
        "{}",
        page.body
    );
    assert!(
        page.has("id=\"start-again\" href=\"/reset\""),
        "{}",
        page.body
    );
}
