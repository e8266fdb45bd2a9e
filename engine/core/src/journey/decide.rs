//! Every rule of a journey, enforced on the server: step order (R28), code lifetime (R8),
//! attempts counted before checking (R13), resend that replaces the code but keeps the
//! failure count (R14), overall lifetime (R30), single-use confirmations (R9, R31).
//!
//! Concurrency: the runtime appends a decision with the stream version it decided on, so
//! two racing submissions are serialised by the store; the loser decides again on fresh
//! state. Counting an attempt and judging it therefore happen on the same version.

use super::events::{AttemptFailure, CallFailure, JourneyEvent};
use super::state::{JourneyState, Status};
use super::{Command, Context, Decision, Effect, FoundAccount, Rejection, Reply, Timer, TimerKind};
use crate::definition::{
    CodeChannel, CodeStep, Definition, StepId, StepKind, VoiceConfirm, VoiceStep,
};
use crate::password::{self, requirements};
use crate::secrets::{code_hash, code_matches, generate_code, seal, session_token};
use std::time::Duration;

/// Minimum time between two calls in one voice step, so "Call me" cannot bomb a phone (attack 36).
pub const CALL_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Out {
    events: Vec<JourneyEvent>,
    effects: Vec<Effect>,
    timers: Vec<Timer>,
    session_token: Option<String>,
}

impl Out {
    fn accept(self) -> Decision {
        Decision {
            events: self.events,
            effects: self.effects,
            timers: self.timers,
            reply: Reply::Accepted {
                session_token: self.session_token,
            },
        }
    }

    fn reject(self, code: &str, message: impl Into<String>) -> Decision {
        Decision {
            events: self.events,
            effects: self.effects,
            timers: self.timers,
            reply: Reply::Rejected(Rejection::new(code, message)),
        }
    }

    /// Records the refusal for support and audit (R49), then refuses.
    fn refuse(
        mut self,
        state: &JourneyState,
        cmd: &Command,
        code: &str,
        message: impl Into<String>,
    ) -> Decision {
        self.events.push(JourneyEvent::InputRejected {
            step: state.current_step.clone(),
            input: cmd.name().into(),
            reason: code.into(),
        });
        self.reject(code, message)
    }
}

/// Who the journey is about, as known at the moment a step is entered.
struct Subject<'a> {
    account_id: Option<&'a str>,
    email_masked: Option<&'a str>,
    phone_masked: Option<&'a str>,
}

impl<'a> Subject<'a> {
    fn of(state: &'a JourneyState) -> Self {
        Self {
            account_id: state.account_id.as_deref(),
            email_masked: state.email_masked.as_deref(),
            phone_masked: state.phone_masked.as_deref(),
        }
    }
}

pub fn decide(
    state: &JourneyState,
    def: &Definition,
    cmd: &Command,
    ctx: &mut Context<'_>,
) -> Decision {
    let mut d = decide_command(state, def, cmd, ctx);
    // An alert that stops being needed is closed in the same decision, so support does not
    // chase a journey that is over or a step the person already finished (on the web page,
    // by phone, in chat). Not on erasure: the outbox rows of an erased journey are deleted
    // with its key, and the text would name the address.
    let erasing = matches!(cmd, Command::ErasePersonalData { .. });
    if let Some(alert) = state.open_alert().filter(|_| !erasing)
        && !d.events.is_empty()
    {
        let mut after = state.clone();
        for e in &d.events {
            after.apply(e);
        }
        if after.alert_resolved(&alert.dedup_key) {
            let how = match (after.status, &after.current_step) {
                (Status::Completed, _) => "completed: the password was reset".to_owned(),
                (Status::Expired, _) => "expired".to_owned(),
                (Status::Cancelled, _) => "cancelled".to_owned(),
                (_, Some(step)) => format!("moved on to `{step}`"),
                (status, None) => status.as_str().to_owned(),
            };
            d.effects.push(Effect::RaiseAlert {
                effect_id: ctx.rng.uuid(),
                dedup_key: alert.dedup_key.clone(),
                text: format!(
                    "{}: resolved, the journey {how}.",
                    alert_subject(state, ctx)
                ),
                update: true,
                mention: false,
                resolved: true,
            });
        }
    }
    d
}

