//! The support console (`/console`, for signed-in operators' browsers) and the support API
//! (`/console/api`, for scripts holding an API token).
//!
//! Both sit on the same functions (search, timeline and replay, actions, stalled list,
//! funnel, audit export) and differ only in how the caller proves who they are and how the
//! answer is rendered. Every route names the [`Permission`] it needs in [`route_permission`]
//! and checks it before doing anything; roles map to permissions in one table
//! ([`passage_core::roles`]). Operator actions on a journey are commands like any other: the
//! events they produce carry the operator as actor, with the reason they gave (R49).

use crate::AppState;
use crate::error::ApiError;
use crate::html::{clip, esc};
use crate::pages::{visit, visit_ok, visit_token};
use crate::security::{
    ClientIp, clear_cookie, get_cookie, parse_form, set_cookie, tags_equal, verify_or_decoy,
};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use passage_core::funnel::{Funnel, seconds};
use passage_core::journey::state::AlertState;
use passage_core::journey::{JourneyState, Reply, Status};
use passage_core::mask::normalize_email;
use passage_core::ports::{
    AccountDirectory, EventStore, JourneyFilter, JourneyId, JourneySummary, OperatorIdentity,
    OperatorStore,
};
use passage_core::roles::Permission;
use passage_core::secrets::session_hash;
use passage_core::time::Timestamp;
use passage_runtime::{Actor, Input, TimelineEntry};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type Shared<S, D> = State<Arc<AppState<S, D>>>;

/// The console's session cookie.
pub(crate) const CONSOLE: &str = "passage-console";

/// A console sign-in lasts one working day.
const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// Journeys per page of a search.
const PAGE_SIZE: usize = 50;

/// The longest search text: an email address's limit (R6); masks and ids are shorter.
const MAX_SEARCH: usize = 254;

/// The longest reason an operator may give for an action (the form's `maxlength`).
const MAX_REASON: usize = 500;

/// Failed sign-ins one client may make for one operator name per window: the portal's
/// figures (`portal.rs`), for the same reason (ASVS 2.2.1, R17).
const FAILED_SIGN_INS_PER_NAME: u32 = 10;
const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Candidates the stalled list examines (journeys with a stall deadline, soonest first).
const STALLED_SCAN: usize = 500;

/// An audit export as the console hands it out: the file and its signed manifest.
#[derive(Debug, Clone)]
pub struct ExportFiles {
    pub body: Vec<u8>,
    pub manifest: String,
    pub file_name: String,
}

/// Writes audit exports (the binary's `passage audit export`, with the deployment's signing
/// key): the console serves the same bytes to auditors.
pub trait AuditExporter: fmt::Debug + Send + Sync + 'static {
    /// Events with positions `from..=to`; `csv` or `jsonl`.
    fn export(
        &self,
        from: u64,
        to: u64,
        csv: bool,
    ) -> Pin<Box<dyn Future<Output = Result<ExportFiles, String>> + Send + '_>>;
}

/// The permission each console and API route needs: the one place a route is bound to a
/// role. `None` for the sign-in routes, open to anyone.
///
/// Fails closed: a path outside `/console`, or a method other than GET/HEAD on anything but
/// a journey's action or the two searches sent by POST, needs
/// [`Permission::ManageOperators`] (admins only), so a route added later without an entry
/// here is never open to support or auditors by default.
pub fn route_permission(method: &str, path: &str) -> Option<Permission> {
    let p = if path.starts_with("/console/api/") {
        &path["/console/api".len()..]
    } else if path == "/console" || path.starts_with("/console/") {
        &path["/console".len()..]
    } else {
        return Some(Permission::ManageOperators);
    };
    match (method, p) {
        (_, "/sign-in" | "/sign-out") => None,
        (_, p) if p == "/audit" || p.starts_with("/audit/") => Some(Permission::ExportAudit),
        // A search sent in a body, to keep an address out of the URL: a read.
        ("POST", "/journeys/search") => Some(Permission::ReadJourneys),
        ("POST", p) if p.starts_with("/journeys/") => Some(Permission::ActOnJourneys),
        ("GET" | "HEAD", _) => Some(Permission::ReadJourneys),
        // The search form, posted only to keep addresses out of URLs: a read.
        ("POST", "/journeys") => Some(Permission::ReadJourneys),
        _ => Some(Permission::ManageOperators),
    }
}

pub(crate) fn routes<S, D>(state: Arc<AppState<S, D>>) -> Router
where
    S: EventStore + OperatorStore,
    D: AccountDirectory,
{
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/journeys") }),
        )
        .route(
            "/console/sign-in",
            get(sign_in_page::<S, D>).post(sign_in::<S, D>),
        )
        .route("/console/sign-out", post(sign_out::<S, D>))
        .route(
            "/console/journeys",
            get(search_page::<S, D>).post(search_form::<S, D>),
        )
        .route("/console/journeys/{id}", get(journey_page::<S, D>))
        .route("/console/journeys/{id}/act", post(act_form::<S, D>))
        .route("/console/stalled", get(stalled_page::<S, D>))
        .route("/console/funnel", get(funnel_page::<S, D>))
        .route("/console/audit", get(audit_page::<S, D>))
        .route("/console/audit/export", get(audit_file::<S, D>))
        .route("/console/audit/manifest", get(audit_file::<S, D>))
        .route("/console/api/journeys", get(api_search::<S, D>))
        .route(
            "/console/api/journeys/search",
            post(api_search_body::<S, D>),
        )
        .route("/console/api/journeys/{id}", get(api_journey::<S, D>))
        .route("/console/api/journeys/{id}/actions", post(api_act::<S, D>))
        .route("/console/api/stalled", get(api_stalled::<S, D>))
        .route("/console/api/funnel", get(api_funnel::<S, D>))
        .route("/console/api/audit/export", get(api_audit_file::<S, D>))
        .route("/console/api/audit/manifest", get(api_audit_file::<S, D>))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Who is calling

/// A signed-in browser: the operator, the hash of their session token, and the CSRF token
/// its forms carry.
struct Browser {
    op: OperatorIdentity,
    session: String,
    csrf: String,
}

async fn browser<S: EventStore + OperatorStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Browser, Response> {
    let signed_in = match get_cookie(headers, app.options.secure, CONSOLE) {
        None => None,
        Some(token) => {
            let hash = session_hash(&token);
            match app
                .engine
                .store()
                .operator_by_session(&hash, app.engine.now())
                .await
            {
                Ok(op) => op.map(|op| Browser {
                    op,
                    csrf: csrf(app, &hash),
                    session: hash,
                }),
                Err(e) => {
                    tracing::error!("cannot read a console session: {e}");
                    return Err(unavailable_page());
                }
            }
        }
    };
    let Some(b) = signed_in else {
        return Err(Redirect::to("/console/sign-in").into_response());
    };
    match route_permission(method, path) {
        Some(need) if !b.op.role.allows(need) => Err(forbidden_page(&b)),
        _ => Ok(b),
    }
}

