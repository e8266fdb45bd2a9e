//! End to end through the real `passage` binary: the demo, a journey driven by hand, what an
//! unknown account sees, the refusals, and the help.

mod common;

use common::{
    Passage, STRONG_PASSWORD, TestDir, copy_files, journey_id, looks_like_uuid, mask_times,
    outbox_code, rfc3339_ms, timeline,
};

const TILE_CONNECTIONS: &str =
    "▣ Manage a Network Application  → Connections Portal (/portal/connections)";
const TILE_CONTRACTOR: &str = "▣ Engagement of Contracted Services and Equipment  → Contractor Booking System (/portal/contractor-booking)";

/// The event types of a journey, in log order, from `journey show --json`.
fn event_types(p: &Passage, id: &str) -> Vec<String> {
    p.events(id)
        .iter()
        .map(|e| {
            e["type"]
                .as_str()
                .expect("each event has a type")
                .to_owned()
        })
        .collect()
}

/// Panics unless `wanted` occurs in `all` in this order (other items may come between).
#[track_caller]
fn assert_in_order(all: &[String], wanted: &[&str]) {
    let mut rest = all.iter();
    for w in wanted {
        assert!(
            rest.any(|x| x == w),
            "`{w}` missing or out of order in {all:?} (wanted the order {wanted:?})"
        );
    }
}

/// Runs a journey up to the Reset Password step with the SMS factor.
fn to_password_step(p: &Passage) -> String {
    let (id, _) = p.start("alice@example.com");
    let email_code = p.code(&id, "email");
    p.run(&["journey", "input", &id, &email_code]).expect_ok();
    p.run(&["journey", "input", &id, "sms"]).expect_ok();
    let sms_code = p.code(&id, "sms");
    p.run(&["journey", "input", &id, &sms_code])
        .expect_ok()
        .stdout_has("Reset Password: enter a new password");
    id
}

#[test]
fn helpers_parse_what_the_binary_prints() {
    assert_eq!(rfc3339_ms("1970-01-01T00:00:00.000Z"), 0);
    assert_eq!(rfc3339_ms("2026-11-27T07:19:18.503Z"), 1_795_763_958_503);
    assert_eq!(rfc3339_ms("2000-02-29T12:00:00.001Z"), 951_825_600_001);
    assert_eq!(
        mask_times("at 2026-11-27T07:19:18.503Z, expires 07:33:25] to a•••e@e•••.com"),
        "at <time>, expires <time>] to a•••e@e•••.com"
    );
    assert_eq!(
        outbox_code("#1 2026 email to a (journey x)  code 667400\n    667400\n").as_deref(),
        Some("667400")
    );
    assert_eq!(
        journey_id("journey 01a21bde-92be-766e-a296-3785963ababb  [password-reset v1, active]\n"),
        "01a21bde-92be-766e-a296-3785963ababb"
    );
    assert!(looks_like_uuid("01a21bde-92be-766e-a296-3785963ababb"));
    assert!(!looks_like_uuid("nonsense"));
}

