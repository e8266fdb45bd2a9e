//! # passage-discord
//!
//! The Discord transport of Passage's chat-ops, on plain serenity. The conversation is
//! [`passage_bot::Bot`]'s; this crate only
//!
//! * maps interactions to the core's intents: `/reset [email]`, button presses (custom ids
//!   `passage:...`), modal submissions ("Enter code", the email address, a cancel reason),
//!   `/journey show|replay`, `/journeys stalled`. The user is support when the interaction's
//!   member holds the configured support role, checked on **every** interaction;
//! * performs the core's engine actions on the in-process engine ([`engine::perform`]);
//! * renders the outputs with serenity builders: every reply is ephemeral (flag 64), codes
//!   are asked for in modals, the new password only on the journey's web page through a
//!   single-use, ten-minute link ([`handoff_link`]), alerts are posted in the support channel
//!   and edited in place ([`alerts::AlertBoard`]), with `allowed_mentions` empty except the
//!   support role when an alert escalates;
//! * answers every interaction within Discord's 3-second window: the engine gets
//!   [`Discord::DEFER_AFTER`] to answer; past that the interaction is deferred (ephemeral)
//!   and the answer edits the deferred response;
//! * follows journeys as their events arrive ([`Discord::follow_events`]) and tells the
//!   person when their journey moved on outside the conversation (the page, the phone);
//! * delivers the engine's support alerts as a [`passage_core::ports::Channel`]
//!   ([`DiscordAlerts`], [`WithDiscordAlerts`]).
//!
//! serenity is tested without Discord: `HttpBuilder::proxy` + `ratelimiter_disabled(true)`
//! point every REST call at a fake server (see tests/discord.rs).

pub mod alerts;
pub mod config;
pub use passage_bot::engine;
pub mod render;
mod transport;

pub use alerts::{AlertBoard, AlertPost};
pub use config::{ConfigError, DiscordConfig};
pub use transport::{
    CHANNEL, Discord, DiscordAlerts, Handler, STARTS_PER_USER, STARTS_WINDOW, WithDiscordAlerts,
    commands, http, run,
};

use passage_core::ports::JourneyId;
use passage_core::secrets::Keys;
use passage_core::time::Timestamp;
use std::time::Duration;

/// How long a link to the journey's page works (the web route refuses it afterwards).
pub const HANDOFF_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The single-use link that hands the journey to a browser:
/// `{base}/reset/{journey}/continue?t={token}`, valid [`HANDOFF_LIFETIME`] from `now`.
pub fn handoff_link(keys: &Keys, base_url: &str, journey: JourneyId, now: Timestamp) -> String {
    let token = passage_core::secrets::handoff_token(keys, journey.0, now.plus(HANDOFF_LIFETIME));
    format!(
        "{}/reset/{journey}/continue?t={token}",
        base_url.trim_end_matches('/')
    )
}
