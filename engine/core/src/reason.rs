//! The reason an operator gives for a support action (a cancellation from the CLI, the web
//! console or chat), as the journey's log will keep it. One rule for every surface, so a
//! reason refused at one is not accepted at another (R49: the audit entry says why).

/// Fewer characters than this say nothing ("ok", "x").
pub const MIN_REASON_CHARS: usize = 3;
/// A reason is a note, not a document: longer ones are refused, never cut silently.
pub const MAX_REASON_CHARS: usize = 500;

/// Why a reason was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// Under [`MIN_REASON_CHARS`] once cleaned, or no letter or digit at all ("...").
    #[error("say why, in at least {MIN_REASON_CHARS} characters with a letter or digit")]
    TooShort,
    #[error("a reason has at most {MAX_REASON_CHARS} characters")]
    TooLong,
}

/// Characters that can make a stored value look like other text where the log is shown:
/// controls (a newline or an escape sequence forge a line of `journey show`), the Unicode
/// line and paragraph separators, the bidirectional marks, overrides and isolates that
/// reorder what follows them (U+202E), and the invisible zero-width space, word joiner and
/// byte-order mark, which would let "a" plus two invisible characters pass the minimum.
pub fn disguises_text(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// The reason as the log keeps it: the characters of [`disguises_text`] dropped, then
/// trimmed. Refused when what is left is shorter than [`MIN_REASON_CHARS`], has no letter
/// or digit, or is longer than [`MAX_REASON_CHARS`]. Lengths count characters, not bytes.
pub fn clean_reason(raw: &str) -> Result<String, ReasonError> {
    let cleaned: String = raw.chars().filter(|c| !disguises_text(*c)).collect();
    let reason = cleaned.trim();
    let chars = reason.chars().count();
    if chars < MIN_REASON_CHARS || !reason.chars().any(char::is_alphanumeric) {
        return Err(ReasonError::TooShort);
    }
    if chars > MAX_REASON_CHARS {
        return Err(ReasonError::TooLong);
    }
    Ok(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_trimmed_and_kept() {
        assert_eq!(
            clean_reason("  ticket 1234 \n").as_deref(),
            Ok("ticket 1234")
        );
        assert_eq!(clean_reason("dup").as_deref(), Ok("dup"));
        assert_eq!(clean_reason("Zoë asked").as_deref(), Ok("Zoë asked"));
    }

    #[test]
    fn blank_short_or_punctuation_only_reasons_are_refused() {
        for raw in ["", "   ", "a  ", "ab", "...", "- -", "!!!!!!", "\t\n\r"] {
            assert_eq!(clean_reason(raw), Err(ReasonError::TooShort), "{raw:?}");
        }
    }

    #[test]
    fn control_bidi_and_invisible_characters_are_dropped_before_counting() {
        // A forged second line, an escape sequence and a right-to-left override are removed,
        // the text around them kept.
        assert_eq!(
            clean_reason("dup\nJourneyCompleted by admin").as_deref(),
            Ok("dupJourneyCompleted by admin")
        );
        assert_eq!(
            clean_reason("\u{1b}[31mred\u{1b}[0m").as_deref(),
            Ok("[31mred[0m")
        );
        assert_eq!(
            clean_reason("ticket \u{202e}4321").as_deref(),
            Ok("ticket 4321")
        );
        assert_eq!(
            clean_reason("\u{2066}abc\u{2069}\u{200f}").as_deref(),
            Ok("abc")
        );
        // What is left after dropping them must still say something.
        for raw in [
            "a\u{200b}\u{200b}",
            "a\u{feff}\u{2060}\u{2060}",
            "\u{202e}\u{202e}\u{202e}",
            "\u{1}\u{2}\u{3}",
            "ab\u{2028}",
        ] {
            assert_eq!(clean_reason(raw), Err(ReasonError::TooShort), "{raw:?}");
        }
    }

    #[test]
    fn the_maximum_counts_characters_not_bytes() {
        let at_max = "é".repeat(MAX_REASON_CHARS);
        assert_eq!(clean_reason(&at_max).as_deref(), Ok(at_max.as_str()));
        let over = "é".repeat(MAX_REASON_CHARS + 1);
        assert_eq!(clean_reason(&over), Err(ReasonError::TooLong));
        // Dropped characters do not count against the maximum.
        let padded = format!("{at_max}\u{202e}\n");
        assert_eq!(clean_reason(&padded).as_deref(), Ok(at_max.as_str()));
    }
}
