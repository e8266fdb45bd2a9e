//! Property: whatever people and support do, in any order (typing, pressing buttons old and
//! new, double clicks, forged ids, the journey moving on in the web page meanwhile, alerts,
//! clock jumps), the core
//! * never sends the engine an action for a button that is not current: the journey is the
//!   presser's own, the step is the one the journey is at, and the input is the button's;
//! * never lets a person send a support input, or support a person's input;
//! * runs a double click at most once;
//! * never shows a code, a typed password or a typed address, in any output.

mod common;

use common::{FakeEngine, Step, jid};
use passage_bot::{
    AlertKey, Bot, BotConfig, ButtonId, ChatInput, ChatUser, EngineAction, Intent, Output,
    PersonIntent, Role, SupportIntent, Surface, SystemIntent,
};
use passage_core::journey::Status;
use passage_core::ports::JourneyId;
use proptest::prelude::*;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Typed {
    RightCode,
    Code(String),
    Email(String),
    Option(&'static str),
    Password(String),
    Junk,
}

#[derive(Debug, Clone)]
enum Op {
    Start {
        user: u8,
        email: Option<String>,
    },
    Type {
        user: u8,
        what: Typed,
    },
    /// A button seen in an earlier output (current or long stale).
    Press {
        user: u8,
        pick: usize,
    },
    /// One of the last few buttons shown (most likely current).
    PressRecent {
        user: u8,
        back: usize,
    },
    DoublePress {
        user: u8,
        pick: usize,
    },
    /// A custom id nobody was shown.
    Forged {
        user: u8,
        verb: usize,
        journey: u32,
        arg: usize,
    },
    Form {
        user: u8,
        pick: usize,
        right: bool,
    },
    Clock(u16),
    Elsewhere(u32),
    ConfirmCall(u32),
    MissCall(u32),
    SetPassword(u32, bool),
    Alert {
        journey: u32,
        update: bool,
        mention: bool,
        resolved: bool,
    },
    Show(u32),
    Replay(u32, usize),
    List,
    Ack(u32, usize),
    Nudge(u32),
    Cancel(u32),
}

fn code() -> impl Strategy<Value = String> {
    proptest::collection::vec(1u8..=9, 6).prop_map(|d| d.iter().map(|d| d.to_string()).collect())
}

fn email() -> impl Strategy<Value = String> {
    "[a-z]{4,8}".prop_map(|l| format!("{l}@example.com"))
}

fn password() -> impl Strategy<Value = String> {
    "[a-z]{7} [a-z]{7} [a-z]{7}"
}

fn typed() -> impl Strategy<Value = Typed> {
    prop_oneof![
        4 => Just(Typed::RightCode),
        2 => code().prop_map(Typed::Code),
        2 => email().prop_map(Typed::Email),
        2 => prop::sample::select(vec!["sms", "call", "Send SMS to my mobile", "CALL"]).prop_map(Typed::Option),
        1 => password().prop_map(Typed::Password),
        1 => Just(Typed::Junk),
    ]
}

/// Mostly the first person, so journeys get somewhere; sometimes the second person or
/// the support member.
fn who() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![6 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8)]
}

