//! The core's outputs as serenity builders. Nothing here decides anything: texts, labels
//! and custom ids are the core's; this only fits them into Discord's shapes (rows of at most
//! five buttons, at most five rows, 2000 characters of content).

use passage_bot::{Button, ButtonStyle, Form};
use passage_core::reason::{MAX_REASON_CHARS, MIN_REASON_CHARS};
use serenity::all::{
    ButtonStyle as DiscordStyle, CreateActionRow, CreateButton, CreateInputText, CreateModal,
    InputTextStyle,
};

/// Discord's limit for a message's content.
pub const MAX_CONTENT: usize = 2000;

/// Custom id of the modal that asks for the email address (`/reset` without `email`).
pub const EMAIL_MODAL_ID: &str = "passage-discord:email";
/// Custom id of the one text input of every modal.
pub const MODAL_INPUT_ID: &str = "value";
/// Prefix of the "Cancel journey" button and of the modal it opens (asks for the reason).
/// Not a `passage_bot::ButtonId` (the core has no cancel button): the adapter handles it,
/// with the same role check, and hands the core `SupportIntent::CancelJourney`.
pub const CANCEL_PREFIX: &str = "passage:cancel:";

fn style(s: ButtonStyle) -> DiscordStyle {
    match s {
        ButtonStyle::Primary => DiscordStyle::Primary,
        ButtonStyle::Secondary => DiscordStyle::Secondary,
        ButtonStyle::Danger => DiscordStyle::Danger,
    }
}

/// A button that leaves Discord: a link (no custom id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkButton {
    pub label: String,
    pub url: String,
}

/// The core's buttons, then link buttons, in rows of five (at most 25 buttons).
pub fn rows(buttons: &[Button], links: &[LinkButton]) -> Vec<CreateActionRow> {
    let mut all: Vec<CreateButton> = buttons
        .iter()
        .map(|b| {
            CreateButton::new(b.custom_id.clone())
                .label(cut(&b.label, 80))
                .style(style(b.style))
        })
        .collect();
    all.extend(
        links
            .iter()
            .map(|l| CreateButton::new_link(l.url.clone()).label(cut(&l.label, 80))),
    );
    all.truncate(25);
    all.chunks(5)
        .map(|c| CreateActionRow::Buttons(c.to_vec()))
        .collect()
}

/// The core's one-field form as a modal: a short text input, required, length-bounded.
/// Discord never echoes what is typed in a modal into the channel.
pub fn modal(form: &Form) -> CreateModal {
    CreateModal::new(form.custom_id.clone(), cut(&form.title, 45)).components(vec![
        CreateActionRow::InputText(
            CreateInputText::new(InputTextStyle::Short, cut(&form.label, 45), MODAL_INPUT_ID)
                .min_length(u16::from(form.min_len))
                .max_length(u16::from(form.max_len))
                .required(true),
        ),
    ])
}

/// The modal `/reset` opens when it was given no address.
pub fn email_modal() -> CreateModal {
    CreateModal::new(EMAIL_MODAL_ID, "Reset your password").components(vec![
        CreateActionRow::InputText(
            CreateInputText::new(InputTextStyle::Short, "Your email address", MODAL_INPUT_ID)
                .min_length(3)
                .max_length(254)
                .required(true),
        ),
    ])
}

/// "Cancel journey": the reason, required. Discord's length bounds are the core rule's
/// (`passage_core::reason`), so the client refuses what the bot would; the bot still checks
/// what comes back, which the bounds alone cannot judge ("...", control characters).
pub fn cancel_modal(custom_id: &str) -> CreateModal {
    let bound = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    CreateModal::new(custom_id, "Cancel this password reset").components(vec![
        CreateActionRow::InputText(
            CreateInputText::new(
                InputTextStyle::Short,
                "Reason (kept in the journey's log)",
                MODAL_INPUT_ID,
            )
            .min_length(bound(MIN_REASON_CHARS))
            .max_length(bound(MAX_REASON_CHARS))
            .required(true),
        ),
    ])
}

/// `s` cut to at most `max` characters (with an ellipsis when cut).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}
