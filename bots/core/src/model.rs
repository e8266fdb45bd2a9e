//! The data that crosses the core's boundary: who speaks ([`ChatUser`]), what they ask
//! ([`Intent`]), what the core needs from the engine ([`EngineAction`], answered by an
//! [`EngineResult`]) and what it asks the transport to show ([`Output`]).
//!
//! Nothing here holds a password. Codes and typed text travel *in* (an intent) and *on* to
//! the engine (an action), never *out*: every `Debug` below redacts them, and no output is
//! built from text a person typed.

use crate::ids::AlertKey;
use passage_core::journey::Rejection;
use passage_core::journey::Status;
use passage_core::journey::view::JourneyView;
use passage_core::ports::{JourneyId, JourneySummary};
use passage_core::time::Timestamp;
use serde::Serialize;
use std::fmt;

/// Whether a chat user acts for themselves or for the service desk. The transport decides
/// (e.g. membership of a Discord support role); the core enforces what each may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Person,
    Support,
}

/// Who sent an intent, as the transport knows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ChatUser {
    /// The platform's stable user id (a Discord snowflake; `terminal` for `passage chat`).
    /// Recorded as the actor's id with every command it causes.
    pub id: String,
    /// Where the intent came from, recorded as the actor's channel (`chat`, `discord`, ...).
    pub channel: String,
    pub role: Role,
}

impl ChatUser {
    pub fn person(id: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            channel: channel.into(),
            role: Role::Person,
        }
    }

    pub fn support(id: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            channel: channel.into(),
            role: Role::Support,
        }
    }

    pub fn is_support(&self) -> bool {
        self.role == Role::Support
    }

    /// The same user acting for themselves: a support member resetting their own password
    /// is a person in that journey's log.
    pub fn as_person(&self) -> Self {
        Self {
            role: Role::Person,
            ..self.clone()
        }
    }
}

/// Anything a transport hands to [`crate::Bot::handle`].
#[derive(Debug, Clone)]
pub enum Intent {
    Person(PersonIntent),
    Support(SupportIntent),
    System(SystemIntent),
}

impl From<PersonIntent> for Intent {
    fn from(i: PersonIntent) -> Self {
        Intent::Person(i)
    }
}

impl From<SupportIntent> for Intent {
    fn from(i: SupportIntent) -> Self {
        Intent::Support(i)
    }
}

impl From<SystemIntent> for Intent {
    fn from(i: SystemIntent) -> Self {
        Intent::System(i)
    }
}

/// What the person resetting their password does in chat.
#[derive(Clone)]
pub enum PersonIntent {
    /// "Forgot Password?": a new journey, bound to this user. With `email`, the address is
    /// submitted at once ("Send verification code"); without, the core asks for it.
    StartReset {
        from: ChatUser,
        email: Option<String>,
    },
    /// A message typed in the conversation: the email address, a code (only where the
    /// transport's [`crate::Surface::typed_codes`] allows), an option's name. Never echoed.
    Text { from: ChatUser, text: String },
    /// A button press, by its custom id ([`crate::ButtonId`]).
    Press { from: ChatUser, custom_id: String },
    /// A form opened by a button (a Discord modal for "Enter code") was submitted.
    FormSubmitted {
        from: ChatUser,
        custom_id: String,
        value: String,
    },
}

impl fmt::Debug for PersonIntent {
    // Emails, codes and whatever else was typed never reach a log through Debug (R50).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersonIntent::StartReset { from, email } => f
                .debug_struct("StartReset")
                .field("from", from)
                .field("email", &email.as_ref().map(|_| ".."))
                .finish(),
            PersonIntent::Text { from, .. } => f
                .debug_struct("Text")
                .field("from", from)
                .field("text", &"..")
                .finish(),
            PersonIntent::Press { from, custom_id } => f
                .debug_struct("Press")
                .field("from", from)
                .field("custom_id", custom_id)
                .finish(),
            PersonIntent::FormSubmitted {
                from, custom_id, ..
            } => f
                .debug_struct("FormSubmitted")
                .field("from", from)
                .field("custom_id", custom_id)
                .field("value", &"..")
                .finish(),
        }
    }
}

