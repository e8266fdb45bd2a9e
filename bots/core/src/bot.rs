//! The conversation state machine: [`Bot`].

use crate::Error;
use crate::ids::{AlertKey, ButtonId};
use crate::model::{
    Alert, AlertState, AlertUpdate, Button, ButtonStyle, ChatInput, ChatUser, EngineAction,
    EngineResult, Form, Intent, Output, PersonIntent, Reply, Request, SupportIntent, SystemIntent,
    Ticket, Turn,
};
use crate::render::{self, active_step, step_id, step_prompt};
use passage_core::definition::VoiceConfirm;
use passage_core::journey::Rejection;
use passage_core::journey::Status;
use passage_core::journey::view::{JourneyView, StepView};
use passage_core::ports::{JourneyId, JourneySummary};
use passage_core::reason::{MAX_REASON_CHARS, MIN_REASON_CHARS, ReasonError, clean_reason};
use passage_core::time::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What the transport can do, which decides how steps are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Surface {
    /// Codes may be typed as plain messages. True for a terminal (a private prompt); false
    /// for chat platforms, where messages stay in the channel's history: a code typed there
    /// is refused (not submitted) and the person is pointed to the form or the link.
    pub typed_codes: bool,
    /// A button can open a one-field form (a Discord modal): code steps get "Enter code".
    pub forms: bool,
    /// The transport watches a journey after [`Output::Waiting`] and calls
    /// [`Bot::observe`] when it changes; otherwise the core offers "check again" buttons.
    pub watches: bool,
}

impl Surface {
    /// `passage chat`: codes at the prompt, no forms, polls while a call rings.
    pub const TERMINAL: Surface = Surface {
        typed_codes: true,
        forms: false,
        watches: true,
    };
    /// A chat platform with modals (Discord): codes only in a modal or on the linked page.
    pub const CHAT: Surface = Surface {
        typed_codes: false,
        forms: true,
        watches: false,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotConfig {
    /// The workflow definition a reset starts on.
    pub workflow: String,
    pub surface: Surface,
    /// How a person starts again on this transport ("Use /reset to start again.").
    pub start_hint: String,
}

impl BotConfig {
    pub fn new(surface: Surface, start_hint: impl Into<String>) -> Self {
        Self {
            workflow: "password-reset".into(),
            surface,
            start_hint: start_hint.into(),
        }
    }
}

const ONLY_SUPPORT: &str = "Only the service desk can do that.";
const NOT_MINE: &str = "That button is not one I know: nothing was changed.";
const IN_FLIGHT: &str = "Already on it: that button was pressed a moment ago.";
const STALE_STEP: &str =
    "That button was for a step you have already left: nothing was sent or changed.";
const NO_TYPED_PASSWORD: &str = "Please never type a password in chat: this conversation is \
not masked. I did not keep or forward what you sent.";
const NO_TYPED_CODE: &str = "Please don't post codes in chat, where they stay in the \
history: I did not use what you sent.";
const NOTHING_TO_TYPE: &str = "There is nothing to type at this step.";
const PICK_AN_OPTION: &str = "I did not recognise that: pick one of the options.";
const NUDGE_IN_FLIGHT: &str =
    "Already on it: this journey is being nudged right now, so nothing more was sent.";
/// Lines `/journeys stalled` shows; the rest are counted, not listed.
const STALLED_LINES: usize = 15;

/// A press or form being executed, so a second identical one is not executed twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Guard {
    /// `None`: held for everyone (a nudge is one per journey, whoever presses it).
    user: Option<String>,
    what: String,
}

/// What to do with the result of the engine action a ticket stands for.
enum Pending {
    /// `Start`: bind the journey to the user, show it.
    Started {
        user: ChatUser,
    },
    /// A person's `Submit`: show the outcome (with `done` when accepted).
    Answered {
        guard: Option<Guard>,
        done: Option<&'static str>,
    },
    /// `Load` for a typed message.
    Text {
        user: ChatUser,
        journey: JourneyId,
        text: String,
    },
    /// `Load` for a button press: is it still current?
    Press {
        user: ChatUser,
        button: ButtonId,
        guard: Guard,
    },
    /// `Load` for a submitted "Enter code" form.
    Form {
        user: ChatUser,
        step: String,
        value: String,
        guard: Guard,
    },
    Show,
    Replay,
    Stalled,
    /// `Load`, then `Submit(AcknowledgeAlert)`.
    AckLoaded {
        user: ChatUser,
        key: AlertKey,
        guard: Guard,
    },
    AckSubmitted {
        user: ChatUser,
        key: AlertKey,
        guard: Guard,
    },
    /// `Load`, then `Submit(Nudge)`.
    NudgeLoaded {
        user: ChatUser,
        journey: JourneyId,
        step: Option<String>,
        guard: Guard,
    },
    /// The nudge of `reserved` (journey, step) is recorded in `Bot::nudged` before the
    /// command goes out, so a second press meanwhile sees it; a refusal or failure takes
    /// the reservation back.
    NudgeSubmitted {
        user: ChatUser,
        guard: Guard,
        reserved: (JourneyId, String),
    },
    Cancelled,
}

impl Pending {
    fn guard(&self) -> Option<&Guard> {
        match self {
            Pending::Answered { guard, .. } => guard.as_ref(),
            Pending::Press { guard, .. }
            | Pending::Form { guard, .. }
            | Pending::AckLoaded { guard, .. }
            | Pending::AckSubmitted { guard, .. }
            | Pending::NudgeLoaded { guard, .. }
            | Pending::NudgeSubmitted { guard, .. } => Some(guard),
            _ => None,
        }
    }

