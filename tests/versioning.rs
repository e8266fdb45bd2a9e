//! "A definition change does not affect journeys already started on the old version": a
//! journey runs to the end on the definition it started with, whatever happens to the file.

mod common;

use common::{
    Passage, REPO_WORKFLOWS, STRONG_PASSWORD, TestDir, copy_files, rfc3339_ms, timeline,
    timestamp_after,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

const MINUTE_MS: i64 = 60_000;

/// A test directory with a copy of the shipped workflow files in `<dir>/workflows`.
fn setup(tag: &str) -> (TestDir, PathBuf, Passage) {
    let dir = TestDir::new(tag);
    let workflows = dir.join("workflows");
    copy_files(Path::new(REPO_WORKFLOWS), &workflows, Some("toml"));
    let p = Passage::new(&dir).with_workflows(&workflows);
    (dir, workflows, p)
}

/// Replaces the one line of `file` equal to `old` by `new`; panics if there is not exactly one.
#[track_caller]
fn replace_line(file: &Path, old: &str, new: &str) {
    let text = std::fs::read_to_string(file).expect("read the definition");
    let hits = text.lines().filter(|l| *l == old).count();
    assert_eq!(
        hits,
        1,
        "{old:?} is not exactly one line of {}",
        file.display()
    );
    let edited: Vec<&str> = text
        .lines()
        .map(|l| if l == old { new } else { l })
        .collect();
    std::fs::write(file, edited.join("\n") + "\n").expect("write the definition");
}

/// The first 12 hex digits of the file's SHA-256, as `workflows check` prints them.
#[track_caller]
fn short_hash(p: &Passage, file: &Path) -> String {
    let run = p.run(&["workflows", "check", &file.display().to_string()]);
    run.expect_ok();
    let at = run
        .stdout
        .find("sha256 ")
        .expect("a sha256 in the check output")
        + "sha256 ".len();
    run.stdout[at..at + 12].to_owned()
}

/// The first event of `journey` whose type is `event_type`.
#[track_caller]
fn first_event(events: &[Value], event_type: &str) -> Value {
    events
        .iter()
        .find(|e| e["type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {events:#?}"))
        .clone()
}

/// For the journey's first email code: (recorded_at, issued_at, expires_at) from the JSON log
/// and the `valid until` the timeline prints, all in ms.
#[track_caller]
fn email_code_times(p: &Passage, id: &str) -> (i64, i64, i64, i64) {
    let events = p.events(id);
    let issued = events
        .iter()
        .find(|e| e["type"] == "CodeIssued" && e["event"]["step"] == "email-code")
        .unwrap_or_else(|| panic!("no email CodeIssued in {events:#?}"));
    let recorded_at = rfc3339_ms(issued["recorded_at"].as_str().expect("recorded_at"));
    let issued_at = issued["event"]["issued_at"]
        .as_i64()
        .expect("issued_at in ms");
    let expires_at = issued["event"]["expires_at"]
        .as_i64()
        .expect("expires_at in ms");

    let show = p.run(&["journey", "show", id]);
    show.expect_ok();
    let lines = timeline(&show.stdout);
    let (_, _, line) = lines
        .iter()
        .find(|(_, t, l)| t == "CodeIssued" && l.contains("email code #1"))
        .unwrap_or_else(|| panic!("no email CodeIssued line in {show}"));
    let until = timestamp_after(line, "valid until ")
        .unwrap_or_else(|| panic!("no `valid until` in {line:?}"));
    let valid_until = rfc3339_ms(until);
    // The step view prints the same instant as HH:MM:SS.
    show.stdout_has(&format!("valid until {};", &until[11..19]));
    (recorded_at, issued_at, expires_at, valid_until)
}

/// Runs the SMS path from the email code to the end; returns the final output.
#[track_caller]
fn complete_with_sms(p: &Passage, id: &str) -> String {
    let code = p.code(id, "email");
    p.run(&["journey", "input", id, &code]).expect_ok();
    p.run(&["journey", "input", id, "sms"]).expect_ok();
    let sms = p.code(id, "sms");
    p.run(&["journey", "input", id, &sms])
        .expect_ok()
        .stdout_has("Reset Password: enter a new password");
    let done = p.run_stdin(
        &["journey", "input", id, "--password-stdin"],
        &format!("{STRONG_PASSWORD}\n"),
    );
    done.expect_ok().stdout_has("signed in");
    done.stdout
}

#[test]
fn a_changed_code_lifetime_applies_only_to_journeys_started_afterwards() {
    let (_dir, workflows, p) = setup("versioning");
    let file = workflows.join("password-reset.toml");
    let v1_hash = short_hash(&p, &file);

    let (j1, start1) = p.start("alice@example.com");
    start1.stdout_has(&format!("journey {j1}  [password-reset v1, active"));

    // Version 2: the email code lives 2 minutes instead of 5.
    replace_line(&file, "version = 1", "version = 2");
    replace_line(
        &file,
        r#"lifetime = "5m"                # R8"#,
        r#"lifetime = "2m"                # R8"#,
    );
    let text = std::fs::read_to_string(&file).expect("read the edited file");
    let email_step = &text[text
        .find("id = \"email-code\"")
        .expect("the email-code step")..];
    let email_step = &email_step[..email_step.find("[[steps]]").expect("a step after it")];
    assert!(
        email_step.contains("lifetime = \"2m\""),
        "the edit hit the wrong step:\n{email_step}"
    );
    let v2_hash = short_hash(&p, &file);
    assert_ne!(v1_hash, v2_hash);
    p.run(&["workflows", "list"])
        .expect_ok()
        .stdout_has(&format!("password-reset     v2   {v2_hash}"));

    // Another person: alice's own open journeys end when her reset is applied (R44).
    let (j2, start2) = p.start("bob.smith@example.com");
    start2.stdout_has(&format!("journey {j2}  [password-reset v2, active"));

    // Each journey records the definition it started on.
    let started1 = first_event(&p.events(&j1), "JourneyStarted");
    let started2 = first_event(&p.events(&j2), "JourneyStarted");
    assert_eq!(started1["event"]["definition_version"], 1);
    assert_eq!(started2["event"]["definition_version"], 2);
    let h1 = started1["event"]["definition_hash"]
        .as_str()
        .expect("a hash");
    let h2 = started2["event"]["definition_hash"]
        .as_str()
        .expect("a hash");
    assert!(
        h1.starts_with(&v1_hash),
        "{h1} is not the hash of the v1 file ({v1_hash}…)"
    );
    assert!(
        h2.starts_with(&v2_hash),
        "{h2} is not the hash of the v2 file ({v2_hash}…)"
    );

    // Journey 1, shown after the change: its code is still valid 5 minutes after issue.
    let (recorded, issued, expires, until) = email_code_times(&p, &j1);
    assert_eq!(
        recorded, issued,
        "the code was issued when the event was recorded"
    );
    assert_eq!(expires - issued, 5 * MINUTE_MS, "journey 1's code lifetime");
    assert_eq!(until, expires, "the timeline shows the stored expiry");
    let show1 = p.run(&["journey", "show", &j1]);
    show1
        .expect_ok()
        .stdout_has(&format!("journey {j1}  [password-reset v1, active"));

    // Journey 2: 2 minutes.
    let (recorded, issued, expires, until) = email_code_times(&p, &j2);
    assert_eq!(recorded, issued);
    assert_eq!(expires - issued, 2 * MINUTE_MS, "journey 2's code lifetime");
    assert_eq!(until, expires);
    p.run(&["journey", "show", &j2])
        .expect_ok()
        .stdout_has(&format!("journey {j2}  [password-reset v2, active"));

    // Journey 1 runs to the end with the changed file in place, still on v1.
    let done = complete_with_sms(&p, &j1);
    assert!(
        done.contains(&format!("journey {j1}  [password-reset v1, completed]")),
        "{done}"
    );
    let show1 = p.run(&["journey", "show", &j1]);
    show1
        .expect_ok()
        .stdout_has(&format!("on password-reset v1 ({v1_hash})"))
        .stdout_has(&format!("journey {j1}  [password-reset v1, completed]"));
    let types: Vec<String> = timeline(&show1.stdout)
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(
        types.last().map(String::as_str),
        Some("MessageDelivered"),
        "{show1}"
    );
    assert!(types.contains(&"JourneyCompleted".to_owned()), "{show1}");
    // Its SMS code also followed v1 (5 minutes; unchanged in v2 as well).
    let events = p.events(&j1);
    let sms = events
        .iter()
        .find(|e| e["type"] == "CodeIssued" && e["event"]["step"] == "sms-code")
        .expect("an SMS code");
    let sms_life =
        sms["event"]["expires_at"].as_i64().unwrap() - sms["event"]["issued_at"].as_i64().unwrap();
    assert_eq!(sms_life, 5 * MINUTE_MS);

    let list = p.run(&["journeys", "list"]);
    list.expect_ok();
    let row = |id: &str| {
        list.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
            .to_owned()
    };
    assert!(
        row(&j1).contains("completed") && row(&j1).contains("password-reset v1"),
        "{list}"
    );
    assert!(
        row(&j2).contains("active") && row(&j2).contains("password-reset v2"),
        "{list}"
    );
}

#[test]
fn a_stricter_password_policy_does_not_apply_to_a_journey_already_started() {
    let (_dir, workflows, p) = setup("versioning-policy");
    let file = workflows.join("password-reset.toml");
    let (j1, _) = p.start("alice@example.com");

    // Version 2 asks for 40 characters; the passphrase has 34.
    assert!(STRONG_PASSWORD.chars().count() < 40);
    replace_line(&file, "version = 1", "version = 2");
    replace_line(
        &file,
        "min_length = 15                # R35",
        "min_length = 40",
    );
    // Another person: alice's own open journeys end when her reset is applied (R44).
    let (j2, _) = p.start("bob.smith@example.com");

    let done = complete_with_sms(&p, &j1);
    assert!(done.contains("[password-reset v1, completed]"), "{done}");

    // The new journey is held to the new rule.
    let code = p.code(&j2, "email");
    p.run(&["journey", "input", &j2, &code]).expect_ok();
    p.run(&["journey", "input", &j2, "sms"]).expect_ok();
    let sms = p.code(&j2, "sms");
    p.run(&["journey", "input", &j2, &sms])
        .expect_ok()
        .stdout_has("At least 40 characters");
    let refused = p.run_stdin(
        &["journey", "input", &j2, "--password-stdin"],
        &format!("{STRONG_PASSWORD}\n"),
    );
    refused
        .expect_code(1)
        .no_panic()
        .stderr_has("refused (password-policy)")
        .stderr_has("At least 40 characters")
        .stdout_has("[password-reset v2, active");
    assert!(!refused.stdout.contains("signed in"), "{refused}");
}

#[test]
fn a_removed_definition_file_stops_new_journeys_but_not_started_ones() {
    let (_dir, workflows, p) = setup("versioning-removed");
    let (j1, _) = p.start("alice@example.com");
    std::fs::remove_file(workflows.join("password-reset.toml")).expect("remove the file");

    let refused = p.run(&["journey", "start", "--email", "alice@example.com"]);
    refused.no_panic().stderr_has("password-reset");
    assert_ne!(refused.code, Some(0), "{refused}");
    assert!(refused.stdout.trim().is_empty(), "{refused}");
    let listed = p.run(&["workflows", "list"]);
    listed.expect_ok();
    assert!(!listed.stdout.contains("password-reset"), "{listed}");

    let done = complete_with_sms(&p, &j1);
    assert!(
        done.contains(&format!("journey {j1}  [password-reset v1, completed]")),
        "{done}"
    );
}
