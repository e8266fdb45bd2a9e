//! # passage-web
//!
//! The HTTP face of the engine. [`router`] serves the JSON API for journeys (used by the
//! chat bot, integrators and the multi-node deployment); every handler is a thin
//! translation between HTTP and [`passage_runtime::Engine`]: state lives in the engine's
//! event log, never in the client.

mod api;
mod error;

pub use api::router;
pub use error::ApiError;

use passage_runtime::Engine;
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug)]
pub struct AppState<S, D> {
    pub engine: Engine<S, D>,
    /// Workflow started when a request names none.
    pub default_workflow: String,
    /// Whether `POST /api/journeys/{id}/call` may stand in for the phone. Only with the
    /// development voice outbox: with a real provider, key presses must arrive through its
    /// signed webhook (R26), so the route answers 404.
    pub simulated_phone: bool,
}

impl<S, D> AppState<S, D> {
    pub fn new(engine: Engine<S, D>) -> Arc<Self> {
        Self::with_phone(engine, true)
    }

    pub fn with_phone(engine: Engine<S, D>, simulated_phone: bool) -> Arc<Self> {
        Arc::new(Self {
            engine,
            default_workflow: "password-reset".into(),
            simulated_phone,
        })
    }
}
