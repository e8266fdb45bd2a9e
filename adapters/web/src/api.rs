//! `/api/journeys`: start a journey and answer its steps.
//!
//! Every answer carries the journey's view (what to show next), so a client never keeps
//! its own idea of the state. A refusal by the journey's rules is `422` with a stable
//! `error.code` (`invalid-code`, `step-not-allowed`, ...) and the view.

use crate::AppState;
use crate::error::ApiError;
use crate::security::ClientIp;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use passage_core::journey::Reply;
use passage_core::journey::view::JourneyView;
use passage_core::ports::{AccountDirectory, EventStore, JourneyId};
use passage_core::secrets::derived_id;
use passage_runtime::{Actor, Input, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

type Shared<S, D> = State<Arc<AppState<S, D>>>;

pub(crate) fn routes<S: EventStore, D: AccountDirectory>(state: Arc<AppState<S, D>>) -> Router {
    Router::new()
        .route("/api/journeys", post(start::<S, D>))
        .route("/api/journeys/{id}", get(show::<S, D>))
        .route("/api/journeys/{id}/email", post(email::<S, D>))
        .route("/api/journeys/{id}/code", post(code::<S, D>))
        .route("/api/journeys/{id}/resend", post(resend::<S, D>))
        .route("/api/journeys/{id}/choice", post(choice::<S, D>))
        .route("/api/journeys/{id}/call", post(call::<S, D>))
        .route("/api/journeys/{id}/password", post(password::<S, D>))
        .route("/api/health", get(|| async { "ok" }))
        .route("/api/openapi.json", get(openapi))
        .with_state(state)
}

/// The API's description (OpenAPI 3.1), kept beside the code and checked against the routes
/// by `tests/openapi.rs`.
const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct JourneyResponse {
    journey_id: String,
    /// `accepted` or `rejected`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
    /// Handed out once, when the journey completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    session_token: Option<String>,
    /// On the start response only: the bearer token every later call on this journey must
    /// send (`Authorization: Bearer …`). Knowing a journey id is not enough to drive it.
    #[serde(skip_serializing_if = "Option::is_none")]
    journey_token: Option<String>,
    journey: JourneyView,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    code: String,
    message: String,
}

fn respond(outcome: Outcome, created: bool, journey_token: Option<String>) -> Response {
    let journey_id = outcome.journey_id.to_string();
    match outcome.reply {
        Reply::Accepted { session_token } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = JourneyResponse {
                journey_id,
                result: "accepted",
                error: None,
                session_token,
                journey_token,
                journey: outcome.view,
            };
            (status, Json(body)).into_response()
        }
        Reply::Rejected(r) => {
            let body = JourneyResponse {
                journey_id,
                result: "rejected",
                error: Some(ErrorBody {
                    code: r.code,
                    message: r.message,
                }),
                session_token: None,
                journey_token,
                journey: outcome.view,
            };
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    }
}

/// The journey named in the path. An id that is not a UUID, or not even text (`%FF`), is
/// answered like an unknown journey: `404 journey-not-found`, never the framework's
/// `text/plain` 400.
fn journey_id(raw: Result<Path<String>, PathRejection>) -> Result<JourneyId, ApiError> {
    let Ok(Path(raw)) = raw else {
        return Err(ApiError::not_found());
    };
    raw.parse().map_err(|_| ApiError::not_found())
}

/// The journey's API bearer token: an HMAC of its id under the deployment's secret, so any
/// node can check it and nothing is stored. Journeys started on the web pages never hand it
/// out: they are driven from the browser that holds their cookie, not through the API.
fn api_token<S: EventStore, D: AccountDirectory>(app: &AppState<S, D>, id: JourneyId) -> String {
    app.engine.keys().web_tag("api", id.0.as_bytes())
}

/// A wrong or missing token answers exactly like an unknown journey: nothing tells a
/// guesser that the id exists.
fn authorize<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    headers: &HeaderMap,
    id: JourneyId,
) -> Result<(), ApiError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::security::tags_equal(given.trim(), &api_token(app, id)) {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

/// `Idempotency-Key`: a retried request with the same key returns the first outcome. Keys
/// are scoped (to the journey, or for a start to the workflow and address asked for) so one
/// client's key cannot collide with another journey's.
fn command_id(headers: &HeaderMap, scope: &[u8]) -> Result<Option<Uuid>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| (16..=200).contains(&k.len()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "Idempotency-Key must be 16 to 200 visible characters, unguessable (a random \
                 UUID is ideal): a repeated key returns the first request's journey.",
            )
        })?;
    Ok(Some(derived_id(&[b"api", scope, key.as_bytes()])))
}

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(t)| t).map_err(|e| {
        ApiError::bad_request(format!("The request body is not valid: {}", e.body_text()))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    workflow: Option<String>,
    /// Convenience: start and submit the email in one call.
    email: Option<String>,
}

fn person(headers: &HeaderMap, client: Option<&ClientIp>) -> Actor {
    ClientIp::person(client, headers, "api")
}

async fn start<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    payload: Result<Json<StartRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let workflow = req
        .workflow
        .unwrap_or_else(|| app.default_workflow().to_owned());
    // The key is scoped to what is asked, not only to the endpoint: anyone may call this
    // unauthenticated endpoint, so a key reused with another address (a client's mistake,
    // or a guess) starts its own journey instead of answering with someone else's journey
    // and its token. The address is scoped as typed: a retry sends the same body.
    let scope = [
        b"start\0".as_slice(),
        workflow.as_bytes(),
        b"\0",
        req.email.as_deref().unwrap_or("").as_bytes(),
    ]
    .concat();
    let cmd = command_id(&headers, &scope)?;
    let who = person(&headers, client.as_deref());
    let started = app.engine.start(&workflow, who.clone(), cmd).await?;
    let token = Some(api_token(&app, started.journey_id));
    let Some(email) = req.email else {
        return Ok(respond(started, true, token));
    };
    let cmd = cmd.map(|c| derived_id(&[c.as_bytes(), b"email"]));
    let outcome = app
        .engine
        .submit(started.journey_id, Input::Email(email), who, cmd)
        .await?;
    Ok(respond(outcome, true, token))
}

