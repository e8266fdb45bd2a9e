//! One error type for every route: a stable machine code, a human message, and never an
//! internal detail in the body (internals are logged where they are handled). Also which
//! routes answer errors in JSON and which as pages, and the documented answer for what the
//! framework would otherwise answer by itself (an unknown route, a method a route does not
//! take).

use axum::Json;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use passage_runtime::Error as EngineError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "journey-not-found",
            "No journey with this id exists, or the journey token does not match.",
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownJourney(_) => Self::not_found(),
            EngineError::UnknownWorkflow { name, .. } => Self::new(
                StatusCode::BAD_REQUEST,
                "unknown-workflow",
                format!("No workflow named `{name}` is available."),
            ),
            EngineError::TooMuchContention(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "The journey is busy; try again.",
            ),
            other => {
                tracing::error!("failed to handle an API request: {other}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The service is temporarily unavailable; try again.",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: &self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Whether `path` answers in JSON: the API, the console's API, and the two endpoints the
/// reset pages' script calls (`/reset/{id}/check`, `/reset/{id}/status`). Every error of
/// these is `{"error": {"code", "message"}}` (openapi.json, docs/deployment.md); every other
/// route's is an HTML page, so a person never meets a JSON or bare-text error and a script
/// never has to parse a page.
pub(crate) fn json_route(path: &str) -> bool {
    let api = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let mut parts = path.split('/');
    let page_script = matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some(""),
            Some("reset"),
            Some(_),
            Some("check" | "status"),
            None
        )
    );
    api("/api") || api("/console/api") || page_script
}

/// What a path that is no route answers: `404` in the route's format.
pub(crate) async fn fallback(method: Method, uri: Uri) -> Response {
    framework_error(StatusCode::NOT_FOUND, &method, uri.path())
}

/// The documented error for a status the framework produced on its own (an unknown route,
/// a method a route does not take, a body over the size limit, an extractor's refusal),
/// which would otherwise go out as an empty or `text/plain` body. Chosen by status only:
/// the framework's own text is never shown (it may name internal types).
pub(crate) fn framework_error(status: StatusCode, method: &Method, path: &str) -> Response {
    let json = json_route(path);
    let (code, title, message) = match status {
        StatusCode::NOT_FOUND if json => (
            "not-found",
            "Not found",
            "There is no such route: the API is described at /api/openapi.json.".to_owned(),
        ),
        StatusCode::NOT_FOUND => (
            "not-found",
            "Page not found",
            "There is no such page.".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "This page cannot be used that way",
            format!(
                "This address does not take {} requests.",
                crate::html::clip(method.as_str(), 20)
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload-too-large",
            "The request is too large",
            "The request is too large.".to_owned(),
        ),
        s if s.is_server_error() => (
            "unavailable",
            "Please try again",
            "The service is temporarily unavailable; try again.".to_owned(),
        ),
        _ => (
            "bad-request",
            "Something was wrong with the request",
            "The request is malformed.".to_owned(),
        ),
    };
    if json {
        ApiError::new(status, code, message).into_response()
    } else {
        crate::html::message_page(status, title, &message, Some(("/", "Go to the start page")))
    }
}

#[cfg(test)]
mod tests {
    use super::json_route;

    #[test]
    fn json_routes_are_the_apis_and_the_page_scripts_endpoints() {
        for path in [
            "/api",
            "/api/journeys/x",
            "/api/nope",
            "/console/api/journeys",
            "/reset/abc/check",
            "/reset/abc/status",
        ] {
            assert!(json_route(path), "{path}");
        }
        for path in [
            "/",
            "/apix",
            "/reset",
            "/reset/check",
            "/reset/abc/code",
            "/reset/abc/check/more",
            "/console/journeys",
            "/console/apis",
            "/portal",
        ] {
            assert!(!json_route(path), "{path}");
        }
    }
}
