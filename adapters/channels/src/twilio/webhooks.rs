//! Twilio's callbacks: keys pressed on a call, call outcomes, message delivery status.
//!
//! Every request must carry a valid `X-Twilio-Signature` over the configured public URL
//! (never the Host header, R22) and the form parameters; anything else gets 403, is
//! reported to [`CallbackSink::rejected_callback`] and changes nothing (R26). The journey
//! and call ids travel in the callback URL's query string, which the signature covers, so
//! a caller cannot point a callback at another journey.
//!
//! A valid callback can still be replayed (Twilio signatures carry no timestamp). That is
//! harmless by construction: the engine accepts one confirmation per call and ignores an
//! outcome for a call that is no longer open.

use super::signature::validate_signature;
use super::twiml::{self, SayOptions};
use crate::Error;
use crate::config::Secret;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use passage_core::journey::CallFailure;
use passage_core::ports::{CallExpectation, JourneyId};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

/// Where the webhooks deliver what they learn: the binary implements it on the engine
/// (`Input::CallKeys`, `Input::CallEnded`, …).
pub trait CallbackSink: Clone + Send + Sync + 'static {
    /// Keys pressed during the call's prompt (`"#"` confirms). `Confirmed` only when the
    /// engine recorded `CallConfirmed` for this call now.
    fn call_keys(
        &self,
        journey: JourneyId,
        call_id: Uuid,
        digits: String,
    ) -> impl Future<Output = Result<Confirmation, Error>> + Send;

    /// The call ended without a confirmation (see [`call_failure_for`]). A call that was
    /// already confirmed or failed ignores it.
    fn call_ended(
        &self,
        journey: JourneyId,
        call_id: Uuid,
        reason: CallFailure,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// A message's delivery status from the carrier (`delivered`, `undelivered`, `failed`,
    /// and the intermediate `queued`/`sent`).
    fn message_status(
        &self,
        journey: JourneyId,
        effect_id: Uuid,
        status: MessageStatus,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// A callback that was refused (bad or missing signature, foreign account, malformed
    /// query). Nothing else happened; record it for audit and alerting.
    fn rejected_callback(&self, rejected: RejectedCallback) -> impl Future<Output = ()> + Send;
}

/// What the engine made of a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    Confirmed,
    NotConfirmed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageStatus {
    /// `SM…`, the provider reference the worker recorded in `MessageDelivered`.
    pub sid: String,
    /// Twilio's `MessageStatus`.
    pub status: String,
    /// Twilio's `ErrorCode` (e.g. `30003` unreachable), when the message failed.
    pub error_code: Option<String>,
}

impl MessageStatus {
    /// The carrier gave up on the message (a `MessageFailed` is warranted).
    pub fn is_failure(&self) -> bool {
        matches!(self.status.as_str(), "failed" | "undelivered" | "canceled")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCallback {
    /// The route, e.g. `/webhooks/twilio/gather`.
    pub path: &'static str,
    /// Why, e.g. `bad signature`. Never carries parameters (they may hold keys pressed).
    pub reason: String,
}

/// What signature checks need. `Debug` hides the token.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The public origin (and path prefix) Twilio calls, without a trailing slash.
    pub public_base_url: String,
    pub auth_token: Secret,
    /// Callbacks naming another account are refused.
    pub account_sid: String,
    /// How the answers to a gather speak.
    pub say: SayOptions,
}

/// The router's state.
pub struct WebhookState<H> {
    settings: Arc<WebhookSettings>,
    sink: H,
    rejections: Arc<RejectionLog>,
}

impl<H: Clone> Clone for WebhookState<H> {
    fn clone(&self) -> Self {
        Self {
            settings: self.settings.clone(),
            sink: self.sink.clone(),
            rejections: Arc::clone(&self.rejections),
        }
    }
}

/// Rejected callbacks are logged once a minute, with how many were rejected since: anyone
/// may post to these public paths, and a flood of forgeries must not flood the logs too.
#[derive(Debug, Default)]
struct RejectionLog {
    /// When the last line was written, and how many rejections went unlogged since.
    state: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl RejectionLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// `Some(n)`: log now, `n` rejections having gone unlogged before this one.
    fn due(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            Some((at, unlogged)) if now.duration_since(*at) < Self::EVERY => {
                *unlogged += 1;
                None
            }
            Some((at, unlogged)) => {
                let before = *unlogged;
                *at = now;
                *unlogged = 0;
                Some(before)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

impl<H> fmt::Debug for WebhookState<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<H> WebhookState<H> {
    pub fn new(settings: WebhookSettings, sink: H) -> Self {
        Self {
            settings: Arc::new(settings),
            sink,
            rejections: Arc::default(),
        }
    }
}

pub const GATHER_PATH: &str = "/webhooks/twilio/gather";
pub const CALL_STATUS_PATH: &str = "/webhooks/twilio/call-status";
pub const MESSAGE_STATUS_PATH: &str = "/webhooks/twilio/message-status";

/// `POST /webhooks/twilio/gather`, `/webhooks/twilio/call-status` and
/// `/webhooks/twilio/message-status`. Mount it at the root of the server that
/// `public_base_url` points to.
pub fn twilio_webhooks<H: CallbackSink>(state: WebhookState<H>) -> Router {
    Router::new()
        .route(GATHER_PATH, post(gather::<H>))
        .route(CALL_STATUS_PATH, post(call_status::<H>))
        .route(MESSAGE_STATUS_PATH, post(message_status::<H>))
        // Twilio's callbacks are a few hundred bytes.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// How a call's terminal status maps to a failure, given what the call expected.
///
/// * `no-answer` → `NoAnswer`; `busy` → `Busy`; `failed`, `canceled` → `ProviderFailed`.
/// * `completed` answered by a machine (`AnsweredBy=machine_*` or `fax`) → `Voicemail`:
///   a voicemail never confirms and, for a spoken code, the code left on it dies (R26).
/// * `completed` by a person, press-# call: `NoAnswer` ("nobody confirmed"). If `#` was
///   pressed, the engine already recorded `CallConfirmed` and closed the call, so this is a
///   no-op; otherwise the call fails closed instead of waiting for the call timer.
/// * `completed` by a person, spoken-code call: `None`. The person hung up after hearing
///   the code and now types it; the code lives until the engine's call timer.
/// * anything else (`queued`, `ringing`, `in-progress`): `None`, the call goes on.
pub fn call_failure_for(
    status: &str,
    answered_by: Option<&str>,
    expect: CallExpectation,
) -> Option<CallFailure> {
    let machine = answered_by.is_some_and(|a| a.starts_with("machine") || a == "fax");
    match status {
        "no-answer" => Some(CallFailure::NoAnswer),
        "busy" => Some(CallFailure::Busy),
        "failed" | "canceled" => Some(CallFailure::ProviderFailed),
        "completed" if machine => Some(CallFailure::Voicemail),
        "completed" => match expect {
            CallExpectation::PressPound => Some(CallFailure::NoAnswer),
            CallExpectation::ListenOnly => None,
        },
        _ => None,
    }
}

/// A verified callback: its form parameters and query.
struct Verified {
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

impl Verified {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn query_uuid(&self, name: &str) -> Option<Uuid> {
        let mut values = self.query.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            // One value only: a repeated name is not ours.
            (Some((_, v)), None) => Uuid::parse_str(v).ok(),
            _ => None,
        }
    }

    fn query_str(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn reject<H: CallbackSink>(
    state: &WebhookState<H>,
    path: &'static str,
    status: StatusCode,
    reason: &str,
) -> Response {
    if let Some(unlogged) = state.rejections.due() {
        warn!(
            path,
            reason,
            rejected_since_last_line = unlogged,
            "twilio callback rejected (logged at most once a minute)"
        );
    }
    state
        .sink
        .rejected_callback(RejectedCallback {
            path,
            reason: reason.to_owned(),
        })
        .await;
    (status, reason.to_owned()).into_response()
}

async fn verify<H: CallbackSink>(
    state: &WebhookState<H>,
    path: &'static str,
    query: Option<String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Verified, Response> {
    let Some(signature) = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(reject(state, path, StatusCode::FORBIDDEN, "missing signature").await);
    };
    let s = &state.settings;
    // The URL Twilio was given: configured base + route + the query exactly as received.
    let url = match &query {
        Some(q) => format!("{}{path}?{q}", s.public_base_url),
        None => format!("{}{path}", s.public_base_url),
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    if !validate_signature(s.auth_token.expose(), &url, &params, signature) {
        return Err(reject(state, path, StatusCode::FORBIDDEN, "bad signature").await);
    }
    if params
        .iter()
        .any(|(k, v)| k == "AccountSid" && *v != s.account_sid)
    {
        return Err(reject(state, path, StatusCode::FORBIDDEN, "foreign account").await);
    }
    let query = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok(Verified { params, query })
}

fn twiml_response(document: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        document,
    )
        .into_response()
}

fn expectation(v: &Verified) -> Option<CallExpectation> {
    match v.query_str("expect") {
        Some("press-pound") | None => Some(CallExpectation::PressPound),
        Some("listen-only") => Some(CallExpectation::ListenOnly),
        Some(_) => None,
    }
}

async fn gather<H: CallbackSink>(
    State(state): State<WebhookState<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match verify(&state, GATHER_PATH, query, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(journey), Some(call_id)) = (v.query_uuid("journey"), v.query_uuid("call")) else {
        return reject(&state, GATHER_PATH, StatusCode::BAD_REQUEST, "bad query").await;
    };
    let journey = JourneyId(journey);
    let digits = v.param("Digits").unwrap_or("").to_owned();
    let say = &state.settings.say;
    // The digits themselves are not logged: for a keyed code they would be the secret.
    match state.sink.call_keys(journey, call_id, digits).await {
        Ok(Confirmation::Confirmed) => {
            info!(%journey, call = %call_id, "call confirmed by key press");
            twiml_response(twiml::confirmed(say))
        }
        Ok(Confirmation::NotConfirmed) => {
            info!(%journey, call = %call_id, "key press did not confirm the call");
            twiml_response(twiml::not_confirmed(say))
        }
        Err(e) => {
            error!(%journey, call = %call_id, "failed to record a key press: {e}");
            twiml_response(twiml::unavailable(say))
        }
    }
}

async fn call_status<H: CallbackSink>(
    State(state): State<WebhookState<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match verify(&state, CALL_STATUS_PATH, query, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(journey), Some(call_id), Some(expect)) = (
        v.query_uuid("journey"),
        v.query_uuid("call"),
        expectation(&v),
    ) else {
        return reject(
            &state,
            CALL_STATUS_PATH,
            StatusCode::BAD_REQUEST,
            "bad query",
        )
        .await;
    };
    let journey = JourneyId(journey);
    let status = v.param("CallStatus").unwrap_or("");
    let answered_by = v.param("AnsweredBy");
    let Some(reason) = call_failure_for(status, answered_by, expect) else {
        debug!(%journey, call = %call_id, status, "call status needs no action");
        return StatusCode::NO_CONTENT.into_response();
    };
    info!(%journey, call = %call_id, status, reason = reason.as_str(), "call ended");
    match state.sink.call_ended(journey, call_id, reason).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            // 5xx makes the failure visible in Twilio's debugger; the engine's call timer
            // still fails the call closed if this outcome is never recorded.
            error!(%journey, call = %call_id, "failed to record a call outcome: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn message_status<H: CallbackSink>(
    State(state): State<WebhookState<H>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match verify(&state, MESSAGE_STATUS_PATH, query, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (Some(journey), Some(effect)) = (v.query_uuid("journey"), v.query_uuid("effect")) else {
        return reject(
            &state,
            MESSAGE_STATUS_PATH,
            StatusCode::BAD_REQUEST,
            "bad query",
        )
        .await;
    };
    let journey = JourneyId(journey);
    let status = MessageStatus {
        sid: v
            .param("MessageSid")
            .or(v.param("SmsSid"))
            .unwrap_or("")
            .to_owned(),
        status: v
            .param("MessageStatus")
            .or(v.param("SmsStatus"))
            .unwrap_or("")
            .to_owned(),
        error_code: v
            .param("ErrorCode")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    };
    debug!(%journey, effect = %effect, status = %status.status, "message status");
    match state.sink.message_status(journey, effect, status).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            error!(%journey, effect = %effect, "failed to record a message status: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        use CallExpectation::*;
        assert_eq!(
            call_failure_for("no-answer", None, PressPound),
            Some(CallFailure::NoAnswer)
        );
        assert_eq!(
            call_failure_for("busy", None, PressPound),
            Some(CallFailure::Busy)
        );
        assert_eq!(
            call_failure_for("failed", None, ListenOnly),
            Some(CallFailure::ProviderFailed)
        );
        assert_eq!(
            call_failure_for("canceled", None, PressPound),
            Some(CallFailure::ProviderFailed)
        );
        assert_eq!(
            call_failure_for("completed", Some("machine_end_beep"), PressPound),
            Some(CallFailure::Voicemail)
        );
        assert_eq!(
            call_failure_for("completed", Some("machine_start"), ListenOnly),
            Some(CallFailure::Voicemail)
        );
        assert_eq!(
            call_failure_for("completed", Some("human"), PressPound),
            Some(CallFailure::NoAnswer)
        );
        assert_eq!(call_failure_for("completed", None, ListenOnly), None);
        assert_eq!(call_failure_for("in-progress", None, PressPound), None);
        assert_eq!(call_failure_for("ringing", None, PressPound), None);
    }
}
