//! Sign-in, the tiles page the guide ends on, the tiles' destinations, sign-out.
//!
//! Sessions live in the account directory as hashes of their tokens. A reset revokes every
//! other session of the account (R45), so an old cookie stops working here at once.

use crate::AppState;
use crate::html::{Page, esc, message_page};
use crate::pages::{SESSION, visit, visit_ok, visit_token};
use crate::security::{
    ClientIp, clear_cookie, get_cookie, parse_form, set_cookie, verify_or_decoy,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use passage_core::definition::{StepKind, Tile};
use passage_core::mask::normalize_email;
use passage_core::ports::{Account, AccountDirectory, EventStore, Session};
use passage_core::secrets::session_hash;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

type Shared<S, D> = State<Arc<AppState<S, D>>>;

/// How long a password sign-in lasts.
const SIGN_IN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

pub(crate) fn routes<S: EventStore, D: AccountDirectory>(state: Arc<AppState<S, D>>) -> Router {
    Router::new()
        .route("/", get(sign_in_page::<S, D>))
        .route("/sign-in", post(sign_in::<S, D>))
        .route("/sign-out", post(sign_out::<S, D>))
        .route("/portal", get(portal::<S, D>))
        .route("/portal/go", get(go::<S, D>))
        .route("/portal/{slug}", get(destination::<S, D>))
        .with_state(state)
}

/// The portal's tiles: the default workflow's completion step lists them, and only their
/// targets may be linked or redirected to (R48).
fn tiles<S: EventStore, D: AccountDirectory>(app: &AppState<S, D>) -> Vec<Tile> {
    app.engine
        .definitions()
        .iter()
        .find(|d| d.id == app.default_workflow())
        .and_then(|d| {
            d.steps.iter().find_map(|s| match &s.kind {
                StepKind::Complete { tiles } => Some(tiles.clone()),
                _ => None,
            })
        })
        .unwrap_or_default()
}

/// The account directory could not be read. Answered as the documented outage (503,
/// docs/deployment.md), never as "signed out": a person sent to sign in again during an
/// outage would retype their password into a page that cannot check it, and think their
/// session was lost.
#[derive(Debug)]
pub(crate) struct DirectoryDown;

impl IntoResponse for DirectoryDown {
    fn into_response(self) -> Response {
        message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "The service is temporarily unavailable. Nothing was lost: try again in a moment.",
            None,
        )
    }
}

/// The live session the browser holds, with its account: `Ok(None)` when there is none (no
/// cookie, unknown, revoked, expired, or from before a password change), `Err` when the
/// directory cannot tell.
pub(crate) async fn current<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
) -> Result<Option<(Session, Account)>, DirectoryDown> {
    let Some(token) = get_cookie(headers, app.options.secure, SESSION) else {
        return Ok(None);
    };
    let dir = app.engine.directory();
    let session = match dir.find_session(&session_hash(&token)).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!("failed to read a session: {e}");
            return Err(DirectoryDown);
        }
    };
    if !session.is_live(app.engine.now()) {
        return Ok(None);
    }
    let account = match dir.get(&session.account_id).await {
        Ok(Some(a)) => a,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!("failed to read a session's account: {e}");
            return Err(DirectoryDown);
        }
    };
    if let Some(fp) = &session.password_fp {
        // R45 without depending on timing: a sign-in that verified the old password while
        // a reset was being applied can create its session after the reset's revocation
        // ran; it still opens nothing once the password changed.
        let phc = match dir.password_hash(&session.account_id).await {
            Ok(phc) => phc,
            Err(e) => {
                tracing::error!("failed to read the account's password to check a session: {e}");
                return Err(DirectoryDown);
            }
        };
        if phc
            .as_deref()
            .map(passage_core::secrets::password_fingerprint)
            != Some(fp.clone())
        {
            return Ok(None);
        }
    }
    Ok(account.enabled.then_some((session, account)))
}