async fn api_caller<S: EventStore + OperatorStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<OperatorIdentity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send an operator's API token as `Authorization: Bearer <token>` (passage operators token).",
        )
    };
    let Some(token) = token else {
        return Err(unauthorized());
    };
    let op = match app
        .engine
        .store()
        .operator_by_token(&session_hash(token))
        .await
    {
        Ok(Some(op)) => op,
        Ok(None) => return Err(unauthorized()),
        Err(e) => {
            tracing::error!("cannot read an API token: {e}");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is temporarily unavailable; try again.",
            ));
        }
    };
    match route_permission(method, path) {
        Some(need) if !op.role.allows(need) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("The {} role may not use {method} {path}.", op.role.as_str()),
        )),
        _ => Ok(op),
    }
}

/// The CSRF token of a console session: bound to the session, so a form from another
/// operator's session (or another site) is refused.
fn csrf<S: EventStore, D: AccountDirectory>(app: &AppState<S, D>, session: &str) -> String {
    app.engine
        .keys()
        .web_tag("console-csrf", session.as_bytes())
}

fn operator_actor(op: &OperatorIdentity, client: Option<&ClientIp>, reason: &str) -> Actor {
    let channel = if op.via == "console" {
        "console"
    } else {
        "api"
    };
    Actor::support(&op.name, channel)
        .from_client(client.and_then(ClientIp::audit), None)
        .because(reason)
}

// ---------------------------------------------------------------------------------------
// What both faces share

/// Search parameters, from the console's form or the API's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    /// A journey id, an email address, or a masked address as listings show it.
    #[serde(default)]
    q: String,
    /// The pseudonym of a full address (`Keys::subject`), which the console's search form
    /// puts in the page's address instead of the address itself (R50).
    #[serde(default)]
    who: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    workflow: String,
    /// Last activity from (UTC date or date and time).
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: Option<usize>,
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| clip(t, 200))
}

fn time_param(name: &str, s: &str) -> Result<Option<Timestamp>, String> {
    match opt(s) {
        None => Ok(None),
        Some(t) => Timestamp::parse_utc(&t).map(Some).ok_or_else(|| {
            format!(
                "`{}` in {name} is not a date: write 2026-11-27 or 2026-11-27T10:00 (UTC).",
                clip(&t, 40)
            )
        }),
    }
}

async fn search<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    q: &SearchQuery,
) -> Result<Vec<JourneySummary>, ApiError> {
    let page = q.page.unwrap_or(1).max(1);
    if page > 10_000 {
        return Err(ApiError::bad_request(
            "Pages go up to 10000: narrow the search.",
        ));
    }
    let mut filter = JourneyFilter {
        status: opt(&q.status),
        definition_id: opt(&q.workflow),
        current_step: opt(&q.step),
        updated_from: time_param("from", &q.from).map_err(ApiError::bad_request)?,
        updated_to: time_param("to", &q.to).map_err(ApiError::bad_request)?,
        limit: PAGE_SIZE,
        offset: (page - 1) * PAGE_SIZE,
        ..JourneyFilter::default()
    };
    let text = q.q.trim();
    if text.chars().count() > MAX_SEARCH {
        return Err(ApiError::bad_request(format!(
            "The search text is too long: at most {MAX_SEARCH} characters."
        )));
    }
    if let Ok(id) = text.parse::<JourneyId>() {
        filter.journey_id = Some(id);
    } else if text.contains('•') || text.contains('*') {
        filter.email_masked = Some(text.replace('*', "•"));
    } else if !text.is_empty() {
        // A full address finds exactly that person's journeys, through the pseudonym the
        // read model keeps (never the address itself).
        let email = normalize_email(text).map_err(|e| {
            ApiError::bad_request(format!(
                "Search for a journey id, an email address or a masked address: {e}"
            ))
        })?;
        filter.subject = Some(app.engine.keys().subject(&email));
    }
    if let Some(who) = opt(&q.who) {
        if who.len() > 128 || !who.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "This search link is damaged: search again from the form.",
            ));
        }
        filter.subject = Some(who);
    }
    Ok(app
        .engine
        .store()
        .list_journeys(filter)
        .await
        .map_err(passage_runtime::Error::from)?)
}

/// What support can do to a journey from the console or the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Action {
    Resend,
    Nudge,
    Cancel,
    Acknowledge,
}

impl Action {
    const ALL: [Action; 4] = [Self::Resend, Self::Nudge, Self::Acknowledge, Self::Cancel];

    /// The name forms, query strings and the API use (serde's spelling).
    fn as_str(self) -> &'static str {
        match self {
            Self::Resend => "resend",
            Self::Nudge => "nudge",
            Self::Cancel => "cancel",
            Self::Acknowledge => "acknowledge",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn label(self) -> &'static str {
        match self {
            Self::Resend => "Re-send the code",
            Self::Nudge => "Nudge the person",
            Self::Cancel => "Cancel the journey",
            Self::Acknowledge => "Take the alert",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Self::Resend => "A new code is on its way.",
            Self::Nudge => "The person was reminded.",
            Self::Cancel => "The journey was cancelled.",
            Self::Acknowledge => "You took the alert.",
        }
    }
}

/// Runs an action; `Ok(message)` when the journey took it, `Err` with a reason for the
/// operator otherwise. A reason is required and goes into the events' metadata.
async fn act<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    op: &OperatorIdentity,
    client: Option<&ClientIp>,
    id: JourneyId,
    action: Action,
    reason: &str,
) -> Result<&'static str, ApiError> {
    // The reason as it will be recorded, by the rule the CLI and chat share
    // (passage_core::reason: control, bidi and invisible characters dropped), so the minimum
    // holds for what the log keeps, and nothing is cut silently.
    const _: () = assert!(MAX_REASON == passage_core::reason::MAX_REASON_CHARS);
    let reason = match passage_core::reason::clean_reason(reason) {
        Ok(r) => r,
        Err(passage_core::reason::ReasonError::TooShort) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reason-required",
                "Give a reason (at least 3 characters): it is recorded with the action.",
            ));
        }
        Err(passage_core::reason::ReasonError::TooLong) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reason-too-long",
                format!(
                    "Keep the reason to {MAX_REASON} characters: it is recorded with the action."
                ),
            ));
        }
    };
    let reason = reason.as_str();
    let actor = operator_actor(op, client, reason);
    let input = match action {
        Action::Resend => Input::Resend,
        Action::Nudge => Input::Nudge,
        Action::Acknowledge => Input::AcknowledgeAlert,
        Action::Cancel => Input::Cancel {
            reason: format!("cancelled by support: {}", clip(reason, 200)),
        },
    };
    let outcome = app.engine.submit(id, input, actor, None).await?;
    match outcome.reply {
        Reply::Accepted { .. } => {
            tracing::info!(journey = %id, operator = %op.name, action = ?action, "support action");
            Ok(action.done())
        }
        Reply::Rejected(r) => Err(ApiError::new(StatusCode::CONFLICT, &r.code, r.message)),
    }
}

/// Active journeys whose stall deadline has passed, that were nudged, or that have an alert.
async fn stalled<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
) -> Result<Vec<StalledRow>, ApiError> {
    let now = app.engine.now();
    let horizon = now.plus(std::time::Duration::from_secs(30 * 86_400));
    let candidates = app
        .engine
        .store()
        .due_stalls(horizon, STALLED_SCAN)
        .await
        .map_err(passage_runtime::Error::from)?;
    let mut rows = Vec::new();
    for j in candidates {
        // The read model's status is written with the events: finished journeys are
        // skipped without reading their streams.
        if j.status != Status::Active.as_str() {
            continue;
        }
        let (state, _, _) = app.engine.load(j.journey_id).await?;
        let overdue = j.stall_at.is_some_and(|t| t <= now);
        if state.status != Status::Active || !(overdue || state.nudged || state.alert.is_some()) {
            continue;
        }
        rows.push(StalledRow {
            alert: state.alert.as_ref().map(AlertRow::from),
            nudged: state.nudged,
            summary: j.into(),
        });
    }
    Ok(rows)
}

