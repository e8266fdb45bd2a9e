//! The new-password policy: length, blocklist, context words, confirmation. No composition
//! rules (R37): a long passphrase of lowercase words is a good password.
//!
//! The same [`requirements`] list drives the grey/green ticks on the Reset Password page and
//! the server's decision, so the page can never promise what the server refuses (R41, R42).

use crate::definition::PasswordPolicy;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

const BLOCKLIST: &str = include_str!("../data/common-passwords.txt");

/// One tick on the Reset Password page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// Stable id recorded in `PasswordRejected` events.
    pub id: &'static str,
    pub label: String,
    pub met: bool,
}

/// What the password may not contain, taken from the account (never from the request, R29).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PasswordContext {
    pub email: String,
    pub display_name: String,
}

impl std::fmt::Debug for PasswordContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordContext")
            .field("email", &crate::mask::mask_email(&self.email))
            .finish_non_exhaustive()
    }
}

/// NFC, the form applied at set time and at sign-in alike (R39; see docs/security.md).
pub fn normalize(password: &str) -> String {
    password.nfc().collect()
}

/// Lowercase letters and digits only: "Connections Portal!" and "connectionsportal" compare equal.
fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn letters_only(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect()
}

fn blocklisted(password: &str) -> bool {
    let lower = password.to_lowercase();
    let squashed = squash(password);
    let letters = letters_only(password);
    BLOCKLIST
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|w| w == lower || w == squashed || (letters.len() >= 4 && w == letters))
}

fn contains_context(password: &str, policy: &PasswordPolicy, ctx: &PasswordContext) -> bool {
    let pw = squash(password);
    let mut words: Vec<String> = policy.context_words.iter().map(|w| squash(w)).collect();
    if policy.forbid_account_identifiers {
        if let Some((local, _)) = ctx.email.split_once('@') {
            words.push(squash(local));
            // Parts of the local part too: "alice.smith" forbids "alice" and "smith".
            words.extend(local.split(['.', '_', '-', '+']).map(squash));
        }
        words.extend(ctx.display_name.split_whitespace().map(squash));
        words.push(squash(&ctx.display_name));
    }
    words
        .iter()
        .any(|w| w.chars().count() >= 4 && pw.contains(w.as_str()))
}

/// Evaluates every requirement; all must be met.
pub fn requirements(
    policy: &PasswordPolicy,
    new: &str,
    confirm: &str,
    ctx: &PasswordContext,
) -> Vec<Requirement> {
    let new = normalize(new);
    let confirm = normalize(confirm);
    let len = new.chars().count();
    let mut out = vec![Requirement {
        id: "length",
        label: format!(
            "At least {} characters (up to {})",
            policy.min_length, policy.max_length
        ),
        met: (policy.min_length..=policy.max_length).contains(&len),
    }];
    if policy.blocklist {
        out.push(Requirement {
            id: "not-common",
            label: "Not a common or breached password".into(),
            met: len > 0 && !blocklisted(&new),
        });
    }
    if policy.forbid_account_identifiers || !policy.context_words.is_empty() {
        out.push(Requirement {
            id: "no-personal-words",
            label: "Does not contain your name, your email or the portal's name".into(),
            met: len > 0 && !contains_context(&new, policy, ctx),
        });
    }
    out.push(Requirement {
        id: "match",
        label: "Both passwords match".into(),
        met: len > 0 && new == confirm,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PasswordPolicy {
        PasswordPolicy {
            name: "portal".into(),
            min_length: 15,
            max_length: 128,
            blocklist: true,
            context_words: vec![
                "Enterprise Customer Portal".into(),
                "Connections Portal".into(),
            ],
            forbid_account_identifiers: true,
        }
    }

    fn ctx() -> PasswordContext {
        PasswordContext {
            email: "alice.smith@example.com".into(),
            display_name: "Alice Smith".into(),
        }
    }

    fn unmet(pw: &str, confirm: &str) -> Vec<&'static str> {
        requirements(&policy(), pw, confirm, &ctx())
            .into_iter()
            .filter(|r| !r.met)
            .map(|r| r.id)
            .collect()
    }

    #[test]
    fn passphrase_without_composition_is_accepted() {
        let pw = "correct horse battery staple";
        assert!(unmet(pw, pw).is_empty());
    }

    #[test]
    fn length_counts_code_points_after_nfc() {
        // 14 x "é" decomposed is 28 code points before NFC and 14 after: too short (R35, R39).
        let decomposed = "e\u{301}".repeat(14);
        assert_eq!(unmet(&decomposed, &decomposed), vec!["length"]);
        let fifteen = "é".repeat(15);
        assert!(!unmet(&fifteen, &fifteen).contains(&"length"));
        let emoji = "🦀".repeat(15);
        assert!(unmet(&emoji, &emoji).is_empty());
        let long = "x".repeat(129);
        assert!(unmet(&long, &long).contains(&"length"));
    }

    #[test]
    fn upper_bound_is_explicit_and_nothing_is_truncated() {
        // R36: 64 and 128 accepted; 129 and 10 000 refused with a reason, never truncated.
        let words = "harbour lantern meadow copper violet glacier pebble saffron thimble orchard ";
        let of_len = |n: usize| words.chars().cycle().take(n).collect::<String>();
        for ok in [64, 128] {
            let pw = of_len(ok);
            assert!(
                unmet(&pw, &pw).is_empty(),
                "{ok} characters must be accepted"
            );
        }
        for too_long in [129, 10_000] {
            let pw = of_len(too_long);
            assert_eq!(unmet(&pw, &pw), vec!["length"], "{too_long} characters");
        }
        // Confirmation differing only after character 72 (bcrypt's limit) is a mismatch.
        let a = of_len(100);
        let mut b = of_len(99);
        b.push('#');
        assert_eq!(unmet(&a, &b), vec!["match"]);
    }

    #[test]
    fn blocklist_and_context_words() {
        for pw in ["Password123!Password123!", "passwordpassword"] {
            assert!(unmet(pw, pw).contains(&"not-common"), "{pw}");
        }
        for pw in [
            "EnterpriseCustomerPortal2026",
            "my alice.smith secret!!",
            "smith-and-wesson-rocks",
        ] {
            assert!(unmet(pw, pw).contains(&"no-personal-words"), "{pw}");
        }
    }

    #[test]
    fn confirmation_must_match_after_normalization() {
        let a = "caf\u{e9} au lait tous les jours";
        let b = "cafe\u{301} au lait tous les jours";
        assert!(unmet(a, b).is_empty());
        assert_eq!(unmet(a, "something else entirely"), vec!["match"]);
        assert!(unmet("", "").contains(&"match"));
    }
}