fn decide_command(
    state: &JourneyState,
    def: &Definition,
    cmd: &Command,
    ctx: &mut Context<'_>,
) -> Decision {
    let mut out = Out::default();

    if let Command::Start { origin, .. } = cmd {
        if state.status != Status::NotStarted {
            return out.reject("already-started", "This journey has already started.");
        }
        let expires_at = ctx.now.plus(def.lifetime);
        out.events.push(JourneyEvent::JourneyStarted {
            definition_id: def.id.clone(),
            definition_version: def.version,
            definition_hash: def.content_hash.clone(),
            origin: origin.clone(),
            first_step: def.start.clone(),
            started_at: ctx.now,
            expires_at,
        });
        out.timers.push(Timer {
            timer_id: ctx.rng.uuid(),
            fire_at: expires_at,
            kind: TimerKind::JourneyLifetime,
        });
        return out.accept();
    }

    if state.status == Status::NotStarted {
        // Nothing to record against: the stream does not exist.
        return out.reject("not-started", "No journey with this id has started.");
    }

    if let Command::ErasePersonalData { reason } = cmd {
        if state.erased {
            return out.accept();
        }
        if !state.status.is_finished() {
            out.events.push(JourneyEvent::JourneyCancelled {
                reason: "personal data erased".into(),
            });
        }
        out.events.push(JourneyEvent::PersonalDataErased {
            reason: reason.clone(),
        });
        return out.accept();
    }
    if state.erased {
        // Nothing more is recorded about an erased person: a late delivery report or a
        // stall scan would only add to what was erased.
        return out.reject(
            "erased",
            "This journey's personal data was erased; it cannot continue. Start again.",
        );
    }

    // Delivery outcomes are facts from a provider: record them whatever the journey's state.
    match cmd {
        Command::Delivered {
            effect_id,
            channel,
            provider_ref,
        } => {
            out.events.push(JourneyEvent::MessageDelivered {
                effect_id: *effect_id,
                channel: channel.clone(),
                provider_ref: provider_ref.clone(),
            });
            return out.accept();
        }
        Command::DeliveryFailed {
            effect_id,
            channel,
            error,
            permanent,
        } => {
            out.events.push(JourneyEvent::MessageFailed {
                effect_id: *effect_id,
                channel: channel.clone(),
                error: error.clone(),
                permanent: *permanent,
            });
            return out.accept();
        }
        _ => {}
    }

    // Chat-ops: decided on finished journeys too (a failed journey is worth an alert).
    match cmd {
        Command::Stalled { escalate_after } => {
            return stalled(out, state, def, ctx, *escalate_after);
        }
        Command::AcknowledgeAlert => {
            let Some(alert) = state.alert.as_ref().filter(|a| !a.acknowledged) else {
                return out.refuse(state, cmd, "no-alert", "This journey has no open alert.");
            };
            out.events.push(JourneyEvent::SupportAlertAcknowledged {
                dedup_key: alert.dedup_key.clone(),
            });
            out.effects.push(Effect::RaiseAlert {
                effect_id: ctx.rng.uuid(),
                dedup_key: alert.dedup_key.clone(),
                text: format!("{} — acknowledged by support.", alert_subject(state, ctx)),
                update: true,
                mention: false,
                resolved: false,
            });
            return out.accept();
        }
        _ => {}
    }

    let is_timer = matches!(cmd, Command::TimerFired { .. });
    if state.status.is_finished() {
        if is_timer {
            return out.accept();
        }
        let msg = match state.status {
            Status::Completed => {
                "This journey is already complete. Start again to reset once more."
            }
            Status::Expired => "This journey has expired. Start again.",
            _ => "This journey has ended. Start again.",
        };
        return out.refuse(state, cmd, "journey-finished", msg);
    }

    if state.expires_at.is_some_and(|t| ctx.now >= t) {
        out.events.push(JourneyEvent::JourneyExpired {
            step: state.current_step.clone(),
        });
        return if is_timer {
            out.accept()
        } else {
            out.reject(
                "journey-expired",
                "This journey has expired. Start again from \"Forgot Password?\".",
            )
        };
    }
    // After the lifetime check: a link still inside its 10 minutes does not outlive the
    // journey.
    if let Command::OpenHandoff { expires_at } = cmd {
        if state.handoffs_used.contains(expires_at) {
            return out.refuse(
                state,
                cmd,
                "link-used",
                "This link was already used. Ask for a new one.",
            );
        }
        out.events.push(JourneyEvent::HandoffLinkOpened {
            expires_at: *expires_at,
        });
        return out.accept();
    }

    if let Command::Cancel { reason } = cmd {
        out.events.push(JourneyEvent::JourneyCancelled {
            reason: reason.clone(),
        });
        return out.accept();
    }

    let Some(step) = state.current_step.as_ref().and_then(|s| def.step(s)) else {
        return out.refuse(
            state,
            cmd,
            "definition-mismatch",
            "This journey's definition does not have its current step.",
        );
    };

    match (cmd, &step.kind) {
        (Command::TimerFired { timer }, kind) => on_timer(out, state, &step.id, kind, timer),

        (Command::Nudge, _) => {
            out.events.push(JourneyEvent::PersonNudged {
                step: step.id.clone(),
                by_support: true,
            });
            if let Some(account_id) = &state.account_id {
                out.effects.push(Effect::SendNudge {
                    effect_id: ctx.rng.uuid(),
                    account_id: account_id.clone(),
                    step: step.id.clone(),
                });
            }
            out.accept()
        }

        (
            Command::SubmitEmail {
                email_masked,
                subject,
                account,
            },
            StepKind::Identify { next, .. },
        ) => {
            let account: Option<&FoundAccount> = account.as_ref();
            out.events.push(JourneyEvent::EmailSubmitted {
                step: step.id.clone(),
                email_masked: email_masked.clone(),
                account_id: account.map(|a| a.account_id.clone()),
                phone_masked: account.and_then(|a| a.phone_masked.clone()),
                next: next.clone(),
                subject: Some(subject.clone()),
            });
            let who = Subject {
                account_id: account.map(|a| a.account_id.as_str()),
                email_masked: Some(email_masked),
                phone_masked: account.and_then(|a| a.phone_masked.as_deref()),
            };
            enter(&mut out, def, next, &who, ctx);
            out.accept()
        }
        (Command::RejectEmail { reason }, StepKind::Identify { .. }) => {
            out.refuse(state, cmd, "invalid-email", reason.clone())
        }

        (Command::SubmitCode { code }, StepKind::Code(c)) => {
            let Some(active) = state.code.as_ref().filter(|a| a.step == step.id) else {
                return out.refuse(state, cmd, "no-code", "No code has been sent yet.");
            };
            let target = CodeTarget {
                issue: active.issue,
                hash: active.code_hash.as_deref(),
                expires_at: active.expires_at,
            };
            verify_code(
                out,
                state,
                def,
                cmd,
                ctx,
                &step.id,
                &code.0,
                c.digits,
                c.max_attempts,
                target,
                &c.next,
            )
        }
        (Command::SubmitCode { code }, StepKind::Voice(v)) => {
            let VoiceConfirm::SpokenCode { digits } = v.confirm else {
                return out.refuse(
                    state,
                    cmd,
                    "not-expected",
                    "This step is confirmed on the call: press # when prompted.",
                );
            };
            let Some(call) = state.call.as_ref().filter(|c| c.open) else {
                return out.refuse(
                    state,
                    cmd,
                    "call-not-active",
                    "There is no call in progress: ask for a new call.",
                );
            };
            let target = CodeTarget {
                issue: call.number,
                hash: call.code_hash.as_deref(),
                expires_at: call.expires_at,
            };
            verify_code(
                out,
                state,
                def,
                cmd,
                ctx,
                &step.id,
                &code.0,
                digits,
                v.max_attempts,
                target,
                &v.next,
            )
        }

        (Command::Resend, StepKind::Code(c)) => {
            let allowed = 1 + c.resend.max;
            if state.step_sends >= allowed {
                return out.refuse(
                    state,
                    cmd,
                    "resend-limit",
                    format!("No more codes can be sent in this step ({allowed} at most)."),
                );
            }
            if let Some(last) = state.last_send_at {
                let ready = last.plus(c.resend.cooldown);
                if ctx.now < ready {
                    let secs = ready.since(ctx.now).as_secs().max(1);
                    return out.refuse(
                        state,
                        cmd,
                        "resend-too-soon",
                        format!("Please wait {secs} s before asking for another code."),
                    );
                }
            }
            let issue = state.code.as_ref().map_or(0, |a| a.issue) + 1;
            issue_code(&mut out, &step.id, c, issue, &Subject::of(state), ctx);
            out.accept()
        }
        (Command::Resend, StepKind::Voice(v)) => {
            if state.step_sends >= v.max_calls {
                return out.refuse(
                    state,
                    cmd,
                    "call-limit",
                    format!(
                        "No more calls can be placed in this step ({} at most).",
                        v.max_calls
                    ),
                );
            }
            if let Some(last) = state.last_send_at {
                let ready = last.plus(CALL_COOLDOWN);
                if ctx.now < ready {
                    let secs = ready.since(ctx.now).as_secs().max(1);
                    return out.refuse(
                        state,
                        cmd,
                        "call-too-soon",
                        format!("Please wait {secs} s before asking for another call."),
                    );
                }
            }
            if let Some(call) = state.call.as_ref().filter(|c| c.open) {
                out.events.push(JourneyEvent::CallFailed {
                    step: step.id.clone(),
                    call_id: call.call_id,
                    reason: CallFailure::Superseded,
                });
            }
            place_call(
                &mut out,
                &step.id,
                v,
                state.step_sends + 1,
                &Subject::of(state),
                ctx,
            );
            out.accept()
        }

        (Command::Choose { option }, StepKind::Choose { options }) => {
            let Some(chosen) = options.iter().find(|o| &o.id == option) else {
                let ids: Vec<&str> = options.iter().map(|o| o.id.as_str()).collect();
                return out.refuse(
                    state,
                    cmd,
                    "unknown-option",
                    format!("Choose one of: {}.", ids.join(", ")),
                );
            };
            if state.account_id.is_some()
                && state.phone_masked.is_none()
                && needs_phone(def, &chosen.next)
            {
                return out.refuse(
                    state,
                    cmd,
                    "no-phone",
                    "No phone number is registered on this account: please contact support.",
                );
            }
            out.events.push(JourneyEvent::OptionChosen {
                step: step.id.clone(),
                option: chosen.id.clone(),
                next: chosen.next.clone(),
            });
            enter(&mut out, def, &chosen.next, &Subject::of(state), ctx);
            out.accept()
        }

        (Command::CallKeys { call_id, digits }, StepKind::Voice(v)) => {
            let Some(call) = state
                .call
                .as_ref()
                .filter(|c| c.open && c.call_id == *call_id)
            else {
                return out.refuse(
                    state,
                    cmd,
                    "call-not-active",
                    "This call is not waiting for a key.",
                );
            };
            if ctx.now >= call.expires_at {
                fail_call(
                    &mut out,
                    state,
                    &step.id,
                    v,
                    *call_id,
                    CallFailure::TimedOut,
                );
                return out.reject(
                    "call-expired",
                    "The call took too long: ask for a new call.",
                );
            }
            match v.confirm {
                VoiceConfirm::PressPound if digits == "#" => {
                    out.events.push(JourneyEvent::CallConfirmed {
                        step: step.id.clone(),
                        call_id: *call_id,
                        next: v.next.clone(),
                    });
                    enter(&mut out, def, &v.next, &Subject::of(state), ctx);
                    out.accept()
                }
                VoiceConfirm::PressPound => {
                    // Any other key fails closed (R26, attack case 38).
                    fail_call(
                        &mut out,
                        state,
                        &step.id,
                        v,
                        *call_id,
                        CallFailure::WrongKey,
                    );
                    out.reject("wrong-key", "The call was not confirmed: only # confirms.")
                }
                VoiceConfirm::SpokenCode { .. } => out.refuse(
                    state,
                    cmd,
                    "not-expected",
                    "Type the code you heard on the call where you started the reset.",
                ),
            }
        }
        (Command::CallEnded { call_id, reason }, StepKind::Voice(v)) => {
            if state
                .call
                .as_ref()
                .is_some_and(|c| c.open && c.call_id == *call_id)
            {
                fail_call(&mut out, state, &step.id, v, *call_id, *reason);
            }
            out.accept()
        }

        (
            Command::SetPassword {
                new,
                confirm,
                context,
            },
            StepKind::SetPassword { policy, next },
        ) => {
            let (Some(account_id), Some(policy_def)) =
                (state.account_id.as_ref(), def.policies.get(policy))
            else {
                return out.refuse(
                    state,
                    cmd,
                    "not-allowed",
                    "This journey cannot set a password.",
                );
            };
            let reqs = requirements(policy_def, &new.0, &confirm.0, context);
            let unmet: Vec<_> = reqs.iter().filter(|r| !r.met).collect();
            if !unmet.is_empty() {
                out.events.push(JourneyEvent::PasswordRejected {
                    step: step.id.clone(),
                    unmet: unmet.iter().map(|r| r.id.to_string()).collect(),
                });
                let labels: Vec<&str> = unmet.iter().map(|r| r.label.as_str()).collect();
                return out.reject(
                    "password-policy",
                    format!("The new password does not meet: {}.", labels.join("; ")),
                );
            }
            let mut salt = [0u8; 16];
            ctx.rng.fill(&mut salt);
            let phc = match ctx.hasher.hash(&password::normalize(&new.0), &salt) {
                Ok(phc) => phc,
                Err(_) => {
                    return out.refuse(
                        state,
                        cmd,
                        "hash-failed",
                        "The password could not be stored; try again.",
                    );
                }
            };
            let effect_id = ctx.rng.uuid();
            out.effects.push(Effect::ApplyPassword {
                effect_id,
                account_id: account_id.clone(),
                phc,
                notify_at: Some(ctx.now),
            });
            out.events.push(JourneyEvent::PasswordChanged {
                step: step.id.clone(),
                account_id: account_id.clone(),
                policy: policy.clone(),
                effect_id,
                next: next.clone(),
            });
            enter(&mut out, def, next, &Subject::of(state), ctx);
            out.accept()
        }

        // A call reported after its step was passed: the confirmation was single-use.
        (Command::CallKeys { .. }, _) => out.refuse(
            state,
            cmd,
            "call-not-active",
            "This call is not waiting for a key.",
        ),
        (Command::CallEnded { .. }, _) => out.accept(),

        (_, kind) => {
            let expected = match kind {
                StepKind::Identify { .. } => "your email address",
                StepKind::Code(_) => "the verification code",
                StepKind::Choose { .. } => "a verification method",
                StepKind::Voice(_) => "the call's confirmation",
                StepKind::SetPassword { .. } => "a new password",
                StepKind::Complete { .. } => "nothing more",
            };
            out.refuse(
                state,
                cmd,
                "step-not-allowed",
                format!("That is not possible now: this step expects {expected}."),
            )
        }
    }
}

