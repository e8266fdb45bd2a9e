//! The reset pages, following the portal's user guide screen by screen.
//!
//! `/reset/{id}` always renders the journey's current step from the engine; the POST routes
//! answer it and redirect back (or re-render with the refusal next to the field). A browser
//! holds a journey through the `passage-flow` cookie (`{id}.{tag}`, the tag an HMAC under the
//! deployment's secret), so a journey id alone, pasted into another browser or guessed,
//! opens nothing (attacks 18, 23), and every form carries a CSRF token bound to the journey
//! (R32, attack 21).

use crate::AppState;
use crate::html::{Page, esc, message_page};
use crate::security::{ClientIp, clear_cookie, get_cookie, parse_form, set_cookie, tags_equal};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use passage_core::definition::{Definition, StepKind, VoiceConfirm};
use passage_core::journey::view::{JourneyView, StepView};
use passage_core::journey::{JourneyState, Reply, Status};
use passage_core::password::{PasswordContext, requirements};
use passage_core::ports::{AccountDirectory, EventStore, JourneyId};
use passage_runtime::{Actor, Input, Outcome};
use serde::Deserialize;
use std::sync::Arc;

type Shared<S, D> = State<Arc<AppState<S, D>>>;

pub(crate) const FLOW: &str = "passage-flow";
pub(crate) const VISIT: &str = "passage-visit";
pub(crate) const SESSION: &str = "passage-session";

pub(crate) fn routes<S: EventStore, D: AccountDirectory>(state: Arc<AppState<S, D>>) -> Router {
    Router::new()
        .route("/reset", get(identify_page::<S, D>).post(start::<S, D>))
        .route("/reset/{id}", get(show::<S, D>))
        // A GET of an answer's address (a bookmark, the history, a reload of a page that
        // was the answer to a POST) goes back to the journey's page, not to a 405.
        .route("/reset/{id}/email", post(email::<S, D>).get(to_journey))
        .route("/reset/{id}/code", post(code::<S, D>).get(to_journey))
        .route("/reset/{id}/resend", post(resend::<S, D>).get(to_journey))
        .route("/reset/{id}/choose", post(choose::<S, D>).get(to_journey))
        .route(
            "/reset/{id}/password",
            post(password::<S, D>).get(to_journey),
        )
        .route("/reset/{id}/check", post(check::<S, D>))
        .route("/reset/{id}/status", get(status::<S, D>))
        .route(
            "/reset/{id}/continue",
            get(handoff_page::<S, D>).post(handoff::<S, D>),
        )
        .with_state(state)
}

// ---- binding a browser to a journey -------------------------------------------------------

fn flow_value<S: EventStore, D: AccountDirectory>(app: &AppState<S, D>, id: JourneyId) -> String {
    let tag = app.engine.keys().web_tag("flow", id.0.as_bytes());
    format!("{id}.{tag}")
}

pub(crate) fn csrf_for<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    id: JourneyId,
) -> String {
    app.engine.keys().web_tag("csrf", id.0.as_bytes())
}

/// A token for the forms that come before a journey exists (start, sign-in), bound to the
/// browser's `passage-visit` cookie.
pub(crate) fn visit_token<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    nonce: &str,
) -> String {
    app.engine.keys().web_tag("visit", nonce.as_bytes())
}

/// The visit nonce, and the cookie to set when the browser has none yet.
pub(crate) fn visit<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
) -> (String, Option<header::HeaderValue>) {
    match get_cookie(headers, app.options.secure, VISIT).filter(|v| v.len() == 32) {
        Some(n) => (n, None),
        None => {
            let n = uuid::Uuid::new_v4().simple().to_string();
            let c = set_cookie(app.options.secure, VISIT, &n, None);
            (n, Some(c))
        }
    }
}

pub(crate) fn visit_ok<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    token: &str,
) -> bool {
    get_cookie(headers, app.options.secure, VISIT)
        .is_some_and(|n| tags_equal(&visit_token(app, &n), token))
}

fn bound<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    id: JourneyId,
) -> bool {
    get_cookie(headers, app.options.secure, FLOW)
        .is_some_and(|v| tags_equal(&v, &flow_value(app, id)))
}

fn not_yours() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "This reset is not open in this browser",
        "Resets continue only in the browser that started them. Start again here if you need to.",
        Some(("/reset", "Start again")),
    )
}

fn bad_form(message: &str) -> Response {
    message_page(
        StatusCode::BAD_REQUEST,
        "Something was wrong with the form",
        message,
        Some(("/reset", "Start again")),
    )
}

fn forged() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "The form did not come from this reset. Reload the page and try again.",
        None,
    )
}

