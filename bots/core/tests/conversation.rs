//! Every intent and every output of the conversation core, against the fake engine of
//! `common`: the person's journey (terminal and chat surfaces), stale and repeated presses,
//! support commands and alerts, and the protocol's own errors.

mod common;

use common::{
    COOLDOWN, FakeEngine, Step, button, buttons, converse, jid, person, replies, support, text,
};
use passage_bot::{
    AlertKey, AlertState, Bot, BotConfig, ButtonId, ChatInput, ChatUser, EngineAction,
    EngineResult, Error, Output, PersonIntent, Role, SecretKind, SupportIntent, Surface,
    SystemIntent, WaitReason,
};
use passage_core::journey::Status;
use passage_core::ports::JourneyId;
use std::time::Duration;

const HINT: &str = "Use /reset to start again.";

fn terminal() -> Bot {
    Bot::new(BotConfig::new(Surface::TERMINAL, HINT))
}

fn chat() -> Bot {
    Bot::new(BotConfig::new(Surface::CHAT, HINT))
}

fn start(bot: &mut Bot, e: &mut FakeEngine, who: &str, email: Option<&str>) -> Vec<Output> {
    converse(
        bot,
        e,
        PersonIntent::StartReset {
            from: person(who),
            email: email.map(str::to_owned),
        },
    )
}

fn say(bot: &mut Bot, e: &mut FakeEngine, who: &str, text: &str) -> Vec<Output> {
    converse(
        bot,
        e,
        PersonIntent::Text {
            from: person(who),
            text: text.into(),
        },
    )
}

fn press(bot: &mut Bot, e: &mut FakeEngine, who: &ChatUser, custom_id: &str) -> Vec<Output> {
    converse(
        bot,
        e,
        PersonIntent::Press {
            from: who.clone(),
            custom_id: custom_id.into(),
        },
    )
}

/// A journey for `alice` at `step`, through the chat (terminal surface).
fn at_step(bot: &mut Bot, e: &mut FakeEngine, step: Step) -> (JourneyId, Vec<Output>) {
    let mut out = start(bot, e, "alice", Some("alice@example.com"));
    let j = bot.journey_of("alice").expect("a journey");
    while e.sim(j).step != step {
        out = match e.sim(j).step {
            Step::EmailCode | Step::SmsCode => {
                let code = e.code_of(j);
                say(bot, e, "alice", &code)
            }
            Step::Choose => say(
                bot,
                e,
                "alice",
                if step == Step::Voice { "call" } else { "sms" },
            ),
            Step::Voice => {
                e.confirm_call(j);
                bot.observe(j, None, &e.view(j))
            }
            Step::Password => {
                let r = e.set_password(j, true);
                bot.observe(j, r.as_ref(), &e.view(j))
            }
            other => panic!("cannot walk past {other:?}"),
        };
    }
    (j, out)
}

fn submits_since(e: &FakeEngine, n: usize) -> Vec<ChatInput> {
    e.submits().into_iter().skip(n).map(|(_, i, _)| i).collect()
}

#[track_caller]
fn assert_no_secret(outputs: &[Output], secrets: &[&str]) {
    for o in outputs {
        for t in o.visible_text() {
            for s in secrets {
                assert!(!t.contains(s), "secret {s:?} shown in {o:#?}");
            }
        }
    }
}

// ------------------------------------------------------------------ the person's journey

#[test]
fn start_without_an_email_asks_for_it_then_sends_the_code() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let out = start(&mut bot, &mut e, "alice", None);
    assert!(
        matches!(&e.log[..], [EngineAction::Start { email: None, by, workflow }]
            if by == &person("alice") && workflow == "password-reset")
    );
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    assert!(r[0].ephemeral, "replies to a person are ephemeral");
    assert!(
        r[0].text
            .contains("Enter your registered Email address.\nType it here and I will \"Send verification code\"."),
        "{}",
        r[0].text
    );
    assert!(r[0].buttons.is_empty());

    let out = say(&mut bot, &mut e, "alice", "  alice@example.com ");
    let j = bot.journey_of("alice").expect("bound");
    assert_eq!(
        submits_since(&e, 0),
        vec![ChatInput::Email("alice@example.com".into())]
    );
    let t = text(&out);
    assert!(
        t.contains("Enter the 6-digit code provided in the email."),
        "{t}"
    );
    assert!(t.contains("Sent to a•••e@e•••.com, valid until "), "{t}");
    assert!(t.contains("5 attempts left."), "{t}");
    assert!(t.contains("Type the code here."), "{t}");
    assert_eq!(
        button(&out, "Re-send code"),
        format!("passage:resend:{j}:email-code")
    );
    assert_no_secret(&out, &["alice@example.com", &e.code_of(j)]);
}

#[test]
fn start_with_an_email_submits_it_at_once() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let out = start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    assert!(matches!(
        &e.log[..],
        [EngineAction::Start { email: Some(m), .. }] if m == "alice@example.com"
    ));
    assert!(text(&out).contains("Enter the 6-digit code provided in the email"));
    // A blank address is no address: the core asks for it.
    let out = start(&mut bot, &mut e, "bob", Some("   "));
    assert!(matches!(
        e.log.last(),
        Some(EngineAction::Start { email: None, .. })
    ));
    assert!(text(&out).contains("Enter your registered Email address"));
}

