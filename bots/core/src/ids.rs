//! Stable identifiers that travel through a chat platform and come back: the custom id of a
//! button (or of the form it opens) and the dedup key of a support alert.
//!
//! A custom id names its journey and the step it was rendered for, so a press that arrives
//! late (an old message, a double click, a second device) can be recognised as stale before
//! anything reaches the engine. Format, at most [`MAX_CUSTOM_ID_LEN`] bytes:
//!
//! ```text
//! passage:resend:<journey>:<step>     "Re-send code" / "Call me again"
//! passage:choose:<journey>:<option>   an option of the current choose step
//! passage:code:<journey>:<step>       "Enter code": opens a form (a Discord modal)
//! passage:check:<journey>:<step>      "Check again" / "Continue": show the current step
//! passage:ack:<journey>:<step>        support: acknowledge the journey's alert
//! passage:nudge:<journey>:<step>      support: remind the person
//! passage:show:<journey>              support: show the journey's timeline
//! ```
//!
//! `<journey>` is the journey's UUID; steps and options are definition ids (lowercase
//! letters, digits and dashes, see workflows/README.md), so `:` never occurs inside them.

use crate::Error;
use passage_core::ports::JourneyId;
use std::fmt;
use std::str::FromStr;

/// Discord's limit for a component's `custom_id`.
pub const MAX_CUSTOM_ID_LEN: usize = 100;

const PREFIX: &str = "passage";

/// What a button does, parsed from (and formatted as) its custom id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ButtonId {
    /// "Re-send code" at a code step, "Call me again" at a voice step.
    Resend { journey: JourneyId, step: String },
    /// One option of a choose step ("Send SMS to my mobile").
    Choose { journey: JourneyId, option: String },
    /// "Enter code": the transport opens a form; its submission names this id again.
    EnterCode { journey: JourneyId, step: String },
    /// "Check again" / "Continue": shows where the journey is now; never changes it.
    Check { journey: JourneyId, step: String },
    /// Support: take the journey's alert for `step`.
    Acknowledge { journey: JourneyId, step: String },
    /// Support: remind the person, while the journey is still at `step`.
    Nudge { journey: JourneyId, step: String },
    /// Support: the journey's timeline.
    Show { journey: JourneyId },
}

impl ButtonId {
    pub fn journey(&self) -> JourneyId {
        match self {
            ButtonId::Resend { journey, .. }
            | ButtonId::Choose { journey, .. }
            | ButtonId::EnterCode { journey, .. }
            | ButtonId::Check { journey, .. }
            | ButtonId::Acknowledge { journey, .. }
            | ButtonId::Nudge { journey, .. }
            | ButtonId::Show { journey } => *journey,
        }
    }

    /// Buttons only the service desk may press (they sit on alerts and support replies).
    pub fn is_support(&self) -> bool {
        matches!(
            self,
            ButtonId::Acknowledge { .. } | ButtonId::Nudge { .. } | ButtonId::Show { .. }
        )
    }

    fn verb(&self) -> &'static str {
        match self {
            ButtonId::Resend { .. } => "resend",
            ButtonId::Choose { .. } => "choose",
            ButtonId::EnterCode { .. } => "code",
            ButtonId::Check { .. } => "check",
            ButtonId::Acknowledge { .. } => "ack",
            ButtonId::Nudge { .. } => "nudge",
            ButtonId::Show { .. } => "show",
        }
    }

    fn arg(&self) -> Option<&str> {
        match self {
            ButtonId::Resend { step, .. }
            | ButtonId::EnterCode { step, .. }
            | ButtonId::Check { step, .. }
            | ButtonId::Acknowledge { step, .. }
            | ButtonId::Nudge { step, .. } => Some(step),
            ButtonId::Choose { option, .. } => Some(option),
            ButtonId::Show { .. } => None,
        }
    }
}

impl fmt::Display for ButtonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}:{}:{}", self.verb(), self.journey())?;
        match self.arg() {
            Some(arg) => write!(f, ":{arg}"),
            None => Ok(()),
        }
    }
}

/// A definition id as the loader accepts it (lowercase letters, digits, dashes).
fn plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl FromStr for ButtonId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadCustomId;
        if s.len() > MAX_CUSTOM_ID_LEN {
            return Err(bad());
        }
        let mut parts = s.split(':');
        if parts.next() != Some(PREFIX) {
            return Err(bad());
        }
        let verb = parts.next().ok_or_else(bad)?;
        let journey: JourneyId = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let arg = parts.next();
        if parts.next().is_some() {
            return Err(bad());
        }
        let need = |arg: Option<&str>| -> Result<String, Error> {
            arg.filter(|a| plain_id(a))
                .map(str::to_owned)
                .ok_or_else(bad)
        };
        Ok(match verb {
            "resend" => ButtonId::Resend {
                journey,
                step: need(arg)?,
            },
            "choose" => ButtonId::Choose {
                journey,
                option: need(arg)?,
            },
            "code" => ButtonId::EnterCode {
                journey,
                step: need(arg)?,
            },
            "check" => ButtonId::Check {
                journey,
                step: need(arg)?,
            },
            "ack" => ButtonId::Acknowledge {
                journey,
                step: need(arg)?,
            },
            "nudge" => ButtonId::Nudge {
                journey,
                step: need(arg)?,
            },
            "show" if arg.is_none() => ButtonId::Show { journey },
            _ => return Err(bad()),
        })
    }
}

