//! Normalising identifiers and masking them for events, logs and alerts (R6, R50).

/// Why an email address was refused before any lookup (R6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("enter your email address")]
    Empty,
    #[error("an email address has at most 254 characters")]
    TooLong,
    #[error("the part before @ has at most 63 characters")]
    LocalPartTooLong,
    #[error("an email address looks like name@example.com")]
    Malformed,
    #[error("an email address cannot contain control characters or spaces")]
    ForbiddenCharacter,
}

/// Normalises an address for lookup: trims surrounding white space and lowercases it.
/// Only one scalar address is accepted: lists (`a@x, b@y`), quoted local parts, IP-literal
/// domains and control characters are refused, so no lenient rule can make an input match a
/// different account (R5, R6, attack cases 25 and 26).
pub fn normalize_email(input: &str) -> Result<String, EmailError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    if trimmed.chars().count() > 254 {
        return Err(EmailError::TooLong);
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}')
    {
        return Err(EmailError::ForbiddenCharacter);
    }
    if trimmed.contains([',', ';', '"', '<', '>', '(', ')', '[', ']', '\\']) {
        return Err(EmailError::Malformed);
    }
    let mut parts = trimmed.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EmailError::Malformed);
    };
    if local.is_empty() || domain.is_empty() {
        return Err(EmailError::Malformed);
    }
    // 63, OWASP input-validation's figure that R6 adopts (one below RFC 5321's 64).
    if local.chars().count() > 63 {
        return Err(EmailError::LocalPartTooLong);
    }
    if !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return Err(EmailError::Malformed);
    }
    Ok(trimmed.to_lowercase())
}

/// `alice.smith@example.com` → `a•••h@e•••.com`. Enough for a person to recognise their own
/// address, not enough to learn someone else's.
pub fn mask_email(email: &str) -> String {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return "•••".into();
    };
    let local_masked = mask_word(local);
    let (host, tld) = match domain.rsplit_once('.') {
        Some((h, t)) => (h, format!(".{t}")),
        None => (domain, String::new()),
    };
    let host_masked = match host.chars().next() {
        Some(c) => format!("{c}•••"),
        None => "•••".into(),
    };
    format!("{local_masked}@{host_masked}{tld}")
}

fn mask_word(w: &str) -> String {
    let chars: Vec<char> = w.chars().collect();
    match chars.len() {
        0 => "•••".into(),
        1 | 2 => format!("{}•••", chars[0]),
        n => format!("{}•••{}", chars[0], chars[n - 1]),
    }
}

/// `+61412345678` → `+61 ••• ••• 678`: the country prefix and the last three digits, as
/// the seed guide's "Send SMS to my mobile" choice shows it.
pub fn mask_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return "•••".into();
    }
    let last = &digits[digits.len() - 3..];
    if phone.trim_start().starts_with('+') {
        let cc_len = if digits.starts_with('1') || digits.starts_with('7') {
            1
        } else {
            2
        };
        format!("+{} ••• ••• {last}", &digits[..cc_len])
    } else {
        format!("••• ••• {last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_space() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
    }

    #[test]
    fn refuses_lists_and_injection() {
        for bad in [
            "victim@x.com,attacker@y.com",
            "victim@x.com\r\nBcc: attacker@y.com",
            "victim@x.com\nCc:attacker@y.com",
            "\"victim@x.com\"@attacker.com",
            "user@[IPv6:::1]",
            "a@b@c.com",
            "no-at-sign",
            "user@localhost",
            "user@example.com.",
            "nul\0@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn enforces_lengths() {
        let local63 = "a".repeat(63);
        assert!(normalize_email(&format!("{local63}@example.com")).is_ok());
        assert_eq!(
            normalize_email(&format!("{}@example.com", "a".repeat(64))),
            Err(EmailError::LocalPartTooLong)
        );
        let long = format!("a@{}.com", "b".repeat(250));
        assert_eq!(normalize_email(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_email("alice.smith@example.com"), "a•••h@e•••.com");
        assert_eq!(mask_email("al@x.org"), "a•••@x•••.org");
        assert_eq!(mask_phone("+61412345678"), "+61 ••• ••• 678");
        assert_eq!(mask_phone("+1 415 555 0100"), "+1 ••• ••• 100");
        assert_eq!(mask_phone("0412 345 678"), "••• ••• 678");
    }
}
