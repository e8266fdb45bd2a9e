//! Given/when/then tests of every step kind and rule, on the shipped definitions.

use super::*;
use crate::definition::{Definition, load};
use crate::password::PasswordContext;
use crate::secrets::tests::TestEntropy;
use crate::secrets::{Argon2id, Keys, unseal};
use crate::time::Timestamp;
use std::time::Duration;
use uuid::Uuid;

const SEED: &str = include_str!("../../../../workflows/password-reset.toml");
const VOICE_CODE: &str = include_str!("../../../../workflows/email-voice-code.toml");
const EMAIL_SMS: &str = include_str!("../../../../workflows/email-sms.toml");
const T0: i64 = 1_795_000_000_000;
const STRONG: &str = "correct horse battery staple";

pub(crate) fn seed_definition() -> Definition {
    load("password-reset.toml", SEED).expect("the seed definition loads")
}

/// A journey under test: decisions are applied as the runtime would apply them.
pub(crate) struct Journey {
    pub def: Definition,
    pub events: Vec<JourneyEvent>,
    pub effects: Vec<Effect>,
    pub timers: Vec<Timer>,
    pub now: Timestamp,
    pub rng: TestEntropy,
    pub keys: Keys,
    pub id: crate::ports::JourneyId,
    /// What the runtime would read from the journeys read model (R16).
    pub subject_failures: u32,
}

impl Journey {
    pub fn given(def: Definition) -> Self {
        let mut j = Self {
            def,
            events: vec![],
            effects: vec![],
            timers: vec![],
            now: Timestamp(T0),
            rng: TestEntropy(42),
            keys: Keys::derive(b"test master secret"),
            id: crate::ports::JourneyId(Uuid::from_u128(0xabc)),
            subject_failures: 0,
        };
        let id = j.id;
        let r = j.when(Command::Start {
            journey_id: id,
            origin: "test".into(),
        });
        assert_eq!(
            r.reply,
            Reply::Accepted {
                session_token: None
            }
        );
        j
    }

    pub fn state(&self) -> JourneyState {
        JourneyState::from_events(&self.events)
    }

    pub fn when(&mut self, cmd: Command) -> Decision {
        let state = self.state();
        let hasher = Argon2id::new(256, 1, 1);
        let mut ctx = Context {
            journey_id: self.id,
            now: self.now,
            rng: &mut self.rng,
            keys: &self.keys,
            hasher: &hasher,
            subject_failures: self.subject_failures,
        };
        let d = decide(&state, &self.def, &cmd, &mut ctx);
        self.events.extend(d.events.iter().cloned());
        self.effects.extend(d.effects.iter().cloned());
        self.timers.extend(d.timers.iter().cloned());
        d
    }

    pub fn after(&mut self, d: Duration) -> &mut Self {
        self.now = self.now.plus(d);
        self
    }

    /// The code in the last SendCode (or spoken-code call) effect, as the person would read it.
    pub fn last_code(&self) -> String {
        self.effects
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::SendCode {
                    effect_id,
                    sealed_code,
                    ..
                } => unseal(&self.keys, *effect_id, sealed_code),
                Effect::PlaceCall {
                    effect_id,
                    sealed_code: Some(s),
                    ..
                } => unseal(&self.keys, *effect_id, s),
                _ => None,
            })
            .expect("a code was sent")
    }

    pub fn email(&mut self, found: bool) -> Decision {
        self.when(Command::SubmitEmail {
            email_masked: "a•••e@e•••.com".into(),
            subject: "subject-alice".into(),
            account: found.then(|| FoundAccount {
                account_id: "acct-alice".into(),
                phone_masked: Some("+61 ••• ••• 678".into()),
            }),
        })
    }

    pub fn code(&mut self, code: &str) -> Decision {
        self.when(Command::SubmitCode {
            code: SecretString(code.into()),
        })
    }

    pub fn password(&mut self, new: &str, confirm: &str) -> Decision {
        self.when(Command::SetPassword {
            new: SecretString(new.into()),
            confirm: SecretString(confirm.into()),
            context: PasswordContext {
                email: "alice@example.com".into(),
                display_name: "Alice Example".into(),
            },
        })
    }

    pub fn step(&self) -> String {
        self.state().current_step.map(|s| s.0).unwrap_or_default()
    }

    pub fn last_event(&self) -> &JourneyEvent {
        self.events.last().expect("an event")
    }

    /// Passes the email code step.
    pub fn verified_email(def: Definition) -> Self {
        let mut j = Self::given(def);
        j.email(true);
        let c = j.last_code();
        assert!(accepted(&j.code(&c)));
        j
    }
}

pub(crate) fn accepted(d: &Decision) -> bool {
    matches!(d.reply, Reply::Accepted { .. })
}

fn rejected_with(d: &Decision) -> &str {
    match &d.reply {
        Reply::Rejected(r) => &r.code,
        Reply::Accepted { .. } => "accepted",
    }
}