#[test]
fn the_sms_branch_completes_with_typed_codes_and_a_secret_step() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, out) = at_step(&mut bot, &mut e, Step::Choose);
    let t = text(&out);
    assert!(
        t.contains(
            "Select your preferred Multi-factor authentication method (your phone: •••• ••• 678)."
        ),
        "{t}"
    );
    assert!(t.contains("less secure"), "the risk notice (R25): {t}");
    assert_eq!(
        buttons(&out),
        vec![
            (
                "Send SMS to my mobile".to_owned(),
                format!("passage:choose:{j}:sms")
            ),
            (
                "Call me on my landline or mobile".to_owned(),
                format!("passage:choose:{j}:call")
            ),
        ]
    );
    let out = press(
        &mut bot,
        &mut e,
        &person("alice"),
        &format!("passage:choose:{j}:sms"),
    );
    assert!(text(&out).contains("Enter the 6-digit verification code you received via SMS"));
    let code = e.code_of(j);
    let out = say(
        &mut bot,
        &mut e,
        "alice",
        &format!("{} {}", &code[..3], &code[3..]),
    );
    // Spaces typed for readability are removed before the engine sees the code.
    assert_eq!(
        submits_since(&e, 0).last(),
        Some(&ChatInput::Code(code.clone()))
    );
    let t = text(&out);
    assert!(
        t.contains("Reset Password: choose a new password. It is never typed in this chat."),
        "{t}"
    );
    assert!(t.contains("○ At least 15 characters"), "{t}");
    let secret = out
        .iter()
        .find_map(|o| match o {
            Output::SecretStep(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a secret step");
    assert_eq!(secret.journey, j);
    assert_eq!(secret.step, "new-password");
    assert!(matches!(
        &secret.kind,
        SecretKind::NewPassword { policy, requirements } if policy == "portal" && requirements.len() == 2
    ));

    // The transport collects the password itself, then reports back.
    let refusal = e.set_password(j, false);
    let out = bot.observe(j, refusal.as_ref(), &e.view(j));
    assert!(text(&out).contains("✗ Choose a longer password"));
    assert!(
        out.iter().any(|o| matches!(o, Output::SecretStep(_))),
        "asked again"
    );
    e.set_password(j, true);
    let out = bot.observe(j, None, &e.view(j));
    let t = text(&out);
    assert!(
        t.contains("✓ Your password is reset and you are signed in."),
        "{t}"
    );
    assert!(
        t.contains("▣ Manage a Network Application  → Connections Portal (/portal/connections)")
    );
    assert!(t.contains("Contractor Booking System"));
    assert!(out.contains(&Output::Ended {
        journey: j,
        status: Status::Completed
    }));
    for code in &e.codes {
        assert_no_secret(&out, &[code]);
    }
}

#[test]
fn the_voice_branch_waits_for_the_call_then_asks_for_the_password() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::Choose);
    // Typing the option's label works like its button.
    let out = say(
        &mut bot,
        &mut e,
        "alice",
        "Call me on my landline or mobile",
    );
    assert_eq!(
        submits_since(&e, 0).last(),
        Some(&ChatInput::Choose("call".into()))
    );
    let t = text(&out);
    assert!(
        t.contains(
            "Answer the call and press # when prompted.\nCalling •••• ••• 678: it is ringing now."
        ),
        "{t}"
    );
    let waiting = out
        .iter()
        .find_map(|o| match o {
            Output::Waiting(w) => Some(w.clone()),
            _ => None,
        })
        .expect("waiting for the call");
    assert_eq!(waiting.journey, j);
    assert_eq!(waiting.step, "voice-call");
    assert_eq!(
        waiting.reason,
        WaitReason::CallConfirmation {
            calling: Some("•••• ••• 678".into())
        }
    );
    // The terminal watches the journey itself: no "check again" button.
    assert!(buttons(&out).is_empty(), "{out:#?}");

    // Typing while the call rings does nothing.
    let n = e.submits().len();
    let out = say(&mut bot, &mut e, "alice", "#");
    assert!(text(&out).starts_with("There is nothing to type at this step."));
    assert_eq!(e.submits().len(), n);

    e.confirm_call(j);
    let out = bot.observe(j, None, &e.view(j));
    assert!(out.iter().any(|o| matches!(o, Output::SecretStep(_))));
    assert!(!out.iter().any(|o| matches!(o, Output::Waiting(_))));
}

#[test]
fn a_missed_call_offers_call_me_again_with_its_cooldown() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::Voice);
    let alice = person("alice");
    let again = format!("passage:resend:{j}:voice-call");
    // While the call rings, "Call me again" places no second call.
    let n = e.submits().len();
    let out = press(&mut bot, &mut e, &alice, &again);
    assert!(text(&out).starts_with("A call is ringing now: no second call was placed."));
    assert_eq!(e.submits().len(), n);

    e.miss_call(j);
    let out = bot.observe(j, None, &e.view(j));
    assert!(text(&out).contains("No call is ringing right now; 2 calls left."));
    assert_eq!(button(&out, "Call me again"), again);
    let out = press(&mut bot, &mut e, &alice, &again);
    assert!(text(&out).contains("You can ask for another call at "));
    assert_eq!(e.submits().len(), n, "inside the cooldown: no call");
    e.advance(COOLDOWN);
    let out = press(&mut bot, &mut e, &alice, &again);
    assert_eq!(submits_since(&e, n), vec![ChatInput::Resend]);
    assert!(text(&out).starts_with("Calling you again."));
    assert!(out.iter().any(|o| matches!(o, Output::Waiting(_))));
}

#[test]
fn a_wrong_code_shows_the_engines_refusal_and_the_step_again() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let out = say(&mut bot, &mut e, "alice", "999999");
    let t = text(&out);
    assert!(
        t.starts_with("✗ That code is not right. 4 attempts left.\n"),
        "{t}"
    );
    assert!(t.contains("Enter the 6-digit code provided in the email."));
    assert!(t.contains("4 attempts left."));
    assert_eq!(
        button(&out, "Re-send code"),
        format!("passage:resend:{j}:email-code")
    );
    let code = e.code_of(j);
    assert!(text(&say(&mut bot, &mut e, "alice", &code)).contains("Select your preferred"));
}

#[test]
fn too_many_wrong_codes_end_the_journey() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let mut out = Vec::new();
    for _ in 0..5 {
        out = say(&mut bot, &mut e, "alice", "999999");
    }
    let t = text(&out);
    assert!(t.contains("✗ Too many wrong codes: start again."), "{t}");
    assert!(
        t.contains("This password reset failed: too many wrong codes. Use /reset to start again."),
        "{t}"
    );
    assert!(out.contains(&Output::Ended {
        journey: j,
        status: Status::Failed
    }));
    // Whatever is typed now reaches no step.
    let n = e.submits().len();
    let out = say(&mut bot, &mut e, "alice", "123456");
    assert_eq!(e.submits().len(), n);
    assert!(text(&out).contains("This password reset failed"));
}

#[test]
fn text_without_a_journey_explains_how_to_start() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let out = say(&mut bot, &mut e, "alice", "hello");
    assert_eq!(
        text(&out),
        "You have no password reset in progress here. Use /reset to start again."
    );
    assert!(e.log.is_empty(), "no engine action");
}

#[test]
fn blank_text_and_unknown_options_only_show_the_step_again() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (_, _) = at_step(&mut bot, &mut e, Step::Choose);
    let n = e.submits().len();
    let out = say(&mut bot, &mut e, "alice", "   ");
    assert!(text(&out).starts_with("Select your preferred"));
    let out = say(&mut bot, &mut e, "alice", "carrier pigeon");
    assert!(text(&out).starts_with("I did not recognise that: pick one of the options."));
    assert_eq!(e.submits().len(), n);
}

#[test]
fn a_password_typed_in_chat_is_neither_used_nor_echoed() {
    let (mut bot, mut e) = (chat(), FakeEngine::new());
    let mut out = start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    let j = bot.journey_of("alice").expect("bound");
    // Chat surface: codes go through the form.
    for _ in 0..2 {
        let code = e.code_of(j);
        out = converse(
            &mut bot,
            &mut e,
            PersonIntent::FormSubmitted {
                from: person("alice"),
                custom_id: button(&out, "Enter code"),
                value: code,
            },
        );
        if e.sim(j).step == Step::Choose {
            out = press(
                &mut bot,
                &mut e,
                &person("alice"),
                &button(&out, "Send SMS to my mobile"),
            );
        }
    }
    assert_eq!(e.sim(j).step, Step::Password);
    let n = e.submits().len();
    let pw = "lantern harbour velvet comet ember";
    let out = say(&mut bot, &mut e, "alice", pw);
    assert_eq!(e.submits().len(), n, "nothing submitted");
    assert!(text(&out).starts_with("Please never type a password in chat"));
    assert!(out.iter().any(|o| matches!(o, Output::SecretStep(_))));
    assert_no_secret(&out, &[pw]);
}

