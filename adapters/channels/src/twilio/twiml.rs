//! The TwiML documents of a call. Every text is XML-escaped; the documents are small enough
//! to be sent inline (`Twiml`, at most 4000 characters).

use crate::template::escape_html;

/// The escaping XML needs for element content and quoted attributes (the same five
/// characters as HTML).
pub fn escape_xml(s: &str) -> String {
    escape_html(s)
}

/// How `<Say>` speaks: voice and language, both optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SayOptions {
    pub voice: Option<String>,
    pub language: Option<String>,
}

impl SayOptions {
    fn say(&self, text: &str, repeat: u32) -> String {
        let mut attrs = String::new();
        if let Some(v) = &self.voice {
            attrs.push_str(&format!(" voice=\"{}\"", escape_xml(v)));
        }
        if let Some(l) = &self.language {
            attrs.push_str(&format!(" language=\"{}\"", escape_xml(l)));
        }
        if repeat > 1 {
            attrs.push_str(&format!(" loop=\"{repeat}\""));
        }
        format!("<Say{attrs}>{}</Say>", escape_xml(text))
    }
}

const HEADER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// "Press # to confirm": one key, no finish key, so a lone `#` reaches `action` as
/// `Digits=#` (with the default `finishOnKey="#"` Twilio would swallow it). Silence falls
/// through to the goodbye and the hang-up, and the status callback reports the call.
pub fn press_pound(say: &str, action: &str, gather_timeout_secs: u32, opts: &SayOptions) -> String {
    format!(
        "{HEADER}<Response><Gather input=\"dtmf\" numDigits=\"1\" finishOnKey=\"\" timeout=\"{}\" \
         action=\"{}\" method=\"POST\">{}</Gather>{}<Hangup/></Response>",
        gather_timeout_secs,
        escape_xml(action),
        opts.say(say, 1),
        opts.say("We did not receive a key press. Goodbye.", 1),
    )
}

/// A spoken code: said twice, then the call ends. Nothing is keyed on the phone.
pub fn listen_only(say: &str, opts: &SayOptions) -> String {
    format!("{HEADER}<Response>{}<Hangup/></Response>", opts.say(say, 2))
}

/// The answer to a gather that the engine accepted.
pub fn confirmed(opts: &SayOptions) -> String {
    format!(
        "{HEADER}<Response>{}<Hangup/></Response>",
        opts.say("Thank you, your sign-in has been confirmed. Goodbye.", 1)
    )
}

/// The answer to a gather that confirmed nothing (wrong key, call no longer active).
pub fn not_confirmed(opts: &SayOptions) -> String {
    format!(
        "{HEADER}<Response>{}<Hangup/></Response>",
        opts.say(
            "Your sign-in was not confirmed. Please start again on the portal. Goodbye.",
            1
        )
    )
}

/// The answer when the answer could not be recorded (the engine was unavailable).
pub fn unavailable(opts: &SayOptions) -> String {
    format!(
        "{HEADER}<Response>{}<Hangup/></Response>",
        opts.say(
            "Sorry, we could not record your answer. Please try again from the portal. Goodbye.",
            1
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_urls_are_escaped() {
        let t = press_pound(
            "Press # <now> & \"then\"",
            "https://p.example/webhooks/twilio/gather?journey=a&call=b",
            10,
            &SayOptions {
                voice: Some("Polly.Olivia".into()),
                language: Some("en-AU".into()),
            },
        );
        assert!(
            t.contains("action=\"https://p.example/webhooks/twilio/gather?journey=a&amp;call=b\""),
            "{t}"
        );
        assert!(
            t.contains("Press # &lt;now&gt; &amp; &quot;then&quot;"),
            "{t}"
        );
        assert!(t.contains("finishOnKey=\"\""), "{t}");
        assert!(t.contains("numDigits=\"1\""), "{t}");
        assert!(
            t.contains("<Say voice=\"Polly.Olivia\" language=\"en-AU\">"),
            "{t}"
        );
        assert!(t.ends_with("<Hangup/></Response>"));
        let l = listen_only("Your code is 1, 2, 3", &SayOptions::default());
        assert!(
            l.contains("<Say loop=\"2\">Your code is 1, 2, 3</Say><Hangup/>"),
            "{l}"
        );
    }
}