#[derive(Debug, Serialize)]
struct AlertRow {
    since: String,
    acknowledged: bool,
    escalated: bool,
}

impl From<&AlertState> for AlertRow {
    fn from(a: &AlertState) -> Self {
        Self {
            since: a.alerted_at.to_rfc3339(),
            acknowledged: a.acknowledged,
            escalated: a.escalated,
        }
    }
}

/// A journey's row as operators see it: the read model's row without the address's
/// pseudonym (`subject`, a stable identifier of the person across journeys) and the
/// projection's bookkeeping.
#[derive(Debug, Serialize)]
struct SummaryRow {
    journey_id: JourneyId,
    definition_id: String,
    definition_version: u32,
    status: String,
    current_step: Option<String>,
    email_masked: Option<String>,
    started_at: Timestamp,
    updated_at: Timestamp,
    version: u64,
    failures: u32,
    stall_at: Option<Timestamp>,
}

impl From<JourneySummary> for SummaryRow {
    fn from(j: JourneySummary) -> Self {
        Self {
            journey_id: j.journey_id,
            definition_id: j.definition_id,
            definition_version: j.definition_version,
            status: j.status,
            current_step: j.current_step,
            email_masked: j.email_masked,
            started_at: j.started_at,
            updated_at: j.updated_at,
            version: j.version,
            failures: j.failures,
            stall_at: j.stall_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct StalledRow {
    summary: SummaryRow,
    nudged: bool,
    alert: Option<AlertRow>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunnelQuery {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    format: String,
}

async fn funnel<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    q: &FunnelQuery,
) -> Result<Funnel, ApiError> {
    let from = time_param("from", &q.from).map_err(ApiError::bad_request)?;
    let to = time_param("to", &q.to).map_err(ApiError::bad_request)?;
    let workflow = opt(&q.workflow).unwrap_or_else(|| app.default_workflow().to_owned());
    Ok(passage_runtime::compute_funnel(app.engine.store(), &workflow, from, to).await?)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ExportQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
    #[serde(default)]
    format: String,
}

/// The export's bytes or its manifest, for the range asked (clamped to the log's head).
async fn export<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    op: &OperatorIdentity,
    q: &ExportQuery,
    manifest: bool,
) -> Result<Response, ApiError> {
    let Some(exporter) = &app.options.audit else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "export-unavailable",
            "This server has no audit signing key configured.",
        ));
    };
    let csv = match q.format.as_str() {
        "" | "jsonl" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "format `{}` is not known: use jsonl or csv.",
                clip(other, 20)
            )));
        }
    };
    let head = app
        .engine
        .store()
        .head()
        .await
        .map_err(passage_runtime::Error::from)?
        .map_or(0, |(p, _)| p);
    let from = q.from.unwrap_or(1).max(1);
    let to = q.to.unwrap_or(head).min(head);
    if head == 0 || from > to {
        return Err(ApiError::bad_request(format!(
            "No events in positions {from}..{to}: the log holds 1..{head}."
        )));
    }
    let files = exporter.export(from, to, csv).await.map_err(|e| {
        tracing::error!("audit export failed: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The export could not be written; try again.",
        )
    })?;
    tracing::info!(operator = %op.name, via = %op.via, from, to, manifest, "audit export downloaded");
    let (body, name, kind) = if manifest {
        (
            files.manifest.into_bytes(),
            format!("{}.manifest.json", files.file_name),
            "application/json",
        )
    } else {
        let kind = if csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        };
        (files.body, files.file_name, kind)
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_DISPOSITION, attachment(&name));
    Ok(resp)
}

// ---------------------------------------------------------------------------------------
// The support API

#[derive(Serialize)]
struct JourneysBody {
    journeys: Vec<SummaryRow>,
    page: usize,
}

async fn api_search<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JourneysBody>, ApiError> {
    api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    api_results(&app, &q).await
}

/// The API's answer to a search, however its parameters came.
async fn api_results<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    q: &SearchQuery,
) -> Result<Json<JourneysBody>, ApiError> {
    let journeys = search(app, q)
        .await?
        .into_iter()
        .map(SummaryRow::from)
        .collect();
    Ok(Json(JourneysBody {
        journeys,
        page: q.page.unwrap_or(1).max(1),
    }))
}

/// The body of `POST /console/api/journeys/search`. Unknown fields are refused: a script
/// that wrote `email` for `q` must not get everyone's journeys back as if it had searched.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    q: Option<String>,
    who: Option<String>,
    status: Option<String>,
    step: Option<String>,
    workflow: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<usize>,
}

impl From<SearchBody> for SearchQuery {
    fn from(b: SearchBody) -> Self {
        Self {
            q: b.q.unwrap_or_default(),
            who: b.who.unwrap_or_default(),
            status: b.status.unwrap_or_default(),
            step: b.step.unwrap_or_default(),
            workflow: b.workflow.unwrap_or_default(),
            from: b.from.unwrap_or_default(),
            to: b.to.unwrap_or_default(),
            page: b.page,
        }
    }
}

/// `POST /console/api/journeys/search`: the search of `GET /console/api/journeys` with its
/// parameters in a JSON body, so that a script searching by a full address does not put
/// it in a URL, where proxies log it (R50).
async fn api_search_body<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<Json<JourneysBody>, ApiError> {
    api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    let q: SearchQuery = serde_json::from_slice::<SearchBody>(&body)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "The body must be a JSON object with the search's fields (q, who, status, \
                 step, workflow, from, to, page), and no others: {e}"
            ))
        })?
        .into();
    api_results(&app, &q).await
}

#[derive(Serialize)]
struct EventRow {
    position: u64,
    version: u64,
    recorded_at: String,
    event_type: String,
    description: String,
    actor: Option<Actor>,
}

impl From<&TimelineEntry> for EventRow {
    fn from(e: &TimelineEntry) -> Self {
        Self {
            position: e.position,
            version: e.version,
            recorded_at: e.recorded_at.to_rfc3339(),
            event_type: e.event_type.clone(),
            description: e.description.clone(),
            // Who acted, through which channel and why; never the person's client address
            // or user agent (personal data the console pages do not show either).
            actor: e.actor.clone().map(|mut a| {
                a.ip = None;
                a.user_agent = None;
                a
            }),
        }
    }
}

#[derive(Serialize)]
struct JourneyBody {
    journey_id: JourneyId,
    /// The state shown is the one after this many events.
    at: usize,
    events_total: usize,
    state: StateBody,
    events: Vec<EventRow>,
}