fn unavailable(e: passage_runtime::Error) -> Response {
    match e {
        passage_runtime::Error::UnknownJourney(_) => not_yours(),
        other => {
            tracing::error!("a reset page failed: {other}");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "The service is busy or temporarily unavailable. Nothing was lost: try again in a moment.",
                None,
            )
        }
    }
}

/// The journey named in the path; `None` for an id that is not a UUID, or not even text
/// (`%FF`, which the framework would answer with a bare `text/plain` 400). Every route
/// answers `None` as it answers a journey this browser does not hold.
fn parse_id(raw: Result<Path<String>, PathRejection>) -> Option<JourneyId> {
    raw.ok()?.0.parse().ok()
}

/// A GET of an answer route: back to the journey's page (which checks the browser's hold).
async fn to_journey(raw: Result<Path<String>, PathRejection>) -> Response {
    match parse_id(raw) {
        Some(id) => Redirect::to(&format!("/reset/{id}")).into_response(),
        None => not_yours(),
    }
}

fn actor(headers: &HeaderMap, client: &ClientIp) -> Actor {
    ClientIp::person(Some(client), headers, "web")
}

// ---- pages ------------------------------------------------------------------------------------

/// Guide steps 1-3: "Forgot Password?" opens the email page.
async fn identify_page<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
) -> Response {
    let (nonce, cookie) = visit(&app, &headers);
    let hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&visit_token(&app, &nonce))
    );
    let mut resp = identify_form(&app, "email", "/reset", &hidden, None, StatusCode::OK);
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// The address form; `hidden` is its hidden inputs, already escaped (the visit token for
/// the start, [`hidden_fields`] on a journey's page).
fn identify_form<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    step: &str,
    action: &str,
    hidden: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (prompt, label) = app
        .engine
        .definitions()
        .iter()
        .find(|d| d.id == app.default_workflow())
        .and_then(|d| {
            d.steps.iter().find_map(|s| match &s.kind {
                StepKind::Identify { action, .. } => Some((s.prompt.clone(), action.clone())),
                _ => None,
            })
        })
        .unwrap_or_else(|| {
            (
                "Enter your registered Email address".into(),
                "Send verification code".into(),
            )
        });
    let body = format!(
        "<section class=\"card\"><h1>Forgot your password?</h1><p>{prompt}. We will send a verification code to it.</p>\
<form id=\"identify\" method=\"post\" action=\"{action}\" novalidate>\
{hidden}\
{field}\
<button type=\"submit\" id=\"send-code\" class=\"primary\">{label}</button></form>\
<p class=\"aside\"><a href=\"/\">Back to sign in</a></p></section>",
        prompt = esc(&prompt),
        action = esc(action),
        field = field(
            "email",
            "Email address",
            "<input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required autofocus maxlength=\"254\"",
            error
        ),
        label = esc(&label),
    );
    Page {
        title: "Forgot Password",
        main_attrs: format!("data-kind=\"identify\" data-step=\"{}\"", esc(step)),
        body,
        refresh: None,
        signed_in: None,
    }
    .render(status)
}

/// A labelled input with its error next to it (`aria-describedby`). `input` is the opening
/// of the `<input` tag without its closing `>`.
fn field(id: &str, label: &str, input: &str, error: Option<&str>) -> String {
    let (err, described) = match error {
        Some(e) => (
            format!(
                "<p class=\"field-error\" id=\"{id}-error\" role=\"alert\">{}</p>",
                esc(e)
            ),
            format!(" aria-describedby=\"{id}-error\" aria-invalid=\"true\""),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "<div class=\"field\"><label for=\"{id}\">{}</label>{input}{described}>{err}</div>",
        esc(label)
    )
}

/// "Send verification code": starts the journey and answers its first step in one request.
/// The response is the same for every address, registered or not (R1-R3): a redirect to the
/// journey and its cookie; nothing is sent before the response (the outbox delivers later).
async fn start<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match parse_form(&body, &["email", "csrf"], &[]) {
        Ok(f) => f,
        Err(e) => return bad_form(&e),
    };
    if !visit_ok(&app, &headers, &form["csrf"]) {
        return forged();
    }
    let who = actor(&headers, &client);
    let started = match app
        .engine
        .start(app.default_workflow(), who.clone(), None)
        .await
    {
        Ok(o) => o,
        Err(e) => return unavailable(e),
    };
    let id = started.journey_id;
    let outcome = match app
        .engine
        .submit(id, Input::Email(form["email"].clone()), who, None)
        .await
    {
        Ok(o) => o,
        Err(e) => return unavailable(e),
    };
    let mut resp = after(&app, &headers, outcome).await;
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app.options.secure, FLOW, &flow_value(&app, id), None),
    );
    resp
}