    fn expects(&self) -> &'static str {
        match self {
            Pending::Show => "timeline",
            Pending::Replay => "replayed",
            Pending::Stalled => "journeys",
            _ => "journey",
        }
    }
}

/// A support alert as this chat knows it: the engine's latest text, and what happened to
/// it here.
#[derive(Debug, Clone)]
struct AlertRecord {
    text: String,
    mention: bool,
    acknowledged_by: Option<String>,
    notes: Vec<String>,
}

impl AlertRecord {
    fn text(&self) -> String {
        let mut t = self.text.clone();
        for n in &self.notes {
            t.push('\n');
            t.push_str(n);
        }
        t
    }

    fn state(&self) -> AlertState {
        match &self.acknowledged_by {
            Some(by) => AlertState::Acknowledged { by: by.clone() },
            None => AlertState::Open,
        }
    }
}

/// The conversation core. Synchronous and deterministic: time comes in as an argument, and
/// every engine call goes out as an [`EngineAction`] the transport performs.
///
/// One `Bot` serves every user of a transport. It remembers, in memory only:
/// * which journey each person is doing (a press for any other journey is stale), and who
///   started each journey here (so a nudge or a cancellation can reach them);
/// * the alerts it has shown, by dedup key;
/// * the engine actions in flight (by [`Ticket`]) and the presses they serve, so a double
///   click runs once.
///
/// A restart forgets all of it: people start again (journeys last minutes), and alerts are
/// updated by their dedup key as the engine refreshes them.
pub struct Bot {
    config: BotConfig,
    sessions: HashMap<String, JourneyId>,
    owners: HashMap<JourneyId, String>,
    alerts: BTreeMap<String, AlertRecord>,
    pending: HashMap<Ticket, Pending>,
    in_flight: HashSet<Guard>,
    /// When this chat last nudged a journey at a step: a second nudge inside
    /// [`NUDGE_REPEAT_WINDOW`] is a double click, not a new reminder.
    nudged: HashMap<(JourneyId, String), Timestamp>,
    next_ticket: u64,
}

/// A nudge for the same journey and step within this window is taken as a repeat.
pub const NUDGE_REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

impl fmt::Debug for Bot {
    // Pending entries hold what people typed: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bot")
            .field("config", &self.config)
            .field("sessions", &self.sessions.len())
            .field("alerts", &self.alerts.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn reply(text: impl Into<String>) -> Turn {
    Turn::outputs(vec![Output::Reply(Reply {
        text: text.into(),
        buttons: Vec::new(),
        ephemeral: true,
    })])
}

/// A code as typed: spaces and dashes people put in for readability removed.
fn compact(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect()
}

impl Bot {
    pub fn new(config: BotConfig) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            owners: HashMap::new(),
            alerts: BTreeMap::new(),
            pending: HashMap::new(),
            in_flight: HashSet::new(),
            nudged: HashMap::new(),
            next_ticket: 0,
        }
    }

    pub fn config(&self) -> &BotConfig {
        &self.config
    }

    /// The journey `user` is doing here, if any.
    pub fn journey_of(&self, user: &str) -> Option<JourneyId> {
        self.sessions.get(user).copied()
    }

    /// Engine actions issued and not yet resumed.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes one intent. Perform `turn.next` (if any) and hand its result to
    /// [`Bot::resume`]; repeat until a turn has no `next`.
    pub fn handle(&mut self, intent: impl Into<Intent>) -> Turn {
        match intent.into() {
            Intent::Person(p) => self.person(p),
            Intent::Support(s) => self.support(s),
            Intent::System(s) => self.system(s),
        }
    }

