//! # passage-bot
//!
//! The conversation core of Passage's chat-ops, free of any transport: the terminal
//! (`passage chat`) and a chat platform (Discord) drive the same [`Bot`]. It is pure like
//! `passage-core`: no async runtime, no chat SDK, no database. Intents go in; outputs and
//! engine actions come out as data.
//!
//! ## The protocol
//!
//! A transport turns what a user did into an [`Intent`] and calls [`Bot::handle`]. The
//! [`Turn`] it gets back holds [`Output`]s to show now and, at most, one [`Request`]: an
//! [`EngineAction`] for the transport to perform (start, submit, load, ...). The transport
//! performs it and hands the [`EngineResult`] to [`Bot::resume`] with the request's
//! [`Ticket`], which returns the next turn. Repeat until a turn has no request:
//!
//! ```
//! use passage_bot::{Bot, EngineAction, EngineResult, Intent, Output};
//! use passage_core::time::Timestamp;
//!
//! fn converse(
//!     bot: &mut Bot,
//!     intent: impl Into<Intent>,
//!     now: Timestamp,
//!     mut perform: impl FnMut(EngineAction) -> EngineResult,
//! ) -> Vec<Output> {
//!     let mut shown = Vec::new();
//!     let mut turn = bot.handle(intent);
//!     loop {
//!         shown.append(&mut turn.outputs);
//!         let Some(request) = turn.next else { return shown };
//!         let result = perform(request.action);
//!         turn = bot.resume(now, request.ticket, result).expect("the ticket just issued");
//!     }
//! }
//! ```
//!
//! Every decision about a journey is made against a view the engine has just returned
//! (a button press first asks for [`EngineAction::Load`]), never against what the chat
//! last showed: the person may have moved on in the web page meanwhile.
//!
//! ## What the core guarantees
//!
//! * **Stale and repeated presses do nothing.** A button's custom id ([`ButtonId`]) names
//!   its journey and step. A press for a journey other than the one the user is doing here,
//!   or for a step the journey has left, gets a clear reply and no engine action. A press
//!   identical to one still in flight gets "already on it"; "Re-send code" pressed again
//!   inside the cooldown the view shows is answered without a second send.
//! * **No secret in any output.** Outputs are built from a `JourneyView` (masked addresses,
//!   prompts and labels) and the engine's own messages; nothing a person typed is echoed.
//!   Passwords are never taken from chat at all: there is no password [`ChatInput`]. The
//!   Reset Password step becomes [`Output::SecretStep`], and the transport hands the person
//!   a single-use, short-lived link to the journey's page (chat) or reads hidden input
//!   (terminal), submits it itself and reports back with [`Bot::observe`].
//! * **People only drive their own journey; support acts only as support.** Support intents
//!   and alert buttons are refused unless the user has [`Role::Support`]; support commands
//!   (acknowledge, nudge, cancel) reach the engine under the support user's id, so the
//!   journey's log records who did what.
//! * **One alert per journey and step.** Alerts come from the engine's stall scanner
//!   ([`SystemIntent::AlertDelivered`]) with the dedup key `<journey>:<step>`
//!   ([`AlertKey`]); the first becomes [`Output::Alert`], every later change (refresh,
//!   escalation, acknowledgement, nudge, resolution) an [`Output::AlertUpdate`] with the
//!   same key.
//!
//! Every reply to a person is ephemeral ([`Reply::ephemeral`]); messages to a person who is
//! not the sender (a nudge) are [`Output::Direct`].

mod bot;
#[cfg(feature = "engine")]
pub mod engine;
mod ids;
mod model;
mod render;

pub use bot::{Bot, BotConfig, NUDGE_REPEAT_WINDOW, Surface};
pub use ids::{AlertKey, ButtonId, MAX_CUSTOM_ID_LEN};
pub use model::{
    Alert, AlertState, AlertUpdate, Button, ButtonStyle, ChatInput, ChatUser, EngineAction,
    EngineResult, Form, Intent, Output, PersonIntent, Reply, Request, Role, SecretKind, SecretStep,
    SupportIntent, SystemIntent, Ticket, TimelineLine, Turn, WaitReason, Waiting,
};

/// Due journeys [`EngineAction::ListStalled`] reads (most overdue first), and alerted
/// journeys it looks up besides: more than a chat message can show, few enough to read at
/// once.
pub const STALLED_LIMIT: usize = 100;

/// Misuse of the protocol by a transport, or an id that is not ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a Passage custom id (the id itself is not repeated: it came from a client).
    #[error(
        "not a Passage button id (expected passage:<action>:<journey>:<step or option>, at most 100 characters)"
    )]
    BadCustomId,
    #[error("not an alert dedup key (expected <journey>:<step>)")]
    BadAlertKey,
    #[error("no engine request is waiting on ticket {0} (already resumed, or never issued)")]
    UnknownTicket(u64),
    #[error("the engine request expected a `{expected}` result, not `{got}`")]
    UnexpectedResult {
        expected: &'static str,
        got: &'static str,
    },
}