// ------------------------------------------------------------------ the chat surface

#[test]
fn on_chat_codes_go_through_a_form_never_a_message() {
    let (mut bot, mut e) = (chat(), FakeEngine::new());
    let out = start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    let j = bot.journey_of("alice").expect("bound");
    let t = text(&out);
    assert!(
        t.contains("Press \"Enter code\" to type it privately (never post it in chat)."),
        "{t}"
    );
    let enter = button(&out, "Enter code");
    assert_eq!(enter, format!("passage:code:{j}:email-code"));

    // A code posted as a message is refused, not submitted.
    let code = e.code_of(j);
    let out = say(&mut bot, &mut e, "alice", &code);
    assert!(text(&out).starts_with("Please don't post codes in chat"));
    assert!(
        e.submits().is_empty(),
        "nothing submitted: {:?}",
        e.submits()
    );

    // The button opens a form at once (no engine round trip: a modal must be the first
    // answer to the press).
    let n = e.log.len();
    let out = press(&mut bot, &mut e, &person("alice"), &enter);
    assert_eq!(e.log.len(), n);
    let [Output::Form(form)] = &out[..] else {
        panic!("a form: {out:#?}")
    };
    assert_eq!(form.custom_id, enter);
    assert_eq!(form.title, "Enter code");

    let out = converse(
        &mut bot,
        &mut e,
        PersonIntent::FormSubmitted {
            from: person("alice"),
            custom_id: enter.clone(),
            value: code.clone(),
        },
    );
    assert_eq!(submits_since(&e, 0), vec![ChatInput::Code(code.clone())]);
    assert!(text(&out).contains("Select your preferred"));

    // The same form submitted again is for a step already left: nothing reaches the engine.
    let n = e.submits().len();
    let out = converse(
        &mut bot,
        &mut e,
        PersonIntent::FormSubmitted {
            from: person("alice"),
            custom_id: enter,
            value: code.clone(),
        },
    );
    assert_eq!(e.submits().len(), n);
    assert!(text(&out).starts_with("That button was for a step you have already left"));
    assert_no_secret(&out, &[&code]);
}

#[test]
fn on_chat_a_ringing_call_offers_check_again() {
    let (mut bot, mut e) = (chat(), FakeEngine::new());
    start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    let j = bot.journey_of("alice").expect("bound");
    e.progress_elsewhere(j); // email code entered on the page
    let out = converse(
        &mut bot,
        &mut e,
        PersonIntent::Press {
            from: person("alice"),
            custom_id: format!("passage:choose:{j}:call"),
        },
    );
    let check = button(&out, "I pressed #: check again");
    assert_eq!(check, format!("passage:check:{j}:voice-call"));
    let n = e.submits().len();
    let out = press(&mut bot, &mut e, &person("alice"), &check);
    assert!(text(&out).starts_with("Not confirmed yet: answer the call and press #."));
    e.confirm_call(j);
    let out = press(&mut bot, &mut e, &person("alice"), &check);
    assert!(text(&out).starts_with("Reset Password"));
    assert_eq!(e.submits().len(), n, "checking never changes the journey");
}

#[test]
fn a_surface_with_neither_typing_nor_forms_hands_out_the_code_step_as_a_link() {
    let surface = Surface {
        typed_codes: false,
        forms: false,
        watches: false,
    };
    let (mut bot, mut e) = (Bot::new(BotConfig::new(surface, HINT)), FakeEngine::new());
    let out = start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    assert!(text(&out).contains("Enter it on the page I link to"));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::SecretStep(s) if s.kind == SecretKind::Code { digits: 6 } && s.step == "email-code"
    )));
}

// ------------------------------------------------------------------ stale and repeated presses

#[test]
fn a_choice_pressed_twice_is_made_once() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, out) = at_step(&mut bot, &mut e, Step::Choose);
    let sms = button(&out, "Send SMS to my mobile");
    let call = button(&out, "Call me on my landline or mobile");
    let n = e.submits().len();
    press(&mut bot, &mut e, &person("alice"), &sms);
    let again = press(&mut bot, &mut e, &person("alice"), &sms);
    let other = press(&mut bot, &mut e, &person("alice"), &call);
    assert_eq!(submits_since(&e, n), vec![ChatInput::Choose("sms".into())]);
    for out in [&again, &other] {
        let t = text(out);
        assert!(
            t.starts_with(
                "That button was for a step you have already left: nothing was sent or changed.\n"
            ),
            "{t}"
        );
        // ... followed by where the person is now.
        assert!(t.contains("Enter the 6-digit verification code you received via SMS"));
    }
    assert_eq!(e.sim(j).step, Step::SmsCode);
}

#[test]
fn re_send_inside_the_cooldown_sends_nothing_and_says_when() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, out) = at_step(&mut bot, &mut e, Step::EmailCode);
    let resend = button(&out, "Re-send code");
    let alice = person("alice");
    let n = e.submits().len();
    let out = press(&mut bot, &mut e, &alice, &resend);
    assert!(
        text(&out).starts_with("A code was sent moments ago: \"Re-send code\" works again at "),
        "{}",
        text(&out)
    );
    assert_eq!(e.submits().len(), n);
    e.advance(COOLDOWN);
    let first = e.code_of(j);
    let out = press(&mut bot, &mut e, &alice, &resend);
    assert_eq!(submits_since(&e, n), vec![ChatInput::Resend]);
    assert!(text(&out).starts_with("A new code is on its way."));
    assert_ne!(e.code_of(j), first);
    // A double click: the second press lands inside the new cooldown.
    press(&mut bot, &mut e, &alice, &resend);
    assert_eq!(submits_since(&e, n).len(), 1);
    // Use up the sends: then there is no button, and an old one sends nothing.
    for _ in 0..2 {
        e.advance(COOLDOWN);
        press(&mut bot, &mut e, &alice, &resend);
    }
    assert_eq!(submits_since(&e, n).len(), 3);
    e.advance(COOLDOWN);
    let out = press(&mut bot, &mut e, &alice, &resend);
    assert!(text(&out).starts_with("No \"Re-send code\" left for this step."));
    assert!(!buttons(&out).iter().any(|(l, _)| l == "Re-send code"));
    assert_eq!(submits_since(&e, n).len(), 3);
}

