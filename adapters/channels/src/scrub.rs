//! Provider error texts go into logs and into `MessageFailed` events, which must hold masked
//! addresses only (R49, R50). SMTP servers and Twilio like to quote the recipient back
//! ("550 <alice@example.com>: unknown user", "The 'To' number +61412345678 is not valid"),
//! so every provider text passes through [`scrub`] first.

use passage_core::mask::{mask_email, mask_phone};

/// The longest provider text kept; the rest is cut (a full HTML error page helps nobody).
const MAX_LEN: usize = 300;

/// Masks anything that looks like an email address or a phone number, drops control
/// characters and cuts the text to a reasonable length.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LEN));
    for (i, token) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&scrub_token(token));
    }
    let cleaned: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cut: String = cleaned.chars().take(MAX_LEN).collect();
    if cleaned.chars().count() > MAX_LEN {
        cut.push('…');
    }
    cut
}

fn scrub_token(token: &str) -> String {
    if token.contains('@') {
        let trimmed = token.trim_matches(|c: char| !c.is_alphanumeric());
        return token.replace(trimmed, &mask_email(trimmed));
    }
    let digits = token.chars().filter(char::is_ascii_digit).count();
    // Twilio error codes have 5 digits; phone numbers have at least 7.
    if digits >= 7 {
        let trimmed = token.trim_matches(|c: char| !(c.is_ascii_digit() || c == '+'));
        if trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
        {
            return token.replace(trimmed, &mask_phone(trimmed));
        }
    }
    token.to_owned()
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn masks_addresses_and_numbers_but_keeps_error_codes() {
        let s = scrub("550 5.1.1 <alice.smith@example.com>: Recipient address rejected");
        assert!(!s.contains("alice.smith"), "{s}");
        assert!(s.starts_with("550 5.1.1 <a•••h@e•••.com>"), "{s}");
        let t = scrub("twilio 21211: The 'To' number +61412345678 is not a valid phone number.");
        assert!(!t.contains("412345678"), "{t}");
        assert!(t.contains("21211"), "{t}");
        assert!(t.contains("+61 ••• ••• 678"), "{t}");
        assert_eq!(scrub("a\r\nb").as_str(), "a  b");
        assert!(scrub(&"x".repeat(1000)).chars().count() <= 301);
    }
}