fn wrong(code: &str) -> String {
    // A different code of the same shape.
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

#[test]
fn given_a_new_journey_when_started_then_it_records_the_pinned_definition_and_lifetime_timer() {
    let j = Journey::given(seed_definition());
    let JourneyEvent::JourneyStarted {
        definition_id,
        definition_hash,
        expires_at,
        ..
    } = &j.events[0]
    else {
        panic!("first event is JourneyStarted: {:?}", j.events[0]);
    };
    assert_eq!(definition_id, "password-reset");
    assert_eq!(definition_hash, &j.def.content_hash);
    assert_eq!(*expires_at, Timestamp(T0).plus(j.def.lifetime));
    assert_eq!(j.timers.len(), 1);
    assert_eq!(j.timers[0].kind, TimerKind::JourneyLifetime);
    assert_eq!(j.step(), "email");
}

#[test]
fn given_identify_step_when_email_of_an_account_then_a_code_is_sent_and_only_its_hash_stored() {
    let mut j = Journey::given(seed_definition());
    let d = j.email(true);
    assert!(accepted(&d));
    assert_eq!(j.step(), "email-code");
    assert!(matches!(
        d.effects.as_slice(),
        [Effect::SendCode {
            channel: CodeChannel::Email,
            ..
        }]
    ));
    let code = j.last_code();
    assert_eq!(code.len(), 6);
    let events_json = serde_json::to_string(&j.events).unwrap();
    let effects_json = serde_json::to_string(&j.effects).unwrap();
    assert!(
        !events_json.contains(&code),
        "R11: the code is never stored in plain form"
    );
    assert!(
        !effects_json.contains(&code),
        "R11: the outbox holds the code sealed"
    );
    assert!(
        matches!(
            j.timers.last().map(|t| &t.kind),
            Some(TimerKind::CodeExpiry { issue: 1, .. })
        ),
        "the code's expiry is a durable timer"
    );
}

#[test]
fn given_unknown_account_when_walking_the_code_step_then_it_looks_the_same_and_never_verifies() {
    let mut known = Journey::given(seed_definition());
    known.email(true);
    let mut unknown = Journey::given(seed_definition());
    let d = unknown.email(false);
    assert!(accepted(&d), "R1: same reply for unknown accounts");
    assert!(
        d.effects.is_empty(),
        "nothing is sent for an unknown account"
    );
    let view = |j: &Journey| view::JourneyView::build(&j.state(), &j.def);
    assert_eq!(
        view(&known),
        view(&unknown),
        "R3: the next screen is identical"
    );
    for attempt in 1..=4 {
        let r = unknown.code("123456");
        assert_eq!(rejected_with(&r), "invalid-code", "attempt {attempt}");
    }
    assert_eq!(rejected_with(&unknown.code("000000")), "too-many-attempts");
    assert_eq!(unknown.state().status, Status::Failed);
}

#[test]
fn given_code_step_when_wrong_code_then_attempt_is_counted_and_refused() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let c = j.last_code();
    let d = j.code(&wrong(&c));
    assert_eq!(rejected_with(&d), "invalid-code");
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CodeAttemptFailed {
            attempt: 1,
            attempts_left: 4,
            reason: AttemptFailure::Wrong,
            ..
        }
    ));
    assert_eq!(j.step(), "email-code");
    assert!(
        accepted(&j.code(&c)),
        "the right code still works after one failure"
    );
}

#[test]
fn given_code_step_when_code_at_4_59_then_accepted() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let c = j.last_code();
    j.after(Duration::from_secs(4 * 60 + 59));
    assert!(accepted(&j.code(&c)));
    assert_eq!(j.step(), "second-factor");
}

#[test]
fn given_code_step_when_code_at_5_00_then_rejected_as_expired() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let c = j.last_code();
    j.after(Duration::from_secs(5 * 60));
    let d = j.code(&c);
    assert_eq!(rejected_with(&d), "code-expired");
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CodeAttemptFailed {
            reason: AttemptFailure::Expired,
            ..
        }
    ));
}

#[test]
fn given_code_step_when_attempt_limit_reached_then_journey_fails_and_stays_failed() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let c = j.last_code();
    for _ in 0..4 {
        assert_eq!(rejected_with(&j.code(&wrong(&c))), "invalid-code");
    }
    assert_eq!(rejected_with(&j.code(&wrong(&c))), "too-many-attempts");
    assert_eq!(j.state().status, Status::Failed);
    // Even the right code is refused now.
    assert_eq!(rejected_with(&j.code(&c)), "journey-finished");
}

#[test]
fn given_code_step_when_resend_then_old_code_dies_and_failure_count_is_kept() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let old = j.last_code();
    for _ in 0..4 {
        j.code(&wrong(&old));
    }
    assert_eq!(rejected_with(&j.when(Command::Resend)), "resend-too-soon");
    j.after(Duration::from_secs(30));
    let d = j.when(Command::Resend);
    assert!(accepted(&d));
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CodeIssued { issue: 2, .. }
    ));
    let new = j.last_code();
    assert_ne!(old, new);
    assert_eq!(
        j.state().step_failures,
        4,
        "R14: resend does not reset failures"
    );
    // The old code is now wrong, and it is the fifth attempt: the journey locks.
    assert_eq!(rejected_with(&j.code(&old)), "too-many-attempts");
    assert_eq!(j.state().status, Status::Failed);
}