fn sign_in_form<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    token: &str,
    return_to: Option<&str>,
    error: Option<&str>,
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let err = error
        .map(|e| {
            format!(
                "<p class=\"field-error\" role=\"alert\" id=\"sign-in-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let notice = notice
        .map(|n| format!("<p class=\"notice\" role=\"status\">{}</p>", esc(n)))
        .unwrap_or_default();
    let ret = return_to
        .filter(|r| allowed(app, r))
        .map(|r| {
            format!(
                "<input type=\"hidden\" name=\"return_to\" value=\"{}\">",
                esc(r)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<section class=\"card\"><h1>Sign in</h1>{notice}{err}\
<form id=\"sign-in\" method=\"post\" action=\"/sign-in\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{ret}\
<div class=\"field\"><label for=\"email\">Email address</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required autofocus maxlength=\"254\"></div>\
<div class=\"field\"><label for=\"password\">Password</label><div class=\"reveal\"><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"button\" class=\"eye\" id=\"toggle-password\" data-toggle=\"password\" aria-controls=\"password\" aria-pressed=\"false\" aria-label=\"Show password\">Show</button></div></div>\
<button type=\"submit\" id=\"sign-in-button\" class=\"primary\">Sign in</button></form>\
<p class=\"aside\"><a id=\"forgot-password\" href=\"/reset\">Forgot Password?</a></p></section>",
        esc(token)
    );
    Page {
        title: "Sign in",
        main_attrs: "data-kind=\"sign-in\"".into(),
        body,
        refresh: None,
        signed_in: None,
    }
    .render(status)
}

async fn sign_in_page<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match current(&app, &headers).await {
        Ok(Some(_)) => return Redirect::to("/portal").into_response(),
        Ok(None) => {}
        Err(down) => return down.into_response(),
    }
    let (nonce, cookie) = visit(&app, &headers);
    let token = visit_token(&app, &nonce);
    let notice = q
        .contains_key("signed-out")
        .then_some("You are signed out.");
    let mut resp = sign_in_form(
        &app,
        &token,
        q.get("return_to").map(String::as_str),
        None,
        notice,
        StatusCode::OK,
    );
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// Failed sign-ins one client may make for one email address per window.
const FAILED_SIGN_INS_PER_ADDRESS: u32 = 10;
const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

async fn sign_in<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match parse_form(&body, &["email", "password", "csrf"], &["return_to"]) {
        Ok(f) => f,
        Err(e) => {
            return message_page(
                StatusCode::BAD_REQUEST,
                "Something was wrong with the form",
                &e,
                Some(("/", "Back to sign in")),
            );
        }
    };
    if !visit_ok(&app, &headers, &form["csrf"]) {
        return message_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Reload the page and try again.",
            Some(("/", "Sign in")),
        );
    }
    // Failed sign-ins per address and client, whether or not an account has the address
    // (so the answer says nothing about registration, R1): the per-client limit (200
    // answers) let one client guess at one account 200 times per window (ASVS 2.2.1).
    // Keyed by client too, and counting failures only, so nobody can lock a person out by
    // failing on their address from elsewhere; a throttled attempt costs no hashing. Each
    // attempt takes its count before the hash (so parallel guesses cannot all slip past
    // a count still at 0) and a success gives it back.
    let throttle = normalize_email(&form["email"]).ok().map(|email| {
        format!(
            "sign-in-failures|{}|{}",
            client.limit_key(),
            passage_core::secrets::session_hash(&email)
        )
    });
    if let Some(key) = &throttle
        && let Err(retry) = app
            .limiter
            .hit(key, FAILED_SIGN_INS_PER_ADDRESS, SIGN_IN_WINDOW)
            .await
    {
        if app.limiter.first_refusal(key, retry) {
            tracing::warn!(client = %client.masked(), "sign-in attempts for one address over its limit");
        }
        let page = message_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Please wait",
            &format!(
                "Too many sign-in attempts for this email address. Try again in {}, or reset \
                 your password.",
                crate::security::in_minutes(retry)
            ),
            Some(("/", "Back to sign in")),
        );
        return crate::security::with_retry_after(page, retry);
    }
    let dir = app.engine.directory();
    let account = match normalize_email(&form["email"]) {
        Ok(email) => match dir.find_by_email(&email).await {
            Ok(a) => a.filter(|a| a.enabled),
            Err(e) => {
                tracing::error!("sign-in lookup failed: {e}");
                return message_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Please try again",
                    "The service is temporarily unavailable.",
                    None,
                );
            }
        },
        Err(_) => None,
    };
    // The same two lookups whatever the address: no shortcut for unknown ones.
    // An error answers 503 for known and unknown addresses alike (R1), not "incorrect
    // password" for a password nobody could check.
    let phc = match &account {
        Some(a) => dir.password_hash(&a.account_id).await,
        None => dir.password_hash("").await.map(|_| None),
    };
    let phc = match phc {
        Ok(phc) => phc,
        Err(e) => {
            tracing::error!("failed to read a password hash for a sign-in: {e}");
            return DirectoryDown.into_response();
        }
    };
    let password_fp = phc
        .as_deref()
        .map(passage_core::secrets::password_fingerprint);
    let ok = verify_or_decoy(form["password"].clone(), phc).await;
    let (Some(account), true) = (account, ok) else {
        tracing::info!(client = %client.masked(), "sign-in refused");
        let (nonce, _) = visit(&app, &headers);
        return sign_in_form(
            &app,
            &visit_token(&app, &nonce),
            form.get("return_to").map(String::as_str),
            Some("The email address or password is incorrect."),
            None,
            StatusCode::UNAUTHORIZED,
        );
    };
    if let Some(key) = &throttle {
        app.limiter.give_back(key).await;
    }
    let (token, session_hash) =
        passage_core::secrets::session_token(&mut passage_runtime::OsEntropy);
    let now = app.engine.now();
    let session = Session {
        session_hash,
        account_id: account.account_id.clone(),
        journey_id: None,
        kind: "sign-in".into(),
        amr: "pwd".into(),
        created_at: now,
        expires_at: now.plus(SIGN_IN_LIFETIME),
        revoked_at: None,
        password_fp,
    };
    if let Err(e) = dir.create_session(&session).await {
        tracing::error!("cannot create a session: {e}");
        return message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "The service is temporarily unavailable.",
            None,
        );
    }
    tracing::info!(account = %account.account_id, "signed in");
    let target = form
        .get("return_to")
        .filter(|r| allowed(&app, r))
        .cloned()
        .unwrap_or_else(|| "/portal".into());
    let mut resp = Redirect::to(&target).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app.options.secure, SESSION, &token, None),
    );
    resp
}

