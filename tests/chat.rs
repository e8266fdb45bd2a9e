//! `passage chat` end to end: the real binary in a conversation driven line by line, as a
//! person would (answers written only once the prompt shows), reading codes from the dev
//! outbox and acting as the phone from a second process, like the person at a second
//! terminal. The SMS branch, the voice branch (with a refused weak password first), a wrong
//! code and a too-early "Re-send code", and one run in a real pseudo-terminal where the
//! password is read with echo off.

mod common;

use common::{PASSAGE, Passage, REPO_WORKFLOWS, STRONG_PASSWORD, TestDir, journey_id};
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one expected line may take to show up (a debug build, a loaded 2-core machine).
const PATIENCE: Duration = Duration::from_secs(90);

/// A running conversation: the child's stdin, and everything it printed so far.
struct Conversation {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Bytes of stdout already matched by [`Conversation::expect`].
    seen: usize,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("the buffer")
                .extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

/// The arguments every run gets: this test's store and the repository's definitions.
fn base_args(dir: &TestDir) -> Vec<String> {
    vec![
        "--db".into(),
        dir.db().display().to_string(),
        "--workflows".into(),
        REPO_WORKFLOWS.into(),
    ]
}

fn clean_env(cmd: &mut Command) {
    for var in [
        "PASSAGE_DB",
        "PASSAGE_WORKFLOWS",
        "PASSAGE_OUTBOX",
        "PASSAGE_SECRET_FILE",
        "PASSAGE_SECRET",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "1");
}

impl Conversation {
    /// `passage chat EXTRA...` on `dir`'s store, over pipes.
    fn start(dir: &TestDir, extra: &[&str]) -> Self {
        let mut cmd = Command::new(PASSAGE);
        cmd.args(base_args(dir))
            .arg("chat")
            .args(extra)
            .current_dir(dir.path());
        Self::spawn(cmd)
    }

    /// The same in a pseudo-terminal, through util-linux `script`; `None` without it.
    fn start_in_pty(dir: &TestDir, extra: &[&str]) -> Option<Self> {
        let script = ["/usr/bin/script", "/bin/script"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut words = vec![quote(PASSAGE)];
        words.extend(base_args(dir).iter().map(|a| quote(a)));
        words.push("chat".into());
        words.extend(extra.iter().map(|a| quote(a)));
        let mut cmd = Command::new(script);
        // -q: no banner; -f: flush at once; -e: the child's exit status; log to nowhere.
        cmd.args(["-qfec", &words.join(" "), "/dev/null"])
            .current_dir(dir.path());
        Some(Self::spawn(cmd))
    }

    fn spawn(mut cmd: Command) -> Self {
        clean_env(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start passage chat");
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            seen: 0,
        }
    }

    fn transcript(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&self.stdout.lock().expect("stdout")),
            String::from_utf8_lossy(&self.stderr.lock().expect("stderr"))
        )
    }

    /// Everything printed so far.
    fn output(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout")).into_owned()
    }

    /// Waits until `needle` shows up after what was matched before; consumes up to it.
    #[track_caller]
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            {
                let out = self.stdout.lock().expect("stdout");
                if let Some(at) = out[self.seen..]
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                {
                    self.seen += at + needle.len();
                    return;
                }
            }
            let exited = self.child.try_wait().expect("poll the chat").is_some();
            if exited || Instant::now() > deadline {
                // Let the reader threads catch the last bytes.
                std::thread::sleep(Duration::from_millis(200));
                let out = self.stdout.lock().expect("stdout");
                if let Some(at) = out[self.seen..]
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                {
                    self.seen += at + needle.len();
                    return;
                }
                drop(out);
                panic!(
                    "{} waiting for {needle:?}\n{}",
                    if exited {
                        "the chat exited"
                    } else {
                        "timed out"
                    },
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes one answer (after its prompt was seen).
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the chat");
    }

    /// Closes stdin and waits for the exit; returns the exit code, stdout and stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll the chat") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the chat did not exit\n{}",
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(200));
        let out = self.output();
        let err = String::from_utf8_lossy(&self.stderr.lock().expect("stderr")).into_owned();
        (status.code(), out, err)
    }
}