/// The dedup key of a support alert: one alert per journey and step, `<journey>:<step>`,
/// exactly as the engine's stall scanner writes it (`-` when the journey has no step).
/// Every update of an alert reuses its key, so a transport edits one message in place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertKey {
    pub journey: JourneyId,
    pub step: String,
}

impl AlertKey {
    pub fn new(journey: JourneyId, step: impl Into<String>) -> Self {
        Self {
            journey,
            step: step.into(),
        }
    }
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.journey, self.step)
    }
}

impl FromStr for AlertKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (journey, step) = s.split_once(':').ok_or(Error::BadAlertKey)?;
        let journey = journey.parse().map_err(|_| Error::BadAlertKey)?;
        if step != "-" && !plain_id(step) {
            return Err(Error::BadAlertKey);
        }
        Ok(Self::new(journey, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const J: &str = "0193b7c2-0000-7000-8000-00000000abcd";

    fn j() -> JourneyId {
        J.parse().expect("a uuid")
    }

    #[test]
    fn every_button_round_trips_through_its_custom_id() {
        let all = [
            ButtonId::Resend {
                journey: j(),
                step: "email-code".into(),
            },
            ButtonId::Choose {
                journey: j(),
                option: "sms".into(),
            },
            ButtonId::EnterCode {
                journey: j(),
                step: "sms-code".into(),
            },
            ButtonId::Check {
                journey: j(),
                step: "voice-call".into(),
            },
            ButtonId::Acknowledge {
                journey: j(),
                step: "email-code".into(),
            },
            ButtonId::Nudge {
                journey: j(),
                step: "second-factor".into(),
            },
            ButtonId::Show { journey: j() },
        ];
        for b in all {
            let id = b.to_string();
            assert!(id.len() <= MAX_CUSTOM_ID_LEN, "{id}");
            assert!(id.starts_with("passage:"), "{id}");
            assert_eq!(id.parse::<ButtonId>(), Ok(b.clone()), "{id}");
            assert_eq!(b.journey(), j());
        }
        assert_eq!(
            ButtonId::Resend {
                journey: j(),
                step: "email-code".into()
            }
            .to_string(),
            format!("passage:resend:{J}:email-code")
        );
        assert_eq!(
            ButtonId::Choose {
                journey: j(),
                option: "call".into()
            }
            .to_string(),
            format!("passage:choose:{J}:call")
        );
    }

    #[test]
    fn malformed_custom_ids_are_refused() {
        for bad in [
            String::new(),
            "passage".into(),
            format!("other:resend:{J}:email-code"),
            format!("passage:resend:{J}"),
            format!("passage:resend:{J}:"),
            format!("passage:resend:{J}:Email-Code"),
            format!("passage:resend:{J}:email-code:extra"),
            format!("passage:explode:{J}:email-code"),
            format!("passage:show:{J}:email-code"),
            "passage:resend:not-a-uuid:email-code".into(),
            format!("passage:resend:{J}:{}", "a".repeat(80)),
        ] {
            assert_eq!(bad.parse::<ButtonId>(), Err(Error::BadCustomId), "{bad:?}");
        }
    }

    #[test]
    fn only_alert_buttons_are_for_support() {
        assert!(ButtonId::Show { journey: j() }.is_support());
        assert!(
            ButtonId::Acknowledge {
                journey: j(),
                step: "x".into()
            }
            .is_support()
        );
        assert!(
            !ButtonId::Resend {
                journey: j(),
                step: "x".into()
            }
            .is_support()
        );
    }

    #[test]
    fn alert_keys_are_journey_and_step() {
        let key: AlertKey = format!("{J}:email-code").parse().expect("a key");
        assert_eq!(key, AlertKey::new(j(), "email-code"));
        assert_eq!(key.to_string(), format!("{J}:email-code"));
        assert_eq!(
            format!("{J}:-").parse::<AlertKey>(),
            Ok(AlertKey::new(j(), "-"))
        );
        for bad in ["", "nonsense", J, &format!("{J}:Bad Step")] {
            assert_eq!(bad.parse::<AlertKey>(), Err(Error::BadAlertKey), "{bad:?}");
        }
    }
}
