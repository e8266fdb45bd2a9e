//! Shared helpers for the end-to-end tests: a fresh temporary directory per test, a way to
//! run the real `passage` binary against it, and parsers for what the binary prints.
//!
//! Every test binary includes this module but none uses all of it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const PASSAGE: &str = env!("CARGO_BIN_EXE_passage");

/// The repository's shipped workflow definitions.
pub const REPO_WORKFLOWS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows");

/// A strong passphrase that the portal policy accepts for alice.
pub const STRONG_PASSWORD: &str = "lantern harbour velvet comet ember";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed (with everything in it) on drop.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// The names of what the directory holds, to check that a refused command left nothing.
    pub fn entries(&self) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(self.path())
            .expect("read the test directory")
            .map(|e| e.expect("entry").file_name())
            .collect()
    }

    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "passage-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path).expect("clear a stale test directory");
        }
        std::fs::create_dir_all(&path).expect("create the test directory");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The event store used by [`Passage`] runs in this directory.
    pub fn db(&self) -> PathBuf {
        self.join("passage.db")
    }

    /// Writes `content` to `name` in this directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// The exit code; `None` if the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole run unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code for {self}");
        self
    }

    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?} in {self}"
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?} in {self}"
        );
        self
    }

    /// Panics if the run looks like a crash: a panic message, a backtrace or exit code 101.
    #[track_caller]
    pub fn no_panic(&self) -> &Self {
        assert_ne!(self.code, Some(101), "the binary panicked: {self}");
        for bad in ["panicked at", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(
                !self.stderr.contains(bad),
                "stderr shows a crash ({bad:?}): {self}"
            );
            assert!(
                !self.stdout.contains(bad),
                "stdout shows a crash ({bad:?}): {self}"
            );
        }
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`passage {}` exited with {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the binary on one test directory: `--db <dir>/passage.db` always, and `--workflows`
/// pointing at the repository's files unless told otherwise.
#[derive(Debug, Clone)]
pub struct Passage {
    db: PathBuf,
    cwd: PathBuf,
    workflows: PathBuf,
    envs: Vec<(String, String)>,
    /// Kill the process and fail the test after this long (for commands that would serve
    /// forever if a check before they start regressed).
    timeout: Option<Duration>,
}

impl Passage {
    /// On `dir`'s event store with the repository's workflow files.
    pub fn new(dir: &TestDir) -> Self {
        Self {
            db: dir.db(),
            cwd: dir.path().to_owned(),
            workflows: PathBuf::from(REPO_WORKFLOWS),
            envs: Vec::new(),
            timeout: None,
        }
    }

    /// The same runner, failing any run that has not exited after `limit`.
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Runs `args`, which must be refused as a usage error (exit 2, nothing run) naming
    /// `flag` and saying `reason`.
    #[track_caller]
    pub fn refuses(&self, args: &[&str], flag: &str, reason: &str) -> Run {
        let run = self.run(args);
        run.expect_code(2)
            .no_panic()
            .stderr_has(&format!("for '{flag}"))
            .stderr_has(reason);
        run
    }

    /// The same runner, with `key` set to `value` in the binary's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The same store, with definitions from `workflows` instead.
    pub fn with_workflows(mut self, workflows: &Path) -> Self {
        self.workflows = workflows.to_owned();
        self
    }

    /// The same runner on another event store (e.g. a copy).
    pub fn with_db(mut self, db: &Path) -> Self {
        self.db = db.to_owned();
        self
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    pub fn run_stdin(&self, args: &[&str], input: &str) -> Run {
        self.run_with_stdin(args, Some(input))
    }

    fn run_with_stdin(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut all: Vec<String> = vec![
            "--db".into(),
            self.db.display().to_string(),
            "--workflows".into(),
            self.workflows.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut cmd = Command::new(PASSAGE);
        cmd.args(&all).current_dir(&self.cwd);
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
        // A panic would show its backtrace, which `Run::no_panic` looks for.
        cmd.env("RUST_BACKTRACE", "1");
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the passage binary");
        // A watchdog thread, not a polling loop here: the pipes must be read while the
        // process runs, or a chatty process would block on a full pipe and never exit.
        let watchdog = self.timeout.map(|limit| {
            let pid = child.id().to_string();
            let (done, finished) = std::sync::mpsc::channel::<()>();
            let killer = std::thread::spawn(move || {
                let timed_out =
                    finished.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
                if timed_out {
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                }
                timed_out
            });
            (limit, done, killer)
        });
        // After the watchdog starts: a process that never reads would block this write. A
        // failed write (the process exited, or was killed, before reading) is judged by the
        // run's own outcome below.
        if let Some(text) = input {
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .expect("wait for the passage binary");
        let run = Run {
            args: all,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if let Some((limit, done, killer)) = watchdog {
            let _ = done.send(());
            let killed = killer.join().expect("the watchdog thread");
            assert!(!killed, "still running after {limit:?}, killed: {run}");
        }
        run
    }

    /// `journey start --email EMAIL`, which must succeed; returns the journey id and the run.
    #[track_caller]
    pub fn start(&self, email: &str) -> (String, Run) {
        let run = self.run(&["journey", "start", "--email", email]);
        run.expect_ok();
        let id = journey_id(&run.stdout);
        (id, run)
    }

    /// The newest code the dev outbox holds for `journey` on `channel` ("email", "sms").
    #[track_caller]
    pub fn code(&self, journey: &str, channel: &str) -> String {
        let run = self.run(&["outbox", "--journey", journey, "--channel", channel]);
        run.expect_ok();
        outbox_code(&run.stdout).unwrap_or_else(|| panic!("no code in the outbox: {run}"))
    }

    /// `journey show ID --json`, parsed: one JSON object per event, in order.
    #[track_caller]
    pub fn events(&self, journey: &str) -> Vec<serde_json::Value> {
        let run = self.run(&["journey", "show", journey, "--json"]);
        run.expect_ok();
        run.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

/// The journey id from a view's first line: `journey <uuid>  [password-reset v1, …]`.
#[track_caller]
pub fn journey_id(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("journey "))
        .unwrap_or_else(|| panic!("no `journey <id>` line in {stdout:?}"));
    let id = line["journey ".len()..]
        .split_whitespace()
        .next()
        .expect("an id after `journey `");
    assert!(looks_like_uuid(id), "`{id}` is not a UUID (line {line:?})");
    id.to_owned()
}

pub fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The first `code NNNNNN` in `passage outbox` output (the newest message comes first).
pub fn outbox_code(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let at = l.find("  code ")?;
        let digits: String = l[at + "  code ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        (digits.len() >= 6).then_some(digits)
    })
}

/// Replaces every `HH:MM:SS` (and the RFC 3339 date and fraction around it) by `<time>`.
pub fn mask_times(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let colon = |i: usize| chars.get(i) == Some(&':');
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let is_hms = digit(i)
            && digit(i + 1)
            && colon(i + 2)
            && digit(i + 3)
            && digit(i + 4)
            && colon(i + 5)
            && digit(i + 6)
            && digit(i + 7);
        if is_hms {
            // Drop a `YYYY-MM-DDT` already copied.
            if out.ends_with('T') && out.len() >= 11 {
                let cut = out.len() - 11;
                if out.is_char_boundary(cut)
                    && out[cut..cut + 10]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-')
                {
                    out.truncate(cut);
                }
            }
            out.push_str("<time>");
            i += 8;
            if chars.get(i) == Some(&'.') {
                i += 1;
                while digit(i) {
                    i += 1;
                }
            }
            if chars.get(i) == Some(&'Z') {
                i += 1;
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Milliseconds since the Unix epoch of a `YYYY-MM-DDTHH:MM:SS.mmmZ` timestamp, the format
/// the binary prints.
#[track_caller]
pub fn rfc3339_ms(s: &str) -> i64 {
    let bad = || panic!("`{s}` is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        bad();
    }
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap_or_else(|_| bad()) };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss, ms) = (num(11..13), num(14..16), num(17..19), num(20..23));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms
}

/// The RFC 3339 timestamp that follows `marker` in `line`, e.g. `valid until `.
pub fn timestamp_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let at = line.find(marker)? + marker.len();
    line.get(at..at + 24)
}

/// The timeline lines (`  N  <time>  EventType  …`) of `journey show` output, in order, as
/// (version, event type, whole line).
pub fn timeline(stdout: &str) -> Vec<(u64, String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let version: u64 = words.next()?.parse().ok()?;
            let time = words.next()?;
            if time.len() != 24 || !time.ends_with('Z') {
                return None;
            }
            let event = words.next()?.to_owned();
            Some((version, event, l.to_owned()))
        })
        .collect()
}

/// Copies every file of `from` (not recursing) into `to`.
pub fn copy_files(from: &Path, to: &Path, only_ext: Option<&str>) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the source directory") {
        let p = entry.expect("a directory entry").path();
        if !p.is_file() {
            continue;
        }
        if let Some(ext) = only_ext
            && p.extension().is_none_or(|x| x != ext)
        {
            continue;
        }
        let name = p.file_name().expect("a file name");
        std::fs::copy(&p, to.join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", p.display()));
    }
}
pub mod postgres;
pub mod webdriver;
