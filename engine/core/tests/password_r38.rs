//! R38 (and NIST SP 800-63B 5.1.1.2) through the public `password::requirements`: passwords
//! that are long enough but common, breached, repetitive, sequential or context-specific are
//! refused, each with a reason, and with no composition rule (R37): strong passphrases pass.

use passage_core::definition::PasswordPolicy;
use passage_core::password::{PasswordContext, Requirement, requirements};

const GENERIC: &str = "Not a common, repeated or sequential password";
const COMMON: &str =
    "Not a common or breached password, even with numbers added or letters swapped for symbols";
const REPEATED: &str = "Not a repeated character or pattern (such as aaaa or abcabc)";
const SEQUENTIAL: &str = "Not a sequence or keyboard pattern (such as 12345, abcde or qwerty)";
const FEW: &str = "Uses at least 5 different characters";
const LENGTH: &str = "At least 15 characters (up to 128)";
const PADDED: &str =
    "At least 15 characters (up to 128), not counting invisible characters or extra spaces";
const CONTROL: &str = "At least 15 characters (up to 128), none of them control characters such as NUL, tab or line break";

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

fn ticks(pw: &str) -> Vec<Requirement> {
    requirements(&policy(), pw, pw, &ctx())
}

/// The unmet ticks as (id, label).
fn unmet(pw: &str) -> Vec<(&'static str, String)> {
    ticks(pw)
        .into_iter()
        .filter(|r| !r.met)
        .map(|r| (r.id, r.label))
        .collect()
}

fn refused_for(pw: &str, id: &'static str, label: &str) {
    assert_eq!(unmet(pw), vec![(id, label.to_owned())], "{pw:?}");
}

fn accepted(pw: &str) {
    assert_eq!(unmet(pw), vec![], "{pw:?} must be accepted");
}

#[test]
fn the_security_reviews_examples_are_refused_with_a_reason() {
    for (pw, label) in [
        // "123456789" and "1234567890" are among the most breached passwords.
        ("123456789012345", COMMON),
        ("aaaaaaaaaaaaaaa", REPEATED),
        ("abcdefghijklmnop", SEQUENTIAL),
        // "qwertyuiop" is a blocklist entry; "asdfghjkl" a keyboard row.
        ("qwertyuiopasdfghjkl", COMMON),
        ("P@ssw0rdP@ssw0rd", COMMON),
        ("passw0rd12345678", COMMON),
    ] {
        refused_for(pw, "not-common", label);
    }
    refused_for(&" ".repeat(15), "length", PADDED);
    refused_for(&"\u{200b}".repeat(15), "length", PADDED);
    refused_for(&"\u{0}".repeat(15), "length", CONTROL);
}

#[test]
fn strong_passphrases_and_random_passwords_are_accepted() {
    for pw in [
        "correct horse battery staple",
        "my cat Tibbles ate 3 socks",
        "Zq8#vL2!mW9@rT5",
        "the quick brown fox jumps over",
        // Twenty random words.
        "plum orbit fern quay mist dune kelp sage wren lynx opal reef husk moth tarn vale bog cove yarn zinc",
        "мой кот любит спать на солнце",
        "我的小猫喜欢在温暖的阳光下睡午觉",
        "Ο σκύλος μου τρέχει στην παραλία",
        "👩\u{200d}👩\u{200d}👧\u{200d}👦 family picnic by the lake 🦀",
        "zero\u{200b}width lantern harbour comet",
        "\u{202e}reversed meadow copper violet",
        // Symbols only, but no pattern: no composition rule either way (R37).
        "#]%{;^~`+<)=(-*",
        "Tr0ub4dor&3Tr0ub",
        "  lantern harbour velvet comet ember ",
    ] {
        accepted(pw);
    }
}

#[test]
fn exactly_the_minimum_length() {
    for pw in [
        "harbour lantern",
        "Zq8#vL2!mW9@rT5",
        "我的小猫喜欢在温暖的阳光下睡午",
    ] {
        assert_eq!(pw.chars().count(), 15, "{pw}");
        accepted(pw);
    }
    refused_for("harbour lanter", "length", LENGTH);
    // Padded to 15 code points: spaces at the ends, doubled spaces and zero-width characters
    // do not count.
    for pw in [
        "Zq8#vL2!mW9@r  ",
        "  Zq8#vL2!mW9@r",
        "Zq8#vL2!  mW9@r",
        "Zq8#vL2!mW9@r\u{200b}\u{200b}",
        "Zq8#vL2!mW9@r\u{fe0f}\u{2060}",
    ] {
        assert_eq!(pw.chars().count(), 15, "{pw:?}");
        refused_for(pw, "length", PADDED);
    }
}

#[test]
fn repeated_unicode_letters_are_refused_in_either_normal_form() {
    for pw in [
        "ÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉ".to_owned(),
        "E\u{301}".repeat(15),
        "éÉéÉéÉéÉéÉéÉéÉé".to_owned(),
        "жж".repeat(8),
        "🦀".repeat(15),
        "ab".repeat(9),
        "Zq8#vL2!".repeat(2),
    ] {
        refused_for(&pw, "not-common", REPEATED);
    }
}

#[test]
fn sequences_and_keyboard_walks_are_refused() {
    for pw in [
        "zyxwvutsrqponmlk",
        "13579bdfhjlnprtv",
        "!@#$%^&*()_+!@#$",
        "zxcvbnm,./asdfghjkl",
        "1qaz2wsx3edc4rfv5tgb",
        "qwertzuiopasdfghjkl",
        "йцукенгшщзхфыва",
        "абвгдеёжзийклмнопр",
        "9876543210mnbvcxz",
    ] {
        let why = unmet(pw);
        assert!(
            why == vec![("not-common", SEQUENTIAL.to_owned())]
                || why == vec![("not-common", COMMON.to_owned())],
            "{pw:?}: {why:?}"
        );
    }
}