#[test]
fn demo_completes_both_journeys_and_a_second_run_reuses_the_database() {
    let dir = TestDir::new("demo");
    let p = Passage::new(&dir);

    let first = p.run(&["demo"]);
    first.expect_ok().no_panic();
    let out = &first.stdout;
    first
        .stdout_has("== Password reset for alice@example.com with SMS ==")
        .stdout_has("== Password reset for alice@example.com with voice call ==")
        .stdout_has("SMS code entered")
        .stdout_has("# pressed")
        .stdout_has("Weak password refused")
        .stdout_has("Update Password");
    assert_eq!(
        out.matches("[password-reset v1, completed]").count(),
        2,
        "{first}"
    );
    assert_eq!(
        out.matches("✓ Your password is reset and you are signed in")
            .count(),
        2,
        "{first}"
    );
    assert_eq!(out.matches(TILE_CONNECTIONS).count(), 2, "{first}");
    assert_eq!(out.matches(TILE_CONTRACTOR).count(), 2, "{first}");
    assert_eq!(out.matches("Timeline:").count(), 2, "{first}");

    // Each journey's timeline: numbered from 1, SMS for the first, a confirmed call for the second.
    let (sms_part, voice_part) = out
        .split_once("== Password reset for alice@example.com with voice call ==")
        .expect("two sections");
    for (part, factor_events) in [
        (
            sms_part,
            &["OptionChosen", "CodeIssued", "CodeVerified"][..],
        ),
        (
            voice_part,
            &["OptionChosen", "CallPlaced", "CallConfirmed"][..],
        ),
    ] {
        let lines = timeline(part);
        let versions: Vec<u64> = lines.iter().map(|(v, _, _)| *v).collect();
        let expected: Vec<u64> = (1..=lines.len() as u64).collect();
        assert_eq!(versions, expected, "timeline not numbered 1..N:\n{part}");
        let types: Vec<String> = lines.iter().map(|(_, t, _)| t.clone()).collect();
        assert_eq!(
            types.first().map(String::as_str),
            Some("JourneyStarted"),
            "{part}"
        );
        let mut wanted = vec![
            "JourneyStarted",
            "EmailSubmitted",
            "CodeIssued",
            "CodeVerified",
        ];
        wanted.extend_from_slice(factor_events);
        wanted.extend_from_slice(&["PasswordRejected", "PasswordChanged", "JourneyCompleted"]);
        assert_in_order(&types, &wanted);
    }

    // Acceptance: a second run reuses the same database without error.
    let second = p.run(&["demo"]);
    second.expect_ok().no_panic();
    assert_eq!(
        second
            .stdout
            .matches("[password-reset v1, completed]")
            .count(),
        2,
        "{second}"
    );

    let completed = p.run(&["journeys", "list", "--status", "completed"]);
    completed.expect_ok();
    let rows: Vec<&str> = completed
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(rows.len(), 4, "four completed journeys: {completed}");
    let mut ids = Vec::new();
    for row in &rows {
        let id = row.split_whitespace().next().expect("an id column");
        assert!(looks_like_uuid(id), "row {row:?}");
        assert!(
            row.contains("completed") && row.contains("password-reset v1"),
            "row {row:?}"
        );
        assert!(row.contains("a•••e@e•••.com"), "masked email in {row:?}");
        ids.push(id.to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four distinct journeys: {completed}");
    let all = p.run(&["journeys", "list"]);
    assert_eq!(
        all.stdout.lines().filter(|l| !l.trim().is_empty()).count(),
        4,
        "{all}"
    );

    // The log holds exactly the events of these four journeys, and its chain verifies.
    let total: usize = ids.iter().map(|id| p.events(id).len()).sum();
    let audit = p.run(&["audit", "verify"]);
    audit.expect_ok().stdout_has(&format!(
        "audit verify ok: {total} events, positions 1 to {total} gap-free"
    ));
}

#[test]
fn a_journey_driven_by_hand_with_a_voice_call() {
    let dir = TestDir::new("by-hand");
    let p = Passage::new(&dir);

    let (id, start) = p.start("alice@example.com");
    start
        .stdout_has(&format!("journey {id}  [password-reset v1, active"))
        .stdout_has("→ Enter the 6-digit code provided in the email")
        .stdout_has("sent to a•••e@e•••.com")
        .stdout_has("5 attempt(s) left");

    let outbox = p.run(&["outbox", "--journey", &id, "--channel", "email"]);
    outbox.expect_ok().stdout_has(&format!("(journey {id})"));
    let code = outbox_code(&outbox.stdout).unwrap_or_else(|| panic!("no code in {outbox}"));
    assert_eq!(code.len(), 6, "a 6-digit code: {outbox}");
    assert!(
        outbox.stdout.contains(&format!("\n        {code}\n")),
        "the body carries the code: {outbox}"
    );

    // A wrong code is refused, costs one attempt and leaves the step as it was.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    p.run(&["journey", "input", &id, wrong])
        .expect_code(1)
        .no_panic()
        .stderr_has("refused (invalid-code)")
        .stdout_has("→ Enter the 6-digit code provided in the email")
        .stdout_has("4 attempt(s) left");

    p.run(&["journey", "input", &id, &code])
        .expect_ok()
        .stdout_has("→ Select your preferred Multi-factor authentication method")
        .stdout_has("[sms] Send SMS to my mobile")
        .stdout_has("[call] Call me on my landline or mobile");
    p.run(&["journey", "input", &id, "call"])
        .expect_ok()
        .stdout_has("→ Answer the call and press # when prompted")
        .stdout_has("ringing");
    p.run(&["call", "answer", &id, "--press", "#"])
        .expect_ok()
        .stdout_has("→ Reset Password: enter a new password");
    let done = p.run_stdin(
        &["journey", "input", &id, "--password-stdin"],
        &format!("{STRONG_PASSWORD}\n"),
    );
    done.expect_ok()
        .stdout_has("signed in")
        .stdout_has(&format!("journey {id}  [password-reset v1, completed]"))
        .stdout_has(TILE_CONNECTIONS)
        .stdout_has(TILE_CONTRACTOR);
    assert!(
        !done.stdout.contains(STRONG_PASSWORD),
        "the password is echoed: {done}"
    );

    // The timeline, in order, agrees with the log.
    let show = p.run(&["journey", "show", &id]);
    show.expect_ok();
    assert!(
        !show.stdout.contains(STRONG_PASSWORD),
        "the password is shown: {show}"
    );
    assert!(
        !show.stdout.contains(&code),
        "the code is shown in the timeline: {show}"
    );
    let lines = timeline(&show.stdout);
    let n = lines.len();
    assert!(n >= 10, "{show}");
    let versions: Vec<u64> = lines.iter().map(|(v, _, _)| *v).collect();
    assert_eq!(versions, (1..=n as u64).collect::<Vec<_>>(), "{show}");
    let types: Vec<String> = lines.iter().map(|(_, t, _)| t.clone()).collect();
    assert_eq!(
        types,
        event_types(&p, &id),
        "the timeline and the JSON events differ"
    );
    assert_eq!(types[0], "JourneyStarted");
    assert_in_order(
        &types,
        &[
            "JourneyStarted",
            "EmailSubmitted",
            "CodeIssued",
            "CodeAttemptFailed",
            "CodeVerified",
            "OptionChosen",
            "CallPlaced",
            "CallConfirmed",
            "PasswordChanged",
            "JourneyCompleted",
        ],
    );
    assert!(
        lines
            .iter()
            .any(|(_, t, l)| t == "CallConfirmed" && l.contains("[person via phone]"))
    );

    // Replay: the state after event 3 is the email code step.
    let replay = p.run(&["journey", "replay", &id, "--at", "3"]);
    replay
        .expect_ok()
        .stdout_has(&format!("--- state after event 3 of {n} ---"))
        .stdout_has("\"current_step\": \"email-code\"")
        .stdout_has("→ Enter the 6-digit code provided in the email");
    let replayed: Vec<String> = timeline(&replay.stdout)
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(replayed, types[..3], "{replay}");

    for (at, mentions) in [
        ("0", "from 1".to_owned()),
        ("999", format!("between 1 and {n}")),
    ] {
        let r = p.run(&["journey", "replay", &id, "--at", at]);
        r.no_panic().stderr_has(&mentions);
        assert!(r.code.is_some_and(|c| c != 0), "--at {at} must fail: {r}");
        assert!(
            !r.stdout.contains("state after"),
            "--at {at} printed a state: {r}"
        );
    }
}

/// R1: the answer to "Send verification code" does not tell whether the address has an account.
#[test]
fn an_unknown_account_gets_the_same_answer_as_a_known_one() {
    let dir = TestDir::new("r1");
    let p = Passage::new(&dir);

    let normalise = |id: &str, stdout: &str, masked: Option<&str>| {
        let mut s = mask_times(&stdout.replace(id, "<id>"));
        if let Some(m) = masked {
            s = s.replace(m, "<email>");
        }
        s
    };
    let sent_to = |stdout: &str| {
        let at = stdout.find("sent to ").expect("a `sent to` line") + "sent to ".len();
        stdout[at..]
            .split(',')
            .next()
            .expect("the address")
            .to_owned()
    };

    let (alice, a) = p.start("alice@example.com");
    let (nobody, b) = p.start("nobody@example.com");
    assert_ne!(alice, nobody);
    assert_eq!((a.code, a.stderr.as_str()), (b.code, b.stderr.as_str()));
    // The address shown is the one typed (masked), so it differs; nothing else may.
    assert_eq!(sent_to(&a.stdout), "a•••e@e•••.com");
    assert_eq!(sent_to(&b.stdout), "n•••y@e•••.com");
    assert_eq!(
        normalise(&alice, &a.stdout, Some("a•••e@e•••.com")),
        normalise(&nobody, &b.stdout, Some("n•••y@e•••.com")),
        "alice:\n{a}\nnobody:\n{b}"
    );

    // An unknown address that masks like alice's: byte for byte the same but for id and times.
    let (annie, c) = p.start("annie@example.com");
    assert_eq!((a.code, a.stderr.as_str()), (c.code, c.stderr.as_str()));
    assert_eq!(
        normalise(&alice, &a.stdout, None),
        normalise(&annie, &c.stdout, None),
        "alice:\n{a}\nannie:\n{c}"
    );

    // The listing shows both as ordinary active journeys.
    let list = p.run(&["journeys", "list", "--status", "active"]);
    list.expect_ok();
    for id in [&alice, &nobody, &annie] {
        assert!(
            list.stdout.contains(id.as_str()),
            "{id} missing from {list}"
        );
    }
}

#[test]
fn bad_journey_ids_are_clear_errors() {
    let dir = TestDir::new("bad-id");
    let p = Passage::new(&dir);
    p.start("bob.smith@example.com");
    // A well-formed id of a journey that does not exist.
    let missing = "01a21bde-92be-766e-a296-3785963ababb";
    let cases: [&[&str]; 6] = [
        &["journey", "show", "nonsense"],
        &["journey", "input", "nonsense", "123456"],
        &["journey", "replay", "not-a-uuid", "--at", "1"],
        &["call", "answer", "nonsense", "--press", "#"],
        &["journey", "show", missing],
        &["journey", "input", missing, "123456"],
    ];
    for args in cases {
        let r = p.run(args);
        let bad = args[2];
        // Malformed is bad usage; well-formed but unknown is refused.
        r.expect_code(if bad == missing { 1 } else { 2 })
            .no_panic()
            .stderr_has("error: ");
        r.stderr_has(bad);
        if bad == missing {
            r.stderr_has("does not exist");
        } else {
            r.stderr_has("is not a journey id");
        }
        assert!(r.stdout.trim().is_empty(), "nothing on stdout: {r}");
    }
}

#[test]
fn skipping_to_the_password_step_is_refused_as_step_not_allowed() {
    let dir = TestDir::new("skip");
    let p = Passage::new(&dir);
    let (id, _) = p.start("alice@example.com");
    let before = event_types(&p, &id);

    let r = p.run_stdin(
        &["journey", "input", &id, "--password-stdin"],
        &format!("{STRONG_PASSWORD}\n"),
    );
    r.expect_code(1).no_panic();
    assert!(!r.stdout.contains("signed in"), "{r}");
    // The refusal is recorded for support and audit (R28, R49); nothing else changed.
    let mut expected = before.clone();
    expected.push("InputRejected".to_owned());
    assert_eq!(
        event_types(&p, &id),
        expected,
        "the refused input was not recorded as exactly one InputRejected: {r}"
    );
    p.run(&["journey", "show", &id])
        .expect_ok()
        .stdout_has("→ Enter the 6-digit code provided in the email");
    r.stderr_has("step-not-allowed");
}

#[test]
fn a_password_given_on_the_command_line_is_refused() {
    let dir = TestDir::new("pw-argv");
    let p = Passage::new(&dir);
    let id = to_password_step(&p);
    let before = event_types(&p, &id);

    let r = p.run(&["journey", "input", &id, STRONG_PASSWORD]);
    r.no_panic()
        .stderr_has("shell history")
        .stderr_has("--password-stdin");
    assert!(matches!(r.code, Some(1 | 2)), "refused with 1 or 2: {r}");
    assert!(!r.stdout.contains("signed in"), "{r}");
    assert_eq!(
        event_types(&p, &id),
        before,
        "the refused password changed the log"
    );

    // The journey is still waiting for the password, and takes it from stdin.
    p.run_stdin(
        &["journey", "input", &id, "--password-stdin"],
        &format!("{STRONG_PASSWORD}\n"),
    )
    .expect_ok()
    .stdout_has("signed in")
    .stdout_has("[password-reset v1, completed]");
}

#[test]
fn help_exits_zero_and_names_the_commands() {
    let dir = TestDir::new("help");
    let p = Passage::new(&dir);

    let top = p.run(&["--help"]);
    top.expect_ok().stdout_has("Usage: passage");
    for cmd in [
        "demo",
        "journey",
        "journeys",
        "outbox",
        "call",
        "audit",
        "workflows",
        "worker",
    ] {
        assert!(
            top.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "`{cmd}` not listed in {top}"
        );
    }
    top.stdout_has("--db")
        .stdout_has("--workflows")
        .stdout_has("Exit status");

    let journey = p.run(&["journey", "--help"]);
    journey.expect_ok().stdout_has("Usage: passage journey");
    for cmd in ["start", "input", "resend", "cancel", "show", "replay"] {
        assert!(
            journey
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "`{cmd}` not listed in {journey}"
        );
    }
    assert!(!dir.db().exists(), "--help must not create the event store");
}

/// The count of "Re-send code" left that the view prints is the number of resends the engine
/// then accepts.
#[test]
fn the_resends_left_shown_are_the_resends_accepted() {
    let dir = TestDir::new("resend");
    let workflows = dir.join("workflows");
    copy_files(
        std::path::Path::new(common::REPO_WORKFLOWS),
        &workflows,
        Some("toml"),
    );
    let file = workflows.join("password-reset.toml");
    let original = std::fs::read_to_string(&file).expect("read password-reset.toml");
    let line = r#"resend = { label = "Re-send code", max = 3, cooldown = "30s" }"#;
    assert!(
        original.contains(line),
        "the shipped file changed; update this test"
    );
    // Same journey, but a resend is possible 200 ms after the last send.
    let quick = original.replace(
        line,
        r#"resend = { label = "Re-send code", max = 2, cooldown = "200ms" }"#,
    );
    std::fs::write(&file, quick).expect("write the edited definition");
    let p = Passage::new(&dir).with_workflows(&workflows);

    let left_in = |stdout: &str| -> u32 {
        let marker = "\"Re-send code\": ";
        let at = stdout
            .find(marker)
            .unwrap_or_else(|| panic!("no resend count in {stdout}"))
            + marker.len();
        let n: String = stdout[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        n.parse().expect("a count")
    };
    let (id, start) = p.start("alice@example.com");
    let shown = left_in(&start.stdout);

    let mut accepted = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let r = p.run(&["journey", "resend", &id]);
        r.no_panic();
        if r.code == Some(0) {
            accepted += 1;
            assert!(accepted <= 10, "resends never stop: {r}");
            continue;
        }
        r.expect_code(1).stderr_has("refused (resend-limit)");
        break;
    }
    assert_eq!(accepted, 2, "`max = 2` allows two resends");
    assert_eq!(
        shown, accepted,
        "the view said {shown} resend(s) left but the engine accepted {accepted}:\n{}",
        start.stdout
    );
}

/// `passage funnel`: per-step counts in the definition's order, as a table and as CSV; a
/// cancelled journey counts as abandoned at its step, an open one as waiting.
#[test]
fn the_funnel_counts_each_step() {
    let dir = TestDir::new("funnel");
    let p = Passage::new(&dir);
    p.run(&["demo"]).expect_ok();
    let (cancelled, _) = p.start("alice@example.com");
    p.run(&[
        "journey",
        "cancel",
        &cancelled,
        "--reason",
        "test",
        "--operator",
        "desk-1",
    ])
    .expect_ok();
    let (_waiting, _) = p.start("bob.smith@example.com");
    let csv = p.run(&["funnel", "--csv"]);
    csv.expect_ok();
    let rows: Vec<Vec<String>> = csv
        .stdout
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    let counts: Vec<(String, String, String, String, String)> = rows[1..]
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1].clone(),
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
            )
        })
        .collect();
    let row = |s: &str, a: &str, b: &str, c: &str, d: &str| {
        (
            s.to_owned(),
            a.to_owned(),
            b.to_owned(),
            c.to_owned(),
            d.to_owned(),
        )
    };
    assert_eq!(
        rows[0].join(","),
        "step,reached,moved_on,abandoned,waiting,p50_seconds,p90_seconds"
    );
    assert_eq!(
        counts,
        vec![
            row("email", "4", "4", "0", "0"),
            row("email-code", "4", "2", "1", "1"),
            row("second-factor", "2", "2", "0", "0"),
            row("sms-code", "1", "1", "0", "0"),
            row("voice-call", "1", "1", "0", "0"),
            row("new-password", "2", "2", "0", "0"),
            row("done", "2", "0", "0", "0"),
        ],
        "{csv}"
    );
    p.run(&["funnel"])
        .expect_ok()
        .stdout_has("password-reset: 4 journeys, 2 completed");
    p.run(&["funnel", "--from", "2099-01-01T00:00:00Z"])
        .expect_code(1)
        .stderr_has("no journeys of workflow `password-reset`");
    p.run(&["funnel", "--from", "yesterday"])
        .expect_code(2)
        .stderr_has("is not a time");
}