/// After a command: on to the journey's page, or the same page with the refusal shown.
///
/// A form for a step the journey has left (a second click on "Call me", a tab left open on
/// an older step) is not an error to show at the form's POST address: that page would
/// reload into a GET of a POST-only route. It goes to the journey's page, which shows
/// where the journey is; the refusal is still recorded (R28, R49).
async fn after<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    outcome: Outcome,
) -> Response {
    let id = outcome.journey_id;
    match outcome.reply {
        Reply::Accepted {
            session_token: Some(token),
        } => {
            // Signed in with a fresh session (R45, R47); the journey's cookie is done.
            let mut resp = Redirect::to("/portal").into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(app.options.secure, SESSION, &token, None),
            );
            h.append(header::SET_COOKIE, clear_cookie(app.options.secure, FLOW));
            resp
        }
        Reply::Accepted {
            session_token: None,
        } => Redirect::to(&format!("/reset/{id}")).into_response(),
        Reply::Rejected(r) if r.code == "step-not-allowed" => {
            Redirect::to(&format!("/reset/{id}")).into_response()
        }
        Reply::Rejected(r) => match app.engine.load(id).await {
            Ok((state, def, view)) => {
                render(
                    app,
                    headers,
                    id,
                    &state,
                    &def,
                    &view,
                    Some(&r.message),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
            Err(e) => unavailable(e),
        },
    }
}

async fn show<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    raw: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = parse_id(raw).filter(|id| bound(&app, &headers, *id)) else {
        return not_yours();
    };
    match app.engine.load(id).await {
        Ok((state, def, view)) => {
            render(
                &app,
                &headers,
                id,
                &state,
                &def,
                &view,
                None,
                StatusCode::OK,
            )
            .await
        }
        Err(e) => unavailable(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn render<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    id: JourneyId,
    state: &JourneyState,
    def: &Definition,
    view: &JourneyView,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = csrf_for(app, id);
    let now = app.engine.now();
    match view.status {
        Status::Active => {}
        Status::Completed => {
            // To the portal only with a live session: any other cookie (revoked, expired,
            // forged) would be sent on from there to sign in without this page's word that
            // the reset worked. One session lookup, and only on a finished journey's page.
            match crate::portal::current(app, headers).await {
                Ok(Some(_)) => return Redirect::to("/portal").into_response(),
                Ok(None) => {}
                Err(unavailable) => return unavailable.into_response(),
            }
            return message_page(
                StatusCode::OK,
                "Your password is reset",
                "Sign in with your new password.",
                Some(("/", "Sign in")),
            );
        }
        _ => {
            let title = match view.status {
                Status::Expired => "This reset has timed out",
                Status::Cancelled => "This reset was cancelled",
                _ => "This reset could not be completed",
            };
            if view.finish_reason.as_deref()
                == Some(passage_core::journey::view::SUPERSEDED_FOR_PERSON)
            {
                return message_page(
                    status,
                    title,
                    "Your password was reset in another window or on another device. Sign in \
                     with that password.",
                    Some(("/", "Sign in")),
                );
            }
            let reason = match &view.finish_reason {
                Some(r) => format!("{}.", sentence_case(r.trim_end_matches('.'))),
                None => "This reset has ended.".into(),
            };
            return message_page(
                status,
                title,
                &format!("{reason} Start again to get a new code."),
                Some(("/reset", "Start again")),
            );
        }
    }
    let Some(step) = &view.step else {
        return not_yours();
    };
    let base = format!("/reset/{id}");
    // With the development channels nothing leaves the machine: say where the code is.
    let dev_hint = if app.options.dev_outbox.is_some() {
        "<p class=\"aside dev\" id=\"dev-hint\">Development mode: nothing is really sent. Read the message in the \
<a href=\"/dev/inbox\" target=\"_blank\" rel=\"noopener\">dev inbox</a>.</p>"
    } else {
        ""
    };
    let hidden = hidden_fields(&csrf);
    // The fifth value: whether the page follows the journey by itself (a meta refresh, and
    // the script's poll of `/status`). Only while a press-# call is the step: nothing is
    // typed there that a reload would throw away.
    let (title, kind, step_id, body, watch) = match step {
        StepView::Identify { id: sid, .. } => {
            return identify_form(app, sid, &format!("{base}/email"), &hidden, error, status);
        }
        StepView::Code {
            id: sid,
            prompt,
            channel,
            digits,
            sent_to,
            expires_at,
            attempts_left,
            resend_label,
            resends_left,
            resend_available_at,
        } => {
            let heading = match channel {
                passage_core::definition::CodeChannel::Email => "Check your email",
                passage_core::definition::CodeChannel::Sms => "Check your phone",
            };
            let to = sent_to
                .as_deref()
                .map(|t| format!("<p>We sent a {digits}-digit code to <strong id=\"sent-to\">{}</strong>.</p>", esc(t)))
                .unwrap_or_default();
            let expiry = expiry_notice(*expires_at, now, resend_label, *resends_left);
            // The refusal already says how many attempts are left.
            let _ = attempts_left;
            let wait = resend_available_at
                .filter(|t| *t > now)
                .map(|t| {
                    format!(
                        "<p class=\"aside\">You can ask for a new code in {} seconds.</p>",
                        t.since(now).as_secs().max(1)
                    )
                })
                .unwrap_or_default();
            let resend = if *resends_left > 0 {
                format!(
                    "<form id=\"resend-form\" method=\"post\" action=\"{base}/resend\">{hidden}\
<button type=\"submit\" id=\"resend\" class=\"secondary\">{}</button></form>{wait}",
                    esc(resend_label)
                )
            } else {
                "<p class=\"aside\" id=\"resend-none\">No more codes can be sent for this reset.</p>".into()
            };
            let body = format!(
                "<section class=\"card\"><h1>{heading}</h1><p>{}</p>{to}{expiry}\
<form id=\"code-form\" method=\"post\" action=\"{base}/code\" novalidate>{hidden}{}\
<button type=\"submit\" id=\"verify\" class=\"primary\">Verify</button></form>{resend}{dev_hint}</section>",
                esc(prompt),
                code_field(*digits, error),
            );
            ("Verification code", "code", sid, body, false)
        }
        StepView::Choose {
            id: sid,
            prompt,
            options,
            phone_masked,
            risk_notice,
        } => {
            let phone = phone_masked
                .as_deref()
                .map(|p| {
                    format!(
                        "<p>Your registered number: <strong id=\"phone-masked\">{}</strong></p>",
                        esc(p)
                    )
                })
                .unwrap_or_default();
            let buttons: String = options
                .iter()
                .map(|o| {
                    format!(
                        "<button type=\"submit\" name=\"option\" value=\"{v}\" id=\"option-{v}\" class=\"choice\">{l}</button>",
                        v = esc(&o.id),
                        l = esc(&o.label)
                    )
                })
                .collect();
            let notice = risk_notice
                .as_deref()
                .map(|n| format!("<p class=\"notice\" id=\"risk-notice\">{}</p>", esc(n)))
                .unwrap_or_default();
            let err = error
                .map(|e| {
                    format!(
                        "<p class=\"field-error\" role=\"alert\" id=\"choose-error\">{}</p>",
                        esc(e)
                    )
                })
                .unwrap_or_default();
            let body = format!(
                "<section class=\"card\"><h1>Verify it's you</h1><p>{}</p>{phone}{err}\
<form id=\"choose-form\" method=\"post\" action=\"{base}/choose\">{hidden}<div class=\"choices\">{buttons}</div></form>{notice}</section>",
                esc(prompt)
            );
            ("Choose a method", "choose", sid, body, false)
        }
        StepView::Voice {
            id: sid,
            prompt,
            confirm,
            calling,
            call_open,
            call_expires_at,
            calls_left,
            call_again_available_at,
        } => {
            let to = calling
                .as_deref()
                .map(esc)
                .unwrap_or_else(|| "your phone".into());
            // With `spoken-code` the call reads a code out and the person types it here
            // (R26): a form to post it to, and no reload that would lose what is typed.
            let spoken = match confirm {
                VoiceConfirm::SpokenCode { digits } => Some(*digits),
                VoiceConfirm::PressPound => None,
            };
            let status_line = match (*call_open, spoken) {
                (true, None) => format!(
                    "Calling {to}… Answer, and press # when prompted. This page moves on by itself."
                ),
                (true, Some(digits)) => format!(
                    "Calling {to}… Answer, listen for the {digits}-digit code, and type it below."
                ),
                (false, _) if *calls_left > 0 => {
                    "The call ended before it was confirmed. Ask for a new call below.".to_owned()
                }
                (false, _) => "The call ended before it was confirmed, and no more calls can be \
made for this reset. Start again to try again."
                    .to_owned(),
            };
            let code_form = match spoken {
                Some(digits) if *call_open => format!(
                    "{}<form id=\"call-code-form\" method=\"post\" action=\"{base}/code\" novalidate>{hidden}{}\
<button type=\"submit\" id=\"verify\" class=\"primary\">Verify</button></form>",
                    expiry_notice(*call_expires_at, now, CALL_AGAIN, *calls_left),
                    code_field(digits, error),
                ),
                _ => String::new(),
            };
            // Shown beside the code field when there is one, else under the call's status.
            let err = error
                .filter(|_| code_form.is_empty())
                .map(|e| {
                    format!(
                        "<p class=\"field-error\" role=\"alert\" id=\"call-error\">{}</p>",
                        esc(e)
                    )
                })
                .unwrap_or_default();
            let wait = call_again_available_at
                .filter(|t| *t > now)
                .map(|t| {
                    format!(
                        "<p class=\"aside\">You can ask for another call in {} seconds.</p>",
                        t.since(now).as_secs().max(1)
                    )
                })
                .unwrap_or_default();
            let again = if *calls_left > 0 {
                format!(
                    "<form id=\"call-again-form\" method=\"post\" action=\"{base}/resend\">{hidden}\
<button type=\"submit\" id=\"call-again\" class=\"secondary\">{CALL_AGAIN}</button></form>{wait}"
                )
            } else if *call_open {
                "<p class=\"aside\" id=\"call-again-none\">No more calls can be made for this reset.</p>".to_owned()
            } else {
                START_AGAIN_LINK.to_owned()
            };
            let body = format!(
                "<section class=\"card\"><h1>We're calling you</h1><p>{}</p>\
<p id=\"call-status\" class=\"notice\" role=\"status\" aria-live=\"polite\">{status_line}</p>{err}{code_form}{again}{dev_hint}</section>",
                esc(prompt)
            );
            ("Phone call", "voice", sid, body, spoken.is_none())
        }
        StepView::SetPassword {
            id: sid, prompt, ..
        } => {
            let ticks = ticks(app, state, def, sid).await;
            let list: String = ticks
                .iter()
                .map(|r| {
                    format!(
                        "<li class=\"requirement\" id=\"req-{id}\" data-met=\"{met}\"><span class=\"tick\" aria-hidden=\"true\">✓</span> {label}<span class=\"sr-only\">{state}</span></li>",
                        id = r.id,
                        met = r.met,
                        label = esc(&r.label),
                        state = if r.met { " (met)" } else { " (not met yet)" }
                    )
                })
                .collect();
            let err = error
                .map(|e| {
                    format!(
                        "<p class=\"field-error\" role=\"alert\" id=\"password-error\">{}</p>",
                        esc(e)
                    )
                })
                .unwrap_or_default();
            let pw = |id: &str, name: &str, label: &str| {
                format!(
                    "<div class=\"field\"><label for=\"{id}\">{label}</label><div class=\"reveal\">\
<input id=\"{id}\" name=\"{name}\" type=\"password\" autocomplete=\"new-password\" required aria-describedby=\"requirements\">\
<button type=\"button\" class=\"eye\" id=\"toggle-{id}\" data-toggle=\"{id}\" aria-controls=\"{id}\" aria-pressed=\"false\" aria-label=\"Show {label_l}\">Show</button></div></div>",
                    label_l = label.to_lowercase()
                )
            };
            let body = format!(
                "<section class=\"card\"><h1>{}</h1><p>Choose a new password. Long passphrases are best; there are no rules about symbols or capitals.</p>{err}\
<form id=\"password-form\" method=\"post\" action=\"{base}/password\" data-check=\"{base}/check\">{hidden}\
{}{}<ul id=\"requirements\" aria-live=\"polite\">{list}</ul>\
<button type=\"submit\" id=\"update-password\" class=\"primary\">Update Password</button></form></section>",
                esc(prompt),
                pw("new-password", "new_password", "New password"),
                pw(
                    "confirm-password",
                    "confirm_password",
                    "Confirm new password"
                ),
            );
            ("Reset Password", "set-password", sid, body, false)
        }
        StepView::Complete { .. } => return Redirect::to("/portal").into_response(),
    };
    Page {
        title,
        main_attrs: format!(
            "data-kind=\"{kind}\" data-step=\"{}\" data-journey=\"{id}\" data-view=\"{}\" data-status-url=\"{base}/status\" data-page-url=\"{base}\"{}",
            esc(step_id),
            fingerprint(view),
            if watch { " data-watch=\"true\"" } else { "" }
        ),
        body,
        // To the journey's page by its own address: this page may be the answer to a POST,
        // whose address is a POST-only route.
        refresh: watch.then(|| (5, base.clone())),
        signed_in: None,
    }
    .render(status)
}

/// The label of the voice step's button that places a new call.
const CALL_AGAIN: &str = "Call me again";

/// Where a person goes when the journey can no longer be finished.
const START_AGAIN_LINK: &str =
    "<p><a class=\"button primary\" id=\"start-again\" href=\"/reset\">Start again</a></p>";

/// The code field, with the refusal next to it.
fn code_field(digits: u8, error: Option<&str>) -> String {
    field(
        "code",
        &format!("{digits}-digit code"),
        &format!(
            "<input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]*\" maxlength=\"{digits}\" required autofocus"
        ),
        error,
    )
}

/// What the page says once a code has timed out: get a new one with `again` (the step's
/// own button label) while one can still be sent, else start again.
fn timed_out(again: &str, again_left: u32) -> String {
    if again_left > 0 {
        format!("The code has timed out. Select \u{201c}{again}\u{201d} to get a new one.")
    } else {
        "The code has timed out, and no more codes can be sent for this reset. Start again to \
         get a new code."
            .to_owned()
    }
}

/// The code's remaining validity, or the notice that it has timed out. The script is given
/// the time left, not the deadline: the browser's clock may be minutes off the server's,
/// and `portal.js` counts the time left on its own monotonic clock. It is also given the
/// words to show, so they follow the step's label and what can still be sent.
fn expiry_notice(
    expires_at: Option<passage_core::time::Timestamp>,
    now: passage_core::time::Timestamp,
    again: &str,
    again_left: u32,
) -> String {
    let Some(expires_at) = expires_at else {
        return String::new();
    };
    let message = timed_out(again, again_left);
    if expires_at <= now {
        let start = if again_left > 0 { "" } else { START_AGAIN_LINK };
        return format!(
            "<p class=\"notice warn\" id=\"code-expired\" role=\"alert\">{}</p>{start}",
            esc(&message)
        );
    }
    let left = expires_at.since(now);
    let mins = left.as_secs().div_ceil(60).max(1);
    format!(
        "<p class=\"aside\" id=\"code-expiry\" data-remaining-ms=\"{}\" data-expired-message=\"{}\">The code is valid for {mins} more minute{}.</p>",
        left.as_millis(),
        esc(&message),
        if mins == 1 { "" } else { "s" }
    )
}

/// The requirement ticks for the journey's policy, evaluated on `new`/`confirm`.
async fn ticks<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    state: &JourneyState,
    def: &Definition,
    step: &str,
) -> Vec<passage_core::password::Requirement> {
    evaluate(app, state, def, step, "", "")
        .await
        .unwrap_or_default()
}

async fn evaluate<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    state: &JourneyState,
    def: &Definition,
    step: &str,
    new: &str,
    confirm: &str,
) -> Option<Vec<passage_core::password::Requirement>> {
    let policy = def
        .steps
        .iter()
        .find(|s| s.id.as_str() == step)
        .and_then(|s| match &s.kind {
            StepKind::SetPassword { policy, .. } => def.policies.get(policy),
            _ => None,
        })?;
    // The words the password may not contain come from the account, never the request (R29).
    let account = match &state.account_id {
        Some(a) => app.engine.directory().get(a).await.ok().flatten(),
        None => None,
    };
    let ctx = account
        .map(|a| PasswordContext {
            email: a.email,
            display_name: a.display_name,
        })
        .unwrap_or_default();
    Some(requirements(policy, new, confirm, &ctx))
}

