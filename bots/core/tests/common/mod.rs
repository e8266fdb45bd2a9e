//! A fake engine for the conversation core's tests: the seed journey's steps as plain data,
//! with the engine's rules that matter to a conversation (step order, attempts, resend and
//! call cooldowns, alerts). It answers [`EngineAction`]s the way a transport would, and
//! records every action so tests can assert what reached "the engine".
//!
//! Journey ids are `00000000-0000-0000-0000-0000000000NN` and codes use the digits 1-9 only,
//! so a code can never occur inside an id, a time or a count: a test that finds a code in
//! an output has found a leak.
#![allow(dead_code)]

use passage_bot::{
    Bot, ChatInput, ChatUser, EngineAction, EngineResult, Intent, Output, TimelineLine,
};
use passage_core::definition::{CodeChannel, VoiceConfirm};
use passage_core::journey::Rejection;
use passage_core::journey::Status;
use passage_core::journey::view::{JourneyView, OptionView, PHONE_RISK_NOTICE, StepView, TileView};
use passage_core::ports::{JourneyId, JourneySummary};
use passage_core::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

pub const T0: Timestamp = Timestamp(1_800_000_000_000);
pub const COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Identify,
    EmailCode,
    Choose,
    SmsCode,
    Voice,
    Password,
    Done,
}

impl Step {
    pub fn id(self) -> &'static str {
        match self {
            Step::Identify => "email",
            Step::EmailCode => "email-code",
            Step::Choose => "second-factor",
            Step::SmsCode => "sms-code",
            Step::Voice => "voice-call",
            Step::Password => "new-password",
            Step::Done => "done",
        }
    }

    pub const ALL: [Step; 7] = [
        Step::Identify,
        Step::EmailCode,
        Step::Choose,
        Step::SmsCode,
        Step::Voice,
        Step::Password,
        Step::Done,
    ];
}

#[derive(Debug, Clone)]
pub struct Sim {
    pub step: Step,
    pub status: Status,
    pub started: Timestamp,
    pub updated: Timestamp,
    pub email_masked: Option<String>,
    pub sends: u32,
    pub last_send: Option<Timestamp>,
    pub failures: u32,
    pub calls: u32,
    pub call_open: bool,
    pub code: String,
    pub finish_reason: Option<String>,
    /// An open support alert at the current step, and whether it was acknowledged.
    pub alert: Option<bool>,
    pub nudges: u32,
    pub stall_at: Option<Timestamp>,
}

/// What a transport's engine would be: journeys, a clock, and a log of every action.
#[derive(Debug)]
pub struct FakeEngine {
    pub now: Timestamp,
    pub journeys: BTreeMap<JourneyId, Sim>,
    pub log: Vec<EngineAction>,
    /// Every code this engine ever issued (the secrets a test looks for in outputs).
    pub codes: Vec<String>,
    next_journey: u32,
    seed: u64,
}

pub fn jid(n: u32) -> JourneyId {
    format!("00000000-0000-0000-0000-{n:012}")
        .parse()
        .expect("a uuid")
}

pub fn person(id: &str) -> ChatUser {
    ChatUser::person(id, "chat")
}

pub fn support(id: &str) -> ChatUser {
    ChatUser::support(id, "chat")
}