#[test]
fn a_press_for_a_step_done_on_the_web_page_is_stale() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, out) = at_step(&mut bot, &mut e, Step::EmailCode);
    let resend = button(&out, "Re-send code");
    e.progress_elsewhere(j);
    e.advance(COOLDOWN);
    let n = e.submits().len();
    let out = press(&mut bot, &mut e, &person("alice"), &resend);
    assert_eq!(
        e.submits().len(),
        n,
        "a resend would have hit the next step"
    );
    assert!(text(&out).starts_with("That button was for a step you have already left"));
    assert!(text(&out).contains("Select your preferred"));
}

#[test]
fn a_press_for_another_journey_is_stale_without_asking_the_engine() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (old, out) = at_step(&mut bot, &mut e, Step::EmailCode);
    let resend = button(&out, "Re-send code");
    start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    assert_ne!(bot.journey_of("alice"), Some(old));
    e.advance(COOLDOWN);
    let n = e.log.len();
    let out = press(&mut bot, &mut e, &person("alice"), &resend);
    assert_eq!(e.log.len(), n, "no engine action at all");
    assert!(
        text(&out).starts_with("That button belongs to another password reset"),
        "{}",
        text(&out)
    );
    // Nor may another user press alice's button.
    let (j, out) = at_step(&mut bot, &mut e, Step::EmailCode);
    let resend = button(&out, "Re-send code");
    let out = press(&mut bot, &mut e, &person("mallory"), &resend);
    assert_eq!(
        e.log.len(),
        n + 1,
        "only alice's own start: {:?}",
        &e.log[n..]
    );
    assert!(text(&out).starts_with("That button belongs to another password reset"));
    assert_eq!(bot.journey_of("alice"), Some(j));
}

#[test]
fn a_press_still_in_flight_is_not_run_twice() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (_, out) = at_step(&mut bot, &mut e, Step::Choose);
    let sms = button(&out, "Send SMS to my mobile");
    let intent = || PersonIntent::Press {
        from: person("alice"),
        custom_id: sms.clone(),
    };
    let first = bot.handle(intent());
    let load = first.next.expect("a load");
    assert!(matches!(load.action, EngineAction::Load { .. }));
    // The second press arrives while the first waits on the engine.
    let second = bot.handle(intent());
    assert!(second.next.is_none());
    assert_eq!(
        text(&second.outputs),
        "Already on it: that button was pressed a moment ago."
    );
    let result = e.perform(load.action);
    let turn = bot.resume(e.now, load.ticket, result).expect("resume");
    let submit = turn.next.expect("a submit");
    assert!(matches!(
        &submit.action,
        EngineAction::Submit { input: ChatInput::Choose(o), .. } if o == "sms"
    ));
    let result = e.perform(submit.action);
    let _ = bot.resume(e.now, submit.ticket, result).expect("resume");
    assert_eq!(bot.pending(), 0);
    // Released: a third press is judged on its merits (stale now).
    let out = press(&mut bot, &mut e, &person("alice"), &sms);
    assert!(text(&out).starts_with("That button was for a step you have already left"));
}

#[test]
fn an_abandoned_ticket_releases_its_press() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (_, out) = at_step(&mut bot, &mut e, Step::Choose);
    let sms = button(&out, "Send SMS to my mobile");
    let turn = bot.handle(PersonIntent::Press {
        from: person("alice"),
        custom_id: sms.clone(),
    });
    bot.abandon(turn.next.expect("a load").ticket);
    assert_eq!(bot.pending(), 0);
    let n = e.submits().len();
    press(&mut bot, &mut e, &person("alice"), &sms);
    assert_eq!(submits_since(&e, n), vec![ChatInput::Choose("sms".into())]);
}

#[test]
fn foreign_and_malformed_custom_ids_do_nothing() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    at_step(&mut bot, &mut e, Step::EmailCode);
    let n = e.log.len();
    for id in ["", "hello", "passage:resend:nope:email-code", "other:thing"] {
        let out = press(&mut bot, &mut e, &person("alice"), id);
        assert_eq!(
            text(&out),
            "That button is not one I know: nothing was changed."
        );
        let out = converse(
            &mut bot,
            &mut e,
            PersonIntent::FormSubmitted {
                from: person("alice"),
                custom_id: id.into(),
                value: "123456".into(),
            },
        );
        assert_eq!(
            text(&out),
            "That button is not one I know: nothing was changed."
        );
    }
    assert_eq!(e.log.len(), n);
}

#[test]
fn people_cannot_use_support_buttons_or_intents() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let n = e.log.len();
    let alice = person("alice");
    for id in [
        format!("passage:ack:{j}:email-code"),
        format!("passage:nudge:{j}:email-code"),
        format!("passage:show:{j}"),
    ] {
        let out = press(&mut bot, &mut e, &alice, &id);
        assert_eq!(text(&out), "Only the service desk can do that.");
    }
    for intent in [
        SupportIntent::ShowJourney {
            from: alice.clone(),
            journey: j,
        },
        SupportIntent::ReplayJourney {
            from: alice.clone(),
            journey: j,
            at: 1,
        },
        SupportIntent::ListStalled {
            from: alice.clone(),
        },
        SupportIntent::AcknowledgeAlert {
            from: alice.clone(),
            key: AlertKey::new(j, "email-code"),
        },
        SupportIntent::NudgeUser {
            from: alice.clone(),
            journey: j,
        },
        SupportIntent::CancelJourney {
            from: alice.clone(),
            journey: j,
            reason: "mine".into(),
        },
    ] {
        let out = converse(&mut bot, &mut e, intent);
        assert_eq!(text(&out), "Only the service desk can do that.");
    }
    assert_eq!(e.log.len(), n);
}

// ------------------------------------------------------------------ support

#[test]
fn support_shows_a_journey_with_its_timeline() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::ShowJourney {
            from: support("sam"),
            journey: j,
        },
    );
    assert!(matches!(e.log.last(), Some(EngineAction::Timeline { journey }) if *journey == j));
    let r = replies(&out);
    assert!(r[0].ephemeral);
    let t = &r[0].text;
    assert!(
        t.starts_with(&format!(
            "journey {j}  [password-reset v1, active]\n  now at `email-code`: Enter the 6-digit code"
        )),
        "{t}"
    );
    assert!(
        t.contains("JourneyStarted journey started  [person via chat]"),
        "{t}"
    );
    assert!(
        t.contains("EmailSubmitted email a•••e@e•••.com submitted"),
        "{t}"
    );
    assert_eq!(
        button(&out, "Nudge user"),
        format!("passage:nudge:{j}:email-code")
    );
    // The alert button does the same.
    let n = e.log.len();
    let out2 = press(
        &mut bot,
        &mut e,
        &support("sam"),
        &format!("passage:show:{j}"),
    );
    assert_eq!(text(&out2), text(&out));
    assert_eq!(e.log.len(), n + 1);
}