struct CodeTarget<'a> {
    issue: u32,
    hash: Option<&'a str>,
    expires_at: crate::time::Timestamp,
}

#[allow(clippy::too_many_arguments)]
fn verify_code(
    mut out: Out,
    state: &JourneyState,
    def: &Definition,
    cmd: &Command,
    ctx: &mut Context<'_>,
    step: &StepId,
    code: &str,
    digits: u8,
    max_attempts: u32,
    target: CodeTarget<'_>,
    next: &StepId,
) -> Decision {
    // Shape first, before any crypto runs (R12); a malformed code is not an attempt.
    if code.len() != digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return out.refuse(
            state,
            cmd,
            "malformed-code",
            format!("Enter the {digits}-digit code, digits only."),
        );
    }
    // Keyed on the address, not the account, so unknown addresses are capped alike (R1, R16).
    if ctx.subject_failures >= super::SUBJECT_FAILURE_CAP {
        return out.refuse(
            state,
            cmd,
            "too-many-attempts",
            "Too many failed attempts for this address: wait an hour, or contact the service desk.",
        );
    }
    if state.step_failures >= max_attempts {
        return out.refuse(
            state,
            cmd,
            "too-many-attempts",
            "Too many attempts: start again.",
        );
    }
    // The attempt is counted before it is judged (R13).
    let attempt = state.step_failures + 1;
    let in_time = ctx.now < target.expires_at;
    let journey = ctx.journey_id.0;
    let matches = in_time
        && target
            .hash
            .is_some_and(|h| code_matches(ctx.keys, journey, step.as_str(), target.issue, code, h));
    if matches {
        if matches!(def.step(step).map(|s| &s.kind), Some(StepKind::Voice(_))) {
            let call_id = state.call.as_ref().map(|c| c.call_id).unwrap_or_default();
            out.events.push(JourneyEvent::CallConfirmed {
                step: step.clone(),
                call_id,
                next: next.clone(),
            });
        } else {
            out.events.push(JourneyEvent::CodeVerified {
                step: step.clone(),
                attempt,
                next: next.clone(),
            });
        }
        enter(&mut out, def, next, &Subject::of(state), ctx);
        return out.accept();
    }
    let left = max_attempts.saturating_sub(attempt);
    out.events.push(JourneyEvent::CodeAttemptFailed {
        step: step.clone(),
        attempt,
        reason: if in_time {
            AttemptFailure::Wrong
        } else {
            AttemptFailure::Expired
        },
        attempts_left: left,
    });
    if left == 0 {
        out.events.push(JourneyEvent::JourneyFailed {
            step: step.clone(),
            reason: "too many wrong codes".into(),
        });
        return out.reject("too-many-attempts", "Too many wrong codes: start again.");
    }
    if in_time {
        out.reject(
            "invalid-code",
            format!(
                "That code is not right. {left} attempt{} left.",
                if left == 1 { "" } else { "s" }
            ),
        )
    } else {
        out.reject(
            "code-expired",
            format!(
                "That code has expired: use \"Re-send code\" for a new one. {left} attempt(s) left."
            ),
        )
    }
}

