//! How a journey reads in chat: a [`JourneyView`] (what the web page shows) turned into a
//! reply with buttons, plus the secret-step, waiting and ended signals a transport acts on.
//!
//! Only the view's data is used: masked addresses, prompts and labels from the definition,
//! and the engine's own refusal messages. Nothing a person typed is ever interpolated.

use crate::bot::Surface;
use crate::ids::{AlertKey, ButtonId};
use crate::model::{
    Button, ButtonStyle, Output, Reply, SecretKind, SecretStep, TimelineLine, WaitReason, Waiting,
};
use passage_core::definition::VoiceConfirm;
use passage_core::journey::Rejection;
use passage_core::journey::Status;
use passage_core::journey::view::{JourneyView, StepView};
use passage_core::ports::JourneyId;
use passage_core::time::Timestamp;

/// `HH:MM:SS UTC`.
pub(crate) fn hms(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("{} UTC", s.get(11..19).unwrap_or(&s))
}

/// The prompt as a sentence.
fn sentence(prompt: &str) -> String {
    match prompt.trim_end().chars().last() {
        Some('.' | '!' | '?' | ':') | None => prompt.trim_end().to_owned(),
        Some(_) => format!("{}.", prompt.trim_end()),
    }
}

pub(crate) fn step_id(step: &StepView) -> &str {
    match step {
        StepView::Identify { id, .. }
        | StepView::Code { id, .. }
        | StepView::Choose { id, .. }
        | StepView::Voice { id, .. }
        | StepView::SetPassword { id, .. }
        | StepView::Complete { id, .. } => id,
    }
}

pub(crate) fn step_prompt(step: &StepView) -> &str {
    match step {
        StepView::Identify { prompt, .. }
        | StepView::Code { prompt, .. }
        | StepView::Choose { prompt, .. }
        | StepView::Voice { prompt, .. }
        | StepView::SetPassword { prompt, .. }
        | StepView::Complete { prompt, .. } => prompt,
    }
}

/// The step a person can act on now: `None` unless the journey is active.
pub(crate) fn active_step(view: &JourneyView) -> Option<&StepView> {
    match view.status {
        Status::Active => view.step.as_ref(),
        _ => None,
    }
}

fn button(id: ButtonId, label: impl Into<String>, style: ButtonStyle) -> Button {
    Button {
        custom_id: id.to_string(),
        label: label.into(),
        style,
    }
}

/// The buttons of a support alert.
pub(crate) fn alert_buttons(key: &AlertKey, acknowledged: bool) -> Vec<Button> {
    let mut v = Vec::new();
    if !acknowledged {
        v.push(button(
            ButtonId::Acknowledge {
                journey: key.journey,
                step: key.step.clone(),
            },
            "Acknowledge",
            ButtonStyle::Primary,
        ));
    }
    if key.step != "-" {
        v.push(button(
            ButtonId::Nudge {
                journey: key.journey,
                step: key.step.clone(),
            },
            "Nudge user",
            ButtonStyle::Secondary,
        ));
    }
    v.push(button(
        ButtonId::Show {
            journey: key.journey,
        },
        "Show",
        ButtonStyle::Secondary,
    ));
    v
}

/// "Continue": the button a nudged person presses to see their step again.
pub(crate) fn continue_button(journey: JourneyId, step: &str) -> Button {
    button(
        ButtonId::Check {
            journey,
            step: step.to_owned(),
        },
        "Continue",
        ButtonStyle::Primary,
    )
}

/// How the person enters a code on this surface: an instruction, maybe a button, maybe a
/// secret step.
fn code_entry(
    surface: &Surface,
    journey: JourneyId,
    step: &str,
    digits: u8,
    text: &mut String,
    buttons: &mut Vec<Button>,
    extra: &mut Vec<Output>,
) {
    if surface.typed_codes {
        text.push_str("\nType the code here.");
    } else if surface.forms {
        text.push_str("\nPress \"Enter code\" to type it privately (never post it in chat).");
        buttons.push(button(
            ButtonId::EnterCode {
                journey,
                step: step.to_owned(),
            },
            "Enter code",
            ButtonStyle::Primary,
        ));
    } else {
        text.push_str("\nEnter it on the page I link to (never post it in chat).");
        extra.push(Output::SecretStep(SecretStep {
            journey,
            step: step.to_owned(),
            kind: SecretKind::Code { digits },
        }));
    }
}