#[test]
fn support_replays_a_journey_to_an_event() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let sam = support("sam");
    let replay = |bot: &mut Bot, e: &mut FakeEngine, at| {
        converse(
            bot,
            e,
            SupportIntent::ReplayJourney {
                from: sam.clone(),
                journey: j,
                at,
            },
        )
    };
    let n = e.log.len();
    let out = replay(&mut bot, &mut e, 0);
    assert_eq!(
        text(&out),
        "Replay counts events from 1 (1 = the journey just started)."
    );
    assert_eq!(e.log.len(), n);
    let out = replay(&mut bot, &mut e, 1);
    let t = text(&out);
    assert!(
        t.starts_with(&format!(
            "Replay of journey {j}: the state after event 1 of 2.\n"
        )),
        "{t}"
    );
    assert!(
        t.contains("JourneyStarted") && !t.contains("EmailSubmitted"),
        "{t}"
    );
    let out = replay(&mut bot, &mut e, 9);
    assert_eq!(
        text(&out),
        format!("Journey {j} has 2 events: replay between 1 and 2.")
    );
}

#[test]
fn support_lists_stalled_journeys() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let sam = support("sam");
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::ListStalled { from: sam.clone() },
    );
    assert!(text(&out).starts_with("No stalled password resets as of "));
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    e.advance(Duration::from_secs(200));
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::ListStalled { from: sam.clone() },
    );
    let t = text(&out);
    assert!(t.starts_with("Stalled password resets as of "), "{t}");
    assert!(
        t.contains(&format!(
            "• {j} at `email-code`: a•••e@e•••.com; last activity "
        )),
        "{t}"
    );
    assert!(t.contains("; no alert yet"), "{t}");
    assert_eq!(
        button(&out, &format!("Show {}", &j.to_string()[..8])),
        format!("passage:show:{j}")
    );
    // Once alerted, the list says so.
    let key = e.raise_alert(j).expect("a key");
    converse(
        &mut bot,
        &mut e,
        SystemIntent::AlertDelivered {
            dedup_key: key,
            text: "stalled".into(),
            update: false,
            mention: false,
            resolved: false,
        },
    );
    let out = converse(&mut bot, &mut e, SupportIntent::ListStalled { from: sam });
    assert!(text(&out).contains("; alert open"), "{}", text(&out));
}

#[test]
fn alerts_are_posted_once_then_updated_under_the_same_key() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let key = e.raise_alert(j).expect("a key");
    assert_eq!(key, format!("{j}:email-code"));
    let deliver = |bot: &mut Bot, e: &mut FakeEngine, text: &str, update, mention| {
        converse(
            bot,
            e,
            SystemIntent::AlertDelivered {
                dedup_key: key.clone(),
                text: text.into(),
                update,
                mention,
                resolved: false,
            },
        )
    };
    let out = deliver(
        &mut bot,
        &mut e,
        "Reset journey … for a•••e@e•••.com: no progress",
        false,
        false,
    );
    let [Output::Alert(alert)] = &out[..] else {
        panic!("one alert: {out:#?}")
    };
    assert_eq!(alert.dedup_key, key);
    assert_eq!(
        alert.title,
        "Password reset needs attention at `email-code`"
    );
    assert!(!alert.mention);
    assert_eq!(
        alert
            .buttons
            .iter()
            .map(|b| (b.label.as_str(), b.custom_id.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("Acknowledge", format!("passage:ack:{j}:email-code")),
            ("Nudge user", format!("passage:nudge:{j}:email-code")),
            ("Show", format!("passage:show:{j}")),
        ]
    );
    // A refresh and an escalation edit the same alert.
    let out = deliver(&mut bot, &mut e, "still stalled", true, false);
    let [Output::AlertUpdate(u)] = &out[..] else {
        panic!("an update: {out:#?}")
    };
    assert_eq!(
        (u.dedup_key.as_str(), &u.state),
        (key.as_str(), &AlertState::Open)
    );
    assert_eq!(u.text, "still stalled");
    let out = deliver(&mut bot, &mut e, "escalated", true, true);
    assert!(matches!(&out[..], [Output::AlertUpdate(u)] if u.mention && u.dedup_key == key));
    // A repeated first delivery (a worker retry) updates too, never a second alert.
    let out = deliver(&mut bot, &mut e, "again", false, false);
    assert!(matches!(&out[..], [Output::AlertUpdate(u)] if u.dedup_key == key));
    assert!(
        e.log
            .iter()
            .all(|a| !matches!(a, EngineAction::Submit { by, .. } if by.role == Role::Support))
    );
}

#[test]
fn acknowledging_is_recorded_once_with_the_support_user() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let key = e.raise_alert(j).expect("a key");
    converse(
        &mut bot,
        &mut e,
        SystemIntent::AlertDelivered {
            dedup_key: key.clone(),
            text: "stalled".into(),
            update: false,
            mention: false,
            resolved: false,
        },
    );
    let sam = support("sam");
    let n = e.submits().len();
    let ack = format!("passage:ack:{j}:email-code");
    let out = press(&mut bot, &mut e, &sam, &ack);
    let s = e.submits();
    assert_eq!(s.len(), n + 1);
    assert_eq!(s[n].1, ChatInput::AcknowledgeAlert);
    assert_eq!(s[n].2, sam, "recorded under the support user");
    assert_eq!(text(&out), format!("You acknowledged alert {key}."));
    let update = out
        .iter()
        .find_map(|o| match o {
            Output::AlertUpdate(u) => Some(u.clone()),
            _ => None,
        })
        .expect("an update");
    assert_eq!(update.dedup_key, key);
    assert_eq!(update.state, AlertState::Acknowledged { by: "sam".into() });
    assert!(update.text.ends_with("Acknowledged by sam."));
    assert!(
        !update.buttons.iter().any(|b| b.label == "Acknowledge"),
        "no second acknowledgement offered"
    );
    // Again, by button or by command: nothing more is recorded.
    let out = press(&mut bot, &mut e, &support("kim"), &ack);
    assert_eq!(
        text(&out),
        format!("Alert {key} was already acknowledged by sam: nothing more to do.")
    );
    converse(
        &mut bot,
        &mut e,
        SupportIntent::AcknowledgeAlert {
            from: sam,
            key: key.parse().expect("a key"),
        },
    );
    assert_eq!(e.submits().len(), n + 1);
}

#[test]
fn an_alert_for_a_step_the_journey_left_is_resolved_not_acknowledged() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let key = e.raise_alert(j).expect("a key");
    converse(
        &mut bot,
        &mut e,
        SystemIntent::AlertDelivered {
            dedup_key: key.clone(),
            text: "stalled".into(),
            update: false,
            mention: false,
            resolved: false,
        },
    );
    e.progress_elsewhere(j);
    let n = e.submits().len();
    let out = press(
        &mut bot,
        &mut e,
        &support("sam"),
        &format!("passage:ack:{j}:email-code"),
    );
    assert_eq!(
        e.submits().len(),
        n,
        "no acknowledgement of the next step's alert"
    );
    assert!(text(&out).starts_with(&format!(
        "Alert {key} is out of date: the journey has moved on to `second-factor`."
    )));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::AlertUpdate(u) if u.dedup_key == key
            && u.state == AlertState::Resolved { why: "the journey moved on to `second-factor`".into() }
            && u.buttons.is_empty()
    )));
}