// ---- answers ------------------------------------------------------------------------------------

/// The hidden fields of every form on a journey page: the CSRF token (R32) and a nonce
/// drawn for this rendering of the page (see [`form_command`]).
fn hidden_fields(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"{FORM_NONCE}\" value=\"{}\">",
        esc(csrf),
        uuid::Uuid::new_v4().simple()
    )
}

/// The hidden field holding a page rendering's nonce.
const FORM_NONCE: &str = "form";

/// The command id of a form submission: the same for the same bytes posted from the same
/// rendering of a page, so that a resubmission (F5 on the page a refusal was shown on, the
/// browser's "send again", a double click) returns the first outcome instead of counting a
/// wrong code twice or choosing twice (R13, R31). Each rendering draws a new nonce, so a
/// code typed again on a new page is a new attempt. The id is an HMAC under the
/// deployment's secret, because the body holds the code or the password and the id is
/// stored (R11, R50). A form without a nonce (a script's) gets no id: nothing is merged.
fn form_command<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    id: JourneyId,
    action: &str,
    body: &[u8],
    form: &std::collections::HashMap<String, String>,
) -> Option<uuid::Uuid> {
    form.get(FORM_NONCE).filter(|n| !n.is_empty())?;
    let mut data = Vec::with_capacity(body.len() + 64);
    for part in [id.0.as_bytes().as_slice(), action.as_bytes(), body] {
        data.extend_from_slice(&(part.len() as u64).to_be_bytes());
        data.extend_from_slice(part);
    }
    let tag = app.engine.keys().web_tag("form-command", &data);
    Some(passage_core::secrets::derived_id(&[
        b"web-form",
        tag.as_bytes(),
    ]))
}

