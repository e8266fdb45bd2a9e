//! # passage-web
//!
//! The HTTP face of the engine: the portal's reset pages ([`pages`]), sign-in and the tiles
//! page ([`portal`]), the development inbox ([`dev`]), the JSON API ([`api`]) and the support
//! console with its API ([`console`]), all behind
//! one layer of security headers and per-client rate limits ([`security`]).
//!
//! Every handler is a thin translation between HTTP and [`passage_runtime::Engine`]: a page
//! is a view of the journey's state in the engine's event log, never of client-held state.

mod api;
mod console;
mod dev;
mod error;
mod html;
mod pages;
mod portal;
pub mod security;

pub use console::{AuditExporter, ExportFiles, route_permission};
pub use error::ApiError;
pub use security::{Limits, SharedWindows, TrustedProxies};

use axum::Router;
use passage_channels::DevOutbox;
use passage_core::ports::{AccountDirectory, EventStore, OperatorStore};
use passage_runtime::Engine;
use std::sync::Arc;

/// How the web layer is set up; [`WebOptions::default`] is the embedded development setup.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Workflow started when a request names none.
    pub default_workflow: String,
    /// Whether `POST /api/journeys/{id}/call` and the dev inbox may stand in for the phone.
    /// Only with the development voice outbox: with a real provider, key presses must
    /// arrive through its signed webhook (R26), so those routes answer 404.
    pub simulated_phone: bool,
    /// The development outbox, shown at `/dev/inbox`; `None` hides the page (404).
    pub dev_outbox: Option<DevOutbox>,
    /// Served over TLS (directly or by the proxy in front): cookies get `Secure` and the
    /// `__Host-` prefix, and HSTS is sent (R52).
    pub secure: bool,
    /// Proxies whose `X-Forwarded-For` is believed (R17, attack 33).
    pub trusted_proxies: TrustedProxies,
    pub limits: Limits,
    /// Writes signed audit exports for the console's auditors; `None` hides them (503).
    pub audit: Option<Arc<dyn AuditExporter>>,
    /// Where the per-client limits are counted when several nodes serve: `None` counts in
    /// this process.
    pub shared_limits: Option<Arc<dyn security::SharedWindows>>,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            default_workflow: "password-reset".into(),
            simulated_phone: true,
            dev_outbox: None,
            secure: false,
            trusted_proxies: TrustedProxies::default(),
            limits: Limits::default(),
            audit: None,
            shared_limits: None,
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppState<S, D> {
    pub engine: Engine<S, D>,
    pub options: WebOptions,
    pub limiter: security::RateLimiter,
}

impl<S, D> AppState<S, D> {
    pub fn new(engine: Engine<S, D>) -> Arc<Self> {
        Self::with_phone(engine, true)
    }

    pub fn with_phone(engine: Engine<S, D>, simulated_phone: bool) -> Arc<Self> {
        Self::configured(
            engine,
            WebOptions {
                simulated_phone,
                ..WebOptions::default()
            },
        )
    }

    pub fn configured(engine: Engine<S, D>, options: WebOptions) -> Arc<Self> {
        Arc::new(Self {
            engine,
            limiter: security::RateLimiter::new(options.shared_limits.clone()),
            options,
        })
    }

    pub(crate) fn default_workflow(&self) -> &str {
        &self.options.default_workflow
    }
}

/// Every route: pages, portal, dev inbox (when configured), JSON API, assets, under the
/// security layer.
pub fn router<S: EventStore + OperatorStore, D: AccountDirectory>(
    state: Arc<AppState<S, D>>,
) -> Router {
    router_with(state, Router::new())
}

/// [`router`] with `extra` routes (a provider's webhooks) under the same security layer:
/// the same headers on every response (R52) and the same documented error bodies. The
/// layer's per-client limits count only the portal's and API's own paths, so a provider
/// posting many callbacks from few addresses is not throttled.
pub fn router_with<S: EventStore + OperatorStore, D: AccountDirectory>(
    state: Arc<AppState<S, D>>,
    extra: Router,
) -> Router {
    let routes = Router::new()
        .merge(extra)
        .merge(console::routes(Arc::clone(&state)))
        .merge(api::routes(Arc::clone(&state)))
        .merge(pages::routes(Arc::clone(&state)))
        .merge(portal::routes(Arc::clone(&state)))
        .merge(dev::routes(Arc::clone(&state)))
        .merge(html::asset_routes())
        // A path that is no route: JSON under `/api/` and `/console/api/`, a page elsewhere,
        // never the framework's empty 404.
        .fallback(error::fallback);
    security::layer(routes, state)
}