/// What the service desk does from chat. Each is refused unless `from` has
/// [`Role::Support`].
#[derive(Debug, Clone)]
pub enum SupportIntent {
    /// The journey's timeline (masked) and where it is now.
    ShowJourney { from: ChatUser, journey: JourneyId },
    /// The journey as it was after its first `at` events.
    ReplayJourney {
        from: ChatUser,
        journey: JourneyId,
        at: usize,
    },
    /// Open alerts this chat has seen, and active journeys past their step's stall deadline.
    ListStalled { from: ChatUser },
    /// Take a journey's alert (recorded in the journey as `SupportAlertAcknowledged`).
    AcknowledgeAlert { from: ChatUser, key: AlertKey },
    /// Remind the person (recorded as `PersonNudged`; the engine emails them, and the core
    /// also writes to them here if they started the journey in this chat).
    NudgeUser { from: ChatUser, journey: JourneyId },
    /// End the journey, with a reason (recorded as `JourneyCancelled`).
    CancelJourney {
        from: ChatUser,
        journey: JourneyId,
        reason: String,
    },
}

/// What the deployment itself tells the chat.
#[derive(Debug, Clone)]
pub enum SystemIntent {
    /// The engine's stall scanner raised or updated a support alert (the `support` channel's
    /// `MessageKind::Alert`, delivered by the worker). Masked text only.
    AlertDelivered {
        dedup_key: String,
        text: String,
        update: bool,
        mention: bool,
        /// The engine closed the alert (the journey ended or left the alerted step): shown
        /// as resolved, without buttons. The engine's `Effect::RaiseAlert::resolved`; the
        /// core never infers it from the text.
        resolved: bool,
    },
}

/// Input the core may send to a journey: a transport-neutral mirror of the runtime's
/// `passage_runtime::Input`, restricted to what chat may carry. There is deliberately no
/// password (never typed in chat: see [`SecretStep`]) and no call keys (only the phone
/// presses keys). `Cancel`, `Nudge` and `AcknowledgeAlert` are only ever produced for a
/// support user.
#[derive(Clone, PartialEq, Eq)]
pub enum ChatInput {
    Email(String),
    Code(String),
    Resend,
    Choose(String),
    Cancel { reason: String },
    Nudge,
    AcknowledgeAlert,
}

impl ChatInput {
    /// The input's name, the same word the engine records for the command.
    pub fn name(&self) -> &'static str {
        match self {
            ChatInput::Email(_) => "email",
            ChatInput::Code(_) => "code",
            ChatInput::Resend => "resend",
            ChatInput::Choose(_) => "choose",
            ChatInput::Cancel { .. } => "cancel",
            ChatInput::Nudge => "nudge",
            ChatInput::AcknowledgeAlert => "acknowledge-alert",
        }
    }
}

impl fmt::Debug for ChatInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatInput::Email(_) => f.write_str("Email(..)"),
            ChatInput::Code(_) => f.write_str("Code(..)"),
            ChatInput::Choose(o) => write!(f, "Choose({o:?})"),
            other => f.write_str(other.name()),
        }
    }
}

/// What the core needs the engine to do. The transport performs it (for the CLI: the
/// in-process engine, then `worker.drain()`) and answers with an [`EngineResult`].
#[derive(Clone, PartialEq, Eq)]
pub enum EngineAction {
    /// Start a journey on `workflow` as `by`; with `email`, submit it right away.
    /// Answer: [`EngineResult::Journey`].
    Start {
        workflow: String,
        email: Option<String>,
        by: ChatUser,
    },
    /// Submit `input` to `journey` as `by` (a person, or support for support inputs).
    /// Answer: [`EngineResult::Journey`] with the engine's refusal, if any.
    Submit {
        journey: JourneyId,
        input: ChatInput,
        by: ChatUser,
    },
    /// Read the journey's current view; changes nothing. Answer: [`EngineResult::Journey`].
    Load { journey: JourneyId },
    /// The journey's timeline and view. Answer: [`EngineResult::Timeline`].
    Timeline { journey: JourneyId },
    /// The journey after its first `at` events. Answer: [`EngineResult::Replayed`].
    Replay { journey: JourneyId, at: usize },
    /// What `/journeys stalled` lists: the journeys due for the stall scanner, most overdue
    /// first (the store's index on `stall_at`, so a crowd of healthy journeys cannot push
    /// them out), then those of `alerts` (journeys with an alert this chat still shows open,
    /// which the scanner may have stopped looking at) not among them.
    /// Answer: [`EngineResult::Journeys`].
    ListStalled { alerts: Vec<JourneyId> },
}