fn op() -> impl Strategy<Value = Op> {
    let user = who();
    let journey = 1u32..5;
    prop_oneof![
        1 => (user.clone(), proptest::option::of(email())).prop_map(|(user, email)| Op::Start { user, email }),
        6 => (user.clone(), typed()).prop_map(|(user, what)| Op::Type { user, what }),
        4 => (user.clone(), any::<usize>()).prop_map(|(user, pick)| Op::Press { user, pick }),
        8 => (user.clone(), 0usize..4).prop_map(|(user, back)| Op::PressRecent { user, back }),
        3 => (user.clone(), any::<usize>()).prop_map(|(user, pick)| Op::DoublePress { user, pick }),
        2 => (user.clone(), 0usize..7, journey.clone(), 0usize..10)
            .prop_map(|(user, verb, journey, arg)| Op::Forged { user, verb, journey, arg }),
        2 => (user, any::<usize>(), any::<bool>()).prop_map(|(user, pick, right)| Op::Form { user, pick, right }),
        2 => (0u16..400).prop_map(Op::Clock),
        2 => journey.clone().prop_map(Op::Elsewhere),
        2 => journey.clone().prop_map(Op::ConfirmCall),
        1 => journey.clone().prop_map(Op::MissCall),
        2 => (journey.clone(), any::<bool>()).prop_map(|(j, s)| Op::SetPassword(j, s)),
        2 => (journey.clone(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(journey, update, mention, resolved)| Op::Alert { journey, update, mention, resolved }),
        1 => journey.clone().prop_map(Op::Show),
        1 => (journey.clone(), 0usize..4).prop_map(|(j, at)| Op::Replay(j, at)),
        1 => Just(Op::List),
        2 => (journey.clone(), 0usize..7).prop_map(|(j, s)| Op::Ack(j, s)),
        2 => journey.clone().prop_map(Op::Nudge),
        1 => journey.prop_map(Op::Cancel),
    ]
}

fn user(n: u8) -> ChatUser {
    match n {
        0 => ChatUser::person("p0", "chat"),
        1 => ChatUser::person("p1", "chat"),
        _ => ChatUser::support("s0", "chat"),
    }
}

/// What caused the current conversation, to judge the engine actions it leads to.
#[derive(Debug, Clone)]
enum Cause {
    /// A press of `button` by `user`, whose own journey (before the press) was `own`.
    Press {
        user: ChatUser,
        own: Option<JourneyId>,
        button: Option<ButtonId>,
    },
    Form {
        user: ChatUser,
        own: Option<JourneyId>,
        button: Option<ButtonId>,
    },
    Text {
        user: ChatUser,
        own: Option<JourneyId>,
    },
    Other,
}

struct World {
    bot: Bot,
    engine: FakeEngine,
    seen: Vec<String>,
    secrets: Vec<String>,
}

fn step_of(e: &FakeEngine, j: JourneyId) -> Option<Step> {
    let s = e.journeys.get(&j)?;
    (s.status == Status::Active).then_some(s.step)
}

/// Judges one engine action against the fake engine's state at that moment (the state the
/// core has just loaded).
fn judge(e: &FakeEngine, cause: &Cause, action: &EngineAction) -> Result<(), TestCaseError> {
    let EngineAction::Submit { journey, input, by } = action else {
        // Reads, and starts: a start only ever comes from a StartReset intent.
        if let EngineAction::Start { .. } = action {
            prop_assert!(matches!(cause, Cause::Other), "a start caused by {cause:?}");
        }
        return Ok(());
    };
    let support_input = matches!(
        input,
        ChatInput::Cancel { .. } | ChatInput::Nudge | ChatInput::AcknowledgeAlert
    );
    prop_assert_eq!(
        support_input,
        by.role == Role::Support,
        "{:?} submitted by {:?}",
        input,
        by
    );
    let step = step_of(e, *journey);
    match cause {
        Cause::Press { user, own, button } => {
            let Some(button) = button else {
                return Err(TestCaseError::fail("a submit for a foreign custom id"));
            };
            prop_assert_eq!(button.journey(), *journey);
            if button.is_support() {
                prop_assert_eq!(by, user);
            } else {
                // Whoever presses a person's button acts as a person, on their own journey.
                prop_assert_eq!(by, &user.as_person());
                prop_assert_eq!(*own, Some(*journey), "a press for another journey acted");
            }
            match button {
                ButtonId::Resend { step: s, .. } => {
                    prop_assert_eq!(input, &ChatInput::Resend);
                    prop_assert_eq!(step.map(Step::id), Some(s.as_str()), "stale resend");
                }
                ButtonId::Choose { option, .. } => {
                    prop_assert_eq!(input, &ChatInput::Choose(option.clone()));
                    prop_assert_eq!(step, Some(Step::Choose), "stale choice");
                }
                ButtonId::Acknowledge { step: s, .. } => {
                    prop_assert_eq!(input, &ChatInput::AcknowledgeAlert);
                    let failed = e.journeys[journey].status == Status::Failed;
                    prop_assert!(
                        failed || step.map(Step::id) == Some(s.as_str()),
                        "stale acknowledgement"
                    );
                }
                ButtonId::Nudge { step: s, .. } => {
                    prop_assert_eq!(input, &ChatInput::Nudge);
                    prop_assert_eq!(step.map(Step::id), Some(s.as_str()), "stale nudge");
                }
                ButtonId::Check { .. } | ButtonId::EnterCode { .. } | ButtonId::Show { .. } => {
                    return Err(TestCaseError::fail(format!(
                        "{button:?} changed the journey with {input:?}"
                    )));
                }
            }
        }
        Cause::Form { user, own, button } => {
            prop_assert_eq!(by, &user.as_person());
            let Some(ButtonId::EnterCode { step: s, .. }) = button else {
                return Err(TestCaseError::fail("a submit for a form that is not ours"));
            };
            prop_assert_eq!(*own, Some(*journey));
            prop_assert!(matches!(input, ChatInput::Code(_)));
            prop_assert_eq!(step.map(Step::id), Some(s.as_str()), "stale form");
        }
        Cause::Text { user, own } => {
            prop_assert_eq!(by, &user.as_person());
            prop_assert_eq!(*own, Some(*journey));
            prop_assert!(
                matches!(
                    input,
                    ChatInput::Email(_) | ChatInput::Code(_) | ChatInput::Choose(_)
                ),
                "{:?} from typed text",
                input
            );
        }
        Cause::Other => {
            prop_assert_eq!(by.role, Role::Support, "{:?} from {:?}", input, by);
        }
    }
    Ok(())
}

impl World {
    fn new(surface: Surface) -> Self {
        Self {
            bot: Bot::new(BotConfig::new(surface, "Start again with /reset.")),
            engine: FakeEngine::new(),
            seen: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Runs `intent` to the end, judging every engine action; returns the accepted submits.
    fn run(&mut self, intent: Intent, cause: &Cause) -> Result<usize, TestCaseError> {
        let mut turn = self.bot.handle(intent);
        let mut accepted = 0;
        loop {
            let outputs = std::mem::take(&mut turn.outputs);
            self.look(&outputs)?;
            let Some(request) = turn.next else {
                return Ok(accepted);
            };
            judge(&self.engine, cause, &request.action)?;
            let submit = matches!(request.action, EngineAction::Submit { .. });
            let result = self.engine.perform(request.action);
            if submit
                && matches!(
                    &result,
                    passage_bot::EngineResult::Journey { refusal: None, .. }
                )
            {
                accepted += 1;
            }
            turn = self
                .bot
                .resume(self.engine.now, request.ticket, result)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }

    /// Checks outputs for secrets and well-formed buttons, and remembers the buttons.
    fn look(&mut self, outputs: &[Output]) -> Result<(), TestCaseError> {
        for o in outputs {
            for t in o.visible_text() {
                for s in self.secrets.iter().chain(&self.engine.codes) {
                    prop_assert!(!t.contains(s.as_str()), "secret {:?} shown in {:?}", s, o);
                }
            }
            let buttons = match o {
                Output::Reply(r) => {
                    prop_assert!(r.ephemeral, "a reply that is not ephemeral: {:?}", r);
                    &r.buttons
                }
                Output::Direct { reply, .. } => &reply.buttons,
                Output::Alert(a) => &a.buttons,
                Output::AlertUpdate(u) => &u.buttons,
                Output::Form(f) => {
                    self.seen.push(f.custom_id.clone());
                    continue;
                }
                _ => continue,
            };
            for b in buttons {
                prop_assert!(b.custom_id.len() <= passage_bot::MAX_CUSTOM_ID_LEN);
                prop_assert!(b.custom_id.parse::<ButtonId>().is_ok(), "{}", b.custom_id);
                self.seen.push(b.custom_id.clone());
            }
        }
        Ok(())
    }

    fn observe(
        &mut self,
        j: JourneyId,
        refusal: Option<passage_core::journey::Rejection>,
    ) -> Result<(), TestCaseError> {
        let out = self.bot.observe(j, refusal.as_ref(), &self.engine.view(j));
        self.look(&out)
    }

    fn press(&mut self, who: ChatUser, custom_id: String) -> Result<usize, TestCaseError> {
        let cause = Cause::Press {
            own: self.bot.journey_of(&who.id),
            button: custom_id.parse().ok(),
            user: who.clone(),
        };
        let before = self.engine.log.len();
        let accepted = self.run(
            PersonIntent::Press {
                from: who.clone(),
                custom_id: custom_id.clone(),
            }
            .into(),
            &cause,
        )?;
        // A person's press for a journey that is not theirs does not even reach the engine.
        if let Cause::Press {
            own,
            button: Some(b),
            ..
        } = &cause
            && !b.is_support()
            && *own != Some(b.journey())
        {
            prop_assert_eq!(
                self.engine.log.len(),
                before,
                "{} reached the engine",
                custom_id
            );
        }
        Ok(accepted)
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let support = user(2);
        match op {
            Op::Start { user: u, email } => {
                if let Some(e) = &email {
                    self.secrets.push(e.clone());
                }
                self.run(
                    PersonIntent::StartReset {
                        from: user(u),
                        email,
                    }
                    .into(),
                    &Cause::Other,
                )?;
            }
            Op::Type { user: u, what } => {
                let who = user(u);
                let own = self.bot.journey_of(&who.id);
                let text = match what {
                    Typed::RightCode => own
                        .and_then(|j| self.engine.journeys.get(&j))
                        .map(|s| s.code.clone())
                        .unwrap_or_else(|| "987654".into()),
                    Typed::Code(c) | Typed::Email(c) | Typed::Password(c) => {
                        self.secrets.push(c.clone());
                        c
                    }
                    Typed::Option(o) => o.into(),
                    Typed::Junk => "hello there".into(),
                };
                self.run(
                    PersonIntent::Text {
                        from: who.clone(),
                        text,
                    }
                    .into(),
                    &Cause::Text { user: who, own },
                )?;
            }
            Op::Press { user: u, pick } => {
                if let Some(id) = self.pick(pick) {
                    self.press(user(u), id)?;
                }
            }
            Op::PressRecent { user: u, back } => {
                if let Some(id) = self.seen.iter().rev().nth(back).cloned() {
                    self.press(user(u), id)?;
                }
            }
            Op::DoublePress { user: u, pick } => {
                if let Some(id) = self.pick(pick) {
                    let first = self.press(user(u), id.clone())?;
                    let second = self.press(user(u), id.clone())?;
                    prop_assert!(
                        first + second <= 1,
                        "a double click on {} changed the journey twice",
                        id
                    );
                }
            }
            Op::Forged {
                user: u,
                verb,
                journey,
                arg,
            } => {
                let verbs = ["resend", "choose", "code", "check", "ack", "nudge", "show"];
                let args = [
                    "email",
                    "email-code",
                    "second-factor",
                    "sms-code",
                    "voice-call",
                    "new-password",
                    "done",
                    "sms",
                    "call",
                    "bogus",
                ];
                let id = match verbs[verb] {
                    "show" => format!("passage:show:{}", jid(journey)),
                    v => format!("passage:{v}:{}:{}", jid(journey), args[arg]),
                };
                self.press(user(u), id)?;
            }
            Op::Form {
                user: u,
                pick,
                right,
            } => {
                let Some(id) = self.pick(pick) else {
                    return Ok(());
                };
                let who = user(u);
                let own = self.bot.journey_of(&who.id);
                let value = match (right, own.and_then(|j| self.engine.journeys.get(&j))) {
                    (true, Some(s)) => s.code.clone(),
                    _ => "246813".into(),
                };
                self.secrets.push("246813".into());
                let cause = Cause::Form {
                    user: who.clone(),
                    own,
                    button: id.parse().ok(),
                };
                self.run(
                    PersonIntent::FormSubmitted {
                        from: who,
                        custom_id: id,
                        value,
                    }
                    .into(),
                    &cause,
                )?;
            }
            Op::Clock(s) => self.engine.advance(Duration::from_secs(u64::from(s))),
            Op::Elsewhere(j) => self.engine.progress_elsewhere(jid(j)),
            Op::ConfirmCall(j) => {
                if self.engine.journeys.contains_key(&jid(j)) {
                    self.engine.confirm_call(jid(j));
                    self.observe(jid(j), None)?;
                }
            }
            Op::MissCall(j) => {
                if self.engine.journeys.contains_key(&jid(j)) {
                    self.engine.miss_call(jid(j));
                    self.observe(jid(j), None)?;
                }
            }
            Op::SetPassword(j, strong) => {
                if self.engine.journeys.contains_key(&jid(j)) {
                    let r = self.engine.set_password(jid(j), strong);
                    self.observe(jid(j), r)?;
                }
            }
            Op::Alert {
                journey,
                update,
                mention,
                resolved,
            } => {
                let j = jid(journey);
                let masked = self
                    .engine
                    .journeys
                    .get(&j)
                    .and_then(|s| s.email_masked.clone());
                if let Some(key) = self.engine.raise_alert(j) {
                    self.run(
                        SystemIntent::AlertDelivered {
                            dedup_key: key,
                            text: format!(
                                "Reset journey {j} for {}: no progress",
                                masked.unwrap_or_default()
                            ),
                            update,
                            mention,
                            resolved,
                        }
                        .into(),
                        &Cause::Other,
                    )?;
                }
            }
            Op::Show(j) => {
                self.run(
                    SupportIntent::ShowJourney {
                        from: support,
                        journey: jid(j),
                    }
                    .into(),
                    &Cause::Other,
                )?;
            }
            Op::Replay(j, at) => {
                self.run(
                    SupportIntent::ReplayJourney {
                        from: support,
                        journey: jid(j),
                        at,
                    }
                    .into(),
                    &Cause::Other,
                )?;
            }
            Op::List => {
                self.run(
                    SupportIntent::ListStalled { from: support }.into(),
                    &Cause::Other,
                )?;
            }
            Op::Ack(j, s) => {
                let step = Step::ALL[s].id();
                let key = AlertKey::new(jid(j), step);
                // The command form is judged like the alert's button.
                let cause = Cause::Press {
                    user: support.clone(),
                    own: None,
                    button: Some(ButtonId::Acknowledge {
                        journey: jid(j),
                        step: step.into(),
                    }),
                };
                self.run(
                    SupportIntent::AcknowledgeAlert { from: support, key }.into(),
                    &cause,
                )?;
            }
            Op::Nudge(j) => {
                self.run(
                    SupportIntent::NudgeUser {
                        from: support,
                        journey: jid(j),
                    }
                    .into(),
                    &Cause::Other,
                )?;
            }
            Op::Cancel(j) => {
                self.run(
                    SupportIntent::CancelJourney {
                        from: support,
                        journey: jid(j),
                        reason: "asked by the caller".into(),
                    }
                    .into(),
                    &Cause::Other,
                )?;
            }
        }
        prop_assert_eq!(self.bot.pending(), 0, "a ticket left open");
        Ok(())
    }

    fn pick(&self, pick: usize) -> Option<String> {
        (!self.seen.is_empty()).then(|| self.seen[pick % self.seen.len()].clone())
    }
}

/// A run: the first person starts a reset (so there is a journey to get somewhere with),
/// then anything happens.
fn journey_ops() -> impl Strategy<Value = Vec<Op>> {
    (email(), proptest::collection::vec(op(), 1..80)).prop_map(|(email, mut ops)| {
        ops.insert(
            0,
            Op::Start {
                user: 0,
                email: Some(email),
            },
        );
        ops
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_stale_action_no_double_action_no_secret_on_a_terminal(ops in journey_ops()) {
        let mut w = World::new(Surface::TERMINAL);
        for op in ops {
            w.apply(op)?;
        }
    }

    #[test]
    fn no_stale_action_no_double_action_no_secret_on_chat(ops in journey_ops()) {
        let mut w = World::new(Surface::CHAT);
        for op in ops {
            w.apply(op)?;
        }
    }
}

/// The property's own machinery catches what it claims to: a world that shows a code fails.
#[test]
fn the_secret_check_bites() {
    let mut w = World::new(Surface::TERMINAL);
    w.secrets.push("493817".into());
    let leak = Output::Reply(passage_bot::Reply {
        text: "your code is 493817".into(),
        buttons: Vec::new(),
        ephemeral: true,
    });
    assert!(w.look(&[leak]).is_err());
    // ... and a stale resend would be judged stale.
    let mut e = FakeEngine::new();
    e.perform(EngineAction::Start {
        workflow: "password-reset".into(),
        email: Some("alice@example.com".into()),
        by: user(0),
    });
    e.progress_elsewhere(jid(1));
    let cause = Cause::Press {
        user: user(0),
        own: Some(jid(1)),
        button: Some(ButtonId::Resend {
            journey: jid(1),
            step: "email-code".into(),
        }),
    };
    let stale = EngineAction::Submit {
        journey: jid(1),
        input: ChatInput::Resend,
        by: user(0),
    };
    assert!(judge(&e, &cause, &stale).is_err());
}