impl Drop for Conversation {
    fn drop(&mut self) {
        // A failed test must not leave a chat waiting on its stdin.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The journey id from the chat's `journey <ID> started` line.
fn started(c: &mut Conversation) -> String {
    c.expect(" started (`passage journey show ");
    journey_id(&c.output())
}

/// Asserts `journey show` reports the journey completed, and returns its output.
#[track_caller]
fn assert_completed(p: &Passage, id: &str) -> String {
    let show = p.run(&["journey", "show", id]);
    show.expect_ok()
        .stdout_has(&format!("journey {id}  [password-reset v1, completed]"));
    show.stdout
}

/// Asserts `text` (with the journey id taken out) shows none of `secrets`.
#[track_caller]
fn assert_hidden(text: &str, id: &str, secrets: &[&str]) {
    let text = text.replace(id, "<id>");
    for s in secrets {
        assert!(!text.contains(s), "{s:?} was shown:\n{text}");
    }
}

/// From the email prompt to the choice of second factor; returns the journey id and the
/// email code.
fn through_the_email_code(c: &mut Conversation, p: &Passage) -> (String, String) {
    c.expect("Enter your registered Email address.");
    c.expect("> ");
    c.send("alice@example.com");
    c.expect("Enter the 6-digit code provided in the email.");
    c.expect("Sent to a•••e@e•••.com");
    c.expect("[1] Re-send code");
    let id = journey_id(&c.output());
    c.expect(&format!(
        "Read the email code in another terminal: passage outbox --journey {id})"
    ));
    c.expect("> ");
    let code = p.code(&id, "email");
    c.send(&code);
    c.expect("Select your preferred Multi-factor authentication method (your phone: ");
    c.expect("[1] Send SMS to my mobile  [2] Call me on my landline or mobile");
    c.expect("> ");
    (id, code)
}

#[test]
fn the_sms_branch_completes_in_a_chat() {
    let dir = TestDir::new("chat-sms");
    let p = Passage::new(&dir);
    let mut c = Conversation::start(&dir, &[]);
    let id = started(&mut c);
    let (_, email_code) = through_the_email_code(&mut c, &p);
    c.send("1");
    c.expect("Enter the 6-digit verification code you received via SMS.");
    c.expect("Read the SMS code in another terminal: passage outbox --journey");
    c.expect("> ");
    let sms_code = p.code(&id, "sms");
    c.send(&sms_code);
    c.expect("Reset Password: choose a new password. It is never typed in this chat.");
    c.expect("○ ");
    c.expect("New password: ");
    c.send(STRONG_PASSWORD);
    c.expect("Confirm new password: ");
    c.send(STRONG_PASSWORD);
    c.expect("signed in with a fresh session");
    c.expect("✓ Your password is reset and you are signed in.");
    c.expect("▣ Manage a Network Application  → Connections Portal (/portal/connections)");
    let (code, out, err) = c.finish();
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_hidden(
        &out,
        &id,
        &[STRONG_PASSWORD, &email_code, &sms_code, "alice@example.com"],
    );

    let show = assert_completed(&p, &id);
    // Every step the chat took is recorded with the chat as its channel.
    assert!(
        show.lines()
            .any(|l| l.contains("CodeVerified") && l.contains("[person:terminal via chat]")),
        "{show}"
    );
    assert!(show.contains("PasswordChanged"), "{show}");
}

#[test]
fn the_voice_branch_waits_for_the_phone_then_takes_the_password() {
    let dir = TestDir::new("chat-voice");
    let p = Passage::new(&dir);
    let mut c = Conversation::start(&dir, &[]);
    let id = started(&mut c);
    through_the_email_code(&mut c, &p);
    c.send("2");
    c.expect("Answer the call and press # when prompted.");
    c.expect("it is ringing now.");
    c.expect("waiting for you to press # on the call… (Ctrl-C to stop)");
    c.expect(&format!("passage call answer {id} --press '#'"));

    // The person answers the (dev) phone from another terminal.
    p.run(&["call", "answer", &id, "--press", "#"])
        .expect_ok()
        .no_panic();
    c.expect("Reset Password: choose a new password.");
    // A weak password is refused with the engine's words, and asked for again.
    c.expect("New password: ");
    c.send("short");
    c.expect("Confirm new password: ");
    c.send("short");
    c.expect("✗ ");
    c.expect("New password: ");
    c.send(STRONG_PASSWORD);
    c.expect("Confirm new password: ");
    c.send(STRONG_PASSWORD);
    c.expect("✓ Your password is reset and you are signed in.");
    let (code, out, err) = c.finish();
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_hidden(&out, &id, &[STRONG_PASSWORD]);

    let show = assert_completed(&p, &id);
    assert!(
        show.lines()
            .any(|l| l.contains("CallConfirmed") && l.contains("[person via phone]")),
        "{show}"
    );
    assert!(
        show.lines()
            .any(|l| l.contains("PasswordRejected") && l.contains("via chat")),
        "{show}"
    );
}

#[test]
fn a_wrong_code_is_refused_and_the_chat_goes_on() {
    let dir = TestDir::new("chat-wrong");
    let p = Passage::new(&dir);
    // The address on the command line: the chat sends the code at once.
    let mut c = Conversation::start(&dir, &["--email", "alice@example.com"]);
    let id = started(&mut c);
    c.expect("Enter the 6-digit code provided in the email.");
    c.expect("5 attempts left.");
    c.expect("> ");
    let code = p.code(&id, "email");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    c.send(wrong);
    c.expect("✗ That code is not right. 4 attempts left.");
    c.expect("Enter the 6-digit code provided in the email.");
    c.expect("4 attempts left.");
    c.expect("> ");
    // "Re-send code" at once: inside the cooldown, nothing is sent.
    c.send("1");
    c.expect("A code was sent moments ago: \"Re-send code\" works again at ");
    c.expect("> ");
    let outbox = p.run(&["outbox", "--journey", &id, "--channel", "email"]);
    outbox.expect_ok();
    assert_eq!(
        outbox.stdout.matches(" email to ").count(),
        1,
        "one email only: {outbox}"
    );
    // The right code still works.
    c.send(&code);
    c.expect("Select your preferred Multi-factor authentication method");
    c.expect("> ");
    // Leaving before the end: exit status 1, and the journey stays where it is.
    let (status, out, err) = c.finish();
    assert_eq!(status, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("left the chat before the reset was complete"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    p.run(&["journey", "show", &id])
        .expect_ok()
        .stdout_has("[password-reset v1, active")
        .stdout_has("CodeAttemptFailed")
        .stdout_has("→ Select your preferred Multi-factor authentication method");
}

#[test]
fn in_a_terminal_the_password_is_read_without_echo() {
    let dir = TestDir::new("chat-pty");
    let p = Passage::new(&dir);
    let Some(mut c) = Conversation::start_in_pty(&dir, &["--email", "alice@example.com"]) else {
        eprintln!("SKIPPED: util-linux `script` is not installed, so no pseudo-terminal");
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: `script` (util-linux) is required"
        );
        return;
    };
    let id = started(&mut c);
    c.expect("Enter the 6-digit code provided in the email.");
    c.expect("> ");
    let code = p.code(&id, "email");
    c.send(&code);
    c.expect("[1] Send SMS to my mobile");
    c.expect("> ");
    c.send("1");
    c.expect("you received via SMS.");
    c.expect("> ");
    let sms = p.code(&id, "sms");
    c.send(&sms);
    c.expect("New password: ");
    c.send(STRONG_PASSWORD);
    c.expect("Confirm new password: ");
    c.send(STRONG_PASSWORD);
    c.expect("✓ Your password is reset and you are signed in.");
    let (status, out, err) = c.finish();
    assert_eq!(status, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    // The terminal echoes what is typed at the prompt (the code) but not the password.
    assert!(out.contains(&sms), "the prompt echoes typed codes:\n{out}");
    assert_hidden(&out, &id, &[STRONG_PASSWORD]);
    assert_completed(&p, &id);
}

#[test]
fn chat_help_teaches_the_conversation() {
    let dir = TestDir::new("chat-help");
    let p = Passage::new(&dir);
    p.run(&["chat", "--help"])
        .expect_ok()
        .stdout_has("passage outbox --journey <ID>")
        .stdout_has("passage call answer <ID> --press '#'")
        .stdout_has("hidden input")
        .stdout_has("--email <EMAIL>");
    let top = p.run(&["--help"]);
    top.expect_ok();
    assert!(
        top.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("chat ")),
        "`chat` not listed in {top}"
    );
    assert!(!dir.db().exists(), "--help must not create the event store");
}