/// Operators and API tokens: roles checked at creation, tokens shown once, kept only as a
/// hash, narrower-or-equal to their operator, revocable.
#[test]
fn operators_and_their_tokens() {
    let dir = TestDir::new("operators");
    let p = Passage::new(&dir);
    let pw = "a long operator passphrase\n";
    p.run_stdin(
        &[
            "operators",
            "add",
            "ada",
            "--role",
            "admin",
            "--password-stdin",
        ],
        pw,
    )
    .expect_ok()
    .stdout_has("operator ada added with role admin");
    p.run_stdin(
        &[
            "operators",
            "add",
            "sam",
            "--role",
            "support",
            "--password-stdin",
        ],
        pw,
    )
    .expect_ok();
    p.run_stdin(
        &[
            "operators",
            "add",
            "sam",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        pw,
    )
    .expect_code(1)
    .stderr_has("exists");
    p.run_stdin(
        &[
            "operators",
            "add",
            "tim",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        "short\n",
    )
    .expect_code(1)
    .stderr_has("at least 15 characters");
    p.run_stdin(
        &[
            "operators",
            "add",
            "tim",
            "--role",
            "root",
            "--password-stdin",
        ],
        pw,
    )
    .expect_code(2)
    .stderr_has("not a role");
    let token = p.run(&["operators", "token", "sam", "--label", "desk script"]);
    token.expect_ok();
    let token = token.stdout.trim().to_owned();
    assert!(token.starts_with("pst_") && token.len() == 68, "{token}");
    p.run(&[
        "operators",
        "token",
        "sam",
        "--label",
        "x",
        "--role",
        "admin",
    ])
    .expect_code(1)
    .stderr_has("cannot have more rights");
    p.run(&[
        "operators",
        "token",
        "ada",
        "--label",
        "read-only",
        "--role",
        "auditor",
    ])
    .expect_ok();
    let list = p.run(&["operators", "list"]);
    list.expect_ok()
        .stdout_has("ada                      admin")
        .stdout_has("sam                      support");
    let id = list
        .stdout
        .lines()
        .find(|l| l.contains("desk script"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the token's id")
        .to_owned();
    p.run(&["operators", "revoke", &id]).expect_ok();
    p.run(&["operators", "list"])
        .expect_ok()
        .stdout_has("revoked");
    p.run(&["operators", "revoke", &id]).expect_code(1);
    p.run(&["operators", "disable", "sam"])
        .expect_ok()
        .stdout_has("operator sam disabled");
    p.run(&["operators", "list"])
        .expect_ok()
        .stdout_has("disabled");
    p.run(&["operators", "enable", "sam"])
        .expect_ok()
        .stdout_has("operator sam enabled");
    p.run(&["operators", "disable", "nobody"]).expect_code(1);
    // Only hashes are kept: the token and the password appear nowhere in the files.
    for f in ["passage.db", "passage.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(f)) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&token[4..]), "{f} holds the token");
            assert!(
                !text.contains("a long operator passphrase"),
                "{f} holds the password"
            );
        }
    }
}

/// Values that would quietly do nothing, something else than asked, or harm are usage
/// errors: `worker --batch 0` would claim nothing, a listing of 0 rows says "no journeys"
/// when there are some, a lease under a second lapses while its delivery runs (another node
/// sends it again), a checkpoint every 0s spins on the database, an escalation after 0s
/// pings the support role for every alert the moment it is raised, a rate limit of 0 refuses
/// every person, and a retention period of minutes (`6m` is six minutes, not months) erases
/// the personal data of journeys that just finished.
#[test]
fn zero_counts_and_too_short_periods_are_refused() {
    let dir = TestDir::new("usage-bounds");
    // Each of these commands would run until stopped if its check regressed: a timeout
    // turns that into a failure instead of a hung test.
    let p = Passage::new(&dir).with_timeout(std::time::Duration::from_secs(60));
    let serve = |flag: &'static str, value: &'static str| {
        vec!["serve", "--listen", "127.0.0.1:0", flag, value]
    };
    for (args, flag, reason) in [
        (
            vec!["worker", "--batch", "0"],
            "--batch",
            "must be at least 1",
        ),
        (
            vec!["journeys", "list", "--limit", "0"],
            "--limit",
            "must be at least 1",
        ),
        (
            vec!["outbox", "--limit", "0"],
            "--limit",
            "must be at least 1",
        ),
        (
            vec!["worker", "--lease", "0s"],
            "--lease",
            "is too short: at least 1s",
        ),
        (
            vec!["worker", "--lease", "500ms"],
            "--lease",
            "is too short: at least 1s",
        ),
        (
            serve("--checkpoint-every", "0s"),
            "--checkpoint-every",
            "is too short: at least 1s",
        ),
        (
            serve("--escalate-after", "0s"),
            "--escalate-after",
            "is too short: at least 1s",
        ),
        (
            vec!["bot", "--escalate-after", "0s"],
            "--escalate-after",
            "is too short: at least 1s",
        ),
        (
            serve("--limit-starts", "0"),
            "--limit-starts",
            "must be at least 1",
        ),
        (
            serve("--limit-starts", "99999999999"),
            "--limit-starts",
            "`99999999999` is too large",
        ),
        (
            serve("--limit-answers", "x"),
            "--limit-answers",
            "`x` is not a whole number",
        ),
        (
            serve("--limit-answers", "0"),
            "--limit-answers",
            "must be at least 1",
        ),
        (
            serve("--retention", "0d"),
            "--retention",
            "is too short: at least 1d",
        ),
        (serve("--retention", "6m"), "--retention", "`m` is minutes"),
        (
            vec!["subjects", "retain", "--older-than", "23h"],
            "--older-than",
            "is too short: at least 1d",
        ),
        // The example given is one the flag accepts.
        (
            vec!["worker", "--lease", "abc"],
            "--lease",
            "`abc` is not a duration: write e.g. 90s, 10m or 1h",
        ),
    ] {
        p.refuses(&args, flag, reason);
    }
    // Refused before anything ran: no store was created.
    assert!(!dir.db().exists(), "a refused command opened the store");
}

/// A lease must leave a delivery (3/4 of it) at least the configured provider's own
/// timeout plus a margin: otherwise the worker cuts off sends the provider still counts as
/// in time. The default lease (60s) fits the default SMTP timeout (30s); 30s does not.
#[test]
fn a_lease_shorter_than_the_providers_timeout_is_refused() {
    let dir = TestDir::new("lease-vs-smtp");
    let p = Passage::new(&dir)
        .with_timeout(std::time::Duration::from_secs(60))
        .with_env("PASSAGE_EMAIL_CHANNEL", "smtp")
        .with_env("PASSAGE_SMTP_HOST", "127.0.0.1")
        .with_env("PASSAGE_SMTP_SECURITY", "plain")
        .with_env("PASSAGE_SMTP_FROM", "Portal <no-reply@portal.example>");
    // A port already taken: `serve` must refuse the lease before it tries to bind.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    for args in [
        &["worker", "--lease", "30s"][..],
        &["serve", "--listen", &taken, "--lease", "30s"][..],
    ] {
        p.run(args).expect_code(2).no_panic().stderr_has(
            "--lease 30s gives a delivery 22500 ms (3/4 of the lease), less than the 30 s \
                 timeout of SMTP (smtp.timeout_secs) plus a 5 s margin; use --lease 47s or more",
        );
    }
    // Just short of the margin, and to the millisecond as written.
    p.run(&["worker", "--lease", "46500ms"])
        .expect_code(2)
        .no_panic()
        .stderr_has("--lease 46500ms gives a delivery 34875 ms");
    // Refused before the store was opened: a first run leaves no database behind.
    assert!(!dir.db().exists(), "a refused lease created the store");
}

/// A command that drives one journey delivers that journey's messages only: on a store the
/// nodes share, an operator's terminal must not take other people's codes into its own dev
/// outbox (and mark them delivered).
#[test]
fn a_command_delivers_its_own_journeys_messages_only() {
    let dir = TestDir::new("own-journey");
    let p = Passage::new(&dir);
    let queued = p.run(&[
        "journey",
        "start",
        "--email",
        "alice@example.com",
        "--no-deliver",
    ]);
    queued.expect_ok();
    let alice = journey_id(&queued.stdout);
    let (bob, _) = p.start("bob.smith@example.com");
    p.code(&bob, "email");
    p.run(&["outbox", "--journey", &alice])
        .expect_ok()
        .stdout_has(&format!(
            "the dev outbox holds no message for journey {alice}"
        ));
    // Still queued for the workers: a worker pass delivers it.
    let (carol, _) = p.start("carol@example.com");
    p.code(&carol, "email");
    p.run(&["outbox", "--journey", &alice])
        .expect_ok()
        .stdout_has(&format!(
            "the dev outbox holds no message for journey {alice}"
        ));
    // Driving that journey delivers it (the resend itself may be refused as too soon).
    p.run(&["journey", "resend", &alice]).no_panic();
    p.code(&alice, "email");
    // Alerts of a development setup are listed under their own channel.
    p.run(&["outbox", "--channel", "support"])
        .expect_ok()
        .stdout_has("the dev outbox holds no support message");
}

/// `journeys list --email` with a full address lists exactly that person's journeys, not
/// everyone whose address masks the same; the masked form lists them all; a typo is said.
#[test]
fn a_full_address_lists_that_persons_journeys_only() {
    let dir = TestDir::new("list-email");
    let p = Passage::new(&dir);
    let (alice, _) = p.start("alice@example.com");
    let (anne, _) = p.start("anne@example.com");
    let listed = |email: &str| -> String {
        let run = p.run(&["journeys", "list", "--email", email]);
        run.expect_ok();
        run.stdout
    };
    let exact = listed("Alice@Example.com");
    assert!(exact.contains(&alice) && !exact.contains(&anne), "{exact}");
    let masked = listed("a•••e@e•••.com");
    assert!(
        masked.contains(&alice) && masked.contains(&anne),
        "{masked}"
    );
    let starred = listed("a***e@e***.com");
    assert!(
        starred.contains(&alice) && starred.contains(&anne),
        "{starred}"
    );
    p.run(&["journeys", "list", "--email", "alice"])
        .expect_code(2)
        .no_panic()
        .stderr_has("is neither an email address");
}

/// Reading commands open the store read-only: they create nothing (not even a dev outbox
/// file), and cannot migrate, so a store whose schema is behind this build, or a database
/// that is no Passage store, is named as such instead.
#[test]
fn reading_commands_open_the_store_read_only() {
    let dir = TestDir::new("read-only");
    let p = Passage::new(&dir);
    p.start("alice@example.com");
    let copy = dir.join("copy.db");
    std::fs::copy(dir.db(), &copy).unwrap();
    let outbox = dir.join("elsewhere-outbox.db");
    let reader = p
        .clone()
        .with_db(&copy)
        .with_env("PASSAGE_OUTBOX", outbox.to_str().unwrap());
    for args in [
        &["audit", "verify"][..],
        &["journeys", "list"][..],
        &["funnel"][..],
        &["outbox"][..],
    ] {
        reader.run(args).expect_ok().no_panic();
    }
    assert!(!outbox.exists(), "a reading command created a dev outbox");
    // No key file is made for a store that records none: a reading command creates nothing.
    let keyless = TestDir::new("read-only-keyless");
    let fresh = keyless.join("fresh.db");
    std::fs::copy(&copy, &fresh).unwrap();
    store_scalar(&fresh, "DELETE FROM deployment_key");
    store_scalar(&fresh, "DELETE FROM events");
    Passage::new(&keyless)
        .with_db(&fresh)
        .run(&["journeys", "list"])
        .expect_code(1)
        .no_panic()
        .stderr_has("a command that only reads does not create the key file");
    assert!(!keyless.join("passage.key").exists());
    // The newest migration taken back, as if an older build had made the file: a reading
    // command may not apply it, and says so.
    store_scalar(&copy, "DROP TABLE deployment_key");
    assert_eq!(
        store_scalar(
            &copy,
            "DELETE FROM schema_migrations WHERE name = 'deployment_key' RETURNING 1"
        ),
        Some(1)
    );
    reader
        .run(&["audit", "verify"])
        .expect_code(1)
        .no_panic()
        .stderr_has("schema is 1 migration(s) behind this build");
    // A command that writes brings it up to date; then it reads again.
    reader
        .run(&["journey", "start", "--email", "bob.smith@example.com"])
        .expect_ok();
    reader.run(&["audit", "verify"]).expect_ok();
    // An SQLite file that is no Passage store (an empty file is an empty database to
    // SQLite), or another program's database.
    let empty = dir.join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    p.clone()
        .with_db(&empty)
        .run(&["journeys", "list"])
        .expect_code(1)
        .no_panic()
        .stderr_has("holds no Passage event store");
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "left as it was"
    );
}

/// `accounts import` loads the portal's users: checked whole before anything is written,
/// keyed by account id (a second import updates, and keeps passwords), an address taken
/// by another account refused for its row only, addresses printed masked.
#[test]
fn accounts_are_imported_from_csv() {
    let dir = TestDir::new("accounts");
    let p = Passage::new(&dir);
    let emailed = |email: &str| -> bool {
        let (id, _) = p.start(email);
        let run = p.run(&["outbox", "--journey", &id, "--channel", "email"]);
        run.expect_ok();
        common::outbox_code(&run.stdout).is_some()
    };
    // Checking needs no store, and creates none.
    let good = dir.write(
        "users.csv",
        "account_id,email,display_name,phone\n\
         u-1,Ada@Example.com,\"Lovelace, Ada\",+61 412 345 678\n\
         u-2,grace@example.com,Grace Hopper,\n",
    );
    p.run(&["accounts", "import", good.to_str().unwrap(), "--check"])
        .expect_ok()
        .stdout_has("2 account(s), all valid");
    assert!(!dir.db().exists(), "--check created the store");
    // A file with one bad row imports nothing, and says where.
    let bad = dir.write(
        "bad.csv",
        "account_id,email,display_name\nu-9,zed@example.com,Zed\nu-10,not-an-address,X\n",
    );
    p.run(&["accounts", "import", bad.to_str().unwrap()])
        .expect_code(2)
        .no_panic()
        .stderr_has("bad.csv: line 3: email: ")
        .stderr_has("1 problem(s) in");
    assert!(
        !emailed("zed@example.com"),
        "a rejected file imported a row"
    );

    p.run(&["accounts", "import", good.to_str().unwrap()])
        .expect_ok()
        .stdout_has("imported 2 account(s)")
        .stdout_has("2 new, 0 updated");
    assert!(emailed("ada@example.com"));
    // Again, Ada disabled and Grace taking Alice's (a demo account's) address: Grace's row
    // is refused, Ada's is updated; a disabled account is treated as unknown (R1).
    let again = dir.write(
        "again.csv",
        "account_id,email,display_name,enabled\n\
         u-1,ada@example.com,Ada Lovelace,false\n\
         u-2,alice@example.com,Grace Hopper,true\n",
    );
    let run = p.run(&["accounts", "import", again.to_str().unwrap()]);
    run.expect_code(1)
        .no_panic()
        .stdout_has("0 new, 1 updated")
        .stderr_has("line 3 (u-2): another account already uses a•••e@e•••.com")
        .stderr_has("1 row(s) were not imported");
    assert!(!run.stderr.contains("alice@example.com"), "{run}");
    assert!(
        !emailed("ada@example.com"),
        "a disabled account still got a code"
    );
    assert!(
        emailed("grace@example.com"),
        "the refused row changed Grace"
    );
    // A file without the phone and enabled columns leaves both as they are.
    let ada_is = |sql: &'static str| store_scalar(&dir.db(), sql);
    assert_eq!(
        ada_is("SELECT count(*) FROM accounts WHERE account_id = 'u-1' AND phone = '+61412345678'"),
        Some(1)
    );
    let names = dir.write(
        "names.csv",
        "account_id,email,display_name\nu-1,ada@example.com,Ada King\n",
    );
    p.run(&["accounts", "import", names.to_str().unwrap()])
        .expect_ok()
        .stdout_has("0 new, 1 updated");
    assert_eq!(
        ada_is(
            "SELECT count(*) FROM accounts WHERE account_id = 'u-1' \
             AND phone = '+61412345678' AND NOT enabled AND display_name = 'Ada King'"
        ),
        Some(1),
        "the phone was erased or the account enabled"
    );
    // Addresses moving on within one file, in an order the unique address forbids row by
    // row: Grace takes Ada's address on line 2, Ada moves to a new one on line 3.
    let moves = dir.write(
        "moves.csv",
        "account_id,email,display_name\n\
         u-2,ada@example.com,Grace Hopper\n\
         u-1,ada.king@example.com,Ada King\n",
    );
    p.run(&["accounts", "import", moves.to_str().unwrap()])
        .expect_ok()
        .stdout_has("0 new, 2 updated");
    assert_eq!(
        store_scalar(
            &dir.db(),
            "SELECT count(*) FROM accounts WHERE (account_id = 'u-2' AND email = 'ada@example.com') \
             OR (account_id = 'u-1' AND email = 'ada.king@example.com')"
        ),
        Some(2)
    );
}

/// A production store gets its people from `accounts import` only: with
/// `--no-demo-accounts` (or `PASSAGE_NO_DEMO_ACCOUNTS`) the demo accounts are not added.
#[test]
fn a_store_can_be_made_without_the_demo_accounts() {
    let dir = TestDir::new("no-demo");
    let p = Passage::new(&dir).with_env("PASSAGE_NO_DEMO_ACCOUNTS", "true");
    let users = dir.write(
        "users.csv",
        "account_id,email,display_name\nu-1,ada@example.com,Ada\n",
    );
    p.run(&["accounts", "import", users.to_str().unwrap()])
        .expect_ok()
        .stdout_has("1 new, 0 updated");
    assert_eq!(
        store_scalar(&dir.db(), "SELECT count(*) FROM accounts"),
        Some(1)
    );
    let (alice, _) = p.start("alice@example.com");
    p.run(&["outbox", "--journey", &alice])
        .expect_ok()
        .stdout_has("holds no message");
    p.run(&["demo"])
        .expect_code(2)
        .no_panic()
        .stderr_has("is not an enabled account in the directory");
    assert_eq!(
        store_scalar(&dir.db(), "SELECT count(*) FROM accounts"),
        Some(1)
    );
    // Once made without them, a store stays without them: a later command without the
    // setting does not add them.
    Passage::new(&dir)
        .run(&["journey", "start", "--email", "bob.smith@example.com"])
        .expect_ok();
    assert_eq!(
        store_scalar(&dir.db(), "SELECT count(*) FROM accounts"),
        Some(1)
    );
}

/// `passage bot` without its Discord settings stops before it opens the store: a first run
/// must not create the database or a key file, nor record that key as the deployment's.
#[test]
fn the_bot_without_its_settings_creates_nothing() {
    let dir = TestDir::new("bot-unset");
    let p = Passage::new(&dir)
        .with_timeout(std::time::Duration::from_secs(60))
        .with_env("PASSAGE_DISCORD_TOKEN", "");
    p.run(&["bot"])
        .expect_code(1)
        .no_panic()
        .stderr_has("configure the Discord bot")
        .stderr_has("PASSAGE_DISCORD_TOKEN");
    let left = dir.entries();
    assert!(left.is_empty(), "a refused bot created files: {left:?}");
    // Configured, but beside an alert webhook: two sinks would split every alert's updates.
    Passage::new(&dir)
        .with_timeout(std::time::Duration::from_secs(60))
        .with_env("PASSAGE_DISCORD_TOKEN", "a-token")
        .with_env("PASSAGE_DISCORD_SUPPORT_CHANNEL", "1234")
        .with_env("PASSAGE_DISCORD_SUPPORT_ROLE", "5678")
        .with_env(
            "PASSAGE_ALERT_WEBHOOK_URL",
            "https://discord.example/api/webhooks/1/x",
        )
        .run(&["bot"])
        .expect_code(2)
        .no_panic()
        .stderr_has("PASSAGE_ALERT_WEBHOOK_URL is set, and `passage bot` posts support alerts");
    // A node in the same environment refuses too: it would post to the webhook.
    Passage::new(&dir)
        .with_timeout(std::time::Duration::from_secs(60))
        .with_env("PASSAGE_DISCORD_SUPPORT_CHANNEL", "1234")
        .with_env(
            "PASSAGE_ALERT_WEBHOOK_URL",
            "https://discord.example/api/webhooks/1/x",
        )
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .expect_code(2)
        .no_panic()
        .stderr_has("support alerts would be split between the webhook and `passage bot`");
    let left = dir.entries();
    assert!(left.is_empty(), "a refused bot created files: {left:?}");
}

/// With development channels, `/dev/inbox` shows every code and the API plays any ringing
/// phone: `serve` refuses to publish that beyond loopback (a deployment whose channels file
/// never reached the node), before it opens the store, unless told it is a demo.
#[test]
fn development_channels_are_not_served_beyond_loopback() {
    let dir = TestDir::new("public-dev");
    let p = Passage::new(&dir).with_timeout(std::time::Duration::from_secs(60));
    // A taken port: a check that let the command through would fail to bind (exit 1)
    // instead of serving forever.
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    p.run(&["serve", "--listen", &taken])
        .expect_code(2)
        .no_panic()
        .stderr_has(&format!(
            "refusing to listen on {taken} with development channels"
        ))
        .stderr_has("/dev/inbox would show every code")
        .stderr_has("--public-dev-channels");
    assert!(!dir.db().exists(), "a refused serve created the store");
    // Real email, but calls still to the dev outbox: the simulated phone is the exposure.
    p.clone()
        .with_env("PASSAGE_EMAIL_CHANNEL", "smtp")
        .with_env("PASSAGE_SMTP_HOST", "127.0.0.1")
        .with_env("PASSAGE_SMTP_SECURITY", "plain")
        .with_env("PASSAGE_SMTP_FROM", "Portal <no-reply@portal.example>")
        .run(&["serve", "--listen", &taken])
        .expect_code(2)
        .no_panic()
        .stderr_has("the API would play any ringing phone");
    assert!(!dir.db().exists(), "a refused serve created the store");
    // Said on purpose: the check lets it through, and binding the taken port fails.
    p.run(&["serve", "--listen", &taken, "--public-dev-channels"])
        .expect_code(1)
        .no_panic()
        .stderr_has(&format!("listen on {taken}"));
}

/// A `--database-url` that is not a PostgreSQL URL (a typo in the scheme) is refused: it
/// must not become the path of a new SQLite file, and the refusal must not print the URL,
/// which may hold a password. The same from the environment.
#[test]
fn a_database_url_that_is_not_postgres_is_refused_without_echoing_it() {
    let dir = TestDir::new("database-url-typo");
    let url = "postgress://admin:hunter2@db.internal/passage";
    let by_flag = Passage::new(&dir).run(&["--database-url", url, "journeys", "list"]);
    let by_env = Passage::new(&dir)
        .with_env("PASSAGE_DATABASE_URL", url)
        .run(&["journeys", "list"]);
    for run in [by_flag, by_env] {
        run.expect_code(2)
            .no_panic()
            .stderr_has("--database-url (or PASSAGE_DATABASE_URL) must start with postgres://");
        assert!(
            !run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"),
            "the password was printed: {run}"
        );
    }
    let left = dir.entries();
    assert!(left.is_empty(), "a refused URL created files: {left:?}");
}

/// A reason or operator id typed on the command line cannot forge a timeline line: control
/// characters are dropped from reasons (a newline followed by a fake event, an escape
/// sequence), a reason must say something, and an operator id is a plain name.
#[test]
fn cancel_reasons_and_operators_cannot_forge_timeline_lines() {
    let dir = TestDir::new("cancel-forgery");
    let p = Passage::new(&dir);
    let (id, _) = p.start("alice@example.com");
    for blank in ["  ", "...", "\n\u{1b}"] {
        p.refuses(
            &["journey", "cancel", &id, "--reason", blank],
            "--reason",
            "must say why, in at least 3 characters",
        );
    }
    p.refuses(
        &[
            "journey",
            "cancel",
            &id,
            "--reason",
            "ticket 8",
            "--operator",
            "ada\u{1b}[31m",
        ],
        "--operator",
        "must be an operator id",
    );
    let forged = "ticket 9\n  9  2026-11-29T00:00:00+00:00  PasswordChanged    password changed  [person via web]\u{1b}[31mRED";
    p.run(&[
        "journey",
        "cancel",
        &id,
        "--reason",
        forged,
        "--operator",
        "desk-1",
    ])
    .expect_ok();
    let shown = p.run(&["journey", "show", &id]);
    shown.expect_ok().no_panic();
    assert!(
        !shown.stdout.contains('\u{1b}'),
        "an escape sequence reached the terminal: {shown}"
    );
    let forged_lines = shown
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("9  2026-11-29T00:00:00"))
        .count();
    assert_eq!(forged_lines, 0, "a forged event line: {shown}");
    let cancelled = shown
        .stdout
        .lines()
        .find(|l| l.contains("ticket 9"))
        .unwrap_or_else(|| panic!("the cancellation's line: {shown}"));
    assert!(
        cancelled.contains("[support:desk-1 via cli]"),
        "{cancelled}"
    );
}

