//! Every shipped definition loads, and each kind of mistake is reported on the right line
//! with a message and hint that name the right thing.

use super::*;
use crate::definition::{CodeChannel, StepKind, VoiceConfirm};
use proptest::prelude::*;

const SEED: &str = include_str!("../../../../../workflows/password-reset.toml");
const EMAIL_SMS: &str = include_str!("../../../../../workflows/email-sms.toml");
const VOICE_CODE: &str = include_str!("../../../../../workflows/email-voice-code.toml");

/// A small valid definition; the line numbers in the tests below refer to it.
const MINI: &str = include_str!("../../../../../tests/fixtures/mini-definition.toml");

/// `MINI` with each `(line, text)` replacing that 1-based line, so every other line keeps
/// its number.
fn mini_with(edits: &[(usize, &str)]) -> String {
    let mut lines: Vec<&str> = MINI.lines().collect();
    for &(line, text) in edits {
        lines[line - 1] = text;
    }
    lines.join("\n") + "\n"
}

fn errors(source: &str) -> Vec<DefinitionError> {
    match load("mini.toml", source) {
        Ok(_) => panic!("expected errors, but the definition loaded"),
        Err(e) => {
            assert_eq!(e.origin, "mini.toml");
            e.errors
        }
    }
}

/// Exactly one error, on `line`, whose message contains `message` and hint contains `hint`.
#[track_caller]
fn assert_single(source: &str, line: usize, message: &str, hint: &str) {
    let errors = errors(source);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(&errors[0], line, message, hint);
}

#[track_caller]
fn assert_error(e: &DefinitionError, line: usize, message: &str, hint: &str) {
    assert_eq!(e.line, line, "{e:#?}");
    assert!(
        e.message.contains(message),
        "message {:?} lacks {message:?}",
        e.message
    );
    assert!(e.hint.contains(hint), "hint {:?} lacks {hint:?}", e.hint);
}

/// The error on `line`, among several.
#[track_caller]
fn error_on(errors: &[DefinitionError], line: usize) -> &DefinitionError {
    let found = errors.iter().find(|e| e.line == line);
    found.unwrap_or_else(|| panic!("no error on line {line}: {errors:#?}"))
}