/// Checks the browser's hold on the journey and the form's token, then submits.
#[allow(clippy::too_many_arguments)]
async fn answer<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    raw: Result<Path<String>, PathRejection>,
    action: &str,
    headers: &HeaderMap,
    client: &ClientIp,
    body: &[u8],
    fields: &[&str],
    input: impl FnOnce(&std::collections::HashMap<String, String>) -> Input,
) -> Response {
    let Some(id) = parse_id(raw).filter(|id| bound(app, headers, *id)) else {
        return not_yours();
    };
    let mut all = vec!["csrf"];
    all.extend_from_slice(fields);
    let form = match parse_form(body, &all, &[FORM_NONCE]) {
        Ok(f) => f,
        Err(e) => return bad_form(&e),
    };
    if !tags_equal(&form["csrf"], &csrf_for(app, id)) {
        return forged();
    }
    let cmd = form_command(app, id, action, body, &form);
    match app
        .engine
        .submit(id, input(&form), actor(headers, client), cmd)
        .await
    {
        Ok(outcome) => after(app, headers, outcome).await,
        Err(e) => unavailable(e),
    }
}

async fn email<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        &app,
        id,
        "email",
        &headers,
        &client,
        &body,
        &["email"],
        |f| Input::Email(f["email"].clone()),
    )
    .await
}