/// A store with events is never given a fresh secret (it could not open the journeys'
/// sealed data and its checkpoints would look forged), a secret other than the one that
/// signed the checkpoints is refused by name, and an unreadable key file says why.
#[test]
fn a_missing_or_wrong_secret_is_refused_on_a_store_with_events() {
    let dir = TestDir::new("secret-checks");
    let p = Passage::new(&dir);
    p.run(&["demo"]).expect_ok();
    p.run(&["audit", "checkpoint"]).expect_ok();
    let key = dir.join("passage.key");
    let secret = std::fs::read_to_string(&key).expect("the first run made a key");

    std::fs::remove_file(&key).expect("remove the key");
    p.run(&["journeys", "list"])
        .expect_code(1)
        .no_panic()
        .stderr_has("the event store already holds events, but the secret key file")
        .stderr_has("Set PASSAGE_SECRET or --secret-file");
    assert!(!key.exists(), "no new secret was written");

    let wrong = p.clone().with_env("PASSAGE_SECRET", &"ab".repeat(32));
    wrong
        .run(&["journeys", "list"])
        .expect_code(1)
        .no_panic()
        .stderr_has("is not the one that signed the log's newest checkpoint, at position 26");
    // `audit verify` still runs, and names both keys.
    wrong
        .run(&["audit", "verify"])
        .expect_code(1)
        .no_panic()
        .stderr_has("the checkpoint at position 26 is not signed by this deployment's audit key")
        .stderr_has("is not the deployment's secret");

    std::fs::create_dir(&key).expect("a directory where the key should be");
    p.run(&["journeys", "list"])
        .expect_code(1)
        .no_panic()
        .stderr_has("read the secret key file");
    std::fs::remove_dir(&key).unwrap();

    std::fs::write(&key, secret).unwrap();
    p.run(&["audit", "verify"])
        .expect_ok()
        .stdout_has("1 signed checkpoint match");
}

