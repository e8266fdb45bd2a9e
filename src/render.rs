//! How journeys look in a terminal.

use passage_core::journey::Reply;
use passage_core::journey::view::{JourneyView, StepView};
use passage_core::time::Timestamp;
use passage_runtime::TimelineEntry;

fn hms(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    s.get(11..19).unwrap_or(&s).to_owned()
}

/// What the person is asked now, and how to answer from this CLI.
pub fn view(id: &str, v: &JourneyView) -> String {
    let mut out = format!(
        "journey {id}  [{} v{}, {}{}]\n",
        v.definition_id,
        v.definition_version,
        v.status.as_str(),
        v.expires_at
            .filter(|_| !v.status.is_finished())
            .map(|t| format!(", expires {}", hms(t)))
            .unwrap_or_default()
    );
    let Some(step) = &v.step else {
        if let Some(reason) = &v.finish_reason {
            out.push_str(&format!("  ended: {reason}\n"));
        }
        return out;
    };
    match step {
        StepView::Identify { prompt, action, .. } => {
            out.push_str(&format!("→ {prompt}, then \"{action}\"\n"));
        }
        StepView::Code {
            prompt,
            sent_to,
            expires_at,
            attempts_left,
            resend_label,
            resends_left,
            ..
        } => {
            out.push_str(&format!("→ {prompt}\n"));
            out.push_str(&format!(
                "  sent to {}, valid until {}; {attempts_left} attempt(s) left; \"{resend_label}\": {} left\n",
                sent_to.as_deref().unwrap_or("-"),
                expires_at.map(hms).unwrap_or_else(|| "-".into()),
                resends_left
            ));
            out.push_str(&format!(
                "  answer: passage journey input {id} <code>   (read it: passage outbox --journey {id})\n"
            ));
        }
        StepView::Choose {
            prompt,
            options,
            phone_masked,
            ..
        } => {
            out.push_str(&format!("→ {prompt}"));
            if let Some(p) = phone_masked {
                out.push_str(&format!(" (your phone: {p})"));
            }
            out.push('\n');
            for o in options {
                out.push_str(&format!("  [{}] {}\n", o.id, o.label));
            }
            out.push_str(&format!("  answer: passage journey input {id} <option>\n"));
        }
        StepView::Voice {
            prompt,
            calling,
            call_open,
            calls_left,
            ..
        } => {
            out.push_str(&format!("→ {prompt}\n"));
            out.push_str(&format!(
                "  calling {}: {}; {calls_left} call(s) left\n",
                calling.as_deref().unwrap_or("-"),
                if *call_open {
                    "ringing"
                } else {
                    "no call in progress (passage journey resend)"
                }
            ));
            out.push_str(&format!("  answer: passage call answer {id} --press '#'\n"));
        }
        StepView::SetPassword {
            prompt,
            requirements,
            ..
        } => {
            out.push_str(&format!("→ {prompt}: enter a new password\n"));
            for r in requirements {
                out.push_str(&format!("  ○ {r}\n"));
            }
            out.push_str(&format!(
                "  answer: passage journey input {id}   (you are prompted; input hidden)\n"
            ));
        }
        StepView::Complete { prompt, tiles, .. } => {
            out.push_str(&format!("✓ {prompt}\n"));
            for t in tiles {
                out.push_str(&format!("  ▣ {}  → {} ({})\n", t.title, t.portal, t.href));
            }
        }
    }
    out
}

pub fn reply(r: &Reply) -> Option<String> {
    match r {
        Reply::Accepted { .. } => None,
        Reply::Rejected(rej) => Some(format!("refused ({}): {}", rej.code, rej.message)),
    }
}

pub fn timeline(entries: &[TimelineEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let actor = e
            .actor
            .as_ref()
            .map(|a| match &a.id {
                Some(id) => format!("{}:{id} via {}", a.kind, a.channel),
                None => format!("{} via {}", a.kind, a.channel),
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>3}  {}  {:<18} {}  [{}]\n",
            e.version,
            e.recorded_at.to_rfc3339(),
            printable(&e.event_type),
            printable(&e.description),
            printable(&actor)
        ));
    }
    out
}

/// Characters that can make one stored value look like other text on a terminal line:
/// controls (a newline, an escape sequence), the Unicode line and paragraph separators, and
/// the bidirectional overrides and isolates that reorder what follows them.
pub fn disguises_a_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Text from the log as one terminal line: the characters of [`disguises_a_line`] shown
/// escaped, so that no stored value can forge a line, reorder one or recolour the screen.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(disguises_a_line) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| match disguises_a_line(c) {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the log holds (an event written before reasons were cleaned, a value from
    /// any other source), `journey show` prints each event as one line without escape
    /// sequences.
    #[test]
    fn stored_control_characters_are_printed_escaped() {
        let entry = TimelineEntry {
            position: 9,
            version: 9,
            recorded_at: passage_core::time::Timestamp(0),
            event_type: "JourneyCancelled".into(),
            description: "ended: ticket\n  10  fake line\u{1b}[31m \u{202e}desrever\u{2028}".into(),
            actor: Some(passage_runtime::Actor::support("desk\r1", "cli")),
            event: None,
            hash: Default::default(),
        };
        let out = timeline(&[entry]);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            !out.trim_end_matches('\n').chars().any(disguises_a_line),
            "{out:?}"
        );
        assert!(
            out.contains(r"ended: ticket\n  10  fake line\u{1b}[31m") && out.contains(r"desk\r1"),
            "{out}"
        );
    }
}
