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
            "{:>3}  {}  {:<18} {}  [{actor}]\n",
            e.version,
            e.recorded_at.to_rfc3339(),
            e.event_type,
            e.description
        ));
    }
    out
}