#[test]
fn common_words_with_look_alikes_separators_years_or_digits_are_refused() {
    for pw in [
        "password83749201",
        "Password2024!!!!",
        "p.a.s.s.w.o.r.d.2024",
        "drowssapdrowssap",
        "iloveyou sunshine princess",
        "monkey dragon football baseball",
        "$up3rm@n$up3rm@n",
        "superman Zq8#vL2",
    ] {
        refused_for(pw, "not-common", COMMON);
    }
    // One common word inside enough unexplained characters is fine.
    accepted("dragon Zq8#vL2!m");
    accepted("i love blue fish and golf");
}

#[test]
fn too_few_different_characters_is_refused() {
    refused_for("aabbaabbbababbab", "not-common", FEW);
    refused_for("kxqz zqkx xkzq qzxk", "not-common", FEW);
}

#[test]
fn control_characters_are_refused_wherever_they_are() {
    for pw in [
        "lantern\u{0}harbour velvet comet",
        "lantern\tharbour velvet comet",
        "lantern harbour velvet comet\n",
        "\u{7f}lantern harbour velvet comet",
        "lantern harbour\u{85}velvet comet",
    ] {
        refused_for(pw, "length", CONTROL);
    }
}

#[test]
fn context_words_are_found_through_look_alikes_and_separators() {
    for pw in [
        "@l1ce harbour lantern meadow",
        "s.m.i.t.h meadow copper violet",
        "C0nn3ct10n5 P0rt@l meadow violet",
    ] {
        assert_eq!(
            unmet(pw),
            vec![(
                "no-personal-words",
                "Does not contain your name, your email or the portal's name".to_owned()
            )],
            "{pw:?}"
        );
    }
}

#[test]
fn the_ticks_keep_their_ids_order_and_generic_labels() {
    for pw in [
        "",
        "aaaaaaaaaaaaaaa",
        "correct horse battery staple",
        "\u{0}",
    ] {
        let ids: Vec<_> = ticks(pw).iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            ["length", "not-common", "no-personal-words", "match"],
            "{pw:?}"
        );
    }
    // The page is drawn from an empty password: the generic labels.
    let labels: Vec<_> = ticks("").into_iter().map(|r| r.label).collect();
    assert_eq!(labels[..2], [LENGTH.to_owned(), GENERIC.to_owned()]);
    // Met ticks keep them too.
    let labels: Vec<_> = ticks("correct horse battery staple")
        .into_iter()
        .map(|r| r.label)
        .collect();
    assert_eq!(labels[..2], [LENGTH.to_owned(), GENERIC.to_owned()]);
}

#[test]
fn without_the_blocklist_only_the_length_rules_remain() {
    let policy = PasswordPolicy {
        blocklist: false,
        ..policy()
    };
    let unmet = |pw: &str| -> Vec<&str> {
        requirements(&policy, pw, pw, &ctx())
            .into_iter()
            .filter(|r| !r.met)
            .map(|r| r.id)
            .collect()
    };
    assert!(unmet("aaaaaaaaaaaaaaa").is_empty());
    assert_eq!(unmet(&" ".repeat(15)), ["length"]);
    assert_eq!(unmet(&"\u{0}".repeat(15)), ["length"]);
}

#[test]
fn a_shorter_minimum_never_refuses_a_random_password_of_that_length() {
    let policy = PasswordPolicy {
        min_length: 8,
        ..policy()
    };
    let unmet = |pw: &str| -> Vec<&str> {
        requirements(&policy, pw, pw, &ctx())
            .into_iter()
            .filter(|r| !r.met)
            .map(|r| r.id)
            .collect()
    };
    assert!(unmet("Zq8#vL2!").is_empty());
    assert!(unmet("kT9$wq3Z").is_empty());
    assert_eq!(unmet("password"), ["not-common"]);
    assert_eq!(unmet("abcd1234"), ["not-common"]);
}

#[test]
fn very_long_input_is_refused_without_being_analysed_whole() {
    let huge = "a".repeat(1 << 20);
    let why = unmet(&huge);
    assert_eq!(why[0], ("length", LENGTH.to_owned()));
    assert_eq!(why[1], ("not-common", REPEATED.to_owned()));
    let words = "harbour lantern meadow copper violet glacier pebble saffron thimble orchard ";
    let long: String = words.chars().cycle().take(10_000).collect();
    assert_eq!(unmet(&long), vec![("length", LENGTH.to_owned())]);
}

/// A repeated unit costs what the unit itself costs, plus the copies: a guessable unit
/// repeated any number of times stays guessable (a review found `Summer2024Summer2024`
/// accepted, and `password` repeated 43 times accepted while 42 times was refused).
#[test]
fn a_guessable_unit_repeated_stays_guessable_however_often() {
    for pw in [
        "Summer2024Summer2024".to_owned(),
        "password".repeat(42),
        "password".repeat(43),
        "password".repeat(16),
        "qwertyuiop[]".repeat(3),
        "qwertyuiop[]".repeat(4),
    ] {
        assert!(!not_common_met(&pw), "{pw:?} was accepted");
    }
    // A strong unit typed twice is still strong.
    assert!(not_common_met("Zq8#vL2!mW9@rT5kZq8#vL2!mW9@rT5k"));
}

fn not_common_met(pw: &str) -> bool {
    ticks(pw)
        .into_iter()
        .find(|r| r.id == "not-common")
        .expect("the not-common tick")
        .met
}
