//! Stage 2 for each step kind and for password policies: the fields, defaults and ranges
//! documented in workflows/README.md, with the requirement behind each range.

use super::raw::{RawPolicy, RawResend, RawStep};
use super::{
    Check, DAY, DEFAULT_COOLDOWN, DEFAULT_RESEND_LABEL, MINUTE, Names, SECOND, Table, channel,
};
use crate::definition::{
    ChoiceOption, CodeChannel, CodeStep, PasswordPolicy, ResendRule, StepKind, Tile, VoiceConfirm,
    VoiceStep,
};
use crate::time::format_duration;
use std::time::Duration;
use toml::Spanned;

impl Check<'_> {
    pub(super) fn identify(&mut self, s: &RawStep, t: &Table, names: &Names) -> Option<StepKind> {
        let action = self.text(&s.action, t, "action", "\"Send verification code\"");
        let next = self.next(&s.next, t, names);
        Some(StepKind::Identify {
            action: action?,
            next: next?,
        })
    }

    pub(super) fn code(&mut self, s: &RawStep, t: &Table, names: &Names) -> Option<StepKind> {
        let channel = match &s.channel {
            None => self.missing(t, "channel", "\"email\""),
            Some(c) => {
                let parsed = channel(c.get_ref());
                if parsed.is_none() {
                    self.error(
                        &c.span(),
                        format!(
                            "`channel = {:?}` in {} is not a channel",
                            c.get_ref(),
                            t.name
                        ),
                        "use `channel = \"email\"` or `channel = \"sms\"`",
                    );
                }
                parsed
            }
        };
        let digits = self.int(
            &s.digits,
            Some(6),
            t,
            "digits",
            6..=10,
            "R7: codes have 6 to 10 digits",
        );
        let (max, why) = match channel {
            Some(CodeChannel::Sms) => (10 * MINUTE, "R8: an SMS code expires within 10 minutes"),
            _ => (DAY, "R8: an email code expires within 24 hours"),
        };
        let lifetime = self.duration_in(&s.lifetime, t, "lifetime", "\"5m\"", SECOND..=max, why);
        let max_attempts = self.int(
            &s.max_attempts,
            Some(5),
            t,
            "max_attempts",
            1..=10,
            "R13: wrong codes are strictly limited",
        );
        let resend = self.resend(s.resend.as_ref(), t, lifetime);
        let next = self.next(&s.next, t, names);
        Some(StepKind::Code(CodeStep {
            channel: channel?,
            digits: u8::try_from(digits?).ok()?,
            lifetime: lifetime?,
            max_attempts: u32::try_from(max_attempts?).ok()?,
            resend: resend?,
            next: next?,
        }))
    }

    /// `resend` is optional and so is each of its keys; the cooldown may not outlast the
    /// code, or "Re-send code" would be dead when the person needs it.
    fn resend(
        &mut self,
        value: Option<&Spanned<RawResend>>,
        step: &Table,
        lifetime: Option<Duration>,
    ) -> Option<ResendRule> {
        let (label, max, cooldown, span) = match value {
            None => (
                Some(DEFAULT_RESEND_LABEL.to_owned()),
                Some(3),
                Some(DEFAULT_COOLDOWN),
                step.span.clone(),
            ),
            Some(v) => {
                let t = Table {
                    name: format!("`resend` of {}", step.name),
                    span: v.span(),
                };
                let r = v.get_ref();
                let label = match &r.label {
                    None => Some(DEFAULT_RESEND_LABEL.to_owned()),
                    Some(_) => self.text(&r.label, &t, "label", "\"Re-send code\""),
                };
                let max = self.int(&r.max, Some(3), &t, "max", 0..=10, "re-sends per step");
                let (cooldown, span) = match &r.cooldown {
                    None => (Some(DEFAULT_COOLDOWN), v.span()),
                    Some(c) => (self.duration(c, &t, "cooldown"), c.span()),
                };
                (label, max, cooldown, span)
            }
        };
        if let (Some(cooldown), Some(lifetime)) = (cooldown, lifetime)
            && cooldown > lifetime
        {
            self.error(
                &span,
                format!(
                    "the resend cooldown of {} ({}) is longer than the code's lifetime ({})",
                    step.name,
                    format_duration(cooldown),
                    format_duration(lifetime)
                ),
                format!(
                    "set `resend = {{ cooldown = \"...\" }}` to at most {}",
                    format_duration(lifetime)
                ),
            );
            return None;
        }
        Some(ResendRule {
            label: label?,
            max: u32::try_from(max?).ok()?,
            cooldown: cooldown?,
        })
    }

    pub(super) fn choose(&mut self, s: &RawStep, t: &Table, names: &Names) -> Option<StepKind> {
        let Some(options) = &s.options else {
            return self.missing(
                t,
                "options",
                "[{ id = \"sms\", label = \"Send SMS to my mobile\", next = \"sms-code\" }, ...]",
            );
        };
        let list = options.get_ref();
        let mut ok = list.len() >= 2;
        if !ok {
            self.error(
                &options.span(),
                format!("{} offers {} option(s)", t.name, list.len()),
                "a choose step needs at least two options; add one, or replace the step by a plain `next`",
            );
        }
        let mut built: Vec<ChoiceOption> = Vec::new();
        for (i, o) in list.iter().enumerate() {
            let ot = Table {
                name: format!("option #{} of {}", i + 1, t.name),
                span: o.span(),
            };
            let r = o.get_ref();
            let mut id = self.ident(&r.id, &ot, "id", "\"sms\"");
            if let (Some(value), Some(raw)) = (&id, &r.id)
                && built.iter().any(|b| &b.id == value)
            {
                self.error(
                    &raw.span(),
                    format!("option id `{value}` appears twice in {}", t.name),
                    "give each option its own id",
                );
                id = None;
            }
            let label = self.text(&r.label, &ot, "label", "\"Send SMS to my mobile\"");
            let next = self.next(&r.next, &ot, names);
            match (id, label, next) {
                (Some(id), Some(label), Some(next)) => built.push(ChoiceOption { id, label, next }),
                _ => ok = false,
            }
        }
        ok.then_some(StepKind::Choose { options: built })
    }

    pub(super) fn voice(&mut self, s: &RawStep, t: &Table, names: &Names) -> Option<StepKind> {
        // `Some(true)` for `spoken-code`, `Some(false)` for `press-pound`.
        let spoken = match &s.confirm {
            None => self.missing(t, "confirm", "\"spoken-code\""),
            Some(c) => match c.get_ref().as_str() {
                "press-pound" => Some(false),
                "spoken-code" => Some(true),
                other => {
                    self.error(
                        &c.span(),
                        format!(
                            "`confirm = {other:?}` in {} is not a confirmation mode",
                            t.name
                        ),
                        "use `confirm = \"press-pound\"` or `confirm = \"spoken-code\"`",
                    );
                    None
                }
            },
        };
        let digits = match (&s.digits, spoken) {
            (Some(d), Some(false)) => {
                self.error(
                    &d.span(),
                    format!(
                        "`digits` in {} only applies to `confirm = \"spoken-code\"`",
                        t.name
                    ),
                    "remove it: with `press-pound` the call reads out no code",
                );
                None
            }
            _ => self.int(
                &s.digits,
                Some(6),
                t,
                "digits",
                6..=10,
                "R7: codes have 6 to 10 digits",
            ),
        };
        let lifetime = self.duration_in(
            &s.lifetime,
            t,
            "lifetime",
            "\"2m\"",
            SECOND..=10 * MINUTE,
            "R8: a voice confirmation completes within 10 minutes",
        );
        let max_calls = self.int(
            &s.max_calls,
            Some(3),
            t,
            "max_calls",
            1..=5,
            "calls per step",
        );
        let max_attempts = self.int(
            &s.max_attempts,
            Some(5),
            t,
            "max_attempts",
            1..=10,
            "R13: wrong codes are strictly limited",
        );
        let next = self.next(&s.next, t, names);
        let confirm = match spoken? {
            false => VoiceConfirm::PressPound,
            true => VoiceConfirm::SpokenCode {
                digits: u8::try_from(digits?).ok()?,
            },
        };
        Some(StepKind::Voice(VoiceStep {
            confirm,
            lifetime: lifetime?,
            max_calls: u32::try_from(max_calls?).ok()?,
            max_attempts: u32::try_from(max_attempts?).ok()?,
            next: next?,
        }))
    }

    pub(super) fn set_password(
        &mut self,
        s: &RawStep,
        t: &Table,
        names: &Names,
    ) -> Option<StepKind> {
        let policy = match &s.policy {
            None => self.missing(t, "policy", "\"portal\""),
            Some(p) if names.policies.contains(p.get_ref()) => Some(p.get_ref().clone()),
            Some(p) => {
                let name = p.get_ref();
                let hint = if names.policies.is_empty() {
                    format!("add a `[policies.{name}]` table with min_length and max_length")
                } else {
                    format!(
                        "use one of: {}, or add a `[policies.{name}]` table",
                        names.policies.join(", ")
                    )
                };
                self.error(
                    &p.span(),
                    format!(
                        "{} uses `policy = {name:?}`, which is not defined under [policies]",
                        t.name
                    ),
                    hint,
                );
                None
            }
        };
        let next = self.next(&s.next, t, names);
        Some(StepKind::SetPassword {
            policy: policy?,
            next: next?,
        })
    }

    pub(super) fn complete(&mut self, s: &RawStep, t: &Table) -> Option<StepKind> {
        let Some(tiles) = &s.tiles else {
            return Some(StepKind::Complete { tiles: Vec::new() });
        };
        let mut built = Vec::new();
        let mut ok = true;
        for (i, tile) in tiles.get_ref().iter().enumerate() {
            let tt = Table {
                name: format!("tile #{} of {}", i + 1, t.name),
                span: tile.span(),
            };
            let r = tile.get_ref();
            let title = self.text(&r.title, &tt, "title", "\"Manage a Network Application\"");
            let portal = self.text(&r.portal, &tt, "portal", "\"Connections Portal\"");
            let href = self.text(&r.href, &tt, "href", "\"/portal/connections\"");
            let href = match (href, &r.href) {
                (Some(h), Some(raw)) if !is_site_relative(&h) => {
                    self.error(
                        &raw.span(),
                        format!("`href = {h:?}` in {} is not a site-relative path", tt.name),
                        "use a path on this site such as \"/portal/connections\": one leading `/`, \
                         no scheme or host, no `\\` and no control characters (R48: no open redirect)",
                    );
                    None
                }
                (h, _) => h,
            };
            match (title, portal, href) {
                (Some(title), Some(portal), Some(href)) => built.push(Tile {
                    title,
                    portal,
                    href,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(StepKind::Complete { tiles: built })
    }

    pub(super) fn policy(&mut self, name: &str, p: &Spanned<RawPolicy>) -> Option<PasswordPolicy> {
        let t = Table {
            name: format!("policy `{name}`"),
            span: p.span(),
        };
        let r = p.get_ref();
        // The two ranges meet at 64, so `max_length >= min_length` always holds.
        let min_length = match &r.min_length {
            None => self.missing(&t, "min_length", "15"),
            value => self.int(
                value,
                None,
                &t,
                "min_length",
                8..=64,
                "R35: at least 8, and 15 when the password is the only factor",
            ),
        };
        let max_length = match &r.max_length {
            None => self.missing(&t, "max_length", "128"),
            value => self.int(
                value,
                None,
                &t,
                "max_length",
                64..=1024,
                "R36: accept at least 64 characters, with an explicit upper bound",
            ),
        };
        let mut context_words = Vec::new();
        let mut words_ok = true;
        for word in r.context_words.iter().flat_map(|w| w.get_ref()) {
            if word.get_ref().trim().is_empty() {
                words_ok = false;
                self.error(
                    &word.span(),
                    format!("{} has an empty context word", t.name),
                    "remove it: an empty word would match every password",
                );
            } else {
                context_words.push(word.get_ref().clone());
            }
        }
        Some(PasswordPolicy {
            name: name.to_owned(),
            min_length: usize::try_from(min_length?).ok()?,
            max_length: usize::try_from(max_length?).ok()?,
            blocklist: r.blocklist.as_ref().is_none_or(|b| *b.get_ref()),
            context_words: words_ok.then_some(context_words)?,
            forbid_account_identifiers: r
                .forbid_account_identifiers
                .as_ref()
                .is_none_or(|b| *b.get_ref()),
        })
    }
}

/// R48: a tile may only lead somewhere on this site. `//host` and `/\host` are read by
/// browsers as another host, and control characters are stripped before parsing.
fn is_site_relative(href: &str) -> bool {
    href.starts_with('/')
        && !href.starts_with("//")
        && !href.contains('\\')
        && !href.chars().any(char::is_control)
}