    /// The result of the engine action `ticket` stands for. `now` is the transport's clock.
    pub fn resume(
        &mut self,
        now: Timestamp,
        ticket: Ticket,
        result: EngineResult,
    ) -> Result<Turn, Error> {
        let pending = self
            .pending
            .remove(&ticket)
            .ok_or(Error::UnknownTicket(ticket.0))?;
        if let EngineResult::Failed { message } = &result {
            self.drop_pending(&pending);
            return Ok(reply(format!("That did not work: {message}")));
        }
        let got = result.kind();
        Ok(match (pending, result) {
            (
                Pending::Started { user },
                EngineResult::Journey {
                    journey,
                    refusal,
                    view,
                },
            ) => {
                if let Some(previous) = self.sessions.insert(user.id.clone(), journey) {
                    self.owners.remove(&previous);
                }
                self.owners.insert(journey, user.id);
                Turn::outputs(self.show(journey, &view, refusal.as_ref(), None))
            }
            (
                Pending::Answered { guard, done },
                EngineResult::Journey {
                    journey,
                    refusal,
                    view,
                },
            ) => {
                self.release(guard.as_ref());
                let done = done.filter(|_| refusal.is_none());
                Turn::outputs(self.show(journey, &view, refusal.as_ref(), done))
            }
            (
                Pending::Text {
                    user,
                    journey,
                    text,
                },
                EngineResult::Journey { view, .. },
            ) => self.typed(user, journey, &text, &view),
            (
                Pending::Press {
                    user,
                    button,
                    guard,
                },
                EngineResult::Journey { journey, view, .. },
            ) => self.pressed(now, user, journey, button, guard, &view),
            (
                Pending::Form {
                    user,
                    step,
                    value,
                    guard,
                },
                EngineResult::Journey { journey, view, .. },
            ) => {
                let takes_code = match active_step(&view) {
                    Some(StepView::Code { id, .. }) => *id == step,
                    Some(StepView::Voice {
                        id,
                        confirm: VoiceConfirm::SpokenCode { .. },
                        ..
                    }) => *id == step,
                    _ => false,
                };
                if takes_code {
                    self.request(
                        Pending::Answered {
                            guard: Some(guard),
                            done: None,
                        },
                        EngineAction::Submit {
                            journey,
                            input: ChatInput::Code(compact(&value)),
                            by: user,
                        },
                    )
                } else {
                    self.release(Some(&guard));
                    Turn::outputs(self.show(journey, &view, None, Some(STALE_STEP)))
                }
            }
            (
                Pending::Show,
                EngineResult::Timeline {
                    journey,
                    lines,
                    view,
                },
            ) => {
                let mut out = self.observe_alerts(journey, &view);
                let mut text = render::support_status(journey, &view);
                text.push('\n');
                text.push_str(&render::timeline(&lines));
                let buttons = match active_step(&view) {
                    Some(step) => vec![Button {
                        custom_id: ButtonId::Nudge {
                            journey,
                            step: step_id(step).to_owned(),
                        }
                        .to_string(),
                        label: "Nudge user".into(),
                        style: ButtonStyle::Secondary,
                    }],
                    None => Vec::new(),
                };
                out.insert(
                    0,
                    Output::Reply(Reply {
                        text: text.trim_end().to_owned(),
                        buttons,
                        ephemeral: true,
                    }),
                );
                Turn::outputs(out)
            }
            (
                Pending::Replay,
                EngineResult::Replayed {
                    journey,
                    at,
                    total,
                    lines,
                    view,
                },
            ) => {
                if at > total {
                    reply(format!(
                        "Journey {journey} has {total} events: replay between 1 and {total}."
                    ))
                } else {
                    let shown = &lines[..at.min(lines.len())];
                    reply(format!(
                        "Replay of journey {journey}: the state after event {at} of {total}.\n{}{}",
                        render::timeline(shown),
                        render::support_status(journey, &view)
                    ))
                }
            }
            (Pending::Stalled, EngineResult::Journeys(list)) => self.stalled(now, &list),
            (
                Pending::AckLoaded { user, key, guard },
                EngineResult::Journey { journey, view, .. },
            ) => {
                let current = active_step(&view).map(step_id);
                let takes_ack = match view.status {
                    Status::Active => current == Some(key.step.as_str()),
                    // A failed journey keeps its alert until someone takes it.
                    Status::Failed => true,
                    _ => false,
                };
                if takes_ack {
                    self.request(
                        Pending::AckSubmitted {
                            user: user.clone(),
                            key,
                            guard,
                        },
                        EngineAction::Submit {
                            journey,
                            input: ChatInput::AcknowledgeAlert,
                            by: user,
                        },
                    )
                } else {
                    self.release(Some(&guard));
                    let mut out = vec![Output::Reply(Reply {
                        text: format!(
                            "Alert {key} is out of date: {}. Nothing was recorded.",
                            match current {
                                Some(step) => format!("the journey has moved on to `{step}`"),
                                None => format!("the journey is {}", view.status.as_str()),
                            }
                        ),
                        buttons: Vec::new(),
                        ephemeral: true,
                    })];
                    out.extend(self.observe_alerts(journey, &view));
                    Turn::outputs(out)
                }
            }
            (Pending::AckSubmitted { user, key, guard }, EngineResult::Journey { refusal, .. }) => {
                self.release(Some(&guard));
                if let Some(r) = refusal {
                    return Ok(reply(format!("Not acknowledged: {}", r.message)));
                }
                let dedup_key = key.to_string();
                let record = self
                    .alerts
                    .entry(dedup_key.clone())
                    .or_insert_with(|| AlertRecord {
                        text: format!("Password reset journey {}", key.journey),
                        mention: false,
                        acknowledged_by: None,
                        notes: Vec::new(),
                    });
                record.acknowledged_by = Some(user.id.clone());
                record.mention = false;
                record.notes.push(format!("Acknowledged by {}.", user.id));
                let update = AlertUpdate {
                    dedup_key: dedup_key.clone(),
                    state: record.state(),
                    text: record.text(),
                    buttons: render::alert_buttons(&key, true),
                    mention: false,
                };
                Turn::outputs(vec![
                    Output::Reply(Reply {
                        text: format!("You acknowledged alert {dedup_key}."),
                        buttons: Vec::new(),
                        ephemeral: true,
                    }),
                    Output::AlertUpdate(update),
                ])
            }
            (
                Pending::NudgeLoaded {
                    user,
                    journey,
                    step,
                    guard,
                },
                EngineResult::Journey { view, .. },
            ) => {
                let current = active_step(&view).map(step_id);
                match (current, step) {
                    (None, _) => {
                        self.release(Some(&guard));
                        let mut out = reply(format!(
                            "Journey {journey} is {}: there is nobody to nudge.",
                            view.status.as_str()
                        ))
                        .outputs;
                        out.extend(self.observe_alerts(journey, &view));
                        Turn::outputs(out)
                    }
                    (Some(now_at), Some(wanted)) if now_at != wanted => {
                        self.release(Some(&guard));
                        let mut out = reply(format!(
                            "Journey {journey} has moved on to `{now_at}` since `{wanted}`: \
                             no nudge needed, nothing was sent."
                        ))
                        .outputs;
                        out.extend(self.observe_alerts(journey, &view));
                        Turn::outputs(out)
                    }
                    (Some(now_at), _)
                        if self
                            .nudged
                            .get(&(journey, now_at.to_owned()))
                            .is_some_and(|t| now < t.plus(NUDGE_REPEAT_WINDOW)) =>
                    {
                        self.release(Some(&guard));
                        let at = self.nudged[&(journey, now_at.to_owned())];
                        reply(format!(
                            "Journey {journey} was nudged at `{now_at}` at {}: nothing more was \
                             sent.",
                            render::hms(at)
                        ))
                    }
                    (Some(now_at), _) => {
                        let reserved = (journey, now_at.to_owned());
                        self.nudged.retain(|_, t| now < t.plus(NUDGE_REPEAT_WINDOW));
                        self.nudged.insert(reserved.clone(), now);
                        self.request(
                            Pending::NudgeSubmitted {
                                user: user.clone(),
                                guard,
                                reserved,
                            },
                            EngineAction::Submit {
                                journey,
                                input: ChatInput::Nudge,
                                by: user,
                            },
                        )
                    }
                }
            }
            (
                Pending::NudgeSubmitted {
                    user,
                    guard,
                    reserved,
                },
                EngineResult::Journey {
                    journey,
                    refusal,
                    view,
                },
            ) => {
                self.release(Some(&guard));
                if let Some(r) = refusal {
                    self.nudged.remove(&reserved);
                    return Ok(reply(format!("Not nudged: {}", r.message)));
                }
                self.after_nudge(&user, journey, &view)
            }
            (
                Pending::Cancelled,
                EngineResult::Journey {
                    journey,
                    refusal,
                    view,
                },
            ) => {
                if let Some(r) = refusal {
                    return Ok(reply(format!("Not cancelled: {}", r.message)));
                }
                let mut out = reply(format!("Journey {journey} is cancelled.")).outputs;
                if let Some(owner) = self.owners.remove(&journey) {
                    out.push(Output::Direct {
                        user: owner,
                        reply: Reply {
                            text: format!(
                                "Your password reset was cancelled by the service desk. {}",
                                self.config.start_hint
                            ),
                            buttons: Vec::new(),
                            ephemeral: true,
                        },
                    });
                }
                out.extend(self.observe_alerts(journey, &view));
                Turn::outputs(out)
            }
            (pending, _) => {
                self.drop_pending(&pending);
                return Err(Error::UnexpectedResult {
                    expected: pending.expects(),
                    got,
                });
            }
        })
    }

