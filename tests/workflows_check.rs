//! `passage workflows check` and start-up with `--workflows`: the shipped files pass, and each
//! kind of mistake is reported as `FILE:LINE:COL: error: …` on the line of the mistake, with a
//! hint, and exit status 2.

mod common;

use common::{Passage, REPO_WORKFLOWS, Run, TestDir, copy_files};
use std::path::{Path, PathBuf};

/// A small valid definition; the line numbers in the cases below refer to it.
const MINI: &str = include_str!("fixtures/mini-definition.toml");

/// `MINI` with each `(line, text)` replacing that 1-based line (after checking it holds
/// `was`), so every other line keeps its number.
#[track_caller]
fn mini_with(edits: &[(usize, &str, &str)]) -> String {
    let mut lines: Vec<&str> = MINI.lines().collect();
    for &(line, was, text) in edits {
        assert_eq!(
            lines[line - 1],
            was,
            "MINI line {line} is not what the case expects"
        );
        lines[line - 1] = text;
    }
    lines.join("\n") + "\n"
}

/// `MINI` with a choose step whose second option enters a loop that never reaches `done`;
/// every step is reachable, so the loop is the only mistake. `loop-a` starts on line 31 and
/// `loop-b` on line 39.
fn with_loop() -> String {
    MINI.replace(
        "next = \"sms-code\"\n\n[[steps]]\nid = \"sms-code\"",
        r#"next = "method"

[[steps]]
id = "method"
kind = "choose"
prompt = "Pick one"
options = [
  { id = "sms", label = "SMS", next = "sms-code" },
  { id = "again", label = "Again", next = "loop-a" },
]

[[steps]]
id = "loop-a"
kind = "code"
channel = "email"
prompt = "Loop A"
lifetime = "5m"
next = "loop-b"

[[steps]]
id = "loop-b"
kind = "code"
channel = "email"
prompt = "Loop B"
lifetime = "5m"
next = "loop-a"

[[steps]]
id = "sms-code""#,
    )
}

/// The 1-based line of the first line of `source` equal to `text`.
#[track_caller]
fn line_of(source: &str, text: &str) -> usize {
    source
        .lines()
        .position(|l| l == text)
        .unwrap_or_else(|| panic!("no line {text:?} in\n{source}"))
        + 1
}

/// The `FILE:LINE:COL: error: …` lines of stderr, with the `help:` line that follows each.
fn reported(stderr: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = stderr.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(": error: "))
        .map(|(i, l)| {
            let help = lines.get(i + 1).copied().unwrap_or_default();
            (l.to_string(), help.to_string())
        })
        .collect()
}