#[derive(Serialize)]
struct StateBody {
    status: String,
    current_step: Option<String>,
    email_masked: Option<String>,
    phone_masked: Option<String>,
    passed: Vec<String>,
    failures: u32,
    nudged: bool,
    alert: Option<AlertRow>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AtQuery {
    #[serde(default)]
    at: Option<usize>,
    #[serde(default)]
    done: Option<String>,
}

async fn journey_body<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    id: JourneyId,
    at: Option<usize>,
) -> Result<JourneyBody, ApiError> {
    let timeline = app.engine.timeline(id).await?;
    let total = timeline.len();
    let at = at.unwrap_or(total).clamp(1, total.max(1));
    // The replayed state from the events the timeline already opened: one read of the stream.
    let state =
        JourneyState::from_events(timeline.iter().take(at).filter_map(|e| e.event.as_ref()));
    Ok(JourneyBody {
        journey_id: id,
        at,
        events_total: total,
        state: StateBody {
            status: state.status.as_str().into(),
            current_step: state.current_step.as_ref().map(|s| s.0.clone()),
            email_masked: state.email_masked.clone(),
            phone_masked: state.phone_masked.clone(),
            passed: state.passed.iter().map(|s| s.0.clone()).collect(),
            failures: state.failures,
            nudged: state.nudged,
            alert: state.alert.as_ref().map(AlertRow::from),
            finish_reason: state.finish_reason.clone(),
        },
        events: timeline.iter().map(EventRow::from).collect(),
    })
}

/// The path's journey id as text; empty when it is not text at all (`%FF`), which then
/// answers `journey-not-found` like any id that names no journey, rather than the
/// framework's `text/plain` 400.
fn path_text(raw: Result<Path<String>, PathRejection>) -> String {
    raw.map(|Path(s)| s).unwrap_or_default()
}

fn journey_id(raw: &str) -> Result<JourneyId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "journey-not-found",
            "No journey with this id exists.",
        )
    })
}

async fn api_journey<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<AtQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JourneyBody>, ApiError> {
    api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(Json(
        journey_body(&app, journey_id(&path_text(id))?, q.at).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActBody {
    action: Action,
    reason: String,
}

#[derive(Serialize)]
struct ActDone {
    journey_id: JourneyId,
    action: Action,
    message: &'static str,
}

async fn api_act<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<ActDone>, ApiError> {
    let op = api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    let body: ActBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "Send {{\"action\": \"resend\"|\"nudge\"|\"cancel\"|\"acknowledge\", \"reason\": \"...\"}}: {e}"
        ))
    })?;
    let id = journey_id(&path_text(id))?;
    let message = act(&app, &op, Some(&client), id, body.action, &body.reason).await?;
    Ok(Json(ActDone {
        journey_id: id,
        action: body.action,
        message,
    }))
}

async fn api_stalled<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    #[derive(Serialize)]
    struct Body {
        stalled: Vec<StalledRow>,
    }
    Ok(Json(Body {
        stalled: stalled(&app).await?,
    })
    .into_response())
}

async fn api_funnel<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    q: Result<Query<FunnelQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let f = funnel(&app, &q).await?;
    if q.format == "csv" {
        return Ok(csv_response(f.to_csv(), "funnel.csv"));
    }
    Ok(Json(f).into_response())
}

async fn api_audit_file<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let op = api_caller(&app, &headers, method.as_str(), uri.path()).await?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    export(&app, &op, &q, uri.path().ends_with("/manifest")).await
}

fn csv_response(body: String, name: &str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    h.insert(header::CONTENT_DISPOSITION, attachment(name));
    resp
}

/// `Content-Disposition` for a download: the name cut to letters, digits, `.`, `_` and `-`
/// (no quote, `;`, path or control character can reach the header), never starting with a
/// dot, at most 100 characters.
fn attachment(name: &str) -> HeaderValue {
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(100)
        .collect();
    let safe = safe.trim_start_matches('.');
    let safe = if safe.is_empty() { "download" } else { safe };
    HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

// ---------------------------------------------------------------------------------------
// The console's pages

fn frame(b: Option<&Browser>, title: &str, kind: &str, body: &str) -> String {
    let nav = match b {
        Some(b) => {
            let mut links = vec![
                ("/console/journeys", "Journeys"),
                ("/console/stalled", "Stalled"),
                ("/console/funnel", "Funnel"),
            ];
            if b.op.role.allows(Permission::ExportAudit) {
                links.push(("/console/audit", "Audit export"));
            }
            let links: String = links
                .iter()
                .map(|(href, label)| format!("<a href=\"{href}\">{label}</a>"))
                .collect();
            format!(
                "<nav class=\"console-nav\" aria-label=\"Console\">{links}</nav>\
<span class=\"operator\" id=\"operator\">{} · {}</span>\
<form method=\"post\" action=\"/console/sign-out\" class=\"nav-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button type=\"submit\" class=\"link-button\" id=\"console-sign-out\">Sign out</button></form>",
                esc(&b.op.name),
                esc(b.op.role.as_str()),
                esc(&b.csrf)
            )
        }
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · Passage support console</title><link rel=\"stylesheet\" href=\"/assets/portal.css\"></head>\
<body class=\"console\"><header class=\"bar\"><a class=\"brand\" href=\"/console\">Passage support console</a>{nav}</header>\
<main id=\"main\" data-kind=\"{}\">{body}</main></body></html>\n",
        esc(title),
        esc(kind)
    )
}

fn page(b: &Browser, status: StatusCode, title: &str, kind: &str, body: &str) -> Response {
    (status, Html(frame(Some(b), title, kind, body))).into_response()
}

fn unavailable_page() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(frame(
            None,
            "Unavailable",
            "message",
            "<section class=\"card\"><h1>Please try again</h1><p class=\"message\" role=\"alert\">The service is temporarily unavailable.</p></section>",
        )),
    )
        .into_response()
}

fn forbidden_page(b: &Browser) -> Response {
    page(
        b,
        StatusCode::FORBIDDEN,
        "Not for your role",
        "forbidden",
        &format!(
            "<section class=\"card\"><h1>Not for your role</h1><p class=\"message\" role=\"alert\" id=\"forbidden\">The {} role cannot use this page. Ask an administrator if you need it.</p></section>",
            esc(b.op.role.as_str())
        ),
    )
}

fn error_box(e: &ApiError) -> String {
    format!(
        "<p class=\"field-error\" role=\"alert\" id=\"console-error\">{}</p>",
        esc(e.message())
    )
}

fn sign_in_form(token: &str, error: Option<&str>, notice: Option<&str>) -> String {
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
    format!(
        "<section class=\"card\"><h1>Operator sign-in</h1>{notice}{err}\
<form id=\"console-sign-in\" method=\"post\" action=\"/console/sign-in\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<div class=\"field\"><label for=\"name\">Operator name</label><input id=\"name\" name=\"name\" autocomplete=\"username\" required autofocus maxlength=\"64\"></div>\
<div class=\"field\"><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></div>\
<button type=\"submit\" id=\"console-sign-in-button\" class=\"primary\">Sign in</button></form>\
<p class=\"aside\">Operators are created with <code>passage operators add</code>.</p></section>",
        esc(token)
    )
}

async fn sign_in_page<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    if browser(&app, &headers, method.as_str(), uri.path())
        .await
        .is_ok()
    {
        return Redirect::to("/console/journeys").into_response();
    }
    let notice = q
        .contains_key("signed-out")
        .then_some("You are signed out.");
    sign_in_response(&app, &headers, StatusCode::OK, None, notice)
}

