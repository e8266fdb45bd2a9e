//! One error type for every route: a stable machine code, a human message, and never an
//! internal detail in the body (internals are logged where they are handled).

use axum::Json;
use axum::http::StatusCode;
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