impl fmt::Debug for EngineAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineAction::Start {
                workflow,
                email,
                by,
            } => f
                .debug_struct("Start")
                .field("workflow", workflow)
                .field("email", &email.as_ref().map(|_| ".."))
                .field("by", by)
                .finish(),
            EngineAction::Submit { journey, input, by } => f
                .debug_struct("Submit")
                .field("journey", journey)
                .field("input", input)
                .field("by", by)
                .finish(),
            EngineAction::Load { journey } => {
                f.debug_struct("Load").field("journey", journey).finish()
            }
            EngineAction::Timeline { journey } => f
                .debug_struct("Timeline")
                .field("journey", journey)
                .finish(),
            EngineAction::Replay { journey, at } => f
                .debug_struct("Replay")
                .field("journey", journey)
                .field("at", at)
                .finish(),
            EngineAction::ListStalled { alerts } => f
                .debug_struct("ListStalled")
                .field("alerts", alerts)
                .finish(),
        }
    }
}

/// One line of a journey's timeline, as the runtime describes it (masked details only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineLine {
    pub version: u64,
    pub recorded_at: Timestamp,
    pub event_type: String,
    pub description: String,
    /// `person via chat`, `support:alice via discord`, ...
    pub actor: Option<String>,
}

/// The transport's answer to an [`EngineAction`].
#[derive(Debug, Clone)]
pub enum EngineResult {
    /// After `Start`, `Submit` or `Load`: the journey's view, and the engine's refusal if it
    /// refused. (A session token the engine hands out on completion stays with the
    /// transport: it is not part of the conversation.)
    Journey {
        journey: JourneyId,
        refusal: Option<Rejection>,
        view: JourneyView,
    },
    Timeline {
        journey: JourneyId,
        lines: Vec<TimelineLine>,
        view: JourneyView,
    },
    Replayed {
        journey: JourneyId,
        at: usize,
        total: usize,
        lines: Vec<TimelineLine>,
        view: JourneyView,
    },
    Journeys(Vec<JourneySummary>),
    /// The action could not be performed (unknown journey, store unavailable, ...). The
    /// message is shown to whoever asked, so it must carry no secret.
    Failed {
        message: String,
    },
}

impl EngineResult {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            EngineResult::Journey { .. } => "journey",
            EngineResult::Timeline { .. } => "timeline",
            EngineResult::Replayed { .. } => "replayed",
            EngineResult::Journeys(_) => "journeys",
            EngineResult::Failed { .. } => "failed",
        }
    }
}

/// Identifies one outstanding [`EngineAction`]; hand it back to [`crate::Bot::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub(crate) u64);

/// An engine action the core is waiting on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub ticket: Ticket,
    pub action: EngineAction,
}

/// What one call into the core produced: outputs to show now and, at most, one engine
/// action to perform before calling [`crate::Bot::resume`].
#[derive(Debug, Default)]
#[must_use = "show the outputs and perform the request"]
pub struct Turn {
    pub outputs: Vec<Output>,
    pub next: Option<Request>,
}

impl Turn {
    pub(crate) fn outputs(outputs: Vec<Output>) -> Self {
        Self {
            outputs,
            next: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ButtonStyle {
    /// The step's main action.
    Primary,
    Secondary,
    /// Irreversible or support-only.
    Danger,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Button {
    /// A [`crate::ButtonId`], formatted.
    pub custom_id: String,
    pub label: String,
    pub style: ButtonStyle,
}

/// A message to whoever sent the intent. `ephemeral`: only they can see it (a Discord
/// ephemeral reply or a DM); every reply to a person is ephemeral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub text: String,
    pub buttons: Vec<Button>,
    pub ephemeral: bool,
}

/// A step whose secret never passes through chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SecretKind {
    /// Reset Password: a new password and its confirmation.
    NewPassword {
        policy: String,
        requirements: Vec<String>,
    },
    /// A code, where the transport can neither take it privately nor open a form.
    Code { digits: u8 },
}

/// "Collect this outside the conversation": a chat platform hands the person a single-use,
/// short-lived link to the journey's web page; a terminal reads hidden input and submits it
/// to the engine itself, then calls [`crate::Bot::observe`] with the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretStep {
    pub journey: JourneyId,
    pub step: String,
    pub kind: SecretKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WaitReason {
    /// A call is ringing; the person answers it and presses #.
    CallConfirmation { calling: Option<String> },
}

/// The next move happens outside the conversation. A transport that watches journeys
/// ([`crate::Surface::watches`]) polls it and calls [`crate::Bot::observe`] once it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub journey: JourneyId,
    pub step: String,
    pub reason: WaitReason,
}

/// A one-field form a button opens (a Discord modal): "Enter code".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Form {
    /// Submitted back as [`PersonIntent::FormSubmitted`] with this id.
    pub custom_id: String,
    pub title: String,
    pub label: String,
    pub min_len: u8,
    pub max_len: u8,
}

