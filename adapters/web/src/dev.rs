//! `/dev/inbox`: what the development outboxes hold, so a person trying Passage locally can
//! read their code and answer the simulated call. Absent (404) unless the dev adapters are
//! configured, and it never exists with real providers.

use crate::AppState;
use crate::html::{Page, esc};
use crate::pages::{visit, visit_ok, visit_token};
use crate::security::{ClientIp, parse_form};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use passage_channels::MessageFilter;
use passage_core::ports::{AccountDirectory, EventStore, JourneyId};
use passage_runtime::Input;
use std::sync::Arc;

type Shared<S, D> = State<Arc<AppState<S, D>>>;

pub(crate) fn routes<S: EventStore, D: AccountDirectory>(state: Arc<AppState<S, D>>) -> Router {
    Router::new()
        .route("/dev/inbox", get(inbox::<S, D>))
        .route("/dev/phone", post(press::<S, D>))
        .with_state(state)
}

fn absent() -> Response {
    crate::html::message_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no such page.",
        Some(("/", "Sign in")),
    )
}

async fn inbox<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
) -> Response {
    let Some(outbox) = &app.options.dev_outbox else {
        return absent();
    };
    let messages = match outbox
        .list(&MessageFilter {
            journey: None,
            channel: None,
            limit: 50,
        })
        .await
    {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("cannot read the dev outbox: {e}");
            return crate::html::message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "The dev inbox cannot be read right now.",
                None,
            );
        }
    };
    let (nonce, cookie) = visit(&app, &headers);
    let token = visit_token(&app, &nonce);
    let rows: String = messages
        .iter()
        .rev()
        .map(|m| {
            let code = m
                .code()
                .map(|c| format!("<strong class=\"code\">{}</strong>", esc(&c)))
                .unwrap_or_default();
            // A call that reads a code out (`spoken-code`) is answered by typing the code
            // on the reset page; pressing # there would only be refused (`not-expected`).
            let phone = match (m.call_id, app.options.simulated_phone) {
                (Some(call), true) if m.code().is_none() => format!(
                    "<form method=\"post\" action=\"/dev/phone\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"journey\" value=\"{}\"><input type=\"hidden\" name=\"call\" value=\"{call}\">\
<button type=\"submit\" class=\"secondary press-hash\">Answer and press #</button></form>",
                    esc(&token),
                    m.journey_id
                ),
                _ => String::new(),
            };
            format!(
                "<tr class=\"message\" data-channel=\"{ch}\" data-journey=\"{j}\"><td>{t}</td><td>{ch}</td><td>{to}</td><td>{subj}<pre>{body}</pre>{code}{phone}</td></tr>",
                ch = esc(&m.channel),
                j = m.journey_id,
                t = esc(&m.created_at.to_rfc3339()),
                to = esc(&m.recipient_masked()),
                subj = m.subject.as_deref().map(|s| format!("<strong>{}</strong>", esc(s))).unwrap_or_default(),
                body = esc(&m.body),
            )
        })
        .collect();
    let body = format!(
        "<section class=\"wide\"><h1>Dev inbox</h1><p>Messages the development outboxes hold, newest first. Shown only while Passage runs with the development channels.</p>\
<table class=\"inbox\"><thead><tr><th>Time</th><th>Channel</th><th>To</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table></section>"
    );
    let mut resp = Page {
        title: "Dev inbox",
        main_attrs: "data-kind=\"dev-inbox\"".into(),
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

/// The simulated phone: answer the call and press #.
async fn press<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if app.options.dev_outbox.is_none() || !app.options.simulated_phone {
        return absent();
    }
    let form = match parse_form(&body, &["csrf", "journey", "call"], &[]) {
        Ok(f) => f,
        Err(e) => {
            return crate::html::message_page(
                StatusCode::BAD_REQUEST,
                "Something was wrong with the form",
                &e,
                Some(("/dev/inbox", "Back")),
            );
        }
    };
    if !visit_ok(&app, &headers, &form["csrf"]) {
        return crate::html::message_page(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Reload the page and try again.",
            Some(("/dev/inbox", "Back")),
        );
    }
    let (Ok(journey), Ok(call_id)) = (
        form["journey"].parse::<JourneyId>(),
        form["call"].parse::<uuid::Uuid>(),
    ) else {
        return crate::html::message_page(
            StatusCode::BAD_REQUEST,
            "Unknown call",
            "That call does not exist.",
            Some(("/dev/inbox", "Back")),
        );
    };
    // The simulated phone is not the person's browser: no user agent is recorded for it.
    let actor = ClientIp::person(Some(&client), &HeaderMap::new(), "dev-phone");
    let input = Input::CallKeys {
        call_id,
        digits: "#".into(),
    };
    if let Err(e) = app.engine.submit(journey, input, actor, None).await {
        tracing::warn!("dev phone: {e}");
    }
    Redirect::to("/dev/inbox").into_response()
}