fn needs_phone(def: &Definition, step: &StepId) -> bool {
    matches!(
        def.step(step).map(|s| &s.kind),
        Some(StepKind::Voice(_))
            | Some(StepKind::Code(CodeStep {
                channel: CodeChannel::Sms,
                ..
            }))
    )
}

/// What happens on arrival at a step: codes go out, calls are placed, the journey completes.
fn enter(out: &mut Out, def: &Definition, next: &StepId, who: &Subject<'_>, ctx: &mut Context<'_>) {
    let Some(step) = def.step(next) else { return };
    if who.account_id.is_some() && who.phone_masked.is_none() && needs_phone(def, next) {
        out.events.push(JourneyEvent::JourneyFailed {
            step: next.clone(),
            reason: "no phone number is registered on the account".into(),
        });
        return;
    }
    match &step.kind {
        StepKind::Code(c) => issue_code(out, next, c, 1, who, ctx),
        StepKind::Voice(v) => place_call(out, next, v, 1, who, ctx),
        StepKind::Complete { tiles } => {
            let (token, hash) = session_token(ctx.rng);
            out.events.push(JourneyEvent::JourneyCompleted {
                step: next.clone(),
                session_hash: hash,
                tiles: tiles.iter().map(|t| t.title.clone()).collect(),
            });
            out.session_token = Some(token);
        }
        StepKind::Identify { .. } | StepKind::Choose { .. } | StepKind::SetPassword { .. } => {}
    }
}