async fn code<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&app, id, "code", &headers, &client, &body, &["code"], |f| {
        Input::Code(f["code"].clone())
    })
    .await
}

async fn resend<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&app, id, "resend", &headers, &client, &body, &[], |_| {
        Input::Resend
    })
    .await
}

async fn choose<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        &app,
        id,
        "choose",
        &headers,
        &client,
        &body,
        &["option"],
        |f| Input::Choose(f["option"].clone()),
    )
    .await
}

async fn password<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(
        &app,
        id,
        "password",
        &headers,
        &client,
        &body,
        &["new_password", "confirm_password"],
        |f| Input::Password {
            new: f["new_password"].clone(),
            confirm: f["confirm_password"].clone(),
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    new_password: String,
    confirm_password: String,
}

/// The live ticks: the same requirement list the server decides with (R41, R42), so the
/// page can never promise what the server refuses. Nothing is recorded or logged.
async fn check<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    raw: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = parse_id(raw).filter(|id| bound(&app, &headers, *id)) else {
        return crate::ApiError::new(
            StatusCode::FORBIDDEN,
            "not-your-journey",
            "This reset is not open in this browser.",
        )
        .into_response();
    };
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !tags_equal(token, &csrf_for(&app, id)) {
        return crate::ApiError::new(
            StatusCode::FORBIDDEN,
            "bad-csrf-token",
            "The request did not come from this reset's page.",
        )
        .into_response();
    }
    let Ok(req) = serde_json::from_slice::<CheckRequest>(&body) else {
        return crate::ApiError::bad_request(
            "Send {\"new_password\": \"…\", \"confirm_password\": \"…\"}.",
        )
        .into_response();
    };
    let (state, def, view) = match app.engine.load(id).await {
        Ok(x) => x,
        Err(e) => return crate::ApiError::from(e).into_response(),
    };
    let Some(StepView::SetPassword { id: step, .. }) = &view.step else {
        return crate::ApiError::new(
            StatusCode::CONFLICT,
            "step-not-allowed",
            "The reset is not at the password step.",
        )
        .into_response();
    };
    let reqs = evaluate(
        &app,
        &state,
        &def,
        step,
        &req.new_password,
        &req.confirm_password,
    )
    .await
    .unwrap_or_default();
    let all_met = reqs.iter().all(|r| r.met);
    Json(serde_json::json!({ "requirements": reqs, "all_met": all_met })).into_response()
}