/// A store bound to a secret before its first event (an operator added, nothing started)
/// is not given a fresh key file either: the key file's loss is named.
#[test]
fn a_store_bound_to_a_secret_without_events_gets_no_new_key() {
    let dir = TestDir::new("bound-no-events");
    let p = Passage::new(&dir);
    p.run_stdin(
        &[
            "operators",
            "add",
            "sam",
            "--role",
            "support",
            "--password-stdin",
        ],
        "harbour lantern meadow copper violet\n",
    )
    .expect_ok();
    let key = dir.join("passage.key");
    std::fs::remove_file(&key).expect("the first run made a key");
    p.run(&["journeys", "list"])
        .expect_code(1)
        .no_panic()
        .stderr_has("is already bound to a secret (its deployment key is recorded)");
    assert!(!key.exists(), "no new secret was written");
}

/// The demo accounts' send budgets (3 calls an hour per number) are counted per run of
/// `passage demo`, not across runs: run after run in the same minute still completes, where
/// budgets kept in the store stalled the fourth run waiting for a call.
#[test]
fn the_demo_runs_again_and_again() {
    let dir = TestDir::new("demo-again");
    let p = Passage::new(&dir);
    for run in 1..=5 {
        let r = p.run(&["demo"]);
        r.expect_ok().no_panic();
        assert_eq!(
            r.stdout.matches("[password-reset v1, completed]").count(),
            2,
            "run {run}: {r}"
        );
    }
}