#[test]
fn given_code_step_when_resend_then_new_code_verifies() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let old = j.last_code();
    j.after(Duration::from_secs(31));
    j.when(Command::Resend);
    let new = j.last_code();
    assert_eq!(
        rejected_with(&j.code(&old)),
        "invalid-code",
        "R14: the old code is dead"
    );
    assert!(accepted(&j.code(&new)));
}

#[test]
fn given_code_step_when_resend_limit_reached_then_refused() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let crate::definition::StepKind::Code(c) = &j.def.step(&"email-code".into()).unwrap().kind
    else {
        panic!("email-code is a code step");
    };
    let max = c.resend.max;
    for _ in 0..max {
        j.after(Duration::from_secs(60));
        assert!(accepted(&j.when(Command::Resend)));
    }
    j.after(Duration::from_secs(60));
    assert_eq!(rejected_with(&j.when(Command::Resend)), "resend-limit");
}

#[test]
fn given_code_step_when_malformed_codes_then_refused_without_counting() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    for bad in [
        " 123456",
        "123456 ",
        "12345",
        "1234567",
        "１２３４５６",
        "١٢٣٤٥٦",
        "123456\n",
        "0x1E240",
        "+12345",
        "%_%_%_",
        "12\u{0}456",
        "",
    ] {
        assert_eq!(rejected_with(&j.code(bad)), "malformed-code", "{bad:?}");
    }
    let long = "1".repeat(1 << 20);
    assert_eq!(rejected_with(&j.code(&long)), "malformed-code");
    assert_eq!(j.state().step_failures, 0);
}

#[test]
fn given_any_step_when_a_later_step_is_attempted_then_refused_and_recorded() {
    let mut j = Journey::given(seed_definition());
    let d = j.password(STRONG, STRONG);
    assert_eq!(rejected_with(&d), "step-not-allowed");
    assert!(matches!(j.last_event(), JourneyEvent::InputRejected { .. }));
    j.email(true);
    assert_eq!(
        rejected_with(&j.when(Command::Choose {
            option: "sms".into()
        })),
        "step-not-allowed"
    );
    assert_eq!(
        rejected_with(&j.password(STRONG, STRONG)),
        "step-not-allowed"
    );
    assert_eq!(j.step(), "email-code", "R28: nothing was skipped");
}

#[test]
fn given_sms_branch_when_completed_then_password_applied_notified_and_session_issued() {
    let mut j = Journey::verified_email(seed_definition());
    assert_eq!(
        rejected_with(&j.when(Command::Choose {
            option: "fax".into()
        })),
        "unknown-option"
    );
    assert!(accepted(&j.when(Command::Choose {
        option: "sms".into()
    })));
    assert!(matches!(
        j.effects.last(),
        Some(Effect::SendCode {
            channel: CodeChannel::Sms,
            ..
        })
    ));
    let sms = j.last_code();
    assert!(accepted(&j.code(&sms)));
    assert_eq!(j.step(), "new-password");
    assert_eq!(
        rejected_with(&j.password("short", "short")),
        "password-policy"
    );
    assert!(matches!(
        j.last_event(),
        JourneyEvent::PasswordRejected { .. }
    ));
    assert_eq!(
        rejected_with(&j.password(STRONG, "correct horse battery stapler")),
        "password-policy"
    );
    let d = j.password(STRONG, STRONG);
    let Reply::Accepted {
        session_token: Some(token),
    } = &d.reply
    else {
        panic!("completing signs the person in: {:?}", d.reply);
    };
    assert_eq!(token.len(), 64);
    assert!(matches!(
        d.effects.as_slice(),
        [Effect::ApplyPassword { phc, notify_at: Some(_), .. }] if phc.starts_with("$argon2id$")
    ));
    let s = j.state();
    assert_eq!(s.status, Status::Completed);
    assert!(
        !serde_json::to_string(&j.events)
            .unwrap()
            .contains(token.as_str())
    );
    let view = view::JourneyView::build(&s, &j.def);
    let Some(view::StepView::Complete { tiles, .. }) = view.step else {
        panic!("a completed journey shows its tiles");
    };
    let titles: Vec<_> = tiles
        .iter()
        .map(|t| (t.title.as_str(), t.portal.as_str()))
        .collect();
    assert_eq!(
        titles,
        [
            ("Manage a Network Application", "Connections Portal"),
            (
                "Engagement of Contracted Services and Equipment",
                "Contractor Booking System"
            ),
        ]
    );
}

#[test]
fn given_voice_branch_when_pound_pressed_then_confirmed_once() {
    let mut j = Journey::verified_email(seed_definition());
    assert!(accepted(&j.when(Command::Choose {
        option: "call".into()
    })));
    let JourneyEvent::CallPlaced { call_id, .. } = j.last_event().clone() else {
        panic!("choosing the call places it");
    };
    assert!(matches!(
        j.effects.last(),
        Some(Effect::PlaceCall {
            sealed_code: None,
            ..
        })
    ));
    assert!(accepted(&j.when(Command::CallKeys {
        call_id,
        digits: "#".into()
    })));
    assert_eq!(j.step(), "new-password");
    let again = j.when(Command::CallKeys {
        call_id,
        digits: "#".into(),
    });
    assert_eq!(
        rejected_with(&again),
        "call-not-active",
        "a confirmation is single-use"
    );
}