/// What the call page polls to move on by itself.
async fn status<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    raw: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = parse_id(raw).filter(|id| bound(&app, &headers, *id)) else {
        return crate::ApiError::new(
            StatusCode::FORBIDDEN,
            "not-your-journey",
            "This reset is not open in this browser.",
        )
        .into_response();
    };
    match app.engine.load(id).await {
        Ok((_, _, view)) => {
            let step = view.step.as_ref().map(step_id);
            Json(serde_json::json!({
                "status": view.status,
                "step": step,
                "view": fingerprint(&view),
            }))
            .into_response()
        }
        Err(e) => crate::ApiError::from(e).into_response(),
    }
}

/// What the call page compares to notice a change: the parts of the view that move while
/// a person waits (the step, the journey's status, the call). Not the stream version, nor
/// anything that differs with the address typed: delivery events exist only for real
/// accounts, so a version would tell a known address from an unknown one (R1, R3).
fn fingerprint(view: &JourneyView) -> String {
    let call = match &view.step {
        Some(StepView::Voice {
            call_open,
            calls_left,
            ..
        }) => format!(
            "{}-{calls_left}",
            if *call_open { "open" } else { "closed" }
        ),
        _ => "none".into(),
    };
    let step = view.step.as_ref().map(step_id).unwrap_or("none");
    format!("{}.{step}.{call}", view.status.as_str())
}