/// What the person sees for `view`: one ephemeral reply, then any secret step, wait or end.
/// `lead` comes first (why the core did or did not act), then the engine's refusal.
pub(crate) fn person(
    surface: &Surface,
    start_hint: &str,
    journey: JourneyId,
    view: &JourneyView,
    refusal: Option<&Rejection>,
    lead: Option<&str>,
) -> Vec<Output> {
    let mut text = String::new();
    if let Some(lead) = lead {
        text.push_str(lead);
        text.push('\n');
    }
    if let Some(r) = refusal {
        text.push_str(&format!("✗ {}\n", r.message));
    }
    let mut buttons = Vec::new();
    let mut extra = Vec::new();
    match (view.status, &view.step) {
        (Status::Active, Some(step)) => match step {
            StepView::Identify { prompt, action, .. } => {
                text.push_str(&format!(
                    "{}\nType it here and I will \"{action}\".",
                    sentence(prompt)
                ));
            }
            StepView::Code {
                id,
                prompt,
                digits,
                sent_to,
                expires_at,
                attempts_left,
                resend_label,
                resends_left,
                ..
            } => {
                text.push_str(&sentence(prompt));
                text.push_str(&format!(
                    "\nSent to {}{}; {attempts_left} attempt{} left.",
                    sent_to.as_deref().unwrap_or("your address"),
                    expires_at
                        .map(|t| format!(", valid until {}", hms(t)))
                        .unwrap_or_default(),
                    if *attempts_left == 1 { "" } else { "s" }
                ));
                code_entry(
                    surface,
                    journey,
                    id,
                    *digits,
                    &mut text,
                    &mut buttons,
                    &mut extra,
                );
                if *resends_left > 0 {
                    buttons.push(button(
                        ButtonId::Resend {
                            journey,
                            step: id.clone(),
                        },
                        resend_label.clone(),
                        ButtonStyle::Secondary,
                    ));
                } else {
                    text.push_str(&format!("\nNo \"{resend_label}\" left for this step."));
                }
            }
            StepView::Choose {
                prompt,
                options,
                phone_masked,
                risk_notice,
                ..
            } => {
                text.push_str(prompt.trim_end_matches('.'));
                if let Some(p) = phone_masked {
                    text.push_str(&format!(" (your phone: {p})"));
                }
                text.push('.');
                if let Some(notice) = risk_notice {
                    text.push_str(&format!("\n{notice}"));
                }
                for (i, o) in options.iter().enumerate() {
                    buttons.push(button(
                        ButtonId::Choose {
                            journey,
                            option: o.id.clone(),
                        },
                        o.label.clone(),
                        if i == 0 {
                            ButtonStyle::Primary
                        } else {
                            ButtonStyle::Secondary
                        },
                    ));
                }
            }
            StepView::Voice {
                id,
                prompt,
                confirm,
                calling,
                call_open,
                calls_left,
                ..
            } => {
                text.push_str(&sentence(prompt));
                let number = calling.as_deref().unwrap_or("your phone");
                if *call_open {
                    match confirm {
                        VoiceConfirm::PressPound => {
                            text.push_str(&format!("\nCalling {number}: it is ringing now."));
                            extra.push(Output::Waiting(Waiting {
                                journey,
                                step: id.clone(),
                                reason: WaitReason::CallConfirmation {
                                    calling: calling.clone(),
                                },
                            }));
                            if !surface.watches {
                                buttons.push(button(
                                    ButtonId::Check {
                                        journey,
                                        step: id.clone(),
                                    },
                                    "I pressed #: check again",
                                    ButtonStyle::Primary,
                                ));
                            }
                        }
                        VoiceConfirm::SpokenCode { digits } => {
                            text.push_str(&format!(
                                "\nCalling {number}: listen for the {digits}-digit code."
                            ));
                            code_entry(
                                surface,
                                journey,
                                id,
                                *digits,
                                &mut text,
                                &mut buttons,
                                &mut extra,
                            );
                        }
                    }
                } else if *calls_left > 0 {
                    text.push_str(&format!(
                        "\nNo call is ringing right now; {calls_left} call{} left.",
                        if *calls_left == 1 { "" } else { "s" }
                    ));
                    buttons.push(button(
                        ButtonId::Resend {
                            journey,
                            step: id.clone(),
                        },
                        "Call me again",
                        ButtonStyle::Primary,
                    ));
                } else {
                    text.push_str("\nNo call is ringing, and no calls are left for this step.");
                }
            }
            StepView::SetPassword {
                id,
                prompt,
                policy,
                requirements,
            } => {
                text.push_str(&format!(
                    "{}: choose a new password. It is never typed in this chat.",
                    prompt.trim_end_matches('.')
                ));
                if !requirements.is_empty() {
                    text.push_str("\nRequirements:");
                    for r in requirements {
                        text.push_str(&format!("\n  ○ {r}"));
                    }
                }
                extra.push(Output::SecretStep(SecretStep {
                    journey,
                    step: id.clone(),
                    kind: SecretKind::NewPassword {
                        policy: policy.clone(),
                        requirements: requirements.clone(),
                    },
                }));
            }
            StepView::Complete { prompt, tiles, .. } => {
                complete(&mut text, prompt, tiles);
            }
        },
        (Status::Completed, Some(StepView::Complete { prompt, tiles, .. })) => {
            complete(&mut text, prompt, tiles);
            extra.push(Output::Ended {
                journey,
                status: view.status,
            });
        }
        (Status::NotStarted, _) => {
            text.push_str(&format!(
                "This password reset has not started. {start_hint}"
            ));
        }
        (status, _) => {
            let what = match status {
                Status::Completed => "is complete",
                Status::Failed => "failed",
                Status::Expired => "expired",
                Status::Cancelled => "was cancelled",
                Status::Active | Status::NotStarted => "stopped",
            };
            text.push_str(&format!("This password reset {what}"));
            match &view.finish_reason {
                Some(reason) => text.push_str(&format!(": {reason}.")),
                None => text.push('.'),
            }
            text.push_str(&format!(" {start_hint}"));
            extra.push(Output::Ended {
                journey,
                status: view.status,
            });
        }
    }
    let mut out = vec![Output::Reply(Reply {
        text: text.trim_end().to_owned(),
        buttons,
        ephemeral: true,
    })];
    out.extend(extra);
    out
}