#[test]
fn given_voice_branch_when_wrong_key_or_voicemail_then_fails_closed() {
    let mut j = Journey::verified_email(seed_definition());
    j.when(Command::Choose {
        option: "call".into(),
    });
    let JourneyEvent::CallPlaced { call_id, .. } = j.last_event().clone() else {
        panic!()
    };
    assert_eq!(
        rejected_with(&j.when(Command::CallKeys {
            call_id,
            digits: "1".into()
        })),
        "wrong-key"
    );
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CallFailed {
            reason: CallFailure::WrongKey,
            ..
        }
    ));
    assert_eq!(
        rejected_with(&j.when(Command::CallKeys {
            call_id,
            digits: "#".into()
        })),
        "call-not-active",
        "a failed call cannot be confirmed later"
    );
    j.after(Duration::from_secs(30));
    assert!(accepted(&j.when(Command::Resend)));
    let JourneyEvent::CallPlaced {
        call_id: second,
        call: 2,
        ..
    } = j.last_event().clone()
    else {
        panic!("call me again places call #2");
    };
    j.when(Command::CallEnded {
        call_id: second,
        reason: CallFailure::Voicemail,
    });
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CallFailed {
            reason: CallFailure::Voicemail,
            ..
        }
    ));
    assert_eq!(
        j.step(),
        "voice-call",
        "voicemail does not complete the step (R26)"
    );
}

#[test]
fn given_voice_branch_when_call_times_out_then_timer_fails_it() {
    let mut j = Journey::verified_email(seed_definition());
    j.when(Command::Choose {
        option: "call".into(),
    });
    let JourneyEvent::CallPlaced {
        call_id,
        expires_at,
        ..
    } = j.last_event().clone()
    else {
        panic!()
    };
    j.now = expires_at;
    let d = j.when(Command::TimerFired {
        timer: TimerKind::CallTimeout { call_id },
    });
    assert!(accepted(&d));
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CallFailed {
            reason: CallFailure::TimedOut,
            ..
        }
    ));
}

#[test]
fn given_spoken_code_definition_when_code_from_call_typed_then_confirmed() {
    let def = load("email-voice-code.toml", VOICE_CODE).unwrap();
    let mut j = Journey::verified_email(def);
    assert!(matches!(
        j.effects.last(),
        Some(Effect::PlaceCall {
            sealed_code: Some(_),
            ..
        })
    ));
    let spoken = j.last_code();
    let JourneyEvent::CallPlaced { call_id, .. } = j.last_event().clone() else {
        panic!()
    };
    assert_eq!(
        rejected_with(&j.when(Command::CallKeys {
            call_id,
            digits: "#".into()
        })),
        "not-expected"
    );
    assert_eq!(rejected_with(&j.code(&wrong(&spoken))), "invalid-code");
    assert!(accepted(&j.code(&spoken)));
    assert!(matches!(
        j.events
            .iter()
            .rev()
            .find(|e| matches!(e, JourneyEvent::CallConfirmed { .. })),
        Some(JourneyEvent::CallConfirmed { .. })
    ));
    assert_eq!(j.step(), "new-password");
}

#[test]
fn given_email_sms_definition_then_it_runs_without_a_choice() {
    let def = load("email-sms.toml", EMAIL_SMS).unwrap();
    let mut j = Journey::verified_email(def);
    assert!(matches!(
        j.effects.last(),
        Some(Effect::SendCode {
            channel: CodeChannel::Sms,
            ..
        })
    ));
    let sms = j.last_code();
    assert!(accepted(&j.code(&sms)));
    assert!(accepted(&j.password(STRONG, STRONG)));
    assert_eq!(j.state().status, Status::Completed);
}

#[test]
fn given_account_without_phone_when_choosing_sms_then_refused() {
    let mut j = Journey::given(seed_definition());
    j.when(Command::SubmitEmail {
        email_masked: "b•••b@e•••.com".into(),
        subject: "subject-bob".into(),
        account: Some(FoundAccount {
            account_id: "acct-bob".into(),
            phone_masked: None,
        }),
    });
    let c = j.last_code();
    j.code(&c);
    assert_eq!(
        rejected_with(&j.when(Command::Choose {
            option: "sms".into()
        })),
        "no-phone"
    );
    assert_eq!(j.step(), "second-factor");
}

#[test]
fn given_active_journey_when_lifetime_passes_then_it_expires() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let c = j.last_code();
    let lifetime = j.def.lifetime;
    j.after(lifetime);
    assert_eq!(rejected_with(&j.code(&c)), "journey-expired");
    assert_eq!(j.state().status, Status::Expired);
    assert!(accepted(&j.when(Command::TimerFired {
        timer: TimerKind::JourneyLifetime
    })));
    assert_eq!(
        j.events
            .iter()
            .filter(|e| matches!(e, JourneyEvent::JourneyExpired { .. }))
            .count(),
        1,
        "expiry is recorded once"
    );
}