fn issue_code(
    out: &mut Out,
    step: &StepId,
    c: &CodeStep,
    issue: u32,
    who: &Subject<'_>,
    ctx: &mut Context<'_>,
) {
    let code = generate_code(ctx.rng, c.digits);
    let expires_at = ctx.now.plus(c.lifetime);
    let (hash, effect_id) = match who.account_id {
        Some(account_id) => {
            let effect_id = ctx.rng.uuid();
            out.effects.push(Effect::SendCode {
                effect_id,
                account_id: account_id.to_owned(),
                channel: c.channel,
                step: step.clone(),
                sealed_code: seal(ctx.keys, effect_id, &code),
                expires_at,
            });
            (
                Some(code_hash(
                    ctx.keys,
                    ctx.journey_id.0,
                    step.as_str(),
                    issue,
                    &code,
                )),
                Some(effect_id),
            )
        }
        // R3: no account, nothing sent, no code can match; the journey looks the same.
        None => (None, None),
    };
    let destination = match c.channel {
        CodeChannel::Email => who.email_masked,
        CodeChannel::Sms => who.phone_masked,
    };
    out.events.push(JourneyEvent::CodeIssued {
        step: step.clone(),
        channel: c.channel,
        issue,
        code_hash: hash,
        destination_masked: destination.map(str::to_owned),
        issued_at: ctx.now,
        expires_at,
        effect_id,
    });
    out.timers.push(Timer {
        timer_id: ctx.rng.uuid(),
        fire_at: expires_at,
        kind: TimerKind::CodeExpiry {
            step: step.clone(),
            issue,
        },
    });
}