#[test]
fn the_seed_journey_loads_as_written() {
    let d = load("password-reset.toml", SEED).unwrap();
    assert_eq!((d.id.as_str(), d.version), ("password-reset", 1));
    assert_eq!(d.lifetime, Duration::from_secs(15 * 60));
    assert_eq!(d.start, StepId::from("email"));
    let ids: Vec<&str> = d.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "email",
            "email-code",
            "second-factor",
            "sms-code",
            "voice-call",
            "new-password",
            "done"
        ]
    );
    let Some(StepKind::Code(code)) = d.step(&"email-code".into()).map(|s| &s.kind) else {
        panic!("email-code is a code step");
    };
    assert_eq!(code.channel, CodeChannel::Email);
    assert_eq!((code.digits, code.max_attempts), (6, 5));
    assert_eq!(code.lifetime, Duration::from_secs(300));
    assert_eq!(code.resend.label, "Re-send code");
    assert_eq!(code.resend.cooldown, Duration::from_secs(30));
    let Some(StepKind::Voice(voice)) = d.step(&"voice-call".into()).map(|s| &s.kind) else {
        panic!("voice-call is a voice step");
    };
    assert_eq!(voice.confirm, VoiceConfirm::PressPound);
    assert_eq!(voice.max_calls, 3);
    let policy = &d.policies["portal"];
    assert_eq!(
        (policy.name.as_str(), policy.min_length, policy.max_length),
        ("portal", 15, 128)
    );
    assert_eq!(policy.context_words.len(), 3);
    assert_eq!(d.source, SEED);
    assert_eq!(d.content_hash.len(), 64);
    assert!(
        d.content_hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[test]
fn the_variants_load() {
    let sms = load("email-sms.toml", EMAIL_SMS).unwrap();
    assert_eq!(sms.id, "email-sms");
    assert!(
        sms.steps
            .iter()
            .all(|s| !matches!(s.kind, StepKind::Choose { .. } | StepKind::Voice(_)))
    );
    let Some(StepKind::Code(code)) = sms.step(&"sms-code".into()).map(|s| &s.kind) else {
        panic!("sms-code is a code step");
    };
    assert_eq!(code.channel, CodeChannel::Sms);
    assert_eq!(code.resend.max, 3, "resend defaults apply");

    let voice = load("email-voice-code.toml", VOICE_CODE).unwrap();
    assert_eq!(voice.id, "email-voice-code");
    let Some(StepKind::Voice(v)) = voice.step(&"voice-call".into()).map(|s| &s.kind) else {
        panic!("voice-call is a voice step");
    };
    assert_eq!(v.confirm, VoiceConfirm::SpokenCode { digits: 6 });
}

#[test]
fn the_content_hash_is_the_sha256_of_the_bytes() {
    let a = load("mini.toml", MINI).unwrap();
    // Same meaning, different bytes: a journey pinned to `a` must not run on `b`.
    let b = load("mini.toml", &format!("{MINI}# a comment\n")).unwrap();
    assert_ne!(a.content_hash, b.content_hash);
    let empty = Sha256::digest(b"")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(
        empty,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let expected: String = Sha256::digest(MINI.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(a.content_hash, expected);
}

#[test]
fn toml_syntax_error() {
    let source = mini_with(&[(18, r#"prompt = "Enter the code"#)]);
    let errors = errors(&source);
    assert_eq!(errors.len(), 1);
    assert_error(&errors[0], 18, "string", "double quote");
}

#[test]
fn unquoted_text() {
    assert_single(
        &mini_with(&[(20, "next = sms-code")]),
        20,
        "quoted",
        "double quotes",
    );
}

#[test]
fn unknown_step_kind() {
    assert_single(
        &mini_with(&[(24, r#"kind = "sms""#)]),
        24,
        "unknown kind `sms`",
        "identify, code, choose, voice, set-password, complete",
    );
}

#[test]
fn unknown_field() {
    assert_single(
        &mini_with(&[(26, r#"promt = "Enter the SMS code""#)]),
        26,
        "`promt`",
        "spelling",
    );
}

#[test]
fn field_of_another_kind() {
    let source = mini_with(&[(33, r#"channel = "sms""#)]);
    // The line held `prompt`, so that is missing too (reported on the table header).
    let errors = errors(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(
        &errors[0],
        30,
        "step `new-password` has no `prompt`",
        "add `prompt = ",
    );
    assert_error(
        &errors[1],
        33,
        "`channel` is not a field of a `set-password` step",
        "remove it; a `set-password` step has: id, kind, prompt, policy, next",
    );
}

#[test]
fn dangling_next() {
    assert_single(
        &mini_with(&[(28, r#"next = "pasword""#)]),
        28,
        "step `sms-code` names `next = \"pasword\"`, which is not a step",
        "use one of: email, email-code, sms-code, new-password, done",
    );
}

#[test]
fn unreachable_step() {
    assert_single(
        &mini_with(&[(20, r#"next = "new-password""#)]),
        22,
        "step `sms-code` cannot be reached from `start = \"email\"`",
        "point a `next`",
    );
}

#[test]
fn no_way_to_finish() {
    // email-code -> sms-code -> email-code: a loop that never reaches `done`.
    let errors = errors(&mini_with(&[(28, r#"next = "email-code""#)]));
    assert_error(
        &errors[0],
        14,
        "step `email-code` has no way to finish",
        "the loop email-code → sms-code → email-code never reaches one; change a `next` so it leads to done",
    );
    assert_error(
        &errors[1],
        22,
        "step `sms-code` has no way to finish",
        "loop",
    );
    assert_error(
        error_on(&errors, 30),
        30,
        "`new-password` cannot be reached",
        "",
    );
    assert_error(error_on(&errors, 37), 37, "`done` cannot be reached", "");
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn no_complete_step() {
    let source = mini_with(&[
        (39, r#"kind = "identify""#),
        (41, r#"action = "Again""#),
        (42, r#"next = "email""#),
    ]);
    assert_single(&source, 37, "no `complete` step", "kind = \"complete\"");
}

#[test]
fn bad_duration() {
    assert_single(
        &mini_with(&[(19, r#"lifetime = "5 minutes""#)]),
        19,
        "`lifetime = \"5 minutes\"` in step `email-code` is not a duration",
        "write a duration like 30s, 5m or 1h",
    );
}

#[test]
fn missing_field() {
    assert_single(
        &mini_with(&[(26, "# no prompt")]),
        22,
        "step `sms-code` has no `prompt`",
        "add `prompt = ",
    );
}

#[test]
fn missing_top_level_field() {
    assert_single(
        &mini_with(&[(4, "")]),
        1,
        "the definition has no `lifetime`",
        "lifetime = \"15m\"",
    );
}

#[test]
fn duplicate_step_id() {
    let errors = errors(&mini_with(&[(23, r#"id = "email-code""#)]));
    let e = error_on(&errors, 23);
    assert_error(
        e,
        23,
        "step id `email-code` is used twice",
        "the first `email-code` is on line 15",
    );
}

#[test]
fn undefined_policy() {
    assert_single(
        &mini_with(&[(34, r#"policy = "strict""#)]),
        34,
        "uses `policy = \"strict\"`, which is not defined under [policies]",
        "use one of: portal",
    );
}

#[test]
fn open_redirect_href() {
    for href in [
        "//evil.example",
        "https://evil.example",
        "/\\\\evil.example",
        "javascript:alert(1)",
        "/a\\u0009b",
    ] {
        let line = format!(r#"tiles = [{{ title = "C", portal = "P", href = "{href}" }}]"#);
        let errors = errors(&mini_with(&[(41, &line)]));
        assert_eq!(errors.len(), 1, "{href}: {errors:#?}");
        assert_error(&errors[0], 41, "is not a site-relative path", "R48");
    }
}

#[test]
fn sms_before_email_code() {
    // email -> sms-code -> email-code -> new-password -> done
    assert_single(
        &mini_with(&[
            (12, r#"next = "sms-code""#),
            (20, r#"next = "new-password""#),
            (28, r#"next = "email-code""#),
        ]),
        22,
        "an SMS or voice step must come after the email code step (R19): `sms-code` is reached by email → sms-code",
        "channel = \"email\"",
    );
}

#[test]
fn voice_before_email_code() {
    let source = mini_with(&[
        (12, r#"next = "sms-code""#),
        (20, r#"next = "new-password""#),
        (24, r#"kind = "voice""#),
        (25, r#"confirm = "press-pound""#),
        (28, r#"next = "email-code""#),
    ]);
    assert_single(&source, 22, "(R19)", "every path");
}

#[test]
fn set_password_before_any_verification() {
    // email -> new-password -> email-code -> sms-code -> done
    assert_single(
        &mini_with(&[
            (12, r#"next = "new-password""#),
            (28, r#"next = "done""#),
            (35, r#"next = "email-code""#),
        ]),
        30,
        "step `new-password` sets a password without any verification (R28): it is reached by email → new-password",
        "`code` or `voice` step",
    );
}

#[test]
fn digits_out_of_range() {
    assert_single(
        &mini_with(&[(29, "digits = 4")]),
        29,
        "`digits = 4` in step `sms-code` is out of range",
        "from 6 to 10 (R7",
    );
}

#[test]
fn sms_lifetime_over_ten_minutes() {
    assert_single(
        &mini_with(&[(27, r#"lifetime = "15m""#)]),
        27,
        "`lifetime = \"15m\"`",
        "to 10m (R8",
    );
}

#[test]
fn email_lifetime_may_be_long() {
    assert!(load("mini.toml", &mini_with(&[(19, r#"lifetime = "24h""#)])).is_ok());
    assert_single(
        &mini_with(&[(19, r#"lifetime = "25h""#)]),
        19,
        "out of range",
        "to 24h (R8",
    );
}

#[test]
fn resend_cooldown_longer_than_lifetime() {
    assert_single(
        &mini_with(&[(21, r#"resend = { cooldown = "10m" }"#)]),
        21,
        "resend cooldown of step `email-code` (10m) is longer than the code's lifetime (5m)",
        "at most 5m",
    );
}

#[test]
fn start_must_be_identify() {
    assert_single(
        &mini_with(&[(5, r#"start = "email-code""#)]),
        5,
        "is a `code` step",
        "email",
    );
    assert_single(
        &mini_with(&[(5, r#"start = "emial""#)]),
        5,
        "is not a step",
        "use one of: email,",
    );
}

#[test]
fn policy_ranges() {
    let errors = errors(&mini_with(&[
        (44, "min_length = 6"),
        (45, "max_length = 2000"),
    ]));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(&errors[0], 44, "`min_length = 6`", "R35");
    assert_error(&errors[1], 45, "`max_length = 2000`", "R36");
}

#[test]
fn choose_needs_two_distinct_options() {
    let choose = r#"options = [{ id = "a", label = "A", next = "sms-code" }, { id = "a", label = "B", next = "sms-code" }]"#;
    let source = mini_with(&[(16, r#"kind = "choose""#), (17, choose), (19, ""), (20, "")]);
    let errors = errors(&source);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(&errors[0], 17, "option id `a` appears twice", "its own id");
    // The choose step replaced the email code, so the SMS now comes first.
    assert_error(&errors[1], 22, "(R19)", "");
}

#[test]
fn empty_steps() {
    let source =
        "id = \"x\"\nversion = 1\ntitle = \"X\"\nlifetime = \"15m\"\nstart = \"a\"\nsteps = []\n";
    let errors = errors(source);
    assert_error(error_on(&errors, 6), 6, "no steps", "[[steps]]");
}

#[test]
fn several_errors_are_reported_together() {
    let source = mini_with(&[
        (19, r#"lifetime = "5 minutes""#),
        (28, r#"next = "pasword""#),
        (34, r#"policy = "strict""#),
        (
            41,
            r#"tiles = [{ title = "C", portal = "P", href = "//evil.example" }]"#,
        ),
    ]);
    let e = load("mini.toml", &source).unwrap_err();
    let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [19, 28, 34, 41], "{e}");
    let rendered = e.to_string();
    assert!(rendered.starts_with(
        "mini.toml:19:12: error: `lifetime = \"5 minutes\"` in step `email-code` is not a duration\n  \
         help: write a duration like 30s, 5m or 1h\n"
    ), "{rendered}");
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_column("a\nbé = 1", 5), (2, 3));
    assert_eq!(line_column("é", 1), (1, 1), "inside a character");
    assert_eq!(line_column("ab", 99), (1, 3), "past the end");
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(source in "\\PC{0,200}") {
        let _ = load("fuzz.toml", &source);
    }

    #[test]
    fn damaged_seed_never_panics(at in 0usize..4000, len in 0usize..40, insert in "[\\[\\]{}=\",#a-z0-9 \n]{0,6}") {
        let mut source = SEED.to_owned();
        let start = (0..=at.min(source.len())).rev().find(|&i| source.is_char_boundary(i)).unwrap_or(0);
        let end = (start..=(start + len).min(source.len())).rev().find(|&i| source.is_char_boundary(i)).unwrap_or(start);
        source.replace_range(start..end, &insert);
        let _ = load("fuzz.toml", &source);
    }
}

#[test]
fn the_readme_example_is_what_load_says() {
    let readme = include_str!("../../../../../workflows/README.md");
    let mut lines: Vec<&str> = SEED.lines().collect();
    assert_eq!(
        lines[53], r#"next = "new-password""#,
        "line 54 is the SMS step's next"
    );
    lines[53] = r#"next = "pasword""#;
    let e = load("password-reset.toml", &(lines.join("\n") + "\n")).unwrap_err();
    assert!(readme.contains(&e.to_string()), "README shows:\n{e}");
}

#[test]
fn stall_after_is_optional_common_to_every_kind_and_bounded() {
    let seed = load("password-reset.toml", SEED).unwrap();
    let stall = |id: &str| seed.step(&id.into()).and_then(|s| s.stall_after);
    assert_eq!(
        stall("email-code"),
        Some(std::time::Duration::from_secs(180))
    );
    assert_eq!(
        stall("voice-call"),
        Some(std::time::Duration::from_secs(90))
    );
    assert_eq!(stall("done"), None, "omitted: never stalls");
    // Allowed on any kind (here an identify step), with the same duration syntax.
    let ok = mini_with(&[(11, "action = \"Send code\"\nstall_after = \"2m\"")]);
    let d = load("mini.toml", &ok).unwrap();
    assert_eq!(
        d.step(&"email".into()).and_then(|s| s.stall_after),
        Some(std::time::Duration::from_secs(120))
    );
    assert_single(
        &mini_with(&[(19, "lifetime = \"5m\"\nstall_after = \"5s\"")]),
        20,
        "`stall_after = \"5s\"` in",
        "from 10s to 24h",
    );
    assert_single(
        &mini_with(&[(19, "lifetime = \"5m\"\nstall_after = \"soon\"")]),
        20,
        "stall_after",
        "",
    );
}