#[test]
fn given_lifetime_timer_when_it_fires_then_journey_expires() {
    let mut j = Journey::given(seed_definition());
    let fire_at = j.timers[0].fire_at;
    j.now = fire_at;
    assert!(accepted(&j.when(Command::TimerFired {
        timer: TimerKind::JourneyLifetime
    })));
    assert!(matches!(
        j.last_event(),
        JourneyEvent::JourneyExpired { .. }
    ));
}

#[test]
fn given_code_expiry_timer_when_code_was_replaced_then_it_is_ignored() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.after(Duration::from_secs(31));
    j.when(Command::Resend);
    let before = j.events.len();
    let d = j.when(Command::TimerFired {
        timer: TimerKind::CodeExpiry {
            step: "email-code".into(),
            issue: 1,
        },
    });
    assert!(accepted(&d));
    assert_eq!(j.events.len(), before, "a stale timer changes nothing");
    j.after(Duration::from_secs(300));
    j.when(Command::TimerFired {
        timer: TimerKind::CodeExpiry {
            step: "email-code".into(),
            issue: 2,
        },
    });
    assert!(matches!(
        j.last_event(),
        JourneyEvent::CodeExpired { issue: 2, .. }
    ));
}

#[test]
fn given_finished_journey_when_delivery_reported_then_recorded() {
    let mut j = Journey::given(seed_definition());
    j.when(Command::Cancel {
        reason: "support: duplicate".into(),
    });
    assert_eq!(j.state().status, Status::Cancelled);
    let d = j.when(Command::Delivered {
        effect_id: Uuid::from_u128(5),
        channel: "email".into(),
        provider_ref: "dev-1".into(),
    });
    assert!(accepted(&d));
    assert_eq!(j.state().delivered, 1);
}

#[test]
fn given_not_started_journey_when_input_then_refused_without_events() {
    let def = seed_definition();
    let mut rng = TestEntropy(1);
    let keys = Keys::derive(b"k");
    let hasher = Argon2id::new(256, 1, 1);
    let mut ctx = Context {
        journey_id: crate::ports::JourneyId(Uuid::from_u128(1)),
        now: Timestamp(T0),
        rng: &mut rng,
        keys: &keys,
        hasher: &hasher,
        subject_failures: 0,
    };
    let d = decide(&JourneyState::default(), &def, &Command::Resend, &mut ctx);
    assert_eq!(rejected_with(&d), "not-started");
    assert!(d.events.is_empty());
}