fn place_call(
    out: &mut Out,
    step: &StepId,
    v: &VoiceStep,
    number: u32,
    who: &Subject<'_>,
    ctx: &mut Context<'_>,
) {
    let call_id = ctx.rng.uuid();
    let expires_at = ctx.now.plus(v.lifetime);
    let spoken = match v.confirm {
        VoiceConfirm::SpokenCode { digits } => Some(generate_code(ctx.rng, digits)),
        VoiceConfirm::PressPound => None,
    };
    let (hash, effect_id) = match who.account_id {
        Some(account_id) => {
            let effect_id = ctx.rng.uuid();
            out.effects.push(Effect::PlaceCall {
                effect_id,
                account_id: account_id.to_owned(),
                call_id,
                step: step.clone(),
                sealed_code: spoken.as_deref().map(|c| seal(ctx.keys, effect_id, c)),
            });
            let hash = spoken
                .as_deref()
                .map(|c| code_hash(ctx.keys, ctx.journey_id.0, step.as_str(), number, c));
            (hash, Some(effect_id))
        }
        None => (None, None),
    };
    out.events.push(JourneyEvent::CallPlaced {
        step: step.clone(),
        call: number,
        call_id,
        destination_masked: who.phone_masked.map(str::to_owned),
        confirm: v.confirm,
        code_hash: hash,
        placed_at: ctx.now,
        expires_at,
        effect_id,
    });
    out.timers.push(Timer {
        timer_id: ctx.rng.uuid(),
        fire_at: expires_at,
        kind: TimerKind::CallTimeout { call_id },
    });
}