#[test]
fn the_persons_own_progress_resolves_the_alert() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let key = e.raise_alert(j).expect("a key");
    converse(
        &mut bot,
        &mut e,
        SystemIntent::AlertDelivered {
            dedup_key: key.clone(),
            text: "stalled".into(),
            update: false,
            mention: false,
            resolved: false,
        },
    );
    let code = e.code_of(j);
    let out = say(&mut bot, &mut e, "alice", &code);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::AlertUpdate(u) if u.dedup_key == key && matches!(u.state, AlertState::Resolved { .. })
    )));
    // Resolved once.
    let out = say(&mut bot, &mut e, "alice", "sms");
    assert!(!out.iter().any(|o| matches!(o, Output::AlertUpdate(_))));
}

#[test]
fn a_nudge_is_recorded_and_reaches_the_person_here() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let sam = support("sam");
    let n = e.submits().len();
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::NudgeUser {
            from: sam.clone(),
            journey: j,
        },
    );
    let s = e.submits();
    assert_eq!(s.len(), n + 1);
    assert_eq!(
        (s[n].1.clone(), s[n].2.clone()),
        (ChatInput::Nudge, sam.clone())
    );
    assert_eq!(e.sim(j).nudges, 1);
    assert!(text(&out).starts_with(&format!(
        "Nudged the person on journey {j} (at `email-code`): the engine emails them a reminder, and I wrote to them here."
    )));
    let direct = out
        .iter()
        .find_map(|o| match o {
            Output::Direct { user, reply } => Some((user.clone(), reply.clone())),
            _ => None,
        })
        .expect("a direct message");
    assert_eq!(direct.0, "alice");
    assert!(direct.1.ephemeral);
    assert!(direct.1.text.starts_with(
        "The service desk noticed your password reset is waiting at: Enter the 6-digit code provided in the email."
    ));
    let cont = direct.1.buttons[0].custom_id.clone();
    assert_eq!(cont, format!("passage:check:{j}:email-code"));
    // Alice presses Continue: her step, with its buttons again.
    let out = press(&mut bot, &mut e, &person("alice"), &cont);
    assert!(text(&out).starts_with("Enter the 6-digit code provided in the email."));
    assert_eq!(e.submits().len(), n + 1);

    // A double click on "Nudge user" sends one reminder.
    let out = press(
        &mut bot,
        &mut e,
        &sam,
        &format!("passage:nudge:{j}:email-code"),
    );
    assert!(
        text(&out).contains("was nudged at `email-code` at "),
        "{}",
        text(&out)
    );
    assert_eq!(e.sim(j).nudges, 1);
    e.advance(passage_bot::NUDGE_REPEAT_WINDOW);
    press(
        &mut bot,
        &mut e,
        &sam,
        &format!("passage:nudge:{j}:email-code"),
    );
    assert_eq!(e.sim(j).nudges, 2, "a later nudge is a new reminder");
}

/// The support role is pinged by the escalation, once: a nudge after it updates the same
/// alert quietly instead of pinging again (and, on Discord, posting a second message).
#[test]
fn a_nudge_after_an_escalation_does_not_ping_the_role_again() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let key = e.raise_alert(j).expect("a key");
    for (update, mention) in [(false, false), (true, true)] {
        converse(
            &mut bot,
            &mut e,
            SystemIntent::AlertDelivered {
                dedup_key: key.clone(),
                text: "stalled".into(),
                update,
                mention,
                resolved: false,
            },
        );
    }
    let out = press(
        &mut bot,
        &mut e,
        &support("sam"),
        &format!("passage:nudge:{j}:email-code"),
    );
    let update = out
        .iter()
        .find_map(|o| match o {
            Output::AlertUpdate(u) if u.dedup_key == key => Some(u),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the alert notes the nudge: {out:#?}"));
    assert!(!update.mention, "a nudge pinged the role again");
    assert!(update.text.contains("Nudged by sam."), "{}", update.text);
}

/// Two support members press "Nudge user" on the same alert at once (Discord runs each
/// interaction on its own task): one reminder reaches the person, the other press is told
/// so and sends nothing.
#[test]
fn two_support_members_nudging_at_once_send_one_reminder() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let nudge = format!("passage:nudge:{j}:email-code");
    let pressed = |who: &str| PersonIntent::Press {
        from: support(who),
        custom_id: nudge.clone(),
    };
    // Sam's press is loading the journey when Kim's arrives.
    let sam = bot.handle(pressed("sam"));
    let sam_load = sam.next.expect("a load");
    let kim = bot.handle(pressed("kim"));
    assert!(kim.next.is_none(), "Kim's press reached the engine");
    assert_eq!(
        text(&kim.outputs),
        "Already on it: this journey is being nudged right now, so nothing more was sent."
    );
    // Sam's nudge is being submitted when Kim presses again, and once more after it landed.
    let result = e.perform(sam_load.action);
    let sam_submit = bot
        .resume(e.now, sam_load.ticket, result)
        .expect("resume")
        .next
        .expect("a submit");
    assert!(bot.handle(pressed("kim")).next.is_none());
    let result = e.perform(sam_submit.action);
    let _ = bot
        .resume(e.now, sam_submit.ticket, result)
        .expect("resume");
    let out = press(&mut bot, &mut e, &support("kim"), &nudge);
    assert!(
        text(&out).contains("was nudged at `email-code` at "),
        "{}",
        text(&out)
    );
    assert_eq!(e.sim(j).nudges, 1, "one reminder");
    assert_eq!(bot.pending(), 0);
}

/// A nudge is reserved before it is submitted; when the engine refuses it or cannot be
/// reached, the reservation is taken back so the next press sends it.
#[test]
fn a_nudge_that_failed_or_was_refused_can_be_sent_again() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let nudge = format!("passage:nudge:{j}:email-code");
    let sam = support("sam");
    let start = |bot: &mut Bot, e: &mut FakeEngine| {
        let load = bot
            .handle(PersonIntent::Press {
                from: sam.clone(),
                custom_id: nudge.clone(),
            })
            .next
            .expect("a load");
        let result = e.perform(load.action);
        bot.resume(e.now, load.ticket, result)
            .expect("resume")
            .next
            .expect("a submit")
    };
    // The store is down when the nudge is submitted.
    let submit = start(&mut bot, &mut e);
    let out = bot
        .resume(
            e.now,
            submit.ticket,
            EngineResult::Failed {
                message: "the event store is not answering".into(),
            },
        )
        .expect("resume")
        .outputs;
    assert_eq!(
        text(&out),
        "That did not work: the event store is not answering"
    );
    // Abandoned by the transport (it could not perform the action at all).
    let submit = start(&mut bot, &mut e);
    bot.abandon(submit.ticket);
    // Refused by the engine.
    let submit = start(&mut bot, &mut e);
    let refused = EngineResult::Journey {
        journey: j,
        refusal: Some(passage_core::journey::Rejection::new(
            "journey-finished",
            "This journey has ended.",
        )),
        view: e.view(j),
    };
    let out = bot
        .resume(e.now, submit.ticket, refused)
        .expect("resume")
        .outputs;
    assert_eq!(text(&out), "Not nudged: This journey has ended.");
    assert_eq!(e.sim(j).nudges, 0);
    // None of them counts as the nudge of the last two minutes.
    press(&mut bot, &mut e, &sam, &nudge);
    assert_eq!(e.sim(j).nudges, 1);
}