#[test]
fn codes_are_bound_to_their_journey() {
    let mut a = Journey::given(seed_definition());
    a.email(true);
    let mut b = Journey::given(seed_definition());
    b.id = crate::ports::JourneyId(Uuid::from_u128(0xdef));
    b.rng = TestEntropy(43);
    b.email(true);
    let code_a = a.last_code();
    if code_a != b.last_code() {
        assert_eq!(rejected_with(&b.code(&code_a)), "invalid-code", "R10");
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Email(bool),
        RightCode,
        WrongCode,
        Malformed,
        Resend,
        Choose(u8),
        Pound,
        OtherKey,
        CallEnded,
        Password(bool),
        Wait(u16),
        Timer,
        Cancel,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => any::<bool>().prop_map(Step::Email),
            4 => Just(Step::RightCode),
            1 => Just(Step::WrongCode),
            1 => Just(Step::Malformed),
            1 => Just(Step::Resend),
            1 => (0u8..3).prop_map(Step::Choose),
            2 => Just(Step::Pound),
            1 => Just(Step::OtherKey),
            1 => Just(Step::CallEnded),
            1 => any::<bool>().prop_map(Step::Password),
            1 => (0u16..400).prop_map(Step::Wait),
            1 => Just(Step::Timer),
            1 => Just(Step::Cancel),
        ]
    }

    fn command(j: &Journey, s: &Step) -> Option<Command> {
        let state = j.state();
        let call_id = state.call.as_ref().map(|c| c.call_id).unwrap_or_default();
        Some(match s {
            Step::Email(found) => Command::SubmitEmail {
                email_masked: "a•••e@e•••.com".into(),
                subject: "subject-alice".into(),
                account: found.then(|| FoundAccount {
                    account_id: "acct".into(),
                    phone_masked: Some("+61 ••• ••• 678".into()),
                }),
            },
            Step::RightCode => Command::SubmitCode {
                code: SecretString(std::panic::catch_unwind(|| j.last_code()).ok()?),
            },
            Step::WrongCode => Command::SubmitCode {
                code: SecretString("000000".into()),
            },
            Step::Malformed => Command::SubmitCode {
                code: SecretString("12a".into()),
            },
            Step::Resend => Command::Resend,
            Step::Choose(i) => Command::Choose {
                option: ["sms", "call", "nope"][*i as usize].into(),
            },
            Step::Pound => Command::CallKeys {
                call_id,
                digits: "#".into(),
            },
            Step::OtherKey => Command::CallKeys {
                call_id,
                digits: "7".into(),
            },
            Step::CallEnded => Command::CallEnded {
                call_id,
                reason: CallFailure::NoAnswer,
            },
            Step::Password(ok) => Command::SetPassword {
                new: SecretString(STRONG.into()),
                confirm: SecretString(if *ok { STRONG.into() } else { "nope".into() }),
                context: PasswordContext::default(),
            },
            Step::Wait(_) => return None,
            Step::Timer => Command::TimerFired {
                timer: j.timers.last()?.kind.clone(),
            },
            Step::Cancel => Command::Cancel {
                reason: "test".into(),
            },
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Rebuilding from stored (serialized) events equals the state reached step by step.
        #[test]
        fn replay_equals_incremental(steps in proptest::collection::vec(step(), 1..40)) {
            let mut j = Journey::given(seed_definition());
            let mut incremental = j.state();
            for s in &steps {
                if let Step::Wait(secs) = s {
                    j.after(Duration::from_secs(u64::from(*secs)));
                    continue;
                }
                let Some(cmd) = command(&j, s) else { continue };
                let d = j.when(cmd);
                for e in &d.events {
                    incremental.apply(e);
                }
                prop_assert!(incremental.step_failures <= 5, "attempts never exceed the limit");
            }
            let stored: Vec<String> = j.events.iter().map(|e| serde_json::to_string(e).unwrap()).collect();
            let loaded: Vec<JourneyEvent> = stored.iter().map(|s| serde_json::from_str(s).unwrap()).collect();
            prop_assert_eq!(&loaded, &j.events);
            prop_assert_eq!(JourneyState::from_events(&loaded), incremental);
        }
    }
}

/// R16 / attack 7 (flow rotation): once the address has used up its failures across
/// journeys, a fresh journey's guesses are refused before any comparison, for a known and an
/// unknown address alike (R1), and the refusal is recorded (R49).
#[test]
fn given_address_over_its_hourly_failure_cap_when_code_then_refused_for_known_and_unknown() {
    for found in [true, false] {
        let mut j = Journey::given(seed_definition());
        j.email(found);
        let code = if found {
            j.last_code()
        } else {
            "000000".to_owned()
        };
        j.subject_failures = crate::journey::SUBJECT_FAILURE_CAP;
        let d = j.code(&code);
        assert_eq!(rejected_with(&d), "too-many-attempts", "found={found}");
        assert!(
            d.events
                .iter()
                .all(|e| !matches!(e, JourneyEvent::CodeVerified { .. })),
            "found={found}"
        );
        assert!(
            matches!(d.events.as_slice(), [JourneyEvent::InputRejected { .. }]),
            "found={found}: {:?}",
            d.events
        );
        // One below the cap, the right code still works.
        j.subject_failures = crate::journey::SUBJECT_FAILURE_CAP - 1;
        let d = j.code(&code);
        if found {
            assert!(matches!(d.reply, Reply::Accepted { .. }));
        } else {
            assert_eq!(rejected_with(&d), "invalid-code");
        }
    }
}

#[test]
fn email_submitted_records_the_subject_and_failures_add_up_over_steps() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let state = j.state();
    assert_eq!(state.subject.as_deref(), Some("subject-alice"));
    j.code("111111");
    j.code("222222");
    assert_eq!(j.state().failures, 2);
}

/// Chat-ops: the scanner's command nudges first, then alerts, then updates; an unknown
/// address's journey is nudged without any message going out (R1).
#[test]
fn given_stalled_journey_when_scanned_then_nudge_alert_update_and_escalate_in_order() {
    let escalate = std::time::Duration::from_secs(600);
    let stalled = Command::Stalled {
        escalate_after: escalate,
    };
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let d = j.when(stalled.clone());
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::PersonNudged {
            by_support: false,
            ..
        }]
    ));
    assert!(matches!(d.effects.as_slice(), [Effect::SendNudge { .. }]));
    let d = j.when(stalled.clone());
    let Some(JourneyEvent::SupportAlerted { dedup_key, .. }) = d.events.first() else {
        panic!("{:?}", d.events)
    };
    let key = dedup_key.clone();
    assert!(key.ends_with(":email-code"), "{key}");
    assert!(
        matches!(&d.effects[..], [Effect::RaiseAlert { update: false, mention: false, dedup_key, .. }] if *dedup_key == key)
    );
    let d = j.when(stalled.clone());
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::SupportAlertUpdated { .. }]
    ));
    j.now = j.now.plus(escalate);
    let d = j.when(stalled.clone());
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::SupportAlertEscalated { .. }]
    ));
    assert!(
        matches!(&d.effects[..], [Effect::RaiseAlert { update: true, mention: true, text, .. }] if text.contains("a•••e@e•••.com"))
    );
    // Acknowledged once; a second acknowledgement is refused.
    let d = j.when(Command::AcknowledgeAlert);
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::SupportAlertAcknowledged { .. }]
    ));
    assert_eq!(
        rejected_with(&j.when(Command::AcknowledgeAlert)),
        "no-alert"
    );
    // Moving on to the next step starts over: no nudge or alert carried to the choice step.
    let mut k = Journey::given(seed_definition());
    k.email(true);
    k.when(Command::Stalled {
        escalate_after: escalate,
    });
    assert!(k.state().nudged);
    let code = k.last_code();
    k.code(&code);
    assert!(k.state().alert.is_none() && !k.state().nudged);

    let mut unknown = Journey::given(seed_definition());
    unknown.email(false);
    let d = unknown.when(stalled);
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::PersonNudged { .. }]
    ));
    assert!(d.effects.is_empty(), "nobody to send to");
}

