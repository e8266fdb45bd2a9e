//! Journeys: commands in, events and effects out.
//!
//! `decide(state, definition, command, context) -> Decision` holds every rule;
//! [`JourneyState::apply`] holds none. Effects and timers are data that the runtime persists
//! in the same transaction as the events and delivers after commit.

mod decide;
pub mod events;
pub mod state;
pub mod view;

pub use decide::decide;
pub use events::{AttemptFailure, CallFailure, JourneyEvent, SCHEMA_VERSION};
pub use state::{JourneyState, Status};

use crate::definition::{CodeChannel, StepId};
use crate::password::PasswordContext;
use crate::ports::JourneyId;
use crate::secrets::{Entropy, Keys, PasswordHasher};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// What an account lookup found, resolved by the runtime before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAccount {
    pub account_id: String,
    pub phone_masked: Option<String>,
}

/// A secret typed by a person. Its `Debug` never shows the value (R50).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(pub String);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Start {
        journey_id: JourneyId,
        origin: String,
    },
    /// The email as typed has been normalised and looked up by the runtime.
    SubmitEmail {
        email_masked: String,
        /// [`Keys::subject`] of the normalized address.
        subject: String,
        account: Option<FoundAccount>,
    },
    /// Email input that failed normalisation (R6): recorded, refused.
    RejectEmail {
        reason: String,
    },
    SubmitCode {
        code: SecretString,
    },
    /// "Re-send code" in a code step; "Call me again" in a voice step.
    Resend,
    Choose {
        option: String,
    },
    /// Keys pressed on a call, reported by the voice provider.
    CallKeys {
        call_id: Uuid,
        digits: String,
    },
    /// The provider reports the call ended without a confirmation.
    CallEnded {
        call_id: Uuid,
        reason: CallFailure,
    },
    SetPassword {
        new: SecretString,
        confirm: SecretString,
        /// From the account directory, never from the request (R29).
        context: PasswordContext,
    },
    TimerFired {
        timer: TimerKind,
    },
    Delivered {
        effect_id: Uuid,
        channel: String,
        provider_ref: String,
    },
    DeliveryFailed {
        effect_id: Uuid,
        channel: String,
        error: String,
        permanent: bool,
    },
    Cancel {
        reason: String,
    },
    /// Erase the journey's personal data (a person's right to erasure, or retention): an
    /// open journey is cancelled first, then the erasure is recorded. Decided in any status;
    /// a second erasure records nothing.
    ErasePersonalData {
        reason: String,
    },
    /// The stall scanner found the journey past its step's `stall_after` (or failed): nudge
    /// first, then alert support, then refresh the alert, escalating once it has waited
    /// `escalate_after` unacknowledged.
    Stalled {
        escalate_after: std::time::Duration,
    },
    /// Support reminds the person (an action from chat or the console).
    Nudge,
    /// Support takes the journey's alert.
    AcknowledgeAlert,
    /// A single-use handoff link (from the chat bot) was opened: the browser that opened it
    /// takes the journey over. The runtime has checked the token; the journey checks it was
    /// not used before.
    OpenHandoff {
        expires_at: crate::time::Timestamp,
    },
}

impl Command {
    /// Short name for audit records (no values).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start { .. } => "start",
            Command::SubmitEmail { .. } | Command::RejectEmail { .. } => "submit-email",
            Command::SubmitCode { .. } => "submit-code",
            Command::Resend => "resend",
            Command::Choose { .. } => "choose",
            Command::CallKeys { .. } => "call-keys",
            Command::CallEnded { .. } => "call-ended",
            Command::SetPassword { .. } => "set-password",
            Command::TimerFired { .. } => "timer",
            Command::Delivered { .. } => "delivered",
            Command::DeliveryFailed { .. } => "delivery-failed",
            Command::Cancel { .. } => "cancel",
            Command::ErasePersonalData { .. } => "erase-personal-data",
            Command::Stalled { .. } => "stalled",
            Command::Nudge => "nudge",
            Command::AcknowledgeAlert => "acknowledge-alert",
            Command::OpenHandoff { .. } => "open-handoff",
        }
    }
}