/// Panics unless `run` failed with exit 2 and reported, for `file`, exactly one problem per
/// `(line, message, hint)` (and none other), each as `FILE:LINE:COL: error: MESSAGE` followed
/// by `  help: HINT`.
#[track_caller]
fn assert_reported(run: &Run, file: &Path, expected: &[(usize, &str, &str)]) {
    run.expect_code(2).no_panic();
    let problems = reported(&run.stderr);
    assert_eq!(
        problems.len(),
        expected.len(),
        "expected {} problem(s) {expected:?}: {run}",
        expected.len()
    );
    for &(line, message, hint) in expected {
        let prefix = format!("{}:{line}:", file.display());
        let (error, help) = problems
            .iter()
            .find(|(e, _)| e.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no problem reported as `{prefix}COL: error: …`: {run}"));
        let col = error[prefix.len()..].split(':').next().unwrap_or_default();
        assert!(
            col.parse::<u32>().is_ok_and(|c| c >= 1),
            "no column after `{prefix}` in {error:?}"
        );
        assert!(error.contains(": error: "), "{error:?}");
        assert!(
            error.contains(message),
            "message {error:?} lacks {message:?}: {run}"
        );
        assert!(
            help.starts_with("  help: "),
            "no help line after {error:?}: {run}"
        );
        assert!(help.contains(hint), "hint {help:?} lacks {hint:?}: {run}");
    }
}

struct Case {
    name: &'static str,
    source: String,
    /// (line, part of the message, part of the hint) for each problem.
    expected: Vec<(usize, &'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    let loop_src = with_loop();
    let loop_a = line_of(&loop_src, "id = \"loop-a\"") - 1;
    let loop_b = line_of(&loop_src, "id = \"loop-b\"") - 1;
    let orphan_src = format!(
        "{MINI}\n[[steps]]\nid = \"orphan\"\nkind = \"code\"\nchannel = \"email\"\n\
         prompt = \"Never asked\"\nlifetime = \"5m\"\nnext = \"done\"\n"
    );
    let orphan = line_of(&orphan_src, "id = \"orphan\"") - 1;
    vec![
        Case {
            name: "syntax",
            source: mini_with(&[(
                18,
                r#"prompt = "Enter the code""#,
                r#"prompt = "Enter the code"#,
            )]),
            expected: vec![(
                18,
                "invalid basic string",
                "close the text with a double quote",
            )],
        },
        Case {
            name: "unknown-kind",
            source: mini_with(&[(16, r#"kind = "code""#, r#"kind = "kode""#)]),
            expected: vec![(
                16,
                "step `email-code` has unknown kind `kode`",
                "use one of: identify, code, choose, voice, set-password, complete",
            )],
        },
        Case {
            name: "dangling-next",
            source: mini_with(&[(20, r#"next = "sms-code""#, r#"next = "sms-cod""#)]),
            expected: vec![(
                20,
                "step `email-code` names `next = \"sms-cod\"`, which is not a step",
                "use one of: email, email-code, sms-code, new-password, done",
            )],
        },
        Case {
            name: "unreachable",
            source: orphan_src,
            expected: vec![(
                orphan,
                "step `orphan` cannot be reached from `start = \"email\"`",
                "point a `next` (or a choose option) at `orphan`",
            )],
        },
        Case {
            name: "cycle",
            source: loop_src,
            expected: vec![
                (
                    loop_a,
                    "step `loop-a` has no way to finish",
                    "the loop loop-a → loop-b → loop-a never reaches one",
                ),
                (
                    loop_b,
                    "step `loop-b` has no way to finish",
                    "the loop loop-b → loop-a → loop-b never reaches one",
                ),
            ],
        },
        Case {
            name: "bad-duration",
            source: mini_with(&[(19, r#"lifetime = "5m""#, r#"lifetime = "5 minutes""#)]),
            expected: vec![(
                19,
                "`lifetime = \"5 minutes\"` in step `email-code` is not a duration",
                "write a duration like 30s, 5m or 1h",
            )],
        },
        Case {
            // Reported on the step that lacks it.
            name: "missing-field",
            source: mini_with(&[(19, r#"lifetime = "5m""#, "# no lifetime here")]),
            expected: vec![(
                14,
                "step `email-code` has no `lifetime`",
                "add `lifetime = ",
            )],
        },
        Case {
            name: "unknown-field",
            source: mini_with(&[(
                18,
                r#"prompt = "Enter the code""#,
                r#"promt = "Enter the code""#,
            )]),
            expected: vec![(
                18,
                "unknown field `promt`",
                "fix the spelling or remove the key",
            )],
        },
        Case {
            name: "unknown-top-level-field",
            source: mini_with(&[(3, r#"title = "Mini""#, r#"titel = "Mini""#)]),
            expected: vec![(
                3,
                "unknown field `titel`",
                "fix the spelling or remove the key",
            )],
        },
        Case {
            name: "undefined-policy",
            source: mini_with(&[(34, r#"policy = "portal""#, r#"policy = "portl""#)]),
            expected: vec![(
                34,
                "step `new-password` uses `policy = \"portl\"`, which is not defined under [policies]",
                "use one of: portal",
            )],
        },
        Case {
            name: "open-redirect",
            source: mini_with(&[(
                41,
                r#"tiles = [{ title = "Connections", portal = "Connections Portal", href = "/portal/connections" }]"#,
                r#"tiles = [{ title = "Connections", portal = "Connections Portal", href = "https://evil.example/x" }]"#,
            )]),
            expected: vec![(
                41,
                "`href = \"https://evil.example/x\"` in tile #1 of step `done` is not a site-relative path",
                "R48",
            )],
        },
        Case {
            name: "protocol-relative-redirect",
            source: mini_with(&[(
                41,
                r#"tiles = [{ title = "Connections", portal = "Connections Portal", href = "/portal/connections" }]"#,
                r#"tiles = [{ title = "Connections", portal = "Connections Portal", href = "//evil.example/x" }]"#,
            )]),
            expected: vec![(41, "is not a site-relative path", "no open redirect")],
        },
        Case {
            // Two independent mistakes are reported together.
            name: "two-mistakes",
            source: mini_with(&[
                (19, r#"lifetime = "5m""#, r#"lifetime = "5 minutes""#),
                (34, r#"policy = "portal""#, r#"policy = "portl""#),
            ]),
            expected: vec![
                (19, "is not a duration", "write a duration like"),
                (
                    34,
                    "which is not defined under [policies]",
                    "use one of: portal",
                ),
            ],
        },
    ]
}

fn shipped_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(REPO_WORKFLOWS)
        .expect("read the repository's workflows directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_shipped_definitions_pass() {
    let dir = TestDir::new("wf-shipped");
    let files = shipped_files();
    assert!(files.len() >= 3, "{files:?}");
    let mut args: Vec<String> = vec!["workflows".into(), "check".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = Passage::new(&dir).run(&args);
    run.expect_ok().no_panic();
    assert!(run.stderr.trim().is_empty(), "{run}");
    for f in &files {
        run.stdout_has(&format!("{}: ok (", f.display()));
    }
    run.stdout_has("password-reset v1, 7 steps, sha256 ");
    // The small definition the mistakes below are made in is valid as written.
    let mini = dir.write("mini.toml", MINI);
    Passage::new(&dir)
        .run(&["workflows", "check", &mini.display().to_string()])
        .expect_ok()
        .stdout_has("mini.toml: ok (mini v1, 5 steps, sha256 ");
}

#[test]
fn each_kind_of_mistake_is_reported_on_its_line_with_a_hint() {
    let dir = TestDir::new("wf-mistakes");
    let p = Passage::new(&dir);
    let all = cases();
    let kinds: std::collections::BTreeSet<&str> = all.iter().map(|c| c.name).collect();
    assert!(kinds.len() >= 6);
    for case in &all {
        let file = dir.write(&format!("{}.toml", case.name), &case.source);
        let run = p.run(&["workflows", "check", &file.display().to_string()]);
        assert!(!run.stdout.contains(": ok ("), "case {}: {run}", case.name);
        assert_reported(&run, &file, &case.expected);
    }
}

#[test]
fn checking_several_files_reports_every_broken_one() {
    let dir = TestDir::new("wf-several");
    let p = Passage::new(&dir);
    let good = dir.write("good.toml", MINI);
    let kind = dir.write(
        "kind.toml",
        &mini_with(&[(16, r#"kind = "code""#, r#"kind = "kode""#)]),
    );
    let next = dir.write(
        "next.toml",
        &mini_with(&[(20, r#"next = "sms-code""#, r#"next = "sms-cod""#)]),
    );
    let run = p.run(&[
        "workflows",
        "check",
        &kind.display().to_string(),
        &good.display().to_string(),
        &next.display().to_string(),
    ]);
    run.expect_code(2).no_panic();
    run.stdout_has(&format!("{}: ok (", good.display()));
    run.stderr_has(&format!("{}:16:", kind.display()));
    run.stderr_has(&format!("{}:20:", next.display()));
    assert_eq!(reported(&run.stderr).len(), 2, "{run}");

    // A file that cannot be read is said too, and hides neither the others' errors nor the
    // exit status of bad usage.
    let missing = dir.join("missing.toml");
    let run = p.run(&[
        "workflows",
        "check",
        &kind.display().to_string(),
        &missing.display().to_string(),
    ]);
    run.expect_code(2).no_panic();
    run.stderr_has(&format!("{}:16:", kind.display()));
    run.stderr_has(&format!("error: read {}: ", missing.display()));
    let run = p.run(&[
        "workflows",
        "check",
        &missing.display().to_string(),
        &good.display().to_string(),
    ]);
    run.expect_code(2).no_panic();
    run.stdout_has(&format!("{}: ok (", good.display()));
    run.stderr_has("1 of 2 file(s) could not be read (above)");
}

#[test]
fn a_broken_file_in_the_workflows_directory_stops_start_up() {
    let dir = TestDir::new("wf-startup");
    let workflows = dir.join("workflows");
    copy_files(Path::new(REPO_WORKFLOWS), &workflows, Some("toml"));
    let broken = workflows.join("zz-broken.toml");
    std::fs::write(
        &broken,
        mini_with(&[(20, r#"next = "sms-code""#, r#"next = "sms-cod""#)]),
    )
    .expect("write the broken definition");
    let p = Passage::new(&dir).with_workflows(&workflows);
    let expected = [(
        20,
        "step `email-code` names `next = \"sms-cod\"`, which is not a step",
        "use one of: email, email-code, sms-code, new-password, done",
    )];

    let list = p.run(&["journeys", "list"]);
    assert!(!list.stdout.contains("no journeys"), "{list}");
    assert_reported(&list, &broken, &expected);

    let start = p.run(&["journey", "start", "--email", "alice@example.com"]);
    assert!(start.stdout.trim().is_empty(), "nothing started: {start}");
    assert_reported(&start, &broken, &expected);

    // The same message as `workflows check` gives for that file.
    let check = p.run(&["workflows", "check", &broken.display().to_string()]);
    assert_reported(&check, &broken, &expected);
    assert_eq!(reported(&check.stderr), reported(&list.stderr));

    // Fixing the file lets the binary start again.
    std::fs::write(&broken, MINI).expect("fix the definition");
    p.run(&["journey", "start", "--email", "alice@example.com"])
        .expect_ok();
    p.run(&["journeys", "list"])
        .expect_ok()
        .stdout_has("password-reset");
    p.run(&["workflows", "list"])
        .expect_ok()
        .stdout_has("mini ")
        .stdout_has("password-reset ");
}