#[test]
fn given_handoff_link_when_opened_twice_then_second_refused_and_recorded() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    let at = Timestamp(T0 + 600_000);
    let d = j.when(Command::OpenHandoff { expires_at: at });
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::HandoffLinkOpened { .. }]
    ));
    let d = j.when(Command::OpenHandoff { expires_at: at });
    assert_eq!(rejected_with(&d), "link-used");
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::InputRejected { .. }]
    ));
}

#[test]
fn given_alerted_journey_that_failed_when_scanned_then_the_alert_says_so_once() {
    let stalled = Command::Stalled {
        escalate_after: std::time::Duration::from_secs(300),
    };
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.when(stalled.clone());
    j.when(stalled.clone());
    assert!(j.state().alert.is_some());
    j.events.push(JourneyEvent::JourneyFailed {
        step: "email-code".into(),
        reason: "the call was not answered".into(),
    });
    let d = j.when(stalled.clone());
    assert!(
        matches!(d.events.as_slice(), [JourneyEvent::SupportAlertUpdated { reason, .. }] if reason.contains("not answered")),
        "{:?}",
        d.events
    );
    assert!(matches!(
        &d.effects[..],
        [Effect::RaiseAlert { update: true, .. }]
    ));
}

#[test]
fn given_expired_journey_when_handoff_opened_then_refused() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.now = j.now.plus(std::time::Duration::from_secs(16 * 60));
    let d = j.when(Command::OpenHandoff {
        expires_at: j.now.plus(std::time::Duration::from_secs(60)),
    });
    assert!(matches!(d.reply, Reply::Rejected(_)));
    assert!(
        !d.events
            .iter()
            .any(|e| matches!(e, JourneyEvent::HandoffLinkOpened { .. }))
    );
}

#[test]
fn given_alerted_journey_when_it_completes_or_is_cancelled_then_the_alert_is_resolved() {
    let stalled = Command::Stalled {
        escalate_after: std::time::Duration::from_secs(300),
    };
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.when(stalled.clone());
    j.when(stalled);
    let key = j.state().alert.unwrap().dedup_key;
    let d = j.when(Command::Cancel {
        reason: "support: duplicate".into(),
    });
    assert!(
        matches!(&d.effects[..], [Effect::RaiseAlert { update: true, mention: false, resolved: true, dedup_key, text, .. }] if *dedup_key == key && text.ends_with(": resolved, the journey cancelled.")),
        "{:?}",
        d.effects
    );
}

/// The alert's raise, refresh, escalation and acknowledgement say "still open" in the flag
/// sinks act on; only the closing update says "resolved".
#[test]
fn given_alert_when_raised_refreshed_escalated_or_acknowledged_then_it_is_not_resolved() {
    let escalate = std::time::Duration::from_secs(300);
    let stalled = Command::Stalled {
        escalate_after: escalate,
    };
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.when(stalled.clone());
    let mut alerts = Vec::new();
    alerts.extend(j.when(stalled.clone()).effects);
    alerts.extend(j.when(stalled.clone()).effects);
    j.now = j.now.plus(escalate);
    alerts.extend(j.when(stalled).effects);
    alerts.extend(j.when(Command::AcknowledgeAlert).effects);
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    assert!(
        alerts.iter().all(|e| matches!(
            e,
            Effect::RaiseAlert {
                resolved: false,
                ..
            }
        )),
        "{alerts:?}"
    );
    assert!(
        !j.state()
            .alert_resolved(&j.state().alert.unwrap().dedup_key)
    );
}

/// The person finished the alerted step somewhere else (the web page): the alert is closed
/// in the same decision, with the typed flag, so chat drops its buttons; a refused input
/// closes nothing.
#[test]
fn given_alerted_step_when_the_person_moves_on_then_the_alert_is_resolved() {
    let stalled = Command::Stalled {
        escalate_after: std::time::Duration::from_secs(300),
    };
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.when(stalled.clone());
    j.when(stalled);
    let key = j.state().alert.unwrap().dedup_key;
    let code = j.last_code();
    let d = j.code(&wrong(&code));
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::RaiseAlert { .. })),
        "a wrong code is no progress past the step: {:?}",
        d.effects
    );
    let d = j.code(&code);
    assert!(accepted(&d));
    let closing: Vec<&Effect> = d
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::RaiseAlert { .. }))
        .collect();
    assert!(
        matches!(
            closing.as_slice(),
            [Effect::RaiseAlert { update: true, mention: false, resolved: true, dedup_key, text, .. }]
                if *dedup_key == key
                    && text.ends_with(": resolved, the journey moved on to `second-factor`.")
                    && text.contains("a•••e@e•••.com")
        ),
        "{closing:?}"
    );
    assert!(j.state().alert_resolved(&key));
    // Closed once: the next step's progress has no alert to close.
    let d = j.when(Command::Choose {
        option: "sms".into(),
    });
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::RaiseAlert { .. })),
        "{:?}",
        d.effects
    );
}