async fn sign_out<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // R32: the form carries the visit token, so a page elsewhere (even a sibling
    // subdomain, which SameSite does not stop) cannot sign people out.
    let token = parse_form(&body, &["csrf"], &[])
        .ok()
        .map(|f| f["csrf"].clone())
        .unwrap_or_default();
    if !visit_ok(&app, &headers, &token) {
        return message_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Reload the page and select Sign out again.",
            Some(("/portal", "Back to the portal")),
        );
    }
    if let Some(token) = get_cookie(&headers, app.options.secure, SESSION) {
        let now = app.engine.now();
        if let Err(e) = app
            .engine
            .directory()
            .revoke_session(&session_hash(&token), now, "sign-out")
            .await
        {
            tracing::error!("cannot revoke a session: {e}");
        }
    }
    let mut resp = Redirect::to("/?signed-out=1").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        clear_cookie(app.options.secure, SESSION),
    );
    resp
}

async fn portal<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
) -> Response {
    let (session, account) = match current(&app, &headers).await {
        Ok(Some(signed_in)) => signed_in,
        Ok(None) => return Redirect::to("/").into_response(),
        Err(down) => return down.into_response(),
    };
    let (nonce, cookie) = visit(&app, &headers);
    let recovery = if session.kind == "recovery" {
        "<p class=\"notice\" id=\"recovery-notice\">Your password was reset and you are signed in. \
To change your email address, phone number or sign-in methods, sign out and sign in again with your new password.</p>"
    } else {
        ""
    };
    let tiles: String = tiles(&app)
        .iter()
        .map(|t| {
            format!(
                "<a class=\"tile\" href=\"{}\"><span class=\"tile-title\">{}</span><span class=\"tile-portal\">{}</span></a>",
                esc(&t.href),
                esc(&t.title),
                esc(&t.portal)
            )
        })
        .collect();
    let body = format!(
        "<section class=\"wide\"><h1>Welcome, {}</h1>{recovery}<p>Select where you would like to go.</p><nav class=\"tiles\" aria-label=\"Portals\">{tiles}</nav></section>",
        esc(&account.display_name)
    );
    let resp = Page {
        title: "Portal",
        main_attrs: format!(
            "data-kind=\"portal\" data-session=\"{}\"",
            esc(&session.kind)
        ),
        body,
        refresh: None,
        signed_in: Some(visit_token(&app, &nonce)),
    }
    .render(StatusCode::OK);
    let mut resp = resp;
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// R48: only the tiles' own targets; `//evil.com`, `https:evil.com`, `/\evil.com` and
/// anything else are not on the list.
fn allowed<S: EventStore, D: AccountDirectory>(app: &AppState<S, D>, target: &str) -> bool {
    target == "/portal" || tiles(app).iter().any(|t| t.href == target)
}

#[derive(Debug, Deserialize)]
struct Go {
    to: String,
}

async fn go<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    q: Result<Query<Go>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(Go { to })) if allowed(&app, &to) => Redirect::to(&to).into_response(),
        _ => message_page(
            StatusCode::BAD_REQUEST,
            "That link does not lead to a portal",
            "Only the portal's own destinations can be opened from here.",
            Some(("/portal", "Back to the portal")),
        ),
    }
}

async fn destination<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    slug: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    // A slug that is not text (`%FF`) names no tile: the same page as any unknown one.
    let slug = slug.map(|Path(s)| s).unwrap_or_default();
    let href = format!("/portal/{slug}");
    let Some(tile) = tiles(&app).into_iter().find(|t| t.href == href) else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is no such portal.",
            Some(("/portal", "Back to the portal")),
        );
    };
    let account = match current(&app, &headers).await {
        Ok(Some((_, account))) => account,
        Ok(None) => {
            return Redirect::to(&format!(
                "/?return_to={}",
                form_urlencoded::byte_serialize(href.as_bytes()).collect::<String>()
            ))
            .into_response();
        }
        Err(down) => return down.into_response(),
    };
    let body = format!(
        "<section class=\"card\"><h1>{}</h1><p>{}: you are signed in as {}.</p><p><a href=\"/portal\">Back to the portal</a></p></section>",
        esc(&tile.portal),
        esc(&tile.title),
        esc(&account.display_name)
    );
    Page {
        title: &tile.portal,
        main_attrs: "data-kind=\"destination\"".into(),
        body,
        refresh: None,
        signed_in: Some(visit_token(&app, &visit(&app, &headers).0)),
    }
    .render(StatusCode::OK)
}
