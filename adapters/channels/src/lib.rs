//! # passage-channels
//!
//! Channel adapters: how a [`passage_core::ports::OutboundMessage`] reaches a person.
//!
//! * [`DevOutbox`]: the development outboxes, which deliver nowhere but keep every message
//!   in a local SQLite file (`passage-outbox.db` beside the event store) so a person can
//!   complete a journey on their own machine. This file is the one place where a code is
//!   kept in plain form, which is the point of a dev inbox.
//! * [`SmtpChannel`]: email over SMTP (lettre, rustls; no OpenSSL).
//! * [`TwilioChannel`]: SMS and voice calls through a Twilio-compatible REST API, and
//!   [`twilio_webhooks`], the signed callbacks that report keys pressed and call outcomes.
//! * [`WebhookAlerts`]: support alerts through a Discord or Slack incoming webhook, for
//!   deployments without a chat bot.
//! * Wrappers: [`CircuitBreaker`] (stop calling a provider that keeps failing) and
//!   [`LimitedChannel`] (per-recipient, per-journey, per-prefix and global budgets, and the
//!   destination allow-list; R17, R18).
//! * [`ChannelSet`] dispatches each message to the provider configured for its channel,
//!   from a [`ChannelsConfig`]; [`build_channels`] assembles the whole stack.
//!
//! Production channels never store message bodies. Recipients are masked in logs, bodies and
//! secrets never logged (R50). See `docs/channels.md`.

mod alerts;
mod breaker;
mod clock;
mod config;
mod dev;
mod email;
mod limits;
mod recent;
mod scrub;
mod set;
mod template;
mod twilio;

pub use alerts::{WebhookAlerts, mask_webhook_url};
pub use breaker::{BreakerConfig, CircuitBreaker, CircuitState};
pub use clock::{Clock, SharedClock, SystemClock};
pub use config::{
    AlertWebhookKind, AlertsConfig, ChannelsConfig, EmailProvider, PhoneProvider, Secret,
    SecretSource, SmtpConfig, SmtpSecurity, TwilioConfig,
};
pub use dev::{DevMessage, DevOutbox, MessageFilter, find_code};
pub use email::SmtpChannel;
pub use limits::{
    Admission, Budget, BudgetKey, ChannelLimits, InMemoryLimitStore, LimitStore, LimitedChannel,
    LimitsConfig, Scope,
};
pub use set::{
    ChannelSet, Channels, Route, build_channels, build_channels_with, install_crypto_provider,
};
pub use template::{EmailTemplates, render_email};
pub use twilio::signature::{compute_signature, validate_signature};
pub use twilio::twiml;
pub use twilio::webhooks::{
    CALL_STATUS_PATH, CallbackSink, Confirmation, GATHER_PATH, MESSAGE_STATUS_PATH, MessageStatus,
    RejectedCallback, WebhookSettings, WebhookState, call_failure_for, twilio_webhooks,
};
pub use twilio::{TwilioChannel, is_e164, normalize_phone};

/// Errors of the channel adapters (configuration, the dev outbox, callback sinks).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("could not open the dev outbox at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("dev outbox query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("dev outbox row is corrupt: {0}")]
    Corrupt(String),
    /// The messages were deleted but a copy may remain in the write-ahead log.
    #[error(
        "dev outbox: deleted messages may remain in its write-ahead log: {0}; run the erasure again"
    )]
    NotTruncated(String),
    /// The channel configuration cannot work (missing field, bad address, bad URL).
    #[error("channel configuration: {0}")]
    Config(String),
    /// A secret named by the configuration could not be read. Never carries the secret.
    #[error("secret {name} could not be read: {reason}")]
    Secret { name: String, reason: String },
    /// An email template is malformed or names an unknown placeholder.
    #[error("email template {name}: {reason}")]
    Template { name: String, reason: String },
    /// A callback sink (the engine behind the webhooks) could not record a callback.
    #[error("callback could not be recorded: {0}")]
    Sink(String),
    /// A limit store could not count a send.
    #[error("limit store unavailable: {0}")]
    LimitStore(String),
}
