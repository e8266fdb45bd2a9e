//! Journey state: a left fold of its events. `apply` only copies data; every rule lives in
//! [`super::decide`], so replaying a stream can never take a different path than the one
//! that was recorded.

use super::events::JourneyEvent;
use crate::definition::{CodeChannel, StepId, VoiceConfirm};
use crate::time::Timestamp;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    #[default]
    NotStarted,
    Active,
    Completed,
    Failed,
    Expired,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotStarted => "not-started",
            Status::Active => "active",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Status::NotStarted | Status::Active)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefinitionRef {
    pub id: String,
    pub version: u32,
    pub hash: String,
}

/// The code currently valid in a code step (or spoken on a call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveCode {
    pub step: StepId,
    pub channel: CodeChannel,
    pub issue: u32,
    #[serde(skip)]
    pub code_hash: Option<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveCall {
    pub call_id: Uuid,
    /// 1 for the first call of the step; binds a spoken code's hash to this call.
    pub number: u32,
    pub confirm: VoiceConfirm,
    #[serde(skip)]
    pub code_hash: Option<String>,
    pub placed_at: Timestamp,
    pub expires_at: Timestamp,
    /// False once confirmed or failed: a call confirms at most once.
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct JourneyState {
    /// Number of events applied (the stream version).
    pub version: u64,
    pub status: Status,
    pub definition: Option<DefinitionRef>,
    pub origin: Option<String>,
    pub started_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub current_step: Option<StepId>,
    pub email_masked: Option<String>,
    pub account_id: Option<String>,
    pub phone_masked: Option<String>,
    /// Pseudonym of the address the journey is for (R16, R44).
    pub subject: Option<String>,
    /// Failed code attempts over the whole journey (the read model sums them per address).
    pub failures: u32,
    /// Whether the email step was answered (distinct from an account being found).
    pub identified: bool,
    pub code: Option<ActiveCode>,
    pub call: Option<ActiveCall>,
    /// Failed attempts in the current step; survives resends (R14).
    pub step_failures: u32,
    /// Codes issued (or calls placed) in the current step, the first one included.
    pub step_sends: u32,
    pub last_send_at: Option<Timestamp>,
    /// Steps passed, in order.
    pub passed: Vec<StepId>,
    pub choices: Vec<(StepId, String)>,
    pub password_changed: bool,
    pub session_hash: Option<String>,
    pub finish_reason: Option<String>,
    pub delivered: u32,
    pub delivery_failures: u32,
    /// Chat-ops on the current step: nudged yet, and the support alert if one was raised.
    pub nudged: bool,
    pub alert: Option<AlertState>,
    /// A message of the current step could not be delivered (a permanent failure): the
    /// person is waiting for something that will not come.
    pub undeliverable: bool,
    /// Handoff links already used, by expiry.
    pub handoffs_used: Vec<Timestamp>,
    /// The journey's personal data was erased: it can never be resumed, and nothing about
    /// the person is recorded on it any more.
    pub erased: bool,
}

/// The support alert of a journey (one per journey and step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertState {
    pub dedup_key: String,
    pub alerted_at: Timestamp,
    pub acknowledged: bool,
    pub escalated: bool,
}

impl JourneyState {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a JourneyEvent>) -> Self {
        let mut s = Self::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    /// The support alert that still needs someone: raised on the current step of an active
    /// journey, or on the step a journey failed at (a failure stays for support to take).
    /// `None` once the journey left the alerted step, completed, expired or was cancelled
    /// (or erased): the alert is over, acknowledged or not. The rule `decide` resolves
    /// alerts by, and that a chat transport asks when it must know whether an alert it
    /// delivers is still open.
    pub fn open_alert(&self) -> Option<&AlertState> {
        match self.status {
            Status::Active | Status::Failed if !self.erased => self.alert.as_ref(),
            _ => None,
        }
    }

    /// Whether the alert `dedup_key` is over (see [`JourneyState::open_alert`]).
    pub fn alert_resolved(&self, dedup_key: &str) -> bool {
        self.open_alert().is_none_or(|a| a.dedup_key != dedup_key)
    }

    fn enter(&mut self, from: &StepId, next: &StepId) {
        self.passed.push(from.clone());
        self.current_step = Some(next.clone());
        self.code = None;
        self.call = None;
        self.step_failures = 0;
        self.step_sends = 0;
        self.last_send_at = None;
        self.nudged = false;
        self.alert = None;
        self.undeliverable = false;
    }