/// The sign-in page. A browser that came without a visit cookie gets one now, or the form
/// would carry a token for a nonce it never holds, and be refused forever.
fn sign_in_response<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let (nonce, cookie) = visit(app, headers);
    let mut resp = (
        status,
        Html(frame(
            None,
            "Operator sign-in",
            "console-sign-in",
            &sign_in_form(&visit_token(app, &nonce), error, notice),
        )),
    )
        .into_response();
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

async fn sign_in<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let refuse =
        |status: StatusCode, msg: &str| sign_in_response(&app, &headers, status, Some(msg), None);
    let form = match parse_form(&body, &["name", "password", "csrf"], &[]) {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e),
    };
    if !visit_ok(&app, &headers, &form["csrf"]) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This form has expired: reload the page and try again.",
        );
    }
    let name = form["name"].trim().to_owned();
    // Failed sign-ins per operator name and client, known names and unknown alike (the
    // same refusal, so it tells no one which names exist): without it only the per-client
    // answer limit (200 per 10 minutes) held one client's guesses at one operator's
    // password (ASVS 2.2.1). As on the portal, only failures count and the key includes
    // the client, so nobody can lock an operator out by failing on their name from
    // elsewhere; the count is taken before the hash, so parallel guesses cannot all pass a
    // count still at 0, and a success gives it back. The name is in the key only as an
    // HMAC under the deployment's secret: what was typed may be a password typed in the
    // wrong field (R50), and the shared counters store their keys.
    let throttle = format!(
        "console-sign-in-failures|{}|{}",
        client.limit_key(),
        app.engine
            .keys()
            .web_tag("console-sign-in", name.as_bytes())
    );
    if let Err(retry) = app
        .limiter
        .hit(&throttle, FAILED_SIGN_INS_PER_NAME, SIGN_IN_WINDOW)
        .await
    {
        if app.limiter.first_refusal(&throttle, retry) {
            tracing::warn!(client = %client.masked(), "console sign-ins for one operator name over their limit");
        }
        let refusal = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many sign-in attempts for this operator name. Try again in {}.",
                crate::security::in_minutes(retry)
            ),
        );
        return crate::security::with_retry_after(refusal, retry);
    }
    let login = match app.engine.store().operator_login(&name).await {
        Ok(l) => l.filter(|l| !l.disabled),
        Err(e) => {
            tracing::error!("console sign-in lookup failed: {e}");
            return unavailable_page();
        }
    };
    let ok = verify_or_decoy(
        passage_core::password::normalize(&form["password"]),
        login.as_ref().map(|l| l.password_phc.clone()),
    )
    .await;
    let login = match login {
        Some(l) if ok => l,
        refused => {
            // What was typed as the name is logged only when it is an operator's name: an
            // unknown "name" may be a password typed in the wrong field, or a person's
            // address (R50).
            match refused {
                Some(l) => {
                    tracing::warn!(client = %client.masked(), operator = %l.name, "console sign-in refused: wrong password")
                }
                None => {
                    tracing::warn!(client = %client.masked(), "console sign-in refused: unknown or disabled operator")
                }
            }
            return refuse(
                StatusCode::UNAUTHORIZED,
                "The operator name or password is incorrect.",
            );
        }
    };
    app.limiter.give_back(&throttle).await;
    let (token, hash) = passage_core::secrets::session_token(&mut passage_runtime::OsEntropy);
    let now = app.engine.now();
    if let Err(e) = app
        .engine
        .store()
        .create_operator_session(&hash, &login.name, now, now.plus(SESSION_LIFETIME))
        .await
    {
        tracing::error!("cannot create a console session: {e}");
        return unavailable_page();
    }
    // A sign-in replaces whatever console session this browser held: that one ends here,
    // rather than staying live in the database until it expires.
    if let Some(old) = get_cookie(&headers, app.options.secure, CONSOLE)
        && let Err(e) = app
            .engine
            .store()
            .revoke_operator_session(&session_hash(&old), now)
            .await
    {
        tracing::error!("cannot end the previous console session: {e}");
    }
    tracing::info!(operator = %login.name, role = %login.role, client = %client.masked(), "console sign-in");
    let mut resp = Redirect::to("/console/journeys").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app.options.secure, CONSOLE, &token, None),
    );
    resp
}

async fn sign_out<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let Ok(b) = browser(&app, &headers, method.as_str(), uri.path()).await else {
        return Redirect::to("/console/sign-in").into_response();
    };
    let token = parse_form(&body, &["csrf"], &[])
        .ok()
        .map(|f| f["csrf"].clone())
        .unwrap_or_default();
    if !tags_equal(&token, &b.csrf) {
        return forbidden_form(&b);
    }
    if let Err(e) = app
        .engine
        .store()
        .revoke_operator_session(&b.session, app.engine.now())
        .await
    {
        tracing::error!("cannot end a console session: {e}");
    }
    tracing::info!(operator = %b.op.name, "console sign-out");
    let mut resp = Redirect::to("/console/sign-in?signed-out=1").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        clear_cookie(app.options.secure, CONSOLE),
    );
    resp
}

fn forbidden_form(b: &Browser) -> Response {
    page(
        b,
        StatusCode::FORBIDDEN,
        "This form has expired",
        "message",
        "<section class=\"card\"><h1>This form has expired</h1><p class=\"message\" role=\"alert\">Reload the page and try again.</p></section>",
    )
}

fn summary_rows(rows: &[JourneySummary]) -> String {
    if rows.is_empty() {
        return "<p class=\"notice\" id=\"no-results\">No journeys match.</p>".into();
    }
    let body: String = rows
        .iter()
        .map(|j| {
            format!(
                "<tr><td><a class=\"journey-link\" href=\"/console/journeys/{id}\">{short}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&j.definition_id),
                esc(&j.status),
                esc(j.current_step.as_deref().unwrap_or("-")),
                esc(j.email_masked.as_deref().unwrap_or("-")),
                j.started_at.to_rfc3339(),
                j.updated_at.to_rfc3339(),
                id = j.journey_id,
                short = j.journey_id.to_string().get(..8).unwrap_or_default(),
            )
        })
        .collect();
    format!(
        "<table class=\"grid\" id=\"results\"><thead><tr><th>Journey</th><th>Workflow</th><th>Status</th><th>Step</th><th>Email</th><th>Started (UTC)</th><th>Last activity (UTC)</th></tr></thead><tbody>{body}</tbody></table>"
    )
}