    /// Gives up on a ticket whose action the transport could not perform at all (it is
    /// shutting down, the request timed out): forgets what was waiting on it, so the button
    /// it served can be pressed again.
    pub fn abandon(&mut self, ticket: Ticket) {
        if let Some(p) = self.pending.remove(&ticket) {
            self.drop_pending(&p);
        }
    }

    /// Undoes what a pending action held: its press guard, and a nudge's reservation (the
    /// nudge was not recorded, so a new press may send it).
    fn drop_pending(&mut self, pending: &Pending) {
        self.release(pending.guard());
        if let Pending::NudgeSubmitted { reserved, .. } = pending {
            self.nudged.remove(reserved);
        }
    }

    /// The journey changed outside the conversation: the transport submitted a secret step
    /// itself (hidden terminal input, the linked page) or saw a watched call confirmed.
    /// Returns what to show the person now.
    pub fn observe(
        &mut self,
        journey: JourneyId,
        refusal: Option<&Rejection>,
        view: &JourneyView,
    ) -> Vec<Output> {
        self.show(journey, view, refusal, None)
    }

    // ---------------------------------------------------------------- person

    fn person(&mut self, intent: PersonIntent) -> Turn {
        match intent {
            PersonIntent::StartReset { from, email } => {
                let from = from.as_person();
                let email = email.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty());
                let workflow = self.config.workflow.clone();
                self.request(
                    Pending::Started { user: from.clone() },
                    EngineAction::Start {
                        workflow,
                        email,
                        by: from,
                    },
                )
            }
            PersonIntent::Text { from, text } => match self.journey_of(&from.id) {
                None => reply(format!(
                    "You have no password reset in progress here. {}",
                    self.config.start_hint
                )),
                Some(journey) => self.request(
                    Pending::Text {
                        user: from.as_person(),
                        journey,
                        text,
                    },
                    EngineAction::Load { journey },
                ),
            },
            PersonIntent::Press { from, custom_id } => self.press(from, &custom_id),
            PersonIntent::FormSubmitted {
                from,
                custom_id,
                value,
            } => {
                let Ok(ButtonId::EnterCode { journey, step }) = custom_id.parse() else {
                    return reply(NOT_MINE);
                };
                if let Some(stale) = self.not_current(&from, journey) {
                    return stale;
                }
                let Some(guard) = self.guard(&from, custom_id) else {
                    return reply(IN_FLIGHT);
                };
                self.request(
                    Pending::Form {
                        user: from.as_person(),
                        step,
                        value,
                        guard,
                    },
                    EngineAction::Load { journey },
                )
            }
        }
    }

    /// A reply when `journey` is not the one `user` is doing here.
    fn not_current(&self, user: &ChatUser, journey: JourneyId) -> Option<Turn> {
        if self.journey_of(&user.id) == Some(journey) {
            return None;
        }
        Some(reply(format!(
            "That button belongs to another password reset than the one you are doing now: \
             nothing was changed. {}",
            self.config.start_hint
        )))
    }

    fn press(&mut self, from: ChatUser, custom_id: &str) -> Turn {
        let Ok(button) = custom_id.parse::<ButtonId>() else {
            return reply(NOT_MINE);
        };
        if button.is_support() {
            if !from.is_support() {
                return reply(ONLY_SUPPORT);
            }
            return match button {
                ButtonId::Acknowledge { journey, step } => {
                    self.acknowledge(from, AlertKey::new(journey, step))
                }
                ButtonId::Nudge { journey, step } => self.nudge(from, journey, Some(step)),
                ButtonId::Show { journey } => {
                    self.request(Pending::Show, EngineAction::Timeline { journey })
                }
                _ => reply(NOT_MINE),
            };
        }
        let journey = button.journey();
        if let Some(stale) = self.not_current(&from, journey) {
            return stale;
        }
        if let ButtonId::EnterCode { .. } = &button {
            // A form must be the transport's first answer to the press, so it opens at once;
            // whether the step is still current is checked when the form comes back.
            return Turn::outputs(vec![Output::Form(Form {
                custom_id: button.to_string(),
                title: "Enter code".into(),
                label: "The code you received".into(),
                min_len: 4,
                max_len: 12,
            })]);
        }
        let Some(guard) = self.guard(&from, button.to_string()) else {
            return reply(IN_FLIGHT);
        };
        self.request(
            Pending::Press {
                user: from.as_person(),
                button,
                guard,
            },
            EngineAction::Load { journey },
        )
    }

    /// A typed message, against the journey's current view.
    fn typed(
        &mut self,
        user: ChatUser,
        journey: JourneyId,
        text: &str,
        view: &JourneyView,
    ) -> Turn {
        let Some(step) = active_step(view) else {
            return Turn::outputs(self.show(journey, view, None, None));
        };
        if text.trim().is_empty() {
            return Turn::outputs(self.show(journey, view, None, None));
        }
        let typed_codes = self.config.surface.typed_codes;
        let (input, lead) = match step {
            StepView::Identify { .. } => (Some(ChatInput::Email(text.trim().to_owned())), None),
            StepView::Code { .. }
            | StepView::Voice {
                confirm: VoiceConfirm::SpokenCode { .. },
                ..
            } => {
                if typed_codes {
                    (Some(ChatInput::Code(compact(text))), None)
                } else {
                    (None, Some(NO_TYPED_CODE))
                }
            }
            StepView::Choose { options, .. } => {
                let wanted = text.trim().to_lowercase();
                match options
                    .iter()
                    .find(|o| o.id == wanted || o.label.to_lowercase() == wanted)
                {
                    Some(o) => (Some(ChatInput::Choose(o.id.clone())), None),
                    None => (None, Some(PICK_AN_OPTION)),
                }
            }
            StepView::Voice { .. } => (None, Some(NOTHING_TO_TYPE)),
            StepView::SetPassword { .. } => (None, Some(NO_TYPED_PASSWORD)),
            StepView::Complete { .. } => (None, None),
        };
        match input {
            Some(input) => self.request(
                Pending::Answered {
                    guard: None,
                    done: None,
                },
                EngineAction::Submit {
                    journey,
                    input,
                    by: user,
                },
            ),
            None => Turn::outputs(self.show(journey, view, None, lead)),
        }
    }

    /// A button press, against the journey's current view: act only if it is still current.
    fn pressed(
        &mut self,
        now: Timestamp,
        user: ChatUser,
        journey: JourneyId,
        button: ButtonId,
        guard: Guard,
        view: &JourneyView,
    ) -> Turn {
        let step = active_step(view);
        let current = step.map(step_id);
        let no_action = |bot: &mut Bot, lead: String| {
            bot.release(Some(&guard));
            Turn::outputs(bot.show(journey, view, None, Some(&lead)))
        };
        let input = match (&button, step) {
            (ButtonId::Resend { step: wanted, .. }, Some(step)) if current == Some(wanted) => {
                match step {
                    StepView::Code {
                        resends_left,
                        resend_available_at,
                        resend_label,
                        ..
                    } => {
                        if *resends_left == 0 {
                            return no_action(
                                self,
                                format!("No \"{resend_label}\" left for this step."),
                            );
                        }
                        if let Some(at) = resend_available_at.filter(|at| *at > now) {
                            return no_action(
                                self,
                                format!(
                                    "A code was sent moments ago: \"{resend_label}\" works again \
                                     at {}. Nothing was sent now.",
                                    render::hms(at)
                                ),
                            );
                        }
                        (ChatInput::Resend, "A new code is on its way.")
                    }
                    StepView::Voice {
                        call_open,
                        calls_left,
                        call_again_available_at,
                        ..
                    } => {
                        if *call_open {
                            return no_action(
                                self,
                                "A call is ringing now: no second call was placed.".into(),
                            );
                        }
                        if *calls_left == 0 {
                            return no_action(self, "No calls left for this step.".into());
                        }
                        if let Some(at) = call_again_available_at.filter(|at| *at > now) {
                            return no_action(
                                self,
                                format!(
                                    "You can ask for another call at {}. No call was placed now.",
                                    render::hms(at)
                                ),
                            );
                        }
                        (ChatInput::Resend, "Calling you again.")
                    }
                    _ => return no_action(self, STALE_STEP.into()),
                }
            }
            (ButtonId::Choose { option, .. }, Some(StepView::Choose { options, .. }))
                if options.iter().any(|o| o.id == *option) =>
            {
                (ChatInput::Choose(option.clone()), "")
            }
            (ButtonId::Check { step: wanted, .. }, _) => {
                self.release(Some(&guard));
                let lead = match step {
                    Some(StepView::Voice {
                        call_open: true, ..
                    }) if current == Some(wanted) => {
                        Some("Not confirmed yet: answer the call and press #.")
                    }
                    _ => None,
                };
                return Turn::outputs(self.show(journey, view, None, lead));
            }
            _ => return no_action(self, STALE_STEP.into()),
        };
        let (input, done) = input;
        self.request(
            Pending::Answered {
                guard: Some(guard),
                done: (!done.is_empty()).then_some(done),
            },
            EngineAction::Submit {
                journey,
                input,
                by: user,
            },
        )
    }

    // ---------------------------------------------------------------- support

    fn support(&mut self, intent: SupportIntent) -> Turn {
        let from = match &intent {
            SupportIntent::ShowJourney { from, .. }
            | SupportIntent::ReplayJourney { from, .. }
            | SupportIntent::ListStalled { from }
            | SupportIntent::AcknowledgeAlert { from, .. }
            | SupportIntent::NudgeUser { from, .. }
            | SupportIntent::CancelJourney { from, .. } => from,
        };
        if !from.is_support() {
            return reply(ONLY_SUPPORT);
        }
        match intent {
            SupportIntent::ShowJourney { journey, .. } => {
                self.request(Pending::Show, EngineAction::Timeline { journey })
            }
            SupportIntent::ReplayJourney { journey, at, .. } => {
                if at == 0 {
                    return reply("Replay counts events from 1 (1 = the journey just started).");
                }
                self.request(Pending::Replay, EngineAction::Replay { journey, at })
            }
            SupportIntent::ListStalled { .. } => {
                let mut alerts: Vec<JourneyId> = Vec::new();
                for key in self.alerts.keys() {
                    if let Ok(k) = key.parse::<AlertKey>()
                        && !alerts.contains(&k.journey)
                    {
                        alerts.push(k.journey);
                    }
                }
                self.request(Pending::Stalled, EngineAction::ListStalled { alerts })
            }
            SupportIntent::AcknowledgeAlert { from, key } => self.acknowledge(from, key),
            SupportIntent::NudgeUser { from, journey } => self.nudge(from, journey, None),
            SupportIntent::CancelJourney {
                from,
                journey,
                reason,
            } => {
                // The same rule as the CLI and the web console: what the log keeps must say
                // why, and cannot forge or reorder a line of the timeline (R49, R50).
                let reason = match clean_reason(&reason) {
                    Ok(r) => r,
                    Err(ReasonError::TooShort) => {
                        return reply(format!(
                            "Say why, in at least {MIN_REASON_CHARS} characters with a letter or \
                             digit (e.g. a ticket number): the reason is recorded with the \
                             cancellation. Nothing was changed."
                        ));
                    }
                    Err(ReasonError::TooLong) => {
                        return reply(format!(
                            "Keep the reason to {MAX_REASON_CHARS} characters: it is recorded \
                             with the cancellation. Nothing was changed."
                        ));
                    }
                };
                self.request(
                    Pending::Cancelled,
                    EngineAction::Submit {
                        journey,
                        input: ChatInput::Cancel { reason },
                        by: from,
                    },
                )
            }
        }
    }

    fn acknowledge(&mut self, from: ChatUser, key: AlertKey) -> Turn {
        if let Some(by) = self
            .alerts
            .get(&key.to_string())
            .and_then(|r| r.acknowledged_by.as_ref())
        {
            return reply(format!(
                "Alert {key} was already acknowledged by {by}: nothing more to do."
            ));
        }
        let Some(guard) = self.guard(&from, format!("ack:{key}")) else {
            return reply(IN_FLIGHT);
        };
        let journey = key.journey;
        self.request(
            Pending::AckLoaded {
                user: from,
                key,
                guard,
            },
            EngineAction::Load { journey },
        )
    }

    fn nudge(&mut self, from: ChatUser, journey: JourneyId, step: Option<String>) -> Turn {
        // One guard per journey, not per support member: two members pressing "Nudge user"
        // on the same alert at once would otherwise both pass and remind the person twice.
        let Some(guard) = self.guard_shared(format!("nudge:{journey}")) else {
            return reply(NUDGE_IN_FLIGHT);
        };
        self.request(
            Pending::NudgeLoaded {
                user: from,
                journey,
                step,
                guard,
            },
            EngineAction::Load { journey },
        )
    }

    /// After an accepted nudge: tell support, write to the person if they are here, note it
    /// on the alert.
    fn after_nudge(&mut self, by: &ChatUser, journey: JourneyId, view: &JourneyView) -> Turn {
        let Some(step) = active_step(view) else {
            return reply(format!("Journey {journey} was nudged."));
        };
        let id = step_id(step).to_owned();
        let mut out = Vec::new();
        let owner = self.owners.get(&journey).cloned();
        out.push(Output::Reply(Reply {
            text: format!(
                "Nudged the person on journey {journey} (at `{id}`): the engine emails them a \
                 reminder{}.",
                if owner.is_some() {
                    ", and I wrote to them here"
                } else {
                    ""
                }
            ),
            buttons: Vec::new(),
            ephemeral: true,
        }));
        if let Some(owner) = owner {
            out.push(Output::Direct {
                user: owner,
                reply: Reply {
                    text: format!(
                        "The service desk noticed your password reset is waiting at: {}.\n\
                         Press Continue to pick up where you left off.",
                        step_prompt(step).trim_end_matches('.')
                    ),
                    buttons: vec![render::continue_button(journey, &id)],
                    ephemeral: true,
                },
            });
        }
        let key = AlertKey::new(journey, id);
        if let Some(record) = self.alerts.get_mut(&key.to_string()) {
            record.notes.push(format!("Nudged by {}.", by.id));
            out.push(Output::AlertUpdate(AlertUpdate {
                dedup_key: key.to_string(),
                state: record.state(),
                text: record.text(),
                buttons: render::alert_buttons(&key, record.acknowledged_by.is_some()),
                // Only the escalation itself pings the role; a nudge after it is a note on
                // the same message, not a second alert.
                mention: false,
            }));
        }
        Turn::outputs(out)
    }

    /// Open alerts seen here, then the journeys past their step's stall deadline in the
    /// engine's order (most overdue first), then alerts someone already took. At most
    /// [`STALLED_LINES`] lines: the rest are counted.
    fn stalled(&mut self, now: Timestamp, list: &[JourneySummary]) -> Turn {
        // (rank, journey, line): rank 0 needs someone, 1 is overdue, 2 is taken.
        let mut rows: Vec<(u8, JourneyId, String)> = Vec::new();
        let mut listed = HashSet::new();
        for j in list {
            if !listed.insert(j.journey_id) {
                continue;
            }
            // A failed journey's alert stays until someone takes it; completed, expired and
            // cancelled journeys need nobody.
            let failed = j.status == Status::Failed.as_str();
            if j.status != Status::Active.as_str() && !failed {
                continue;
            }
            let step = j.current_step.as_deref().unwrap_or("-");
            let key = AlertKey::new(j.journey_id, step.to_owned()).to_string();
            let alert = self.alerts.get(&key);
            let due = j.stall_at.is_some_and(|t| t <= now);
            if !due && alert.is_none() {
                continue;
            }
            let (rank, state) = match alert.map(AlertRecord::state) {
                Some(AlertState::Acknowledged { by }) => (2, format!("alert acknowledged by {by}")),
                Some(_) => (0, "alert open".to_owned()),
                None => (1, "no alert yet".to_owned()),
            };
            rows.push((
                rank,
                j.journey_id,
                format!(
                    "• {} at `{step}`: {}{}; last activity {}; {state}",
                    j.journey_id,
                    j.email_masked.as_deref().unwrap_or("address not given"),
                    if failed { "; failed" } else { "" },
                    render::hms(j.updated_at)
                ),
            ));
        }
        // Open alerts on journeys the engine no longer lists (erased, or a store reset).
        for (key, record) in &self.alerts {
            let Ok(k) = key.parse::<AlertKey>() else {
                continue;
            };
            if listed.contains(&k.journey) || record.acknowledged_by.is_some() {
                continue;
            }
            listed.insert(k.journey);
            rows.push((0, k.journey, format!("• {key}: {}", record.text)));
        }
        if rows.is_empty() {
            return reply(format!(
                "No stalled password resets as of {}.",
                render::hms(now)
            ));
        }
        // Stable: within a rank, the engine's order (most overdue first) is kept.
        rows.sort_by_key(|r| r.0);
        let more = rows.len().saturating_sub(STALLED_LINES);
        rows.truncate(STALLED_LINES);
        let buttons = rows
            .iter()
            .take(5)
            .map(|(_, j, _)| Button {
                custom_id: ButtonId::Show { journey: *j }.to_string(),
                label: format!("Show {}", &j.to_string()[..8]),
                style: ButtonStyle::Secondary,
            })
            .collect();
        let mut lines: Vec<String> = rows.into_iter().map(|(_, _, line)| line).collect();
        if more > 0 {
            lines.push(format!("…and {more} more not shown."));
        }
        Turn::outputs(vec![Output::Reply(Reply {
            text: format!(
                "Stalled password resets as of {}:\n{}",
                render::hms(now),
                lines.join("\n")
            ),
            buttons,
            ephemeral: true,
        })])
    }

    // ---------------------------------------------------------------- system

    fn system(&mut self, intent: SystemIntent) -> Turn {
        match intent {
            SystemIntent::AlertDelivered {
                dedup_key,
                text,
                update,
                mention,
                resolved,
            } => {
                let key = dedup_key.parse::<AlertKey>().ok();
                if resolved {
                    // Over: no buttons (acting on it would do nothing useful), no ping, and
                    // not listed as open any more. Notes taken here (who acknowledged or
                    // nudged) stay on the message.
                    let notes = self.alerts.remove(&dedup_key).map(|r| r.notes);
                    let mut shown = text.clone();
                    for n in notes.into_iter().flatten() {
                        shown.push('\n');
                        shown.push_str(&n);
                    }
                    return Turn::outputs(vec![Output::AlertUpdate(AlertUpdate {
                        dedup_key,
                        state: AlertState::Resolved { why: text },
                        text: shown,
                        buttons: Vec::new(),
                        mention: false,
                    })]);
                }
                let known = self.alerts.contains_key(&dedup_key);
                let record = self
                    .alerts
                    .entry(dedup_key.clone())
                    .or_insert_with(|| AlertRecord {
                        text: String::new(),
                        mention,
                        acknowledged_by: None,
                        notes: Vec::new(),
                    });
                record.text = text;
                record.mention = mention;
                let acknowledged = record.acknowledged_by.is_some();
                let buttons = key
                    .as_ref()
                    .map(|k| render::alert_buttons(k, acknowledged))
                    .unwrap_or_default();
                let out = if update || known {
                    Output::AlertUpdate(AlertUpdate {
                        dedup_key,
                        state: record.state(),
                        text: record.text(),
                        buttons,
                        mention,
                    })
                } else {
                    Output::Alert(Alert {
                        title: match &key {
                            Some(k) if k.step != "-" => {
                                format!("Password reset needs attention at `{}`", k.step)
                            }
                            _ => "Password reset needs attention".to_owned(),
                        },
                        dedup_key,
                        text: record.text(),
                        buttons,
                        mention,
                    })
                };
                Turn::outputs(vec![out])
            }
        }
    }

    // ---------------------------------------------------------------- shared

    /// What the person sees for `view`, with alert housekeeping for the journey.
    fn show(
        &mut self,
        journey: JourneyId,
        view: &JourneyView,
        refusal: Option<&Rejection>,
        lead: Option<&str>,
    ) -> Vec<Output> {
        let mut out = render::person(
            &self.config.surface,
            &self.config.start_hint,
            journey,
            view,
            refusal,
            lead,
        );
        out.extend(self.observe_alerts(journey, view));
        if view.status.is_finished() {
            self.owners.remove(&journey);
        }
        out
    }

    /// Resolves this chat's alerts of `journey` that `view` shows to be over: the journey
    /// left the alert's step, or finished (a failed journey's alert stays until taken).
    fn observe_alerts(&mut self, journey: JourneyId, view: &JourneyView) -> Vec<Output> {
        if view.status == Status::Failed || view.status == Status::NotStarted {
            return Vec::new();
        }
        let current = active_step(view).map(step_id);
        let over: Vec<String> = self
            .alerts
            .keys()
            .filter(|k| {
                k.parse::<AlertKey>()
                    .is_ok_and(|k| k.journey == journey && Some(k.step.as_str()) != current)
            })
            .cloned()
            .collect();
        over.into_iter()
            .filter_map(|dedup_key| {
                let record = self.alerts.remove(&dedup_key)?;
                let why = match current {
                    Some(step) => format!("the journey moved on to `{step}`"),
                    None => format!("the journey is {}", view.status.as_str()),
                };
                let mut text = record.text();
                text.push_str(&format!("\nResolved: {why}."));
                Some(Output::AlertUpdate(AlertUpdate {
                    dedup_key,
                    state: AlertState::Resolved { why },
                    text,
                    buttons: Vec::new(),
                    mention: false,
                }))
            })
            .collect()
    }

    fn request(&mut self, pending: Pending, action: EngineAction) -> Turn {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        self.pending.insert(ticket, pending);
        Turn {
            outputs: Vec::new(),
            next: Some(Request { ticket, action }),
        }
    }

    /// Marks `what` as in flight for `user`; `None` when it already is.
    fn guard(&mut self, user: &ChatUser, what: String) -> Option<Guard> {
        let g = Guard {
            user: Some(user.id.clone()),
            what,
        };
        self.in_flight.insert(g.clone()).then_some(g)
    }

    /// Marks `what` as in flight for every user; `None` when it already is.
    fn guard_shared(&mut self, what: String) -> Option<Guard> {
        let g = Guard { user: None, what };
        self.in_flight.insert(g.clone()).then_some(g)
    }

    fn release(&mut self, guard: Option<&Guard>) {
        if let Some(g) = guard {
            self.in_flight.remove(g);
        }
    }
}
