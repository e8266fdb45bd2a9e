//! Journey events: past tense, versioned, and free of secrets.
//!
//! Codes appear only as keyed hashes (R11), sessions only as hashes, addresses only masked
//! (R50). Transition events name the step they lead to, so [`super::state`]'s `apply` needs
//! no definition and no logic. Adding a field with `#[serde(default)]` keeps old events
//! readable; anything else is a new event type or a new `SCHEMA_VERSION`.

use crate::definition::{CodeChannel, StepId, VoiceConfirm};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the payload layout below, stored beside every event.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum JourneyEvent {
    JourneyStarted {
        definition_id: String,
        definition_version: u32,
        /// SHA-256 of the definition's bytes; the journey runs on exactly these.
        definition_hash: String,
        /// Where the person started: `web`, `cli`, `chat`, `api`.
        origin: String,
        /// The definition's first step, where the journey begins.
        first_step: StepId,
        started_at: Timestamp,
        expires_at: Timestamp,
    },
    EmailSubmitted {
        step: StepId,
        email_masked: String,
        /// The account found, if any and enabled; `None` keeps the journey going without
        /// revealing anything (R1, R3).
        account_id: Option<String>,
        phone_masked: Option<String>,
        next: StepId,
        /// Pseudonym of the address ([`crate::secrets::Keys::subject`]); absent in events
        /// written before account-level limits existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    },
    CodeIssued {
        step: StepId,
        channel: CodeChannel,
        /// 1 for the first code of the step, 2 after the first resend, ...
        issue: u32,
        /// Keyed hash (HMAC-SHA-256) of the code bound to journey, step and issue (R10, R11);
        /// `None` when there is no account to send to (R3): no code can ever match.
        code_hash: Option<String>,
        destination_masked: Option<String>,
        issued_at: Timestamp,
        expires_at: Timestamp,
        effect_id: Option<Uuid>,
    },
    CodeAttemptFailed {
        step: StepId,
        attempt: u32,
        reason: AttemptFailure,
        attempts_left: u32,
    },
    CodeVerified {
        step: StepId,
        attempt: u32,
        next: StepId,
    },
    /// The timer for an unused code fired; informational, expiry is enforced on `now`.
    CodeExpired {
        step: StepId,
        issue: u32,
    },
    OptionChosen {
        step: StepId,
        option: String,
        next: StepId,
    },
    CallPlaced {
        step: StepId,
        call: u32,
        call_id: Uuid,
        destination_masked: Option<String>,
        confirm: VoiceConfirm,
        /// For `spoken-code`: keyed hash of the code read out.
        code_hash: Option<String>,
        placed_at: Timestamp,
        expires_at: Timestamp,
        effect_id: Option<Uuid>,
    },
    CallConfirmed {
        step: StepId,
        call_id: Uuid,
        next: StepId,
    },
    CallFailed {
        step: StepId,
        call_id: Uuid,
        reason: CallFailure,
    },
    PasswordRejected {
        step: StepId,
        /// Ids of the unmet requirements (`length`, `blocklist`, ...): never the password.
        unmet: Vec<String>,
    },
    PasswordChanged {
        step: StepId,
        account_id: String,
        policy: String,
        effect_id: Uuid,
        next: StepId,
    },
    JourneyCompleted {
        step: StepId,
        /// SHA-256 of the session token handed to the person (R47: fresh session).
        session_hash: String,
        tiles: Vec<String>,
    },
    JourneyFailed {
        step: StepId,
        reason: String,
    },
    JourneyExpired {
        step: Option<StepId>,
    },
    JourneyCancelled {
        reason: String,
    },
    /// The journey's personal data was erased (right to erasure, or retention): its key is
    /// destroyed right after this is recorded, so every sealed value of the journey reads
    /// `[erased]` from then on (ADR 0005). The reason is the operator's words or
    /// `retention`; who erased is in the metadata.
    PersonalDataErased {
        reason: String,
    },
    /// The person was reminded ("Still there?"): by the stall scanner, or by support.
    PersonNudged {
        step: StepId,
        by_support: bool,
    },
    /// Support was told about a stalled or failed journey. One alert per journey and step,
    /// identified by `dedup_key`; later scans update it in place.
    SupportAlerted {
        step: Option<StepId>,
        dedup_key: String,
        reason: String,
        alerted_at: Timestamp,
    },
    /// A later scan found the journey still stalled: the same alert, refreshed.
    SupportAlertUpdated {
        dedup_key: String,
        reason: String,
    },
    /// Nobody acknowledged the alert in time: it now mentions the support role.
    SupportAlertEscalated {
        dedup_key: String,
    },
    /// A support member took the alert (the actor is in the event's metadata).
    SupportAlertAcknowledged {
        dedup_key: String,
    },
    /// A handoff link was used: the browser that opened it now holds the journey. The
    /// link's expiry identifies it, so it opens once.
    HandoffLinkOpened {
        expires_at: Timestamp,
    },
    /// A command refused by the state machine (R28, R49): kept for support and audit.
    InputRejected {
        step: Option<StepId>,
        input: String,
        reason: String,
    },
    MessageDelivered {
        effect_id: Uuid,
        channel: String,
        provider_ref: String,
    },
    MessageFailed {
        effect_id: Uuid,
        channel: String,
        error: String,
        permanent: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptFailure {
    Wrong,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallFailure {
    NoAnswer,
    Busy,
    Voicemail,
    WrongKey,
    TimedOut,
    ProviderFailed,
    Superseded,
}

impl CallFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            CallFailure::NoAnswer => "no-answer",
            CallFailure::Busy => "busy",
            CallFailure::Voicemail => "voicemail",
            CallFailure::WrongKey => "wrong-key",
            CallFailure::TimedOut => "timed-out",
            CallFailure::ProviderFailed => "provider-failed",
            CallFailure::Superseded => "superseded",
        }
    }
}

impl JourneyEvent {
    /// The stored `event_type`: the variant name.
    pub fn event_type(&self) -> &'static str {
        match self {
            JourneyEvent::JourneyStarted { .. } => "JourneyStarted",
            JourneyEvent::EmailSubmitted { .. } => "EmailSubmitted",
            JourneyEvent::CodeIssued { .. } => "CodeIssued",
            JourneyEvent::CodeAttemptFailed { .. } => "CodeAttemptFailed",
            JourneyEvent::CodeVerified { .. } => "CodeVerified",
            JourneyEvent::CodeExpired { .. } => "CodeExpired",
            JourneyEvent::OptionChosen { .. } => "OptionChosen",
            JourneyEvent::CallPlaced { .. } => "CallPlaced",
            JourneyEvent::CallConfirmed { .. } => "CallConfirmed",
            JourneyEvent::CallFailed { .. } => "CallFailed",
            JourneyEvent::PasswordRejected { .. } => "PasswordRejected",
            JourneyEvent::PasswordChanged { .. } => "PasswordChanged",
            JourneyEvent::JourneyCompleted { .. } => "JourneyCompleted",
            JourneyEvent::JourneyFailed { .. } => "JourneyFailed",
            JourneyEvent::JourneyExpired { .. } => "JourneyExpired",
            JourneyEvent::JourneyCancelled { .. } => "JourneyCancelled",
            JourneyEvent::PersonalDataErased { .. } => "PersonalDataErased",
            JourneyEvent::InputRejected { .. } => "InputRejected",
            JourneyEvent::PersonNudged { .. } => "PersonNudged",
            JourneyEvent::SupportAlerted { .. } => "SupportAlerted",
            JourneyEvent::SupportAlertUpdated { .. } => "SupportAlertUpdated",
            JourneyEvent::SupportAlertEscalated { .. } => "SupportAlertEscalated",
            JourneyEvent::SupportAlertAcknowledged { .. } => "SupportAlertAcknowledged",
            JourneyEvent::HandoffLinkOpened { .. } => "HandoffLinkOpened",
            JourneyEvent::MessageDelivered { .. } => "MessageDelivered",
            JourneyEvent::MessageFailed { .. } => "MessageFailed",
        }
    }

    /// One human line for timelines (support, CLI, chat). Only masked data appears.
    pub fn describe(&self) -> String {
        match self {
            JourneyEvent::JourneyStarted {
                definition_id,
                definition_version,
                definition_hash,
                origin,
                expires_at,
                ..
            } => format!(
                "journey started from {origin} on {definition_id} v{definition_version} ({}), expires {expires_at}",
                &definition_hash[..definition_hash.len().min(12)]
            ),
            JourneyEvent::EmailSubmitted {
                email_masked,
                account_id,
                ..
            } => match account_id {
                Some(a) => format!("email {email_masked} submitted; account {a}"),
                None => format!(
                    "email {email_masked} submitted; no enabled account (nothing will be sent)"
                ),
            },
            JourneyEvent::CodeIssued {
                channel,
                issue,
                destination_masked,
                expires_at,
                ..
            } => format!(
                "{} code #{issue} issued to {}, valid until {expires_at}",
                channel.as_str(),
                destination_masked.as_deref().unwrap_or("nobody")
            ),
            JourneyEvent::CodeAttemptFailed {
                attempt,
                reason,
                attempts_left,
                ..
            } => format!(
                "code attempt {attempt} failed ({}); {attempts_left} left",
                match reason {
                    AttemptFailure::Wrong => "wrong code",
                    AttemptFailure::Expired => "expired",
                }
            ),
            JourneyEvent::CodeVerified { step, attempt, .. } => {
                format!("{step} verified on attempt {attempt}")
            }
            JourneyEvent::CodeExpired { issue, .. } => format!("code #{issue} expired unused"),
            JourneyEvent::OptionChosen { option, .. } => format!("chose {option}"),
            JourneyEvent::CallPlaced {
                call,
                destination_masked,
                confirm,
                ..
            } => format!(
                "call #{call} placed to {} ({})",
                destination_masked.as_deref().unwrap_or("nobody"),
                match confirm {
                    VoiceConfirm::PressPound => "press #",
                    VoiceConfirm::SpokenCode { .. } => "spoken code",
                }
            ),
            JourneyEvent::CallConfirmed { .. } => "call confirmed".into(),
            JourneyEvent::CallFailed { reason, .. } => format!("call failed: {}", reason.as_str()),
            JourneyEvent::PasswordRejected { unmet, .. } => {
                format!("new password refused: {}", unmet.join(", "))
            }
            JourneyEvent::PasswordChanged { policy, .. } => {
                format!("password changed (policy {policy})")
            }
            JourneyEvent::JourneyCompleted { tiles, .. } => {
                format!("signed in; tiles offered: {}", tiles.join(", "))
            }
            JourneyEvent::JourneyFailed { reason, .. } => format!("journey failed: {reason}"),
            JourneyEvent::JourneyExpired { .. } => "journey expired".into(),
            JourneyEvent::JourneyCancelled { reason } => format!("journey cancelled: {reason}"),
            JourneyEvent::PersonalDataErased { reason } => {
                format!("personal data erased: {reason}")
            }
            JourneyEvent::PersonNudged { step, by_support } => format!(
                "person nudged at step {step}{}",
                if *by_support {
                    " by support"
                } else {
                    " (stalled)"
                }
            ),
            JourneyEvent::SupportAlerted {
                dedup_key, reason, ..
            } => {
                format!("support alerted ({dedup_key}): {reason}")
            }
            JourneyEvent::SupportAlertUpdated { dedup_key, reason } => {
                format!("support alert {dedup_key} updated: {reason}")
            }
            JourneyEvent::SupportAlertEscalated { dedup_key } => {
                format!("support alert {dedup_key} escalated: nobody acknowledged it")
            }
            JourneyEvent::SupportAlertAcknowledged { dedup_key } => {
                format!("support alert {dedup_key} acknowledged")
            }
            JourneyEvent::HandoffLinkOpened { expires_at } => {
                format!("handoff link (valid until {expires_at}) opened in a browser")
            }
            JourneyEvent::InputRejected { input, reason, .. } => {
                format!("{input} refused: {reason}")
            }
            JourneyEvent::MessageDelivered {
                channel,
                provider_ref,
                ..
            } => format!("{channel} message delivered ({provider_ref})"),
            JourneyEvent::MessageFailed {
                channel,
                error,
                permanent,
                ..
            } => format!(
                "{channel} delivery failed{}: {error}",
                if *permanent { " permanently" } else { "" }
            ),
        }
    }
}