/// The console's search form. Posted, not sent as a query string, so that a full address
/// never lands in the URL (browser history, proxies' access logs, R50): it is turned into
/// its pseudonym here and the browser is sent to the results by that (`who`). Ids, masked
/// addresses and the filters go on as they are.
async fn search_form<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let fields = ["q", "status", "step", "workflow", "from", "to"];
    let form = match parse_form(&body, &["csrf"], &fields) {
        Ok(f) => f,
        Err(e) => {
            let e = ApiError::bad_request(e);
            return page(&b, e.status(), "Journeys", "console-search", &error_box(&e));
        }
    };
    if !tags_equal(&form["csrf"], &b.csrf) {
        return forbidden_form(&b);
    }
    let mut next = form_urlencoded::Serializer::new(String::new());
    for name in fields {
        let value = form.get(name).map_or("", |v| v.trim());
        if value.is_empty() {
            continue;
        }
        // Anything with an `@` that is not shaped like a masked address (`•••` on both sides,
        // `***` for it) is taken for an address, and never goes into the URL, even one that
        // is not quite valid; nor does an `@` in the other fields, which never hold one.
        let masked = value
            .replace("***", "•••")
            .split_once('@')
            .is_some_and(|(local, domain)| {
                local.contains("•••") && domain.contains("•••") && !domain.contains('@')
            });
        if !value.contains('@') || (name == "q" && masked) {
            next.append_pair(name, value);
            continue;
        }
        if name != "q" {
            return search_refused(
                &b,
                format!("`{name}` holds an email address: search for it in the first field."),
            );
        }
        match normalize_email(value) {
            Ok(email) => {
                next.append_pair("who", &app.engine.keys().subject(&email));
            }
            Err(e) => {
                return search_refused(
                    &b,
                    format!("Search for a journey id, an email address or a masked address: {e}"),
                );
            }
        }
    }
    Redirect::to(&format!("/console/journeys?{}", next.finish())).into_response()
}

/// A posted search refused as the POST's own answer: what was typed goes into no URL.
fn search_refused(b: &Browser, why: String) -> Response {
    let e = ApiError::bad_request(why);
    let body = format!(
        "<section class=\"wide\"><h1>Find journeys</h1>{}<p><a href=\"/console/journeys\">Search again</a></p></section>",
        error_box(&e)
    );
    page(b, e.status(), "Journeys", "console-search", &body)
}

async fn search_page<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let searched = !(q.q.is_empty()
        && q.who.is_empty()
        && q.status.is_empty()
        && q.step.is_empty()
        && q.workflow.is_empty()
        && q.from.is_empty()
        && q.to.is_empty());
    let statuses = ["", "active", "completed", "failed", "expired", "cancelled"];
    let options: String = statuses
        .iter()
        .map(|s| {
            format!(
                "<option value=\"{s}\"{}>{}</option>",
                if *s == q.status { " selected" } else { "" },
                if s.is_empty() { "any" } else { s }
            )
        })
        .collect();
    let form = format!(
        "<form id=\"search\" method=\"post\" action=\"/console/journeys\" class=\"search\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<div class=\"field wide\"><label for=\"q\">Journey id, email address or masked address</label><input id=\"q\" name=\"q\" value=\"{}\" maxlength=\"254\"></div>\
<div class=\"field\"><label for=\"status\">Status</label><select id=\"status\" name=\"status\">{options}</select></div>\
<div class=\"field\"><label for=\"step\">Current step</label><input id=\"step\" name=\"step\" value=\"{}\" maxlength=\"64\"></div>\
<div class=\"field\"><label for=\"workflow\">Workflow</label><input id=\"workflow\" name=\"workflow\" value=\"{}\" maxlength=\"64\"></div>\
<div class=\"field\"><label for=\"from\">Active from (UTC)</label><input id=\"from\" name=\"from\" value=\"{}\" placeholder=\"2026-11-27\"></div>\
<div class=\"field\"><label for=\"to\">Active before (UTC)</label><input id=\"to\" name=\"to\" value=\"{}\" placeholder=\"2026-11-28T09:00\"></div>\
<button type=\"submit\" class=\"primary\" id=\"search-button\">Search</button></form>{}",
        esc(&b.csrf),
        esc(&q.q),
        esc(&q.step),
        esc(&q.workflow),
        esc(&q.from),
        esc(&q.to),
        if q.who.is_empty() {
            ""
        } else {
            "<p class=\"aside\" id=\"by-address\">Journeys of the email address you searched for \
             (kept out of this page's address).</p>"
        }
    );
    let (results, status) = if !searched {
        (
            "<p class=\"aside\">Search by a journey id, the person's email address (exact), or the masked address events show (a•••e@e•••.com; * works for •).</p>".to_owned(),
            StatusCode::OK,
        )
    } else {
        match search(&app, &q).await {
            Ok(_) if let Ok(id) = q.q.trim().parse::<JourneyId>() => {
                return Redirect::to(&format!("/console/journeys/{id}")).into_response();
            }
            Ok(rows) => {
                let page_no = q.page.unwrap_or(1).max(1);
                let more = if rows.len() == PAGE_SIZE {
                    let next: String = form_urlencoded::Serializer::new(String::new())
                        .append_pair("q", &q.q)
                        .append_pair("who", &q.who)
                        .append_pair("status", &q.status)
                        .append_pair("step", &q.step)
                        .append_pair("workflow", &q.workflow)
                        .append_pair("from", &q.from)
                        .append_pair("to", &q.to)
                        .append_pair("page", &(page_no + 1).to_string())
                        .finish();
                    format!(
                        "<p><a id=\"next-page\" href=\"/console/journeys?{}\">Next page</a></p>",
                        esc(&next)
                    )
                } else {
                    String::new()
                };
                (
                    format!(
                        "<p class=\"aside\">Page {page_no}</p>{}{more}",
                        summary_rows(&rows)
                    ),
                    StatusCode::OK,
                )
            }
            Err(e) => (error_box(&e), e.status()),
        }
    };
    page(
        &b,
        status,
        "Journeys",
        "console-search",
        &format!("<section class=\"wide\"><h1>Find journeys</h1>{form}{results}</section>"),
    )
}

fn actor_text(a: &Option<Actor>) -> String {
    match a {
        None => "-".into(),
        Some(a) => {
            let who = match &a.id {
                Some(id) => format!("{} {}", a.kind, id),
                None => a.kind.clone(),
            };
            let reason = a
                .reason
                .as_ref()
                .map(|r| format!(" — “{r}”"))
                .unwrap_or_default();
            format!("{who} via {}{reason}", a.channel)
        }
    }
}

async fn journey_page<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    raw: Result<Path<String>, PathRejection>,
    q: Result<Query<AtQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    journey_view(
        &app,
        &b,
        &path_text(raw),
        q.at,
        q.done.as_deref().and_then(Action::parse).map(Action::done),
        None,
    )
    .await
}