/// Side effects to perform after commit, persisted in the outbox with the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Effect {
    SendCode {
        effect_id: Uuid,
        account_id: String,
        channel: CodeChannel,
        step: StepId,
        /// The code sealed for this effect (see [`crate::secrets::seal`]).
        sealed_code: String,
        expires_at: Timestamp,
    },
    PlaceCall {
        effect_id: Uuid,
        account_id: String,
        call_id: Uuid,
        step: StepId,
        /// `None` for press-#; the sealed code to read out for spoken-code.
        sealed_code: Option<String>,
    },
    /// Store the new password hash in the account directory, then tell the account's
    /// address that it changed (R46). One effect, so the notice can never go out before the
    /// password is applied, nor when applying it failed.
    ApplyPassword {
        effect_id: Uuid,
        account_id: String,
        phc: String,
        /// When set, the "password changed" email follows the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notify_at: Option<Timestamp>,
    },
    /// "Still there?": a reminder to the person on the journey's step.
    SendNudge {
        effect_id: Uuid,
        account_id: String,
        step: StepId,
    },
    /// A support alert to raise, refresh or escalate, identified by `dedup_key` so every
    /// sink keeps one message per journey and step.
    RaiseAlert {
        effect_id: Uuid,
        dedup_key: String,
        text: String,
        update: bool,
        /// Mention the support role (escalation).
        mention: bool,
        /// The alert needs nobody any more: the journey ended or left the alerted step.
        /// Sinks that show actions (chat buttons) drop them; a flag rather than the text,
        /// so no sink has to parse the wording. Absent from outbox rows written before it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resolved: bool,
    },
    /// "Your password was changed" as a separate effect: only in outboxes written before
    /// `ApplyPassword` carried the notice; still delivered when found.
    NotifyPasswordChanged {
        effect_id: Uuid,
        account_id: String,
        changed_at: Timestamp,
    },
}

impl Effect {
    pub fn effect_id(&self) -> Uuid {
        match self {
            Effect::SendCode { effect_id, .. }
            | Effect::PlaceCall { effect_id, .. }
            | Effect::ApplyPassword { effect_id, .. }
            | Effect::SendNudge { effect_id, .. }
            | Effect::RaiseAlert { effect_id, .. }
            | Effect::NotifyPasswordChanged { effect_id, .. } => *effect_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Effect::SendCode { .. } => "send-code",
            Effect::PlaceCall { .. } => "place-call",
            Effect::ApplyPassword { .. } => "apply-password",
            Effect::SendNudge { .. } => "send-nudge",
            Effect::RaiseAlert { .. } => "raise-alert",
            Effect::NotifyPasswordChanged { .. } => "notify-password-changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TimerKind {
    JourneyLifetime,
    CodeExpiry { step: StepId, issue: u32 },
    CallTimeout { call_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub timer_id: Uuid,
    pub fire_at: Timestamp,
    pub kind: TimerKind,
}

/// Why a command was refused. `code` is stable for APIs; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Reply {
    Accepted {
        /// Handed out once, when the journey completes (R47); only its hash is stored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<String>,
    },
    Rejected(Rejection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub events: Vec<JourneyEvent>,
    pub effects: Vec<Effect>,
    pub timers: Vec<Timer>,
    pub reply: Reply,
}

/// Everything a decision may depend on besides state, definition and command.
pub struct Context<'a> {
    pub journey_id: JourneyId,
    pub now: Timestamp,
    pub rng: &'a mut dyn Entropy,
    pub keys: &'a Keys,
    pub hasher: &'a dyn PasswordHasher,
    /// Failed code attempts for this journey's address in the last
    /// [`SUBJECT_FAILURE_WINDOW`], across all its journeys, this one included (R16). The
    /// runtime reads it from the journeys read model for code submissions; 0 otherwise.
    pub subject_failures: u32,
}

/// R16: at most this many failed code attempts per address per window, whatever the number
/// of journeys they are spread over (a new journey per 5 guesses gains nothing).
pub const SUBJECT_FAILURE_CAP: u32 = 10;
pub const SUBJECT_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("journey_id", &self.journey_id)
            .field("now", &self.now)
            .field("subject_failures", &self.subject_failures)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