async fn show<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = journey_id(id)?;
    authorize(&app, &headers, id)?;
    let (_, _, view) = app.engine.load(id).await?;
    Ok(Json(serde_json::json!({ "journey_id": id.to_string(), "journey": view })).into_response())
}

async fn submit<S: EventStore, D: AccountDirectory>(
    app: &AppState<S, D>,
    id: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    client: Option<&ClientIp>,
    input: Input,
) -> Result<Response, ApiError> {
    let id = journey_id(id)?;
    // The simulated phone stands in for the voice provider, not for the person.
    if !matches!(input, Input::CallKeys { .. }) {
        authorize(app, headers, id)?;
    }
    let cmd = command_id(headers, id.0.as_bytes())?;
    let outcome = app
        .engine
        .submit(id, input, person(headers, client), cmd)
        .await?;
    Ok(respond(outcome, false, None))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailRequest {
    email: String,
}

async fn email<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    payload: Result<Json<EmailRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    submit(
        &app,
        id,
        &headers,
        client.as_deref(),
        Input::Email(req.email),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    code: String,
}

async fn code<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    payload: Result<Json<CodeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    submit(&app, id, &headers, client.as_deref(), Input::Code(req.code)).await
}

async fn resend<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    submit(&app, id, &headers, client.as_deref(), Input::Resend).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChoiceRequest {
    option: String,
}

async fn choice<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    payload: Result<Json<ChoiceRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    submit(
        &app,
        id,
        &headers,
        client.as_deref(),
        Input::Choose(req.option),
    )
    .await
}

/// Keys pressed on the journey's ringing call. Stands in for the voice provider's gather
/// webhook until the real channel adapters mount theirs (they check the provider's signature).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRequest {
    call_id: Uuid,
    digits: String,
}

async fn call<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    payload: Result<Json<CallRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !app.options.simulated_phone {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Key presses arrive from the voice provider's signed callback.",
        ));
    }
    let req = body(payload)?;
    let input = Input::CallKeys {
        call_id: req.call_id,
        digits: req.digits,
    };
    submit(&app, id, &headers, client.as_deref(), input).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    new_password: String,
    confirm_password: String,
}

async fn password<S: EventStore, D: AccountDirectory>(
    State(app): Shared<S, D>,
    id: Result<Path<String>, PathRejection>,
    client: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    payload: Result<Json<PasswordRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let input = Input::Password {
        new: req.new_password,
        confirm: req.confirm_password,
    };
    submit(&app, id, &headers, client.as_deref(), input).await
}