/// Closes a call without confirmation; the last allowed call failing ends the journey.
fn fail_call(
    out: &mut Out,
    state: &JourneyState,
    step: &StepId,
    v: &VoiceStep,
    call_id: uuid::Uuid,
    reason: CallFailure,
) {
    out.events.push(JourneyEvent::CallFailed {
        step: step.clone(),
        call_id,
        reason,
    });
    if state.step_sends >= v.max_calls {
        out.events.push(JourneyEvent::JourneyFailed {
            step: step.clone(),
            reason: format!("no call was confirmed ({} placed)", state.step_sends),
        });
    }
}

fn on_timer(
    mut out: Out,
    state: &JourneyState,
    step: &StepId,
    kind: &StepKind,
    timer: &TimerKind,
) -> Decision {
    match (timer, kind) {
        (TimerKind::CodeExpiry { step: s, issue }, StepKind::Code(_))
            if s == step && state.code.as_ref().is_some_and(|c| c.issue == *issue) =>
        {
            out.events.push(JourneyEvent::CodeExpired {
                step: s.clone(),
                issue: *issue,
            });
        }
        (TimerKind::CallTimeout { call_id }, StepKind::Voice(v))
            if state
                .call
                .as_ref()
                .is_some_and(|c| c.open && c.call_id == *call_id) =>
        {
            fail_call(&mut out, state, step, v, *call_id, CallFailure::TimedOut);
        }
        // The lifetime timer is handled by the expiry check before the step match; any
        // other timer is stale (its code was replaced or its step passed).
        _ => {}
    }
    out.accept()
}

/// Who and where, for an alert: never more than the masked address (R50).
fn alert_subject(state: &JourneyState, ctx: &Context<'_>) -> String {
    format!(
        "Reset journey {} for {}",
        ctx.journey_id,
        state
            .email_masked
            .as_deref()
            .unwrap_or("an address not yet given")
    )
}