/// Runs `sql` on the store file behind the binary's back; the first column of its first
/// row, if it returns one.
fn store_scalar(db: &std::path::Path, sql: &'static str) -> Option<i64> {
    let db = db.to_owned();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_optional(&mut c)
                .await
                .unwrap()
        })
}

/// Before any checkpoint exists, a secret other than the deployment's is refused too: the
/// first writing command records the deployment's audit key, and every command, writing or
/// reading, compares with it. A node started with another secret would otherwise seal data
/// the others cannot read, and could sign the first checkpoint itself.
#[test]
fn a_wrong_secret_is_refused_before_any_checkpoint() {
    let dir = TestDir::new("secret-pinned");
    let right = Passage::new(&dir).with_env("PASSAGE_SECRET", &"cd".repeat(32));
    right
        .run(&["journey", "start", "--email", "alice@example.com"])
        .expect_ok();
    let wrong = right.clone().with_env("PASSAGE_SECRET", &"ab".repeat(32));
    for args in [
        &["journey", "start", "--email", "alice@example.com"][..],
        &["journeys", "list"][..],
    ] {
        wrong
            .run(args)
            .expect_code(1)
            .no_panic()
            .stderr_has("is not the deployment's")
            .stderr_has("set PASSAGE_SECRET or --secret-file to the secret the other nodes use");
    }
    // `audit verify` needs no secret for the chain: it verifies, and names the mismatch;
    // `audit public-key` prints this secret's key but says it is not the deployment's.
    wrong
        .run(&["audit", "verify"])
        .expect_ok()
        .stdout_has("audit verify ok")
        .stdout_has("is not the deployment's");
    wrong
        .run(&["audit", "public-key"])
        .expect_ok()
        .stderr_has("this is not the deployment's audit key");
    assert!(
        !right
            .run(&["audit", "public-key"])
            .stderr
            .contains("not the deployment's"),
        "the right secret's key is printed without a note"
    );
    // Nothing was written under the wrong secret: still one journey, still verifiable.
    let listed = right.run(&["journeys", "list"]);
    listed.expect_ok();
    assert_eq!(listed.stdout.lines().count(), 1, "{listed}");
    right.run(&["audit", "verify"]).expect_ok();

    // A store from before the record (none, but journeys): the first writer records its
    // secret only if that secret opens the journeys there.
    store_scalar(&dir.db(), "DELETE FROM deployment_key");
    wrong
        .run(&["journey", "start", "--email", "alice@example.com"])
        .expect_code(1)
        .no_panic()
        .stderr_has("this secret cannot open the journeys already in this store");
    right
        .run(&["journey", "start", "--email", "alice@example.com"])
        .expect_ok();
    wrong
        .run(&["journeys", "list"])
        .expect_code(1)
        .stderr_has("is not the deployment's");

    // A store whose journeys were all erased (no key left to try) records nothing until
    // one the secret opens exists: a wrong first writer is not taken for the deployment.
    right
        .run(&[
            "subjects",
            "erase",
            "--email",
            "alice@example.com",
            "--reason",
            "ticket 7",
        ])
        .expect_ok();
    store_scalar(&dir.db(), "DELETE FROM deployment_key");
    wrong
        .run(&[
            "operators",
            "add",
            "sam",
            "--role",
            "support",
            "--password-stdin",
        ])
        .no_panic();
    assert_eq!(
        store_scalar(&dir.db(), "SELECT count(*) FROM deployment_key"),
        Some(0),
        "nothing told whether that secret is the deployment's"
    );
    right
        .run(&["journey", "start", "--email", "alice@example.com"])
        .expect_ok();
    right
        .run(&["journey", "start", "--email", "alice@example.com"])
        .expect_ok();
    assert_eq!(
        store_scalar(&dir.db(), "SELECT count(*) FROM deployment_key"),
        Some(1),
        "a journey the secret opens exists now: recorded"
    );
    wrong
        .run(&["journeys", "list"])
        .expect_code(1)
        .stderr_has("is not the deployment's");
}

