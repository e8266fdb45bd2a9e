//! What a person is asked next: a read-only view of state + definition that the CLI, the web
//! pages and the chat bot all render. Built from events only, never from client state.

use super::state::{JourneyState, Status};
use crate::definition::{CodeChannel, Definition, StepKind, VoiceConfirm};
use crate::journey::decide::CALL_COOLDOWN;
use crate::time::Timestamp;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JourneyView {
    pub status: Status,
    pub definition_id: String,
    pub definition_version: u32,
    pub expires_at: Option<Timestamp>,
    pub step: Option<StepView>,
    /// Why the journey ended, for the person resetting (pages, API, chat): the engine's
    /// own reason for a failure, a fixed sentence when another reset superseded it, and
    /// nothing when the status says it all. Never the text an operator typed when
    /// cancelling: that is for the log and the console (`JourneyState::finish_reason`).
    pub finish_reason: Option<String>,
}

/// The reason the worker records when a completed reset cancels the person's other open
/// journeys (R44).
pub const SUPERSEDED_REASON: &str = "the password was reset in another journey";

/// What the person is told about a journey [`SUPERSEDED_REASON`] ended.
pub const SUPERSEDED_FOR_PERSON: &str =
    "your password was reset in another window or on another device";

fn finish_reason_for_person(state: &JourneyState) -> Option<String> {
    let reason = state.finish_reason.as_deref()?;
    match state.status {
        Status::Failed => Some(reason.to_owned()),
        Status::Cancelled if reason == SUPERSEDED_REASON => Some(SUPERSEDED_FOR_PERSON.into()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepView {
    Identify {
        id: String,
        prompt: String,
        action: String,
    },
    Code {
        id: String,
        prompt: String,
        channel: CodeChannel,
        digits: u8,
        /// The masked address or number the code went to. For the email step this is the
        /// address as typed, so unknown accounts look the same (R1, R3).
        sent_to: Option<String>,
        expires_at: Option<Timestamp>,
        attempts_left: u32,
        resend_label: String,
        resends_left: u32,
        resend_available_at: Option<Timestamp>,
    },
    Choose {
        id: String,
        prompt: String,
        options: Vec<OptionView>,
        /// Shown only now, after the email code was verified (R19).
        phone_masked: Option<String>,
        /// Meaningful notice of the risks of SMS and calls, when an option uses them (R25).
        risk_notice: Option<String>,
    },
    Voice {
        id: String,
        prompt: String,
        confirm: VoiceConfirm,
        calling: Option<String>,
        call_open: bool,
        call_expires_at: Option<Timestamp>,
        calls_left: u32,
        call_again_available_at: Option<Timestamp>,
    },
    SetPassword {
        id: String,
        prompt: String,
        policy: String,
        requirements: Vec<String>,
    },
    Complete {
        id: String,
        prompt: String,
        tiles: Vec<TileView>,
    },
}

/// R25: SMS and voice are restricted authenticators; people are told why.
pub const PHONE_RISK_NOTICE: &str = "Text messages and calls are less secure than other \
methods: they can be intercepted, or redirected if someone takes over your phone number. \
Never share the code, and tell the service desk if you get one you did not ask for.";

fn uses_phone(def: &Definition, step: &crate::definition::StepId) -> bool {
    matches!(
        def.step(step).map(|s| &s.kind),
        Some(StepKind::Voice(_))
            | Some(StepKind::Code(crate::definition::CodeStep {
                channel: CodeChannel::Sms,
                ..
            }))
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionView {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TileView {
    pub title: String,
    pub portal: String,
    pub href: String,
}

impl JourneyView {
    pub fn build(state: &JourneyState, def: &Definition) -> Self {
        let step = match state.status {
            Status::Active => state.current_step.as_ref().and_then(|id| def.step(id)),
            // A completed journey keeps showing its tiles.
            Status::Completed => state.passed.last().and_then(|id| def.step(id)),
            _ => None,
        };
        Self {
            status: state.status,
            definition_id: def.id.clone(),
            definition_version: def.version,
            expires_at: state.expires_at,
            finish_reason: finish_reason_for_person(state),
            step: step.map(|s| {
                let id = s.id.0.clone();
                let prompt = s.prompt.clone();
                match &s.kind {
                    StepKind::Identify { action, .. } => StepView::Identify {
                        id,
                        prompt,
                        action: action.clone(),
                    },
                    StepKind::Code(c) => StepView::Code {
                        id,
                        prompt,
                        channel: c.channel,
                        digits: c.digits,
                        sent_to: match c.channel {
                            CodeChannel::Email => state.email_masked.clone(),
                            CodeChannel::Sms => state.phone_masked.clone(),
                        },
                        expires_at: state.code.as_ref().map(|a| a.expires_at),
                        attempts_left: c.max_attempts.saturating_sub(state.step_failures),
                        resend_label: c.resend.label.clone(),
                        // Sends allowed in the step (the first included) minus sends made.
                        resends_left: (1 + c.resend.max).saturating_sub(state.step_sends),
                        resend_available_at: state.last_send_at.map(|t| t.plus(c.resend.cooldown)),
                    },
                    StepKind::Choose { options } => StepView::Choose {
                        id,
                        prompt,
                        options: options
                            .iter()
                            .map(|o| OptionView {
                                id: o.id.clone(),
                                label: o.label.clone(),
                            })
                            .collect(),
                        phone_masked: state.phone_masked.clone(),
                        risk_notice: options
                            .iter()
                            .any(|o| uses_phone(def, &o.next))
                            .then(|| PHONE_RISK_NOTICE.to_owned()),
                    },
                    StepKind::Voice(v) => StepView::Voice {
                        id,
                        prompt,
                        confirm: v.confirm,
                        calling: state.phone_masked.clone(),
                        call_open: state.call.as_ref().is_some_and(|c| c.open),
                        call_expires_at: state.call.as_ref().map(|c| c.expires_at),
                        calls_left: v.max_calls.saturating_sub(state.step_sends),
                        call_again_available_at: state.last_send_at.map(|t| t.plus(CALL_COOLDOWN)),
                    },
                    StepKind::SetPassword { policy, .. } => StepView::SetPassword {
                        id,
                        prompt,
                        policy: policy.clone(),
                        requirements: def
                            .policies
                            .get(policy)
                            .map(|p| {
                                crate::password::requirements(p, "", "", &Default::default())
                                    .into_iter()
                                    .map(|r| r.label)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    },
                    StepKind::Complete { tiles } => StepView::Complete {
                        id,
                        prompt,
                        tiles: tiles
                            .iter()
                            .map(|t| TileView {
                                title: t.title.clone(),
                                portal: t.portal.clone(),
                                href: t.href.clone(),
                            })
                            .collect(),
                    },
                }
            }),
        }
    }
}