/// The engine's closing update (the journey completed, expired, was cancelled or left the
/// step) carries a typed `resolved`: the alert shows resolved, without buttons or a ping,
/// keeps the notes taken here, and is no longer listed as open.
#[test]
fn an_alert_the_engine_resolved_shows_resolved_without_buttons() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let key = e.raise_alert(j).expect("a key");
    let deliver = |bot: &mut Bot, e: &mut FakeEngine, text: &str, mention, resolved| {
        converse(
            bot,
            e,
            SystemIntent::AlertDelivered {
                dedup_key: key.clone(),
                text: text.into(),
                update: true,
                mention,
                resolved,
            },
        )
    };
    deliver(&mut bot, &mut e, "stalled", false, false);
    deliver(&mut bot, &mut e, "escalated", true, false);
    press(
        &mut bot,
        &mut e,
        &support("sam"),
        &format!("passage:ack:{j}:email-code"),
    );
    let closing = format!("Reset journey {j} for a•••e@e•••.com: resolved, the journey completed.");
    // Even an escalated alert's closing update pings nobody.
    let out = deliver(&mut bot, &mut e, &closing, true, true);
    let [Output::AlertUpdate(u)] = &out[..] else {
        panic!("one update: {out:#?}")
    };
    assert_eq!(u.dedup_key, key);
    assert_eq!(
        u.state,
        AlertState::Resolved {
            why: closing.clone()
        }
    );
    assert!(u.buttons.is_empty(), "{:?}", u.buttons);
    assert!(!u.mention);
    assert!(u.text.starts_with(&closing), "{}", u.text);
    assert!(u.text.ends_with("Acknowledged by sam."), "{}", u.text);
    // Not an open alert any more; an old Acknowledge button is judged against the journey.
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::ListStalled {
            from: support("sam"),
        },
    );
    assert!(!text(&out).contains("alert"), "{}", text(&out));
    // A resolved update for an alert this chat never showed (a restart) is still resolved.
    let mut fresh = terminal();
    let out = converse(
        &mut fresh,
        &mut e,
        SystemIntent::AlertDelivered {
            dedup_key: key.clone(),
            text: closing.clone(),
            update: true,
            mention: false,
            resolved: true,
        },
    );
    assert!(matches!(
        &out[..],
        [Output::AlertUpdate(u)] if u.buttons.is_empty() && matches!(u.state, AlertState::Resolved { .. })
    ));
}

/// `/journeys stalled` asks the engine for the due journeys (the store's stall_at index,
/// most overdue first) plus the journeys of the alerts it shows open, and lists open alerts
/// first, then the most overdue, capped to what a message can hold.
#[test]
fn stalled_lists_open_alerts_then_the_most_overdue_first() {
    let (mut bot, mut e) = (chat(), FakeEngine::new());
    let sam = support("sam");
    // 20 journeys, started a minute apart: the first is the most overdue.
    let mut journeys = Vec::new();
    for i in 0..20 {
        start(&mut bot, &mut e, &format!("p{i}"), Some("bob@example.com"));
        journeys.push(bot.journey_of(&format!("p{i}")).expect("a journey"));
        e.advance(Duration::from_secs(60));
    }
    // The last one is alerted and escalated: the scanner stops looking (no stall_at).
    let alerted = journeys[19];
    let key = e.raise_alert(alerted).expect("a key");
    converse(
        &mut bot,
        &mut e,
        SystemIntent::AlertDelivered {
            dedup_key: key,
            text: "escalated".into(),
            update: false,
            mention: true,
            resolved: false,
        },
    );
    e.journeys.get_mut(&alerted).expect("journey").stall_at = None;
    // Every other journey is past its 3-minute stall deadline by now.
    e.advance(Duration::from_secs(300));
    let n = e.log.len();
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::ListStalled { from: sam.clone() },
    );
    assert_eq!(
        e.log[n..],
        [EngineAction::ListStalled {
            alerts: vec![alerted]
        }]
    );
    let t = text(&out);
    let lines: Vec<&str> = t.lines().skip(1).collect();
    assert_eq!(lines.len(), 16, "15 journeys and a count: {t}");
    assert!(
        lines[0].starts_with(&format!("• {alerted} at `email-code`"))
            && lines[0].ends_with("; alert open"),
        "the open alert first: {t}"
    );
    // Then the due ones, most overdue first: journeys 0, 1, 2, ...
    for (line, j) in lines[1..15].iter().zip(&journeys) {
        assert!(line.starts_with(&format!("• {j} at `email-code`")), "{t}");
        assert!(line.ends_with("; no alert yet"), "{t}");
    }
    assert_eq!(lines[15], "…and 5 more not shown.");
    assert_eq!(
        button(&out, &format!("Show {}", &alerted.to_string()[..8])),
        format!("passage:show:{alerted}")
    );
}

#[test]
fn a_nudge_for_a_step_left_or_a_finished_journey_sends_nothing() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let sam = support("sam");
    e.progress_elsewhere(j);
    let out = press(
        &mut bot,
        &mut e,
        &sam,
        &format!("passage:nudge:{j}:email-code"),
    );
    assert_eq!(e.sim(j).nudges, 0);
    assert!(text(&out).contains("has moved on to `second-factor` since `email-code`"));
    converse(
        &mut bot,
        &mut e,
        SupportIntent::CancelJourney {
            from: sam.clone(),
            journey: j,
            reason: "duplicate".into(),
        },
    );
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::NudgeUser {
            from: sam,
            journey: j,
        },
    );
    assert_eq!(
        text(&out),
        format!("Journey {j} is cancelled: there is nobody to nudge.")
    );
    assert_eq!(e.sim(j).nudges, 0);
}