/// Commands that only read or act on what a store holds do not create one: a mistyped
/// `--db` is named instead of answered from a new, empty file.
#[test]
fn a_mistyped_store_path_is_named_not_created() {
    let dir = TestDir::new("no-store");
    let typo = dir.join("pasage.db");
    let p = Passage::new(&dir).with_db(&typo);
    for args in [
        &["journeys", "list"][..],
        &["audit", "verify"][..],
        &["audit", "export", "--out", "x.jsonl"][..],
        &["journey", "show", "0190f0a4-3c1e-7c4e-9a51-6a2f3b1c9d00"][..],
        &["funnel"][..],
    ] {
        p.run(args)
            .expect_code(1)
            .no_panic()
            .stderr_has("there is no event store at")
            .stderr_has("pasage.db: check --db (or PASSAGE_DB)");
    }
    let left = dir.entries();
    assert!(
        left.is_empty(),
        "a read-only command created files: {left:?}"
    );
    // A command that starts journeys creates it.
    p.run(&["journey", "start", "--email", "alice@example.com"])
        .expect_ok();
    assert!(typo.exists());
    p.run(&["journeys", "list"]).expect_ok();
    p.run(&[
        "outbox",
        "--journey",
        "0190f0a4-3c1e-7c4e-9a51-6a2f3b1c9d00",
    ])
    .expect_ok()
    .stdout_has("the dev outbox holds no message for journey 0190f0a4-3c1e-7c4e-9a51-6a2f3b1c9d00");

    // A file that is not a database: the driver's cause is said once, not repeated.
    let junk = dir.join("notes.db");
    std::fs::write(&junk, "these are my notes, not a database\n".repeat(200)).unwrap();
    let r = Passage::new(&dir).with_db(&junk).run(&["journeys", "list"]);
    r.expect_code(1).no_panic().stderr_has("notes.db");
    assert_eq!(r.stderr.matches("file is not a database").count(), 1, "{r}");
    assert_eq!(
        r.stderr.matches("notes.db").count(),
        1,
        "the path once: {r}"
    );
}

/// An unreachable PostgreSQL server or a missing database is named at once, with the
/// driver's own reason, instead of "pool timed out" after 30 s; the password is not shown.
#[test]
fn an_unreachable_or_missing_postgres_database_is_named_at_once() {
    let dir = TestDir::new("pg-unreachable");
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let url = format!("postgres://admin:hunter2@127.0.0.1:{port}/passage");
    let started = std::time::Instant::now();
    let r = Passage::new(&dir)
        .with_timeout(std::time::Duration::from_secs(20))
        .run(&["--database-url", &url, "journeys", "list"]);
    r.expect_code(1)
        .no_panic()
        .stderr_has("connect to the PostgreSQL database")
        .stderr_has("refused");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!r.stderr.contains("hunter2"), "{r}");
}