async fn journey_view<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    b: &Browser,
    raw: &str,
    at: Option<usize>,
    notice: Option<&str>,
    failure: Option<&ApiError>,
) -> Response {
    let body = match journey_id(raw) {
        Ok(id) => journey_body(app, id, at).await,
        Err(e) => Err(e),
    };
    let j = match body {
        Ok(j) => j,
        Err(e) => {
            return page(
                b,
                e.status(),
                "Journey",
                "console-journey",
                &format!(
                    "<section class=\"wide\"><h1>Journey</h1>{}<p><a href=\"/console/journeys\">Back to the search</a></p></section>",
                    error_box(&e)
                ),
            );
        }
    };
    let id = j.journey_id;
    let nav = |n: usize, label: &str, elem: &str| {
        if n == j.at || n == 0 || n > j.events_total {
            format!("<span class=\"replay-off\">{label}</span>")
        } else {
            format!("<a id=\"{elem}\" href=\"/console/journeys/{id}?at={n}\">{label}</a>")
        }
    };
    let replay = format!(
        "<div class=\"replay\" id=\"replay\"><strong id=\"replay-position\">State after event {} of {}</strong> {} {} {} {}</div>",
        j.at,
        j.events_total,
        nav(1, "« First", "replay-first"),
        nav(j.at.saturating_sub(1), "◀ Previous", "replay-prev"),
        nav(j.at + 1, "Next ▶", "replay-next"),
        nav(j.events_total, "Latest »", "replay-last"),
    );
    let s = &j.state;
    let alert = s
        .alert
        .as_ref()
        .map(|a| {
            format!(
                "alerted {}{}{}",
                a.since,
                if a.acknowledged { ", taken" } else { "" },
                if a.escalated { ", escalated" } else { "" }
            )
        })
        .unwrap_or_else(|| "none".into());
    let state = format!(
        "<dl class=\"state\" id=\"state\"><dt>Status</dt><dd id=\"state-status\">{}</dd><dt>Step</dt><dd id=\"state-step\">{}</dd>\
<dt>Email</dt><dd>{}</dd><dt>Phone</dt><dd>{}</dd><dt>Steps passed</dt><dd>{}</dd><dt>Failed code attempts</dt><dd>{}</dd>\
<dt>Nudged</dt><dd>{}</dd><dt>Alert</dt><dd>{}</dd><dt>Ended because</dt><dd>{}</dd></dl>",
        esc(&s.status),
        esc(s.current_step.as_deref().unwrap_or("-")),
        esc(s.email_masked.as_deref().unwrap_or("-")),
        esc(s.phone_masked.as_deref().unwrap_or("-")),
        esc(&if s.passed.is_empty() {
            "-".to_owned()
        } else {
            s.passed.join(", ")
        }),
        s.failures,
        if s.nudged { "yes" } else { "no" },
        esc(&alert),
        esc(s.finish_reason.as_deref().unwrap_or("-")),
    );
    let rows: String = j
        .events
        .iter()
        .map(|e| {
            let class = if e.version as usize > j.at { " class=\"future\"" } else { "" };
            format!(
                "<tr{class} data-event=\"{}\"><td><a href=\"/console/journeys/{id}?at={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"actor\">{}</td></tr>",
                esc(&e.event_type),
                e.version,
                e.version,
                e.position,
                esc(&e.recorded_at),
                esc(&e.event_type),
                esc(&e.description),
                esc(&actor_text(&e.actor)),
            )
        })
        .collect();
    let timeline = format!(
        "<table class=\"grid\" id=\"timeline\"><thead><tr><th>#</th><th>Position</th><th>Time (UTC)</th><th>Event</th><th>What happened</th><th>Actor</th></tr></thead><tbody>{rows}</tbody></table>"
    );
    let actions = if b.op.role.allows(Permission::ActOnJourneys) && s.status == "active" {
        let options: String = Action::ALL
            .iter()
            .map(|a| format!("<option value=\"{}\">{}</option>", a.as_str(), a.label()))
            .collect();
        format!(
            "<form id=\"act\" method=\"post\" action=\"/console/journeys/{id}/act\" class=\"act\"><h2>Act on this journey</h2>\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<div class=\"field\"><label for=\"action\">Action</label><select id=\"action\" name=\"action\">{options}</select></div>\
<div class=\"field wide\"><label for=\"reason\">Reason (recorded with the action)</label><input id=\"reason\" name=\"reason\" required minlength=\"3\" maxlength=\"500\"></div>\
<button type=\"submit\" class=\"primary\" id=\"act-button\">Do it</button></form>",
            esc(&b.csrf)
        )
    } else if s.status == "active" {
        "<p class=\"aside\">Your role can read this journey but not act on it.</p>".into()
    } else {
        String::new()
    };
    let notice = notice
        .map(|n| {
            format!(
                "<p class=\"notice\" role=\"status\" id=\"console-notice\">{}</p>",
                esc(n)
            )
        })
        .unwrap_or_default();
    let status = failure.map_or(StatusCode::OK, ApiError::status);
    let failure = failure.map(error_box).unwrap_or_default();
    page(
        b,
        status,
        "Journey",
        "console-journey",
        &format!(
            "<section class=\"wide\"><h1>Journey <code id=\"journey-id\">{id}</code></h1>{notice}{failure}{replay}{state}{actions}<h2>Timeline</h2>{timeline}</section>"
        ),
    )
}

async fn act_form<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    raw: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let raw = path_text(raw);
    let form = match parse_form(&body, &["csrf", "action", "reason"], &[]) {
        Ok(f) => f,
        Err(e) => {
            return journey_view(&app, &b, &raw, None, None, Some(&ApiError::bad_request(e))).await;
        }
    };
    if !tags_equal(&form["csrf"], &b.csrf) {
        return forbidden_form(&b);
    }
    let Some(action) = Action::parse(&form["action"]) else {
        let e = ApiError::bad_request("Choose one of the actions offered.");
        return journey_view(&app, &b, &raw, None, None, Some(&e)).await;
    };
    let id = match journey_id(&raw) {
        Ok(id) => id,
        Err(e) => return journey_view(&app, &b, &raw, None, None, Some(&e)).await,
    };
    match act(&app, &b.op, Some(&client), id, action, &form["reason"]).await {
        Ok(_) => {
            // The canonical id, whatever form of it the path used (braced, urn:uuid:).
            Redirect::to(&format!("/console/journeys/{id}?done={}", action.as_str()))
                .into_response()
        }
        Err(e) => journey_view(&app, &b, &raw, None, None, Some(&e)).await,
    }
}

async fn stalled_page<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (body, status) = match stalled(&app).await {
        Ok(rows) if rows.is_empty() => (
            "<p class=\"notice\" id=\"no-results\">No journey is stalled.</p>".to_owned(),
            StatusCode::OK,
        ),
        Ok(rows) => {
            let trs: String = rows
                .iter()
                .map(|r| {
                    let j = &r.summary;
                    let alert = r
                        .alert
                        .as_ref()
                        .map(|a| {
                            format!(
                                "since {}{}",
                                a.since,
                                if a.escalated {
                                    " · escalated"
                                } else if a.acknowledged {
                                    " · taken"
                                } else {
                                    " · open"
                                }
                            )
                        })
                        .unwrap_or_else(|| "not yet".into());
                    format!(
                        "<tr><td><a class=\"journey-link\" href=\"/console/journeys/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        j.journey_id,
                        j.journey_id.to_string().get(..8).unwrap_or_default(),
                        esc(j.current_step.as_deref().unwrap_or("-")),
                        esc(j.email_masked.as_deref().unwrap_or("-")),
                        j.updated_at.to_rfc3339(),
                        if r.nudged { "yes" } else { "no" },
                        esc(&alert)
                    )
                })
                .collect();
            (
                format!(
                    "<table class=\"grid\" id=\"stalled\"><thead><tr><th>Journey</th><th>Step</th><th>Email</th><th>Last activity (UTC)</th><th>Nudged</th><th>Alert</th></tr></thead><tbody>{trs}</tbody></table>"
                ),
                StatusCode::OK,
            )
        }
        Err(e) => (error_box(&e), e.status()),
    };
    page(
        &b,
        status,
        "Stalled journeys",
        "console-stalled",
        &format!(
            "<section class=\"wide\"><h1>Stalled journeys</h1><p class=\"aside\">Journeys past their step's stall time, or with a support alert.</p>{body}</section>"
        ),
    )
}