/// A failed journey's alert stays open for support to take: failing is not resolving.
#[test]
fn given_alerted_step_when_the_journey_fails_there_then_the_alert_stays_open() {
    let stalled = Command::Stalled {
        escalate_after: std::time::Duration::from_secs(300),
    };
    let mut j = Journey::given(seed_definition());
    j.email(true);
    j.when(stalled.clone());
    j.when(stalled);
    let key = j.state().alert.unwrap().dedup_key;
    let code = j.last_code();
    let mut last = None;
    for _ in 0..5 {
        last = Some(j.code(&wrong(&code)));
    }
    assert_eq!(j.state().status, Status::Failed, "{:?}", last);
    assert!(!j.state().alert_resolved(&key));
    assert!(
        !j.effects
            .iter()
            .any(|e| matches!(e, Effect::RaiseAlert { resolved: true, .. }))
    );
}

/// The alert says "the person was nudged" only when a nudge went out: an undeliverable
/// message is alerted at once without one, and an unknown address has nobody to email.
#[test]
fn given_stalled_journey_when_alerted_then_the_text_says_whether_a_nudge_was_sent() {
    let stalled = Command::Stalled {
        escalate_after: std::time::Duration::from_secs(300),
    };
    let alert_text = |d: &Decision| {
        d.effects
            .iter()
            .find_map(|e| match e {
                Effect::RaiseAlert {
                    update: false,
                    text,
                    ..
                } => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("an alert: {:?}", d.effects))
    };

    let mut nudged = Journey::given(seed_definition());
    nudged.email(true);
    nudged.when(stalled.clone());
    let text = alert_text(&nudged.when(stalled.clone()));
    assert!(
        text.ends_with("no progress at step `email-code` for 3m or more; the person was nudged."),
        "{text}"
    );

    let mut undeliverable = Journey::given(seed_definition());
    undeliverable.email(true);
    let sent = undeliverable
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::SendCode { effect_id, .. } => Some(*effect_id),
            _ => None,
        })
        .expect("the email code");
    undeliverable.when(Command::DeliveryFailed {
        effect_id: sent,
        channel: "email".into(),
        error: "mailbox does not exist".into(),
        permanent: true,
    });
    let d = undeliverable.when(stalled.clone());
    assert!(
        !d.events
            .iter()
            .any(|e| matches!(e, JourneyEvent::PersonNudged { .. }))
    );
    let text = alert_text(&d);
    assert!(
        text.ends_with(
            "a message for step `email-code` could not be delivered; the person was not nudged."
        ),
        "{text}"
    );

    let mut unknown = Journey::given(seed_definition());
    unknown.email(false);
    unknown.when(stalled.clone());
    let text = alert_text(&unknown.when(stalled));
    assert!(text.ends_with("; the person was not nudged."), "{text}");
}

#[test]
fn given_open_journey_when_erased_then_cancelled_erased_and_nothing_personal_left_in_state() {
    let mut j = Journey::given(seed_definition());
    j.email(true);
    assert!(j.state().email_masked.is_some());
    let d = j.when(Command::ErasePersonalData {
        reason: "erasure request #12".into(),
    });
    assert!(accepted(&d));
    assert!(matches!(
        d.events.as_slice(),
        [
            JourneyEvent::JourneyCancelled { .. },
            JourneyEvent::PersonalDataErased { reason }
        ] if reason == "erasure request #12"
    ));
    assert!(
        d.effects.is_empty(),
        "nothing is sent about an erased person"
    );
    let s = j.state();
    assert_eq!(s.status, Status::Cancelled);
    assert!(s.erased);
    assert_eq!(
        (s.email_masked, s.phone_masked, s.subject),
        (None, None, None)
    );

    let again = j.when(Command::ErasePersonalData {
        reason: "twice".into(),
    });
    assert!(accepted(&again));
    assert!(again.events.is_empty(), "a second erasure records nothing");

    for cmd in [
        Command::Resend,
        Command::Delivered {
            effect_id: Uuid::from_u128(9),
            channel: "email".into(),
            provider_ref: "dev-9".into(),
        },
    ] {
        let d = j.when(cmd);
        assert_eq!(rejected_with(&d), "erased");
        assert!(d.events.is_empty());
    }
}

#[test]
fn given_finished_journey_when_erased_then_only_the_erasure_is_recorded() {
    let mut j = Journey::given(seed_definition());
    j.email(false);
    j.when(Command::Cancel {
        reason: "support: duplicate".into(),
    });
    let d = j.when(Command::ErasePersonalData {
        reason: "retention".into(),
    });
    assert!(matches!(
        d.events.as_slice(),
        [JourneyEvent::PersonalDataErased { .. }]
    ));
    assert_eq!(
        j.state().finish_reason.as_deref(),
        Some("support: duplicate")
    );
}