/// Where an alert stands, for an [`AlertUpdate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum AlertState {
    Open,
    Acknowledged {
        by: String,
    },
    /// The journey moved on or finished: the alert needs nobody any more.
    Resolved {
        why: String,
    },
}

/// A new support alert: post one message, remember it by `dedup_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// [`AlertKey`] formatted: `<journey>:<step>`.
    pub dedup_key: String,
    pub title: String,
    pub text: String,
    pub buttons: Vec<Button>,
    /// Mention the support role (an escalation).
    pub mention: bool,
}

/// Edit the message posted for `dedup_key` (or post it, if the transport has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertUpdate {
    pub dedup_key: String,
    pub state: AlertState,
    pub text: String,
    pub buttons: Vec<Button>,
    pub mention: bool,
}

/// What the core asks the transport to show or do. Built from a `JourneyView` (the same
/// view the web pages render) and the engine's own masked texts; never a code, a password
/// or an address as typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "output", rename_all = "kebab-case")]
pub enum Output {
    /// To whoever sent the intent.
    Reply(Reply),
    /// To another chat user, privately (a DM): the person a support member nudged.
    Direct {
        user: String,
        reply: Reply,
    },
    /// Open this form for the user who pressed the button.
    Form(Form),
    SecretStep(SecretStep),
    Waiting(Waiting),
    /// The journey is over (completed, failed, expired or cancelled): stop watching it.
    Ended {
        journey: JourneyId,
        status: Status,
    },
    Alert(Alert),
    AlertUpdate(AlertUpdate),
}

impl Output {
    /// Every string of this output a person could see (texts, labels, custom ids): what a
    /// test searches for secrets.
    pub fn visible_text(&self) -> Vec<&str> {
        fn reply(r: &Reply) -> Vec<&str> {
            let mut v = vec![r.text.as_str()];
            for b in &r.buttons {
                v.push(&b.label);
                v.push(&b.custom_id);
            }
            v
        }
        fn buttons(bs: &[Button]) -> impl Iterator<Item = &str> {
            bs.iter()
                .flat_map(|b| [b.label.as_str(), b.custom_id.as_str()])
        }
        match self {
            Output::Reply(r) => reply(r),
            Output::Direct { user, reply: r } => {
                let mut v = reply(r);
                v.push(user);
                v
            }
            Output::Form(f) => vec![&f.custom_id, &f.title, &f.label],
            Output::SecretStep(s) => {
                let mut v = vec![s.step.as_str()];
                if let SecretKind::NewPassword {
                    policy,
                    requirements,
                } = &s.kind
                {
                    v.push(policy);
                    v.extend(requirements.iter().map(String::as_str));
                }
                v
            }
            Output::Waiting(w) => {
                let mut v = vec![w.step.as_str()];
                let WaitReason::CallConfirmation { calling } = &w.reason;
                v.extend(calling.as_deref());
                v
            }
            Output::Ended { .. } => Vec::new(),
            Output::Alert(a) => {
                let mut v = vec![a.dedup_key.as_str(), &a.title, &a.text];
                v.extend(buttons(&a.buttons));
                v
            }
            Output::AlertUpdate(u) => {
                let mut v = vec![u.dedup_key.as_str(), &u.text];
                match &u.state {
                    AlertState::Acknowledged { by } => v.push(by),
                    AlertState::Resolved { why } => v.push(why),
                    AlertState::Open => {}
                }
                v.extend(buttons(&u.buttons));
                v
            }
        }
    }
}