/// The funnel as server-side SVG: one bar per step (reached), the moved-on part darker.
fn funnel_svg(f: &Funnel) -> String {
    let max = f.steps.iter().map(|s| s.reached).max().unwrap_or(0).max(1);
    let (bar_h, gap, label_w, chart_w) = (26u64, 10u64, 170u64, 420u64);
    let height = (bar_h + gap) * f.steps.len() as u64 + gap;
    let mut bars = String::new();
    for (i, s) in f.steps.iter().enumerate() {
        let y = gap + i as u64 * (bar_h + gap);
        let w = chart_w * s.reached / max;
        let moved = chart_w * s.moved_on / max;
        bars.push_str(&format!(
            "<g class=\"step\" data-step=\"{step}\"><text x=\"0\" y=\"{ty}\" font-size=\"13\" fill=\"#1f2933\">{step}</text>\
<rect x=\"{label_w}\" y=\"{y}\" width=\"{w}\" height=\"{bar_h}\" fill=\"#b7d3f2\"><title>{step}: reached {r}</title></rect>\
<rect x=\"{label_w}\" y=\"{y}\" width=\"{moved}\" height=\"{bar_h}\" fill=\"#1f6fc5\"><title>{step}: moved on {m}</title></rect>\
<text x=\"{tx}\" y=\"{ty}\" font-size=\"12\" fill=\"#1f2933\">{r} reached · {m} on · {a} left · p50 {p50}s</text></g>",
            step = esc(&s.step),
            ty = y + bar_h / 2 + 5,
            tx = label_w + w + 6,
            r = s.reached,
            m = s.moved_on,
            a = s.abandoned,
            p50 = seconds(s.p50_ms),
        ));
    }
    format!(
        "<svg id=\"funnel-chart\" role=\"img\" aria-label=\"Journeys reaching each step\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">{bars}</svg>",
        label_w + chart_w + 230,
        label_w + chart_w + 230
    )
}

async fn funnel_page<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    q: Result<Query<FunnelQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let result = funnel(&app, &q).await;
    if q.format == "csv" {
        return match result {
            Ok(f) => csv_response(f.to_csv(), "funnel.csv"),
            Err(e) => e.into_response(),
        };
    }
    let workflows: String = app
        .engine
        .definitions()
        .iter()
        .map(|d| {
            let chosen =
                d.id == q.workflow || (q.workflow.is_empty() && d.id == app.default_workflow());
            format!(
                "<option value=\"{id}\"{}>{id}</option>",
                if chosen { " selected" } else { "" },
                id = esc(&d.id)
            )
        })
        .collect();
    let form = format!(
        "<form id=\"funnel-form\" method=\"get\" action=\"/console/funnel\" class=\"search\">\
<div class=\"field\"><label for=\"workflow\">Workflow</label><select id=\"workflow\" name=\"workflow\">{workflows}</select></div>\
<div class=\"field\"><label for=\"from\">Started from (UTC)</label><input id=\"from\" name=\"from\" value=\"{}\" placeholder=\"2026-11-01\"></div>\
<div class=\"field\"><label for=\"to\">Started before (UTC)</label><input id=\"to\" name=\"to\" value=\"{}\" placeholder=\"2026-12-01\"></div>\
<button type=\"submit\" class=\"primary\">Show</button></form>",
        esc(&q.from),
        esc(&q.to)
    );
    let (body, status) = match result {
        Ok(f) if f.journeys == 0 => (
            "<p class=\"notice\" id=\"no-results\">No journeys of this workflow started in that range.</p>".to_owned(),
            StatusCode::OK,
        ),
        Ok(f) => {
            let rows: String = f
                .steps
                .iter()
                .map(|s| {
                    let cells: String = s
                        .cells()
                        .iter()
                        .map(|c| format!("<td>{}</td>", esc(c)))
                        .collect();
                    format!("<tr>{cells}</tr>")
                })
                .collect();
            let csv_link: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("workflow", &f.workflow)
                .append_pair("from", &q.from)
                .append_pair("to", &q.to)
                .append_pair("format", "csv")
                .finish();
            (
                format!(
                    "<p id=\"funnel-total\">{} journeys, {} completed.</p>{}\
<table class=\"grid\" id=\"funnel\"><thead><tr><th>Step</th><th>Reached</th><th>Moved on</th><th>Abandoned</th><th>Waiting</th><th>p50 s</th><th>p90 s</th></tr></thead><tbody>{rows}</tbody></table>\
<p><a id=\"funnel-csv\" href=\"/console/funnel?{}\">Download CSV</a></p>",
                    f.journeys,
                    f.completed,
                    funnel_svg(&f),
                    esc(&csv_link)
                ),
                StatusCode::OK,
            )
        }
        Err(e) => (error_box(&e), e.status()),
    };
    page(
        &b,
        status,
        "Funnel",
        "console-funnel",
        &format!("<section class=\"wide\"><h1>Funnel and timing</h1>{form}{body}</section>"),
    )
}

async fn audit_page<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let head = match app.engine.store().head().await {
        Ok(h) => h.map_or(0, |(p, _)| p),
        Err(e) => {
            tracing::error!("cannot read the log's head: {e}");
            return unavailable_page();
        }
    };
    let body = if app.options.audit.is_none() {
        "<p class=\"field-error\" role=\"alert\">This server has no audit signing key configured.</p>".to_owned()
    } else if head == 0 {
        "<p class=\"notice\">The log is empty.</p>".to_owned()
    } else {
        let link = |path: &str, format: &str| {
            format!("/console/audit/{path}?from=1&amp;to={head}&amp;format={format}")
        };
        format!(
            "<p>The log holds events 1 to <strong id=\"audit-head\">{head}</strong>. Download the events with their positions and chain hashes, and the manifest signed with this deployment's Ed25519 key; check them offline with <code>passage audit verify-export FILE --public-key KEY</code>.</p>\
<ul class=\"downloads\"><li><a id=\"export-jsonl\" href=\"{}\">Events 1–{head} (JSON lines)</a> · <a id=\"manifest-jsonl\" href=\"{}\">manifest</a></li>\
<li><a id=\"export-csv\" href=\"{}\">Events 1–{head} (CSV)</a> · <a id=\"manifest-csv\" href=\"{}\">manifest</a></li></ul>\
<form method=\"get\" action=\"/console/audit/export\" class=\"search\" id=\"export-range\"><div class=\"field\"><label for=\"from\">From position</label><input id=\"from\" name=\"from\" type=\"number\" min=\"1\" value=\"1\"></div>\
<div class=\"field\"><label for=\"to\">To position</label><input id=\"to\" name=\"to\" type=\"number\" min=\"1\" value=\"{head}\"></div>\
<div class=\"field\"><label for=\"format\">Format</label><select id=\"format\" name=\"format\"><option value=\"jsonl\">JSON lines</option><option value=\"csv\">CSV</option></select></div>\
<button type=\"submit\" class=\"primary\">Download events</button></form>",
            link("export", "jsonl"),
            link("manifest", "jsonl"),
            link("export", "csv"),
            link("manifest", "csv"),
        )
    };
    page(
        &b,
        StatusCode::OK,
        "Audit export",
        "console-audit",
        &format!("<section class=\"wide\"><h1>Audit export</h1>{body}</section>"),
    )
}

async fn audit_file<S: EventStore + OperatorStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let b = match browser(&app, &headers, method.as_str(), uri.path()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    match export(&app, &b.op, &q, uri.path().ends_with("/manifest")).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}