#[test]
fn a_nudge_for_a_journey_started_elsewhere_only_goes_by_email() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    // Started by another chat instance (or the web): this bot does not know the person.
    let (j, _) = {
        let mut other = terminal();
        at_step(&mut other, &mut e, Step::EmailCode)
    };
    let out = converse(
        &mut bot,
        &mut e,
        SupportIntent::NudgeUser {
            from: support("sam"),
            journey: j,
        },
    );
    assert!(text(&out).ends_with("the engine emails them a reminder."));
    assert!(!out.iter().any(|o| matches!(o, Output::Direct { .. })));
}

#[test]
fn support_cancels_with_a_reason_and_the_person_is_told() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (j, _) = at_step(&mut bot, &mut e, Step::EmailCode);
    let sam = support("sam");
    let cancel = |bot: &mut Bot, e: &mut FakeEngine, reason: &str| {
        converse(
            bot,
            e,
            SupportIntent::CancelJourney {
                from: sam.clone(),
                journey: j,
                reason: reason.into(),
            },
        )
    };
    let n = e.submits().len();
    // The reason rule of the CLI and the web console (passage_core::reason): at least 3
    // characters with a letter or digit once control and bidi characters are dropped.
    for blank in ["  ", "a  ", "...", "\u{202e}\u{202e}\u{202e}", "ab\n\r"] {
        let out = cancel(&mut bot, &mut e, blank);
        assert_eq!(
            text(&out),
            "Say why, in at least 3 characters with a letter or digit (e.g. a ticket number): \
             the reason is recorded with the cancellation. Nothing was changed.",
            "{blank:?}"
        );
    }
    let out = cancel(&mut bot, &mut e, &"x".repeat(501));
    assert_eq!(
        text(&out),
        "Keep the reason to 500 characters: it is recorded with the cancellation. Nothing \
         was changed."
    );
    assert_eq!(e.submits().len(), n, "nothing reached the engine");
    let out = cancel(&mut bot, &mut e, " caller asked\u{202e} us to stop\n ");
    assert_eq!(
        submits_since(&e, n),
        vec![ChatInput::Cancel {
            reason: "caller asked us to stop".into()
        }],
        "recorded as cleaned: no bidi override, no line break"
    );
    assert_eq!(e.submits()[n].2, sam);
    assert!(text(&out).starts_with(&format!("Journey {j} is cancelled.")));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Direct { user, reply } if user == "alice"
            && reply.text == "Your password reset was cancelled by the service desk. Use /reset to start again."
    )));
    // Twice: the engine refuses, and says why.
    let out = cancel(&mut bot, &mut e, "again");
    assert_eq!(text(&out), "Not cancelled: This journey has already ended.");
    // Alice's next message shows the end.
    let out = say(&mut bot, &mut e, "alice", "123456");
    assert!(text(&out).contains("This password reset was cancelled: caller asked us to stop."));
    assert!(out.contains(&Output::Ended {
        journey: j,
        status: Status::Cancelled
    }));
}

// ------------------------------------------------------------------ the protocol itself

#[test]
fn engine_failures_are_reported_and_release_the_press() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let (_, out) = at_step(&mut bot, &mut e, Step::Choose);
    let sms = button(&out, "Send SMS to my mobile");
    let turn = bot.handle(PersonIntent::Press {
        from: person("alice"),
        custom_id: sms.clone(),
    });
    let ticket = turn.next.expect("a load").ticket;
    let turn = bot
        .resume(
            e.now,
            ticket,
            EngineResult::Failed {
                message: "the event store is not answering".into(),
            },
        )
        .expect("resume");
    assert_eq!(
        text(&turn.outputs),
        "That did not work: the event store is not answering"
    );
    assert!(turn.next.is_none());
    let n = e.submits().len();
    press(&mut bot, &mut e, &person("alice"), &sms);
    assert_eq!(e.submits().len(), n + 1, "the press is free again");
}

#[test]
fn resuming_a_ticket_twice_or_with_the_wrong_result_is_an_error() {
    let (mut bot, mut e) = (terminal(), FakeEngine::new());
    let turn = bot.handle(PersonIntent::StartReset {
        from: person("alice"),
        email: None,
    });
    let request = turn.next.expect("a start");
    let result = e.perform(request.action.clone());
    let _ = bot
        .resume(e.now, request.ticket, result.clone())
        .expect("first");
    assert!(matches!(
        bot.resume(e.now, request.ticket, result),
        Err(Error::UnknownTicket(_))
    ));
    let turn = bot.handle(SupportIntent::ShowJourney {
        from: support("sam"),
        journey: jid(1),
    });
    let request = turn.next.expect("a timeline");
    let wrong = e.perform(EngineAction::Load { journey: jid(1) });
    assert_eq!(
        bot.resume(e.now, request.ticket, wrong).err(),
        Some(Error::UnexpectedResult {
            expected: "timeline",
            got: "journey"
        })
    );
    assert_eq!(bot.pending(), 0);
}

#[test]
fn nothing_typed_reaches_a_debug_print() {
    let secret = "493817";
    let email = "alice@example.com";
    let printed = [
        format!(
            "{:?}",
            PersonIntent::Text {
                from: person("alice"),
                text: secret.into()
            }
        ),
        format!(
            "{:?}",
            PersonIntent::FormSubmitted {
                from: person("alice"),
                custom_id: "passage:code:x".into(),
                value: secret.into()
            }
        ),
        format!(
            "{:?}",
            PersonIntent::StartReset {
                from: person("alice"),
                email: Some(email.into())
            }
        ),
        format!("{:?}", ChatInput::Code(secret.into())),
        format!("{:?}", ChatInput::Email(email.into())),
        format!(
            "{:?}",
            EngineAction::Start {
                workflow: "password-reset".into(),
                email: Some(email.into()),
                by: person("alice")
            }
        ),
        format!(
            "{:?}",
            EngineAction::Submit {
                journey: jid(1),
                input: ChatInput::Code(secret.into()),
                by: person("alice")
            }
        ),
    ];
    for p in &printed {
        assert!(!p.contains(secret) && !p.contains(email), "{p}");
    }
    // Nor a bot holding them in flight.
    let mut bot = terminal();
    let mut e = FakeEngine::new();
    at_step(&mut bot, &mut e, Step::EmailCode);
    let _pending = bot.handle(PersonIntent::Text {
        from: person("alice"),
        text: secret.into(),
    });
    assert!(!format!("{bot:?}").contains(secret));
}

#[test]
fn custom_ids_in_outputs_parse_back_to_their_journey() {
    let (mut bot, mut e) = (chat(), FakeEngine::new());
    let out = start(&mut bot, &mut e, "alice", Some("alice@example.com"));
    let j = bot.journey_of("alice").expect("bound");
    for (_, id) in buttons(&out) {
        let b: ButtonId = id.parse().expect("ours");
        assert_eq!(b.journey(), j);
        assert!(id.len() <= passage_bot::MAX_CUSTOM_ID_LEN);
    }
}