    pub fn apply(&mut self, event: &JourneyEvent) {
        self.version += 1;
        match event {
            JourneyEvent::JourneyStarted {
                definition_id,
                definition_version,
                definition_hash,
                origin,
                first_step,
                started_at,
                expires_at,
            } => {
                self.status = Status::Active;
                self.current_step = Some(first_step.clone());
                self.definition = Some(DefinitionRef {
                    id: definition_id.clone(),
                    version: *definition_version,
                    hash: definition_hash.clone(),
                });
                self.origin = Some(origin.clone());
                self.started_at = Some(*started_at);
                self.expires_at = Some(*expires_at);
            }
            JourneyEvent::EmailSubmitted {
                step,
                email_masked,
                account_id,
                phone_masked,
                next,
                subject,
            } => {
                self.identified = true;
                self.subject = subject.clone();
                self.email_masked = Some(email_masked.clone());
                self.account_id = account_id.clone();
                self.phone_masked = phone_masked.clone();
                self.enter(step, next);
            }
            JourneyEvent::CodeIssued {
                step,
                channel,
                issue,
                code_hash,
                issued_at,
                expires_at,
                ..
            } => {
                self.code = Some(ActiveCode {
                    step: step.clone(),
                    channel: *channel,
                    issue: *issue,
                    code_hash: code_hash.clone(),
                    issued_at: *issued_at,
                    expires_at: *expires_at,
                });
                self.step_sends += 1;
                self.last_send_at = Some(*issued_at);
            }
            JourneyEvent::CodeAttemptFailed { .. } => {
                self.step_failures += 1;
                self.failures += 1;
            }
            JourneyEvent::CodeVerified { step, next, .. }
            | JourneyEvent::OptionChosen { step, next, .. }
            | JourneyEvent::CallConfirmed { step, next, .. } => {
                if let JourneyEvent::OptionChosen { option, .. } = event {
                    self.choices.push((step.clone(), option.clone()));
                }
                self.enter(step, next);
            }
            JourneyEvent::CodeExpired { .. } => {}
            JourneyEvent::CallPlaced {
                call,
                call_id,
                confirm,
                code_hash,
                placed_at,
                expires_at,
                ..
            } => {
                self.call = Some(ActiveCall {
                    call_id: *call_id,
                    number: *call,
                    confirm: *confirm,
                    code_hash: code_hash.clone(),
                    placed_at: *placed_at,
                    expires_at: *expires_at,
                    open: true,
                });
                self.step_sends += 1;
                self.last_send_at = Some(*placed_at);
            }
            JourneyEvent::CallFailed { .. } => {
                if let Some(c) = &mut self.call {
                    c.open = false;
                }
            }
            JourneyEvent::PasswordRejected { .. } => {}
            JourneyEvent::PasswordChanged { step, next, .. } => {
                self.password_changed = true;
                self.enter(step, next);
            }
            JourneyEvent::JourneyCompleted {
                step, session_hash, ..
            } => {
                self.passed.push(step.clone());
                self.status = Status::Completed;
                self.session_hash = Some(session_hash.clone());
                self.current_step = None;
                self.code = None;
                self.call = None;
            }
            JourneyEvent::JourneyFailed { reason, .. } => {
                self.status = Status::Failed;
                self.finish_reason = Some(reason.clone());
                self.code = None;
                self.call = None;
            }
            JourneyEvent::JourneyExpired { .. } => {
                self.status = Status::Expired;
                self.finish_reason = Some("journey lifetime elapsed".into());
                self.code = None;
                self.call = None;
            }
            JourneyEvent::JourneyCancelled { reason } => {
                self.status = Status::Cancelled;
                self.finish_reason = Some(reason.clone());
                self.code = None;
                self.call = None;
            }
            JourneyEvent::PersonalDataErased { .. } => {
                // The read-model row written with this event must not keep the masked
                // address or the pseudonym either.
                self.erased = true;
                self.email_masked = None;
                self.phone_masked = None;
                self.subject = None;
            }
            JourneyEvent::InputRejected { .. } => {}
            JourneyEvent::PersonNudged { .. } => self.nudged = true,
            JourneyEvent::SupportAlerted {
                dedup_key,
                alerted_at,
                ..
            } => {
                self.alert = Some(AlertState {
                    dedup_key: dedup_key.clone(),
                    alerted_at: *alerted_at,
                    acknowledged: false,
                    escalated: false,
                });
            }
            JourneyEvent::SupportAlertUpdated { .. } => {}
            JourneyEvent::HandoffLinkOpened { expires_at } => self.handoffs_used.push(*expires_at),
            JourneyEvent::SupportAlertEscalated { .. } => {
                if let Some(a) = &mut self.alert {
                    a.escalated = true;
                }
            }
            JourneyEvent::SupportAlertAcknowledged { .. } => {
                if let Some(a) = &mut self.alert {
                    a.acknowledged = true;
                }
            }
            JourneyEvent::MessageDelivered { .. } => self.delivered += 1,
            JourneyEvent::MessageFailed {
                permanent, channel, ..
            } => {
                self.delivery_failures += 1;
                // Only what the person waits for: a failed support alert is not theirs.
                self.undeliverable |=
                    *permanent && matches!(channel.as_str(), "email" | "sms" | "voice");
            }
        }
    }
}