fn mask(email: &str) -> String {
    let (local, domain) = email.split_once('@').unwrap_or((email, "example.com"));
    let first = local.chars().next().unwrap_or('x');
    let last = local.chars().last().unwrap_or('x');
    let d = domain.chars().next().unwrap_or('e');
    format!("{first}•••{last}@{d}•••.com")
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeEngine {
    pub fn new() -> Self {
        Self {
            now: T0,
            journeys: BTreeMap::new(),
            log: Vec::new(),
            codes: Vec::new(),
            next_journey: 0,
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.plus(d);
    }

    /// A fresh 6-digit code of the digits 1-9.
    fn new_code(&mut self) -> String {
        let mut code = String::new();
        for _ in 0..6 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            code.push(char::from(b'1' + (self.seed % 9) as u8));
        }
        self.codes.push(code.clone());
        code
    }

    pub fn sim(&self, j: JourneyId) -> &Sim {
        &self.journeys[&j]
    }

    pub fn code_of(&self, j: JourneyId) -> String {
        self.journeys[&j].code.clone()
    }

    /// Submits that reached the engine, with their journeys.
    pub fn submits(&self) -> Vec<(JourneyId, ChatInput, ChatUser)> {
        self.log
            .iter()
            .filter_map(|a| match a {
                EngineAction::Submit { journey, input, by } => {
                    Some((*journey, input.clone(), by.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn enter(&mut self, j: JourneyId, step: Step) {
        let now = self.now;
        let code = match step {
            Step::EmailCode | Step::SmsCode => self.new_code(),
            _ => String::new(),
        };
        let s = self.journeys.get_mut(&j).expect("journey");
        s.step = step;
        s.sends = 0;
        s.failures = 0;
        s.calls = 0;
        s.call_open = false;
        s.last_send = None;
        s.alert = None;
        s.code = code;
        s.stall_at = Some(now.plus(Duration::from_secs(180)));
        match step {
            Step::EmailCode | Step::SmsCode => {
                s.sends = 1;
                s.last_send = Some(now);
            }
            Step::Voice => {
                s.calls = 1;
                s.call_open = true;
                s.last_send = Some(now);
            }
            Step::Done => {
                s.status = Status::Completed;
                s.stall_at = None;
            }
            _ => {}
        }
    }

    /// The person answered the call and pressed # (the phone, not the chat).
    pub fn confirm_call(&mut self, j: JourneyId) {
        if self.sim(j).step == Step::Voice && self.sim(j).call_open {
            self.enter(j, Step::Password);
        }
    }

    /// The call ended unanswered.
    pub fn miss_call(&mut self, j: JourneyId) {
        if let Some(s) = self.journeys.get_mut(&j) {
            s.call_open = false;
        }
    }

    /// The person set a password on the linked page (or the terminal did).
    pub fn set_password(&mut self, j: JourneyId, strong: bool) -> Option<Rejection> {
        if self.sim(j).step != Step::Password || self.sim(j).status != Status::Active {
            return Some(Rejection::new("step-not-allowed", "Not at this step."));
        }
        if !strong {
            return Some(Rejection::new(
                "weak-password",
                "Choose a longer password: at least 15 characters.",
            ));
        }
        self.enter(j, Step::Done);
        None
    }

    /// The person did the current step somewhere else (the web page): the chat's buttons
    /// for it are now stale.
    pub fn progress_elsewhere(&mut self, j: JourneyId) {
        let Some(s) = self.journeys.get(&j) else {
            return;
        };
        if s.status != Status::Active {
            return;
        }
        let next = match s.step {
            Step::Identify => {
                let s = self.journeys.get_mut(&j).expect("journey");
                s.email_masked = Some("w•••b@e•••.com".into());
                Step::EmailCode
            }
            Step::EmailCode => Step::Choose,
            Step::Choose => Step::SmsCode,
            Step::SmsCode | Step::Voice => Step::Password,
            Step::Password => Step::Done,
            Step::Done => return,
        };
        self.enter(j, next);
    }

    /// The stall scanner raised an alert at the current step.
    pub fn raise_alert(&mut self, j: JourneyId) -> Option<String> {
        let s = self.journeys.get_mut(&j)?;
        if s.status != Status::Active {
            return None;
        }
        s.alert = Some(false);
        Some(format!("{j}:{}", s.step.id()))
    }

    pub fn view(&self, j: JourneyId) -> JourneyView {
        let s = &self.journeys[&j];
        let step = match (s.status, s.step) {
            (Status::Active, step) | (Status::Completed, step @ Step::Done) => {
                Some(self.step_view(s, step))
            }
            _ => None,
        };
        JourneyView {
            status: s.status,
            definition_id: "password-reset".into(),
            definition_version: 1,
            expires_at: Some(s.started.plus(Duration::from_secs(900))),
            step,
            finish_reason: s.finish_reason.clone(),
        }
    }

    fn step_view(&self, s: &Sim, step: Step) -> StepView {
        let id = step.id().to_owned();
        let code = |prompt: &str, channel: CodeChannel, sent_to: Option<String>| StepView::Code {
            id: id.clone(),
            prompt: prompt.into(),
            channel,
            digits: 6,
            sent_to,
            expires_at: s.last_send.map(|t| t.plus(Duration::from_secs(300))),
            attempts_left: 5u32.saturating_sub(s.failures),
            resend_label: "Re-send code".into(),
            resends_left: 4u32.saturating_sub(s.sends),
            resend_available_at: s.last_send.map(|t| t.plus(COOLDOWN)),
        };
        match step {
            Step::Identify => StepView::Identify {
                id,
                prompt: "Enter your registered Email address".into(),
                action: "Send verification code".into(),
            },
            Step::EmailCode => code(
                "Enter the 6-digit code provided in the email",
                CodeChannel::Email,
                s.email_masked.clone(),
            ),
            Step::SmsCode => code(
                "Enter the 6-digit verification code you received via SMS",
                CodeChannel::Sms,
                Some("•••• ••• 678".into()),
            ),
            Step::Choose => StepView::Choose {
                id,
                prompt: "Select your preferred Multi-factor authentication method".into(),
                options: vec![
                    OptionView {
                        id: "sms".into(),
                        label: "Send SMS to my mobile".into(),
                    },
                    OptionView {
                        id: "call".into(),
                        label: "Call me on my landline or mobile".into(),
                    },
                ],
                phone_masked: Some("•••• ••• 678".into()),
                risk_notice: Some(PHONE_RISK_NOTICE.into()),
            },
            Step::Voice => StepView::Voice {
                id,
                prompt: "Answer the call and press # when prompted".into(),
                confirm: VoiceConfirm::PressPound,
                calling: Some("•••• ••• 678".into()),
                call_open: s.call_open,
                call_expires_at: s.last_send.map(|t| t.plus(Duration::from_secs(120))),
                calls_left: 3u32.saturating_sub(s.calls),
                call_again_available_at: s.last_send.map(|t| t.plus(COOLDOWN)),
            },
            Step::Password => StepView::SetPassword {
                id,
                prompt: "Reset Password".into(),
                policy: "portal".into(),
                requirements: vec![
                    "At least 15 characters".into(),
                    "Not a common or easily guessed password".into(),
                ],
            },
            Step::Done => StepView::Complete {
                id,
                prompt: "Your password is reset and you are signed in".into(),
                tiles: vec![
                    TileView {
                        title: "Manage a Network Application".into(),
                        portal: "Connections Portal".into(),
                        href: "/portal/connections".into(),
                    },
                    TileView {
                        title: "Engagement of Contracted Services and Equipment".into(),
                        portal: "Contractor Booking System".into(),
                        href: "/portal/contractor-booking".into(),
                    },
                ],
            },
        }
    }

    fn journey(&self, j: JourneyId, refusal: Option<Rejection>) -> EngineResult {
        EngineResult::Journey {
            journey: j,
            refusal,
            view: self.view(j),
        }
    }

    fn lines(&self, j: JourneyId) -> Vec<TimelineLine> {
        let s = &self.journeys[&j];
        let mut v = vec![TimelineLine {
            version: 1,
            recorded_at: s.started,
            event_type: "JourneyStarted".into(),
            description: "journey started".into(),
            actor: Some("person via chat".into()),
        }];
        if let Some(m) = &s.email_masked {
            v.push(TimelineLine {
                version: 2,
                recorded_at: s.started,
                event_type: "EmailSubmitted".into(),
                description: format!("email {m} submitted"),
                actor: Some("person via chat".into()),
            });
        }
        v
    }

    /// Performs `action` as a transport would, with the fake's rules.
    pub fn perform(&mut self, action: EngineAction) -> EngineResult {
        self.log.push(action.clone());
        match action {
            EngineAction::Start { email, .. } => {
                self.next_journey += 1;
                let j = jid(self.next_journey);
                self.journeys.insert(
                    j,
                    Sim {
                        step: Step::Identify,
                        status: Status::Active,
                        started: self.now,
                        updated: self.now,
                        email_masked: None,
                        sends: 0,
                        last_send: None,
                        failures: 0,
                        calls: 0,
                        call_open: false,
                        code: String::new(),
                        finish_reason: None,
                        alert: None,
                        nudges: 0,
                        stall_at: None,
                    },
                );
                let refusal = email.and_then(|e| self.submit(j, ChatInput::Email(e)));
                self.journey(j, refusal)
            }
            EngineAction::Submit { journey, input, .. } => {
                if !self.journeys.contains_key(&journey) {
                    return EngineResult::Failed {
                        message: format!("journey {journey} does not exist"),
                    };
                }
                let refusal = self.submit(journey, input);
                self.journey(journey, refusal)
            }
            EngineAction::Load { journey } => match self.journeys.contains_key(&journey) {
                true => self.journey(journey, None),
                false => EngineResult::Failed {
                    message: format!("journey {journey} does not exist"),
                },
            },
            EngineAction::Timeline { journey } => match self.journeys.contains_key(&journey) {
                true => EngineResult::Timeline {
                    journey,
                    lines: self.lines(journey),
                    view: self.view(journey),
                },
                false => EngineResult::Failed {
                    message: format!("journey {journey} does not exist"),
                },
            },
            EngineAction::Replay { journey, at } => match self.journeys.contains_key(&journey) {
                true => {
                    let lines = self.lines(journey);
                    EngineResult::Replayed {
                        journey,
                        at,
                        total: lines.len(),
                        lines,
                        view: self.view(journey),
                    }
                }
                false => EngineResult::Failed {
                    message: format!("journey {journey} does not exist"),
                },
            },
            EngineAction::ListStalled { alerts } => {
                // As the store's due-stalls query: active or failed journeys whose stall_at
                // has come, most overdue first; then the alerted journeys asked for.
                let mut due: Vec<JourneyId> = self
                    .journeys
                    .iter()
                    .filter(|(_, s)| matches!(s.status, Status::Active | Status::Failed))
                    .filter(|(_, s)| s.stall_at.is_some_and(|t| t <= self.now))
                    .map(|(j, _)| *j)
                    .collect();
                due.sort_by_key(|j| (self.journeys[j].stall_at, *j));
                due.truncate(passage_bot::STALLED_LIMIT);
                for j in alerts {
                    if self.journeys.contains_key(&j) && !due.contains(&j) {
                        due.push(j);
                    }
                }
                EngineResult::Journeys(due.iter().map(|j| self.summary(*j)).collect())
            }
        }
    }

    pub fn summary(&self, j: JourneyId) -> JourneySummary {
        let s = &self.journeys[&j];
        JourneySummary {
            journey_id: j,
            definition_id: "password-reset".into(),
            definition_version: 1,
            status: s.status.as_str().into(),
            current_step: Some(s.step.id().into()),
            email_masked: s.email_masked.clone(),
            started_at: s.started,
            updated_at: s.updated,
            version: 3,
            subject: None,
            failures: s.failures,
            stall_at: s.stall_at,
            stall_keep: false,
        }
    }

    fn submit(&mut self, j: JourneyId, input: ChatInput) -> Option<Rejection> {
        let now = self.now;
        let s = self.journeys.get(&j).expect("journey").clone();
        self.journeys.get_mut(&j).expect("journey").updated = now;
        let refuse = |code: &str, msg: &str| Some(Rejection::new(code, msg));
        match input {
            ChatInput::Cancel { reason } => {
                if s.status.is_finished() {
                    return refuse("finished", "This journey has already ended.");
                }
                let m = self.journeys.get_mut(&j).expect("journey");
                m.status = Status::Cancelled;
                m.finish_reason = Some(reason);
                return None;
            }
            ChatInput::AcknowledgeAlert => {
                let m = self.journeys.get_mut(&j).expect("journey");
                return match m.alert {
                    Some(false) => {
                        m.alert = Some(true);
                        None
                    }
                    _ => refuse("no-alert", "This journey has no open alert."),
                };
            }
            _ => {}
        }
        if s.status != Status::Active {
            return refuse("journey-finished", "This journey has ended.");
        }
        match (input, s.step) {
            (ChatInput::Nudge, _) => {
                self.journeys.get_mut(&j).expect("journey").nudges += 1;
                None
            }
            (ChatInput::Email(e), Step::Identify) => {
                if !e.contains('@') {
                    return refuse("malformed-email", "Enter a valid email address.");
                }
                self.journeys.get_mut(&j).expect("journey").email_masked = Some(mask(&e));
                self.enter(j, Step::EmailCode);
                None
            }
            (ChatInput::Code(c), Step::EmailCode | Step::SmsCode) => {
                if c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()) {
                    return refuse("malformed-code", "Enter the 6-digit code, digits only.");
                }
                if c == s.code {
                    let next = match s.step {
                        Step::EmailCode => Step::Choose,
                        _ => Step::Password,
                    };
                    self.enter(j, next);
                    return None;
                }
                let m = self.journeys.get_mut(&j).expect("journey");
                m.failures += 1;
                let left = 5 - m.failures.min(5);
                if left == 0 {
                    m.status = Status::Failed;
                    m.finish_reason = Some("too many wrong codes".into());
                    return refuse("too-many-attempts", "Too many wrong codes: start again.");
                }
                Some(Rejection::new(
                    "invalid-code",
                    format!(
                        "That code is not right. {left} attempt{} left.",
                        if left == 1 { "" } else { "s" }
                    ),
                ))
            }
            (ChatInput::Resend, Step::EmailCode | Step::SmsCode) => {
                if s.sends >= 4 {
                    return refuse("resend-limit", "No more codes for this step.");
                }
                if s.last_send.is_some_and(|t| now < t.plus(COOLDOWN)) {
                    return refuse("resend-cooldown", "Wait a little before asking again.");
                }
                let code = self.new_code();
                let m = self.journeys.get_mut(&j).expect("journey");
                m.sends += 1;
                m.last_send = Some(now);
                m.code = code;
                None
            }
            (ChatInput::Resend, Step::Voice) => {
                if s.call_open || s.calls >= 3 {
                    return refuse("call-limit", "No call can be placed now.");
                }
                if s.last_send.is_some_and(|t| now < t.plus(COOLDOWN)) {
                    return refuse("call-cooldown", "Wait a little before asking again.");
                }
                let m = self.journeys.get_mut(&j).expect("journey");
                m.calls += 1;
                m.call_open = true;
                m.last_send = Some(now);
                None
            }
            (ChatInput::Choose(o), Step::Choose) => match o.as_str() {
                "sms" => {
                    self.enter(j, Step::SmsCode);
                    None
                }
                "call" => {
                    self.enter(j, Step::Voice);
                    None
                }
                _ => refuse("unknown-option", "That is not one of the options."),
            },
            _ => refuse("step-not-allowed", "That is not what this step asks for."),
        }
    }
}

/// Runs one intent to the end against `engine`, returning everything shown.
pub fn converse(bot: &mut Bot, engine: &mut FakeEngine, intent: impl Into<Intent>) -> Vec<Output> {
    let mut shown = Vec::new();
    let mut turn = bot.handle(intent);
    loop {
        shown.append(&mut turn.outputs);
        let Some(request) = turn.next else {
            return shown;
        };
        let result = engine.perform(request.action);
        turn = bot
            .resume(engine.now, request.ticket, result)
            .expect("resume the ticket just issued");
    }
}

/// The replies among `outputs`.
pub fn replies(outputs: &[Output]) -> Vec<&passage_bot::Reply> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Reply(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// All reply texts, joined.
pub fn text(outputs: &[Output]) -> String {
    replies(outputs)
        .iter()
        .map(|r| r.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The custom ids of every button in `outputs`.
pub fn buttons(outputs: &[Output]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for o in outputs {
        let bs = match o {
            Output::Reply(r) | Output::Direct { reply: r, .. } => &r.buttons,
            Output::Alert(a) => &a.buttons,
            Output::AlertUpdate(u) => &u.buttons,
            _ => continue,
        };
        v.extend(bs.iter().map(|b| (b.label.clone(), b.custom_id.clone())));
    }
    v
}

/// The custom id of the button labelled `label`.
#[track_caller]
pub fn button(outputs: &[Output], label: &str) -> String {
    buttons(outputs)
        .into_iter()
        .find(|(l, _)| l == label)
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("no button {label:?} in {outputs:#?}"))
}