fn complete(text: &mut String, prompt: &str, tiles: &[passage_core::journey::view::TileView]) {
    text.push_str(&format!("✓ {}", sentence(prompt)));
    for t in tiles {
        text.push_str(&format!("\n  ▣ {}  → {} ({})", t.title, t.portal, t.href));
    }
}

/// One line for support: where the journey stands.
pub(crate) fn support_status(journey: JourneyId, view: &JourneyView) -> String {
    let mut s = format!(
        "journey {journey}  [{} v{}, {}]",
        view.definition_id,
        view.definition_version,
        view.status.as_str()
    );
    match (active_step(view), &view.finish_reason) {
        (Some(step), _) => s.push_str(&format!(
            "\n  now at `{}`: {}",
            step_id(step),
            step_prompt(step)
        )),
        (None, Some(reason)) => s.push_str(&format!("\n  ended: {reason}")),
        (None, None) => {}
    }
    s
}

/// At most this many timeline lines in one reply (chat messages are short: 2000 characters
/// on Discord); the oldest are left out and counted.
const TIMELINE_LINES: usize = 25;

pub(crate) fn timeline(lines: &[TimelineLine]) -> String {
    let skip = lines.len().saturating_sub(TIMELINE_LINES);
    let mut s = String::new();
    if skip > 0 {
        s.push_str(&format!("  … {skip} earlier event(s)\n"));
    }
    for l in &lines[skip..] {
        s.push_str(&format!(
            "{:>3}  {}  {} {}{}\n",
            l.version,
            hms(l.recorded_at),
            l.event_type,
            l.description,
            l.actor
                .as_deref()
                .map(|a| format!("  [{a}]"))
                .unwrap_or_default()
        ));
    }
    s
}