pub(crate) fn step_id(s: &StepView) -> &str {
    match s {
        StepView::Identify { id, .. }
        | StepView::Code { id, .. }
        | StepView::Choose { id, .. }
        | StepView::Voice { id, .. }
        | StepView::SetPassword { id, .. }
        | StepView::Complete { id, .. } => id,
    }
}

// ---- handoff links (from the chat bot) -------------------------------------------------

#[derive(Debug, Deserialize)]
struct HandoffQuery {
    t: Option<String>,
}

fn link_dead() -> Response {
    message_page(
        StatusCode::GONE,
        "This link can no longer be used",
        "Links from the chat bot work once and for 10 minutes. Ask the bot for a new one, or start again here.",
        Some(("/reset", "Start again")),
    )
}

/// The link itself changes nothing: chat apps and mail scanners fetch links to preview
/// them (R24), so opening it only shows a button; the POST takes the journey over.
async fn handoff_page<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    raw: Result<Path<String>, PathRejection>,
    q: Result<Query<HandoffQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // A token given twice (`?t=a&t=b`) or not as text: the link was altered on its way;
    // refused as such, rather than with the framework's plain-text 400, and never guessed at.
    let Ok(Query(q)) = q else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "This link is damaged",
            "The link's address was changed on its way here (its token appears more than once, \
             or is not text). Ask the chat assistant for a new link, or start again here.",
            Some(("/reset", "Start again")),
        );
    };
    let (Some(id), Some(token)) = (parse_id(raw), q.t) else {
        return link_dead();
    };
    let now = app.engine.now();
    if passage_core::secrets::handoff_check(app.engine.keys(), id.0, &token, now).is_err() {
        return link_dead();
    }
    let (nonce, cookie) = visit(&app, &headers);
    let body = format!(
        "<section class=\"card\"><h1>Continue your password reset</h1>\
<p>The chat assistant sent you here to finish the steps that are not done in chat.</p>\
<form id=\"handoff-form\" method=\"post\" action=\"/reset/{id}/continue\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"t\" value=\"{}\">\
<button type=\"submit\" id=\"continue\" class=\"primary\">Continue</button></form></section>",
        esc(&visit_token(&app, &nonce)),
        esc(&token)
    );
    let mut resp = Page {
        title: "Continue",
        main_attrs: "data-kind=\"handoff\"".into(),
        body,
        refresh: None,
        signed_in: None,
    }
    .render(StatusCode::OK);
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

async fn handoff<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    raw: Result<Path<String>, PathRejection>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match parse_form(&body, &["csrf", "t"], &[]) {
        Ok(f) => f,
        Err(e) => return bad_form(&e),
    };
    if !visit_ok(&app, &headers, &form["csrf"]) {
        return forged();
    }
    let Some(id) = parse_id(raw) else {
        return link_dead();
    };
    let now = app.engine.now();
    let Ok(expires_at) =
        passage_core::secrets::handoff_check(app.engine.keys(), id.0, &form["t"], now)
    else {
        return link_dead();
    };
    match app
        .engine
        .submit(
            id,
            Input::OpenHandoff { expires_at },
            actor(&headers, &client),
            None,
        )
        .await
    {
        Ok(Outcome {
            reply: Reply::Accepted { .. },
            ..
        }) => {
            let mut resp = Redirect::to(&format!("/reset/{id}")).into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(app.options.secure, FLOW, &flow_value(&app, id), None),
            );
            resp
        }
        Ok(_) => link_dead(),
        Err(e) => unavailable(e),
    }
}

/// `s` with its first letter upper case (engine reasons are clauses: "too many wrong codes").
fn sentence_case(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