/// The stall scanner's command: nudge, then alert, then refresh the alert, escalating it
/// once it has waited `escalate_after` without an acknowledgement. A failed journey gets one
/// alert and nothing else.
fn stalled(
    mut out: Out,
    state: &JourneyState,
    def: &Definition,
    ctx: &mut Context<'_>,
    escalate_after: std::time::Duration,
) -> Decision {
    let who = alert_subject(state, ctx);
    let step = state.current_step.clone();
    let key = format!(
        "{}:{}",
        ctx.journey_id,
        step.as_ref().map(StepId::as_str).unwrap_or("-")
    );
    let raise =
        |out: &mut Out, ctx: &mut Context<'_>, text: String, update: bool, mention: bool| {
            out.effects.push(Effect::RaiseAlert {
                effect_id: ctx.rng.uuid(),
                dedup_key: key.clone(),
                text,
                update,
                mention,
                resolved: false,
            });
        };
    match state.status {
        // Failed after an alert on its step: the same alert, now saying it failed (once:
        // the scanner stops looking at finished journeys).
        Status::Failed if state.alert.is_some() => {
            let reason = format!(
                "failed: {}",
                state
                    .finish_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            );
            let key = state
                .alert
                .as_ref()
                .map(|a| a.dedup_key.clone())
                .unwrap_or_default();
            out.events.push(JourneyEvent::SupportAlertUpdated {
                dedup_key: key.clone(),
                reason: reason.clone(),
            });
            out.effects.push(Effect::RaiseAlert {
                effect_id: ctx.rng.uuid(),
                dedup_key: key,
                text: format!("{who} {reason}."),
                update: true,
                mention: false,
                resolved: false,
            });
            return out.accept();
        }
        Status::Failed => {
            let reason = format!(
                "failed: {}",
                state
                    .finish_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            );
            out.events.push(JourneyEvent::SupportAlerted {
                step,
                dedup_key: key.clone(),
                reason: reason.clone(),
                alerted_at: ctx.now,
            });
            raise(&mut out, ctx, format!("{who} {reason}."), false, false);
            return out.accept();
        }
        Status::Active => {}
        // Completed, expired, cancelled, or failed and already alerted: nothing to do.
        _ => return out.accept(),
    }
    let Some(step_id) = step else {
        return out.accept();
    };
    let waited = def
        .step(&step_id)
        .and_then(|s| s.stall_after)
        .map(crate::time::format_duration)
        .unwrap_or_else(|| "a while".into());
    let reason = if state.undeliverable {
        format!("a message for step `{step_id}` could not be delivered")
    } else {
        format!("no progress at step `{step_id}` for {waited} or more")
    };
    // A nudge cannot help someone whose code never arrived: straight to support.
    if !state.nudged && !state.undeliverable {
        out.events.push(JourneyEvent::PersonNudged {
            step: step_id.clone(),
            by_support: false,
        });
        if let Some(account_id) = &state.account_id {
            out.effects.push(Effect::SendNudge {
                effect_id: ctx.rng.uuid(),
                account_id: account_id.clone(),
                step: step_id,
            });
        }
        return out.accept();
    }
    match &state.alert {
        None => {
            out.events.push(JourneyEvent::SupportAlerted {
                step: Some(step_id),
                dedup_key: key.clone(),
                reason: reason.clone(),
                alerted_at: ctx.now,
            });
            // Only a nudge that went out may be claimed: an undeliverable message is alerted
            // without one, and a journey for an unknown address has nobody to email.
            let nudge_sent = state.nudged && state.account_id.is_some();
            let nudge = if nudge_sent {
                "the person was nudged"
            } else {
                "the person was not nudged"
            };
            raise(
                &mut out,
                ctx,
                format!("{who}: {reason}; {nudge}."),
                false,
                false,
            );
        }
        Some(a)
            if !a.acknowledged && !a.escalated && ctx.now >= a.alerted_at.plus(escalate_after) =>
        {
            out.events.push(JourneyEvent::SupportAlertEscalated {
                dedup_key: a.dedup_key.clone(),
            });
            raise(
                &mut out,
                ctx,
                format!(
                    "{who}: {reason}; not acknowledged for {}.",
                    crate::time::format_duration(escalate_after)
                ),
                true,
                true,
            );
        }
        Some(a) => {
            out.events.push(JourneyEvent::SupportAlertUpdated {
                dedup_key: a.dedup_key.clone(),
                reason: reason.clone(),
            });
            let status = if a.acknowledged {
                " (acknowledged)"
            } else {
                ""
            };
            raise(
                &mut out,
                ctx,
                format!("{who}: {reason}{status}."),
                true,
                false,
            );
        }
    }
    out.accept()
}
