//! The web portal in a real browser: headless Chromium driven through chromedriver (W3C
//! WebDriver, `tests/common/webdriver.rs`) against the real `passage serve` binary with its
//! development outboxes, for the demo account alice@example.com (Alice Nguyen).
//!
//! * `webdriver_client_works`: the client itself, on a `data:` page and on the node's JSON
//!   API (`/api/health`, `/api/openapi.json`); needs no portal page.
//! * `reset_with_sms_code`: sign-in page → "Forgot Password?" → email → email code (a wrong
//!   code first: a field error) → "Send SMS to my mobile" → SMS code → Reset Password (live
//!   requirement ticks, eye toggles, a phone-sized screenshot) → the portal's tiles → the dev
//!   inbox.
//! * `reset_with_voice_call`: the same up to the choice, then "Call me on my landline or
//!   mobile": the test presses # on the simulated phone through the JSON API and the open
//!   page moves on to Reset Password by itself.
//!
//! Codes and the call id come from the dev outbox file (`passage-outbox.db` beside the event
//! store). Screenshots of every page go to `target/browser-artifacts/<test>/NN-<page>.png`
//! (their paths are printed; run with `--nocapture` to see them). On a failure the test
//! saves `NN-failure.png` and prints the page's URL and HTML.
//!
//! Without Chromium or chromedriver the tests print `SKIPPED: ...` on stderr and pass; with
//! `CI=true` they fail instead (`.ci/run` installs both).

mod common;

use common::webdriver::{Browser, Element, Pending};
use common::{STRONG_PASSWORD, TestDir, looks_like_uuid};
use passage_channels::{DevMessage, DevOutbox};
use passage_core::ports::JourneyId;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "browser-test-secret-0123456789abcdef0123456789abcdef";
const ALICE: &str = "alice@example.com";
const TOO_SHORT: &str = "lantern";
/// Long enough, but with the account holder's display name (Alice Nguyen) in it.
const PERSONAL: &str = "Alice Nguyen harbour lantern";
const TILES: [&str; 2] = [
    "Manage a Network Application",
    "Engagement of Contracted Services and Equipment",
];
const REQUIREMENTS: [&str; 4] = [
    "req-length",
    "req-not-common",
    "req-no-personal-words",
    "req-match",
];

/// How long a page may take to show what a click led to.
const PAGE: Duration = Duration::from_secs(10);

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Returns an error (not a panic: the failure screenshot is taken on the way out) unless
/// `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

// --- the node -------------------------------------------------------------------------------

/// A `passage serve` process on its own temporary directory, with the development outboxes
/// (no channel settings reach it). Its stderr goes to `node.log`, printed when a test fails.
struct Node {
    child: Child,
    base: String,
    dir: TestDir,
    // Kept open: the node must never write to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Node {
    fn start(tag: &str) -> Node {
        let dir = TestDir::new(tag);
        let log = std::fs::File::create(dir.join("node.log")).expect("create node.log");
        let mut cmd = Command::new(common::PASSAGE);
        for (k, _) in std::env::vars() {
            if k.starts_with("PASSAGE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .arg("--db")
            .arg(dir.db())
            .arg("--workflows")
            .arg(common::REPO_WORKFLOWS)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("PASSAGE_SECRET", SECRET)
            .env("RUST_LOG", "warn,passage=info,passage_web=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start passage serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let Some(base) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "passage serve did not start: first line {line:?}; log:\n{}",
                std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
            );
        };
        Node {
            child,
            base,
            dir,
            _stdout: stdout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The dev outbox the node writes to: `passage-outbox.db` beside its event store.
    async fn outbox(&self) -> DevOutbox {
        let path = self.dir.join("passage-outbox.db");
        DevOutbox::open(&path)
            .await
            .unwrap_or_else(|e| panic!("open the dev outbox {}: {e}", path.display()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            let _ = writeln!(
                std::io::stderr(),
                "--- node {} log (last 60 lines) ---\n{}",
                self.base,
                tail.join("\n")
            );
        }
    }
}

// --- artifacts ------------------------------------------------------------------------------

/// `target/browser-artifacts/<test>`, emptied.
fn artifacts_dir(test: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(PathBuf::from))
        .or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .map(Path::to_owned)
        })
        .unwrap_or_else(|| manifest.join("target"));
    let dir = manifest.join(target).join("browser-artifacts").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

// --- one browser on one node ----------------------------------------------------------------

struct Flow {
    browser: Browser,
    node: Node,
    outbox: DevOutbox,
    http: reqwest::Client,
    artifacts: PathBuf,
    shots: usize,
    journey: Option<String>,
}

impl Flow {
    /// `None` when the browser is missing outside CI (the notice is printed).
    async fn start(test: &str) -> Option<Flow> {
        let browser = Browser::start(test).await?;
        let node = Node::start(test);
        let outbox = node.outbox().await;
        Some(Flow {
            browser,
            node,
            outbox,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client"),
            artifacts: artifacts_dir(test),
            shots: 0,
            journey: None,
        })
    }

    /// Runs `steps`; on an error saves a failure screenshot, prints the page and panics.
    async fn run(mut self, steps: impl AsyncFnOnce(&mut Flow) -> TestResult) {
        let result = steps(&mut self).await;
        if let Err(e) = result {
            let url = self.browser.current_url().await.unwrap_or_default();
            // The page's `main` (or its HTML), cut short: enough to see what it showed.
            let main = self
                .browser
                .execute(
                    "const m = document.querySelector('main');
                     return (m || document.documentElement).outerHTML;",
                    vec![],
                )
                .await;
            let mut source = match main {
                Ok(Value::String(html)) => html,
                _ => self.browser.page_source().await.unwrap_or_default(),
            };
            if source.len() > 6000 {
                let mut cut = 6000;
                while !source.is_char_boundary(cut) {
                    cut -= 1;
                }
                source.truncate(cut);
                source.push_str("\n[… cut]");
            }
            let shot = self.shot("failure").await;
            panic!(
                "{e}\n--- browser at {url} ---\n{source}\n--- failure screenshot: {} ---",
                shot.map(|p| p.display().to_string())
                    .unwrap_or_else(|e| e.to_string())
            );
        }
    }

    fn url(&self, path: &str) -> String {
        self.node.url(path)
    }

    /// Saves `NN-<page>.png` and prints its path.
    async fn shot(&mut self, page: &str) -> TestResult<PathBuf> {
        self.shots += 1;
        let path = self.artifacts.join(format!("{:02}-{page}.png", self.shots));
        self.browser.screenshot(&path).await?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    fn journey(&self) -> TestResult<JourneyId> {
        let id = self.journey.as_deref().ok_or("no journey yet")?;
        Ok(JourneyId(uuid::Uuid::parse_str(id)?))
    }

    /// Waits until the page shows step `step` (`main[data-step][data-kind]`).
    async fn wait_step(&self, step: &str, kind: &str) -> TestResult {
        let css = format!("main[data-step=\"{step}\"][data-kind=\"{kind}\"]");
        let b = &self.browser;
        b.wait_for(&format!("the {step} page (`{css}`)"), PAGE, async || {
            if b.exists(&css).await? {
                return Ok(());
            }
            Err(Pending(observed_step(b).await))
        })
        .await?;
        Ok(())
    }

    /// The newest message of the journey on `channel` that `accept` takes.
    async fn message(
        &self,
        channel: &str,
        accept: impl Fn(&DevMessage) -> bool,
    ) -> TestResult<DevMessage> {
        let journey = self.journey()?;
        let deadline = Instant::now() + PAGE;
        loop {
            let latest = self.outbox.latest(journey, channel).await?;
            if let Some(m) = latest.filter(&accept) {
                return Ok(m);
            }
            ensure!(
                Instant::now() < deadline,
                "no {channel} message for journey {journey} in the dev outbox within {} s",
                PAGE.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The code of the newest `channel` message of the journey.
    async fn code(&self, channel: &str) -> TestResult<String> {
        let m = self.message(channel, |m| m.code().is_some()).await?;
        Ok(m.code().expect("filtered on a code"))
    }

    // --- the pages ------------------------------------------------------------------------

    /// Sign-in page → "Forgot Password?" → email → the email code page; the journey id is
    /// taken from the URL.
    async fn open_email_code(&mut self) -> TestResult {
        let b = &self.browser;
        b.goto(&self.url("/")).await?;
        for css in [
            "form#sign-in",
            "form#sign-in input#email",
            "form#sign-in input#password",
            "form#sign-in button#sign-in-button",
        ] {
            ensure!(b.exists(css).await?, "the sign-in page has no `{css}`");
        }
        let forgot = b.find("a#forgot-password").await?;
        let text = b.text(&forgot).await?;
        ensure!(
            text.trim() == "Forgot Password?",
            "`a#forgot-password`: expected the text \"Forgot Password?\", observed {text:?}"
        );
        let href = b.property(&forgot, "href").await?;
        ensure!(
            href.as_str() == Some(self.url("/reset").as_str()),
            "`a#forgot-password`: expected href {}, observed {href}",
            self.url("/reset")
        );
        self.shot("sign-in").await?;

        let b = &self.browser;
        b.click(&forgot).await?;
        let reset = self.url("/reset");
        b.wait_for("the /reset page with `form#identify`", PAGE, async || {
            let url = b.current_url().await?;
            if url == reset && b.exists("form#identify").await? {
                return Ok(());
            }
            Err(Pending(format!("url {url}")))
        })
        .await?;
        let send = b.find("form#identify button#send-code").await?;
        let label = b.text(&send).await?;
        ensure!(
            label.trim() == "Send verification code",
            "`button#send-code`: expected \"Send verification code\", observed {label:?}"
        );
        b.send_keys(&b.find("form#identify input#email").await?, ALICE)
            .await?;
        self.shot("identify").await?;

        let b = &self.browser;
        b.click(&send).await?;
        let prefix = self.url("/reset/");
        let id = b
            .wait_for("a redirect to /reset/{journey id}", PAGE, async || {
                let url = b.current_url().await?;
                match url.strip_prefix(&prefix) {
                    Some(id) if looks_like_uuid(id) => Ok(id.to_owned()),
                    _ => Err(Pending(format!("url {url}"))),
                }
            })
            .await?;
        println!("journey {id}");
        self.journey = Some(id);
        self.wait_step("email-code", "code").await?;
        let b = &self.browser;
        let verify = b.text_of("form#code-form button#verify").await?;
        ensure!(
            verify.trim() == "Verify",
            "`button#verify`: expected \"Verify\", observed {verify:?}"
        );
        let resend = b.text_of("form#resend-form button#resend").await?;
        ensure!(
            resend.trim() == "Re-send code",
            "`button#resend`: expected \"Re-send code\", observed {resend:?}"
        );
        ensure!(
            b.exists("form#code-form input#code").await?,
            "the email-code page has no `form#code-form input#code`"
        );
        self.shot("email-code").await?;
        Ok(())
    }

    /// Types `code` into `input#code` and clicks Verify.
    async fn submit_code(&self, code: &str) -> TestResult {
        let b = &self.browser;
        let input = b.find("form#code-form input#code").await?;
        b.clear(&input).await?;
        b.send_keys(&input, code).await?;
        b.click_css("form#code-form button#verify").await?;
        Ok(())
    }

    /// A wrong code first (the field error shows), then the right one: the choice page.
    async fn email_code_to_choice(&mut self) -> TestResult {
        let code = self.code("email").await?;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        self.submit_code(wrong).await?;
        let b = &self.browser;
        let error = b
            .wait_for("a field error in `#code-error`", PAGE, async || {
                let errors = b.find_all("#code-error").await?;
                let Some(el) = errors.first() else {
                    return Err(Pending(format!(
                        "no `#code-error`; {}",
                        observed_step(b).await
                    )));
                };
                let text = b.text(el).await?;
                if text.trim().is_empty() {
                    return Err(Pending("`#code-error` is empty".into()));
                }
                Ok(text)
            })
            .await?;
        println!("wrong code: #code-error says {:?}", error.trim());
        self.wait_step("email-code", "code").await?;
        self.shot("email-code-wrong").await?;

        self.submit_code(&code).await?;
        self.check_choice_page().await
    }

    /// The right email code at once.
    async fn email_code_right(&mut self) -> TestResult {
        let code = self.code("email").await?;
        self.submit_code(&code).await?;
        self.check_choice_page().await
    }

    async fn check_choice_page(&mut self) -> TestResult {
        self.wait_step("second-factor", "choose").await?;
        let b = &self.browser;
        for (css, label) in [
            ("button#option-sms", "Send SMS to my mobile"),
            ("button#option-call", "Call me on my landline or mobile"),
        ] {
            let text = b.text_of(css).await?;
            ensure!(
                text.trim() == label,
                "`{css}`: expected {label:?}, observed {text:?}"
            );
        }
        let masked = b.text_of("#phone-masked").await?;
        ensure!(
            masked.trim_end().ends_with("678") && !masked.replace(' ', "").contains("412345"),
            "`#phone-masked`: expected alice's number masked (ending in 678), observed {masked:?}"
        );
        self.shot("choose").await?;
        Ok(())
    }

    /// Reset Password: the live ticks, the eye buttons, Update Password; ends on the portal.
    async fn set_password(&mut self, narrow_screenshot: bool) -> TestResult {
        self.wait_step("new-password", "set-password").await?;
        let b = &self.browser;
        for css in [
            "input#new-password",
            "input#confirm-password",
            "button#toggle-new-password",
            "button#toggle-confirm-password",
            "button#update-password",
        ] {
            ensure!(
                b.exists(css).await?,
                "the Reset Password page has no `{css}`"
            );
        }
        let ticks = b.find_all("li.requirement").await?;
        ensure!(
            ticks.len() == REQUIREMENTS.len(),
            "expected {} `li.requirement`, observed {}",
            REQUIREMENTS.len(),
            ticks.len()
        );
        for id in REQUIREMENTS {
            ensure!(
                b.exists(&format!("li.requirement#{id}[data-met]")).await?,
                "no `li.requirement#{id}` with `data-met`"
            );
        }
        for field in ["new-password", "confirm-password"] {
            let ty = b
                .property(&b.find(&format!("input#{field}")).await?, "type")
                .await?;
            ensure!(
                ty == "password",
                "`input#{field}` starts as type {ty}, not password"
            );
        }
        self.shot("set-password").await?;

        // Too short: the length tick stays grey and the button disabled.
        let b = &self.browser;
        b.fill("input#new-password", TOO_SHORT).await?;
        // Give the debounced check time to answer, then look.
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.wait_ticks("a too short password", &[("req-length", false)])
            .await?;
        ensure!(
            !self.update_enabled().await?,
            "`button#update-password` is enabled for {TOO_SHORT:?}"
        );
        let grey = self.tick_colors("req-length").await?;

        // Long enough but with the account holder's name in it.
        let b = &self.browser;
        b.fill("input#new-password", PERSONAL).await?;
        self.wait_ticks(
            "a password with the account holder's name",
            // not-common turning green shows the server's check has answered.
            &[
                ("req-length", true),
                ("req-not-common", true),
                ("req-no-personal-words", false),
            ],
        )
        .await?;
        ensure!(
            !self.update_enabled().await?,
            "`button#update-password` is enabled for {PERSONAL:?}"
        );
        self.shot("set-password-weak").await?;

        // The strong passphrase in both fields: every tick green, the button enabled.
        let b = &self.browser;
        b.fill("input#new-password", STRONG_PASSWORD).await?;
        b.fill("input#confirm-password", STRONG_PASSWORD).await?;
        let all_met: Vec<(&str, bool)> = REQUIREMENTS.iter().map(|r| (*r, true)).collect();
        self.wait_ticks("the strong passphrase in both fields", &all_met)
            .await?;
        let b = &self.browser;
        b.wait_for("`button#update-password` enabled", PAGE, async || {
            if b.is_enabled(&b.find("button#update-password").await?)
                .await?
            {
                Ok(())
            } else {
                Err(Pending("disabled".into()))
            }
        })
        .await?;
        let green = self.tick_colors("req-length").await?;
        ensure!(
            grey != green,
            "`li#req-length`: the computed colours are the same when not met and met: {grey}"
        );
        let li = |sig: &str| sig.split("; ").next().unwrap_or_default().to_owned();
        println!(
            "req-length colour: not met {}, met {}",
            li(&grey),
            li(&green)
        );
        self.shot("set-password-strong").await?;

        // The eye buttons show what was typed, and hide it again.
        for field in ["new-password", "confirm-password"] {
            let b = &self.browser;
            let input = b.find(&format!("input#{field}")).await?;
            b.click_css(&format!("button#toggle-{field}")).await?;
            let ty = b.property(&input, "type").await?;
            ensure!(
                ty == "text",
                "after clicking `button#toggle-{field}`, `input#{field}` is type {ty}, not text"
            );
        }
        self.shot("set-password-shown").await?;
        let b = &self.browser;
        b.click_css("button#toggle-confirm-password").await?;
        let ty = b
            .property(&b.find("input#confirm-password").await?, "type")
            .await?;
        ensure!(
            ty == "password",
            "a second click on `button#toggle-confirm-password` leaves type {ty}, not password"
        );

        if narrow_screenshot {
            self.browser.set_window_size(390, 844).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.shot("set-password-narrow").await?;
            self.browser.set_window_size(1280, 900).await?;
        }

        let b = &self.browser;
        b.click_css("button#update-password").await?;
        let portal = self.url("/portal");
        b.wait_for("the portal (/portal with a Welcome h1)", PAGE, async || {
            let url = b.current_url().await?;
            if url != portal {
                return Err(Pending(format!("url {url}; {}", observed_step(b).await)));
            }
            let h1 = b.text_of("h1").await?;
            if h1.contains("Welcome") {
                Ok(())
            } else {
                Err(Pending(format!("h1 {h1:?}")))
            }
        })
        .await?;
        let mut tiles = Vec::new();
        for t in b.find_all("a.tile").await? {
            tiles.push(b.text(&t).await?);
        }
        for want in TILES {
            ensure!(
                tiles.iter().any(|t| t.contains(want)),
                "the portal has no `a.tile` with {want:?}; tiles: {tiles:?}"
            );
        }
        self.shot("portal").await?;
        Ok(())
    }

    async fn update_enabled(&self) -> TestResult<bool> {
        let b = &self.browser;
        Ok(b.is_enabled(&b.find("button#update-password").await?)
            .await?)
    }

    /// Waits until each named tick's `data-met` is as given.
    async fn wait_ticks(&self, what: &str, want: &[(&str, bool)]) -> TestResult {
        let b = &self.browser;
        b.wait_for(
            &format!("the requirement ticks for {what}: {want:?}"),
            PAGE,
            async || {
                let mut wrong = Vec::new();
                for (id, met) in want {
                    let el = b.find(&format!("li.requirement#{id}")).await?;
                    let seen = b.attribute(&el, "data-met").await?;
                    if seen.as_deref() != Some(if *met { "true" } else { "false" }) {
                        wrong.push(format!("{id} data-met={seen:?}"));
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(Pending(wrong.join(", ")))
                }
            },
        )
        .await?;
        Ok(())
    }

    /// The computed colours of a tick: the item, its ::before/::after and its descendants.
    async fn tick_colors(&self, id: &str) -> TestResult<String> {
        let b = &self.browser;
        let el: Element = b.find(&format!("li.requirement#{id}")).await?;
        let v = b
            .execute(
                "const el = arguments[0];
                 const out = [];
                 for (const pseudo of [null, '::before', '::after']) {
                     const s = getComputedStyle(el, pseudo);
                     out.push((pseudo || 'li') + ' ' + s.color + ' ' + s.backgroundColor);
                 }
                 for (const c of el.querySelectorAll('*')) {
                     const s = getComputedStyle(c);
                     out.push(c.tagName.toLowerCase() + ' ' + s.color + ' ' + s.fill + ' '
                         + s.stroke + ' ' + s.backgroundColor);
                 }
                 return out.join('; ');",
                vec![el.arg()],
            )
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Presses keys on the journey's ringing call through the JSON API (the simulated
    /// phone of the dev voice outbox).
    async fn press_on_call(&self, digits: &str) -> TestResult {
        let call = self.message("voice", |m| m.call_id.is_some()).await?;
        let call_id = call.call_id.expect("filtered on a call id");
        let id = self.journey.as_deref().ok_or("no journey yet")?;
        let url = self.url(&format!("/api/journeys/{id}/call"));
        let res = self
            .http
            .post(&url)
            .json(&json!({ "call_id": call_id, "digits": digits }))
            .send()
            .await?;
        let status = res.status();
        let body = res.text().await?;
        ensure!(
            status.is_success(),
            "POST {url} (call {call_id}, digits {digits:?}): {status}: {body}"
        );
        println!("pressed {digits:?} on call {call_id}");
        Ok(())
    }

    /// The dev inbox lists the journey's messages.
    async fn dev_inbox(&mut self, at_least: usize) -> TestResult {
        let b = &self.browser;
        b.goto(&self.url("/dev/inbox")).await?;
        let rows = b.find_all("tr.message").await?;
        ensure!(
            rows.len() >= at_least,
            "/dev/inbox: expected at least {at_least} `tr.message`, observed {}",
            rows.len()
        );
        self.shot("dev-inbox").await?;
        Ok(())
    }
}

/// What the page shows, for a timeout message: its URL and its `main`'s step and kind.
async fn observed_step(b: &Browser) -> String {
    let url = b.current_url().await.unwrap_or_default();
    let v = b
        .execute(
            "const m = document.querySelector('main');
             return m ? [m.dataset.step, m.dataset.kind] : null;",
            vec![],
        )
        .await
        .unwrap_or(Value::Null);
    match v {
        Value::Array(a) => format!("url {url}, main data-step={} data-kind={}", a[0], a[1]),
        _ => format!("url {url}, no `main`"),
    }
}

// --- the tests ------------------------------------------------------------------------------

#[tokio::test]
async fn webdriver_client_works() {
    let Some(flow) = Flow::start("webdriver_client").await else {
        return;
    };
    flow.run(async |f: &mut Flow| {
        let b = &f.browser;
        let page = "data:text/html;charset=utf-8,\
            <title>client</title>\
            <main data-step='x'><h1 id='h'>Hello <b>browser</b></h1>\
            <input id='in' value='old'><button id='go' disabled>Go</button>\
            <ul><li class='r'>one</li><li class='r'>two</li></ul>\
            <p id='out'></p></main>\
            <script>\
            document.getElementById('in').addEventListener('input', e => {\
              const go = document.getElementById('go');\
              go.disabled = e.target.value.length < 3;\
              setTimeout(() => document.getElementById('out').textContent = e.target.value, 150);\
            });\
            document.getElementById('go').addEventListener('click', () => \
              document.getElementById('out').dataset.clicked = 'yes');\
            </script>";
        b.goto(page).await?;
        ensure!(b.title().await? == "client", "title");
        ensure!(b.text_of("#h").await? == "Hello browser", "text");
        ensure!(b.find_all("li.r").await?.len() == 2, "find_all");
        let missing = b.find("#nope").await.expect_err("no such element");
        ensure!(missing.is_no_such_element(), "{missing}");
        ensure!(
            missing.to_string().contains("WebDriver error JSON"),
            "the error carries the JSON: {missing}"
        );
        let input = b.find("#in").await?;
        let go = b.find("#go").await?;
        ensure!(!b.is_enabled(&go).await?, "disabled at first");
        b.clear(&input).await?;
        b.send_keys(&input, "typed").await?;
        ensure!(b.property(&input, "value").await? == "typed", "value");
        ensure!(
            b.attribute(&input, "id").await?.as_deref() == Some("in"),
            "id"
        );
        ensure!(b.is_enabled(&go).await?, "enabled after typing");
        b.click(&go).await?;
        let out = b.find("#out").await?;
        let text = b
            .wait_for("the debounced echo", Duration::from_secs(2), async || {
                let t = b.text(&out).await?;
                if t == "typed" { Ok(t) } else { Err(Pending(t)) }
            })
            .await?;
        ensure!(text == "typed", "echo");
        ensure!(
            b.attribute(&out, "data-clicked").await?.as_deref() == Some("yes"),
            "click"
        );
        let sum = b
            .execute(
                "return arguments[0] + arguments[1];",
                vec![json!(2), json!(3)],
            )
            .await?;
        ensure!(sum == 5, "execute: {sum}");
        let color = b
            .execute(
                "return getComputedStyle(arguments[0]).color;",
                vec![out.arg()],
            )
            .await?;
        ensure!(
            color.as_str().is_some_and(|c| c.starts_with("rgb")),
            "{color}"
        );
        let timeout = b
            .wait_for(
                "something that never happens",
                Duration::from_millis(200),
                async || Err::<(), _>(Pending("still nothing".into())),
            )
            .await
            .expect_err("times out");
        ensure!(timeout.to_string().contains("still nothing"), "{timeout}");
        f.shot("data-page").await?;
        f.browser.set_window_size(390, 844).await?;
        let width = f
            .browser
            .execute("return window.innerWidth;", vec![])
            .await?;
        ensure!(
            width.as_u64().is_some_and(|w| w <= 400),
            "innerWidth after set_window_size(390, 844): {width}"
        );
        let png = f.shot("data-page-narrow").await?;
        let bytes = std::fs::read(&png)?;
        ensure!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
        f.browser.set_window_size(1280, 900).await?;

        // The node's JSON API, in the browser.
        let b = &f.browser;
        b.goto(&f.url("/api/health")).await?;
        ensure!(b.text_of("body").await?.trim() == "ok", "/api/health");
        b.goto(&f.url("/api/openapi.json")).await?;
        let spec: Value = serde_json::from_str(&b.text_of("body").await?)?;
        ensure!(
            spec["paths"]["/api/journeys/{id}/call"].is_object(),
            "the OpenAPI document lists the call route: {}",
            spec["paths"]
        );
        ensure!(
            b.current_url().await? == f.url("/api/openapi.json"),
            "current_url"
        );
        f.shot("openapi").await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn reset_with_sms_code() {
    let Some(flow) = Flow::start("reset_with_sms_code").await else {
        return;
    };
    flow.run(async |f: &mut Flow| {
        f.open_email_code().await?;
        f.email_code_to_choice().await?;

        f.browser.click_css("button#option-sms").await?;
        f.wait_step("sms-code", "code").await?;
        f.shot("sms-code").await?;
        let code = f.code("sms").await?;
        f.submit_code(&code).await?;

        f.set_password(true).await?;
        // The email code, the SMS code and the password-changed notice at least.
        f.dev_inbox(2).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn reset_with_voice_call() {
    let Some(flow) = Flow::start("reset_with_voice_call").await else {
        return;
    };
    flow.run(async |f: &mut Flow| {
        f.open_email_code().await?;
        f.email_code_right().await?;

        f.browser.click_css("button#option-call").await?;
        f.wait_step("voice-call", "voice").await?;
        let b = &f.browser;
        let status = b.text_of("#call-status").await?;
        ensure!(
            !status.trim().is_empty(),
            "`#call-status` is empty on the voice-call page"
        );
        println!("#call-status: {:?}", status.trim());
        f.shot("voice-call").await?;

        // Press # on the simulated phone; the open page must move on by itself.
        let before = f.browser.current_url().await?;
        f.press_on_call("#").await?;
        f.wait_step("new-password", "set-password").await?;
        println!(
            "the voice page moved on by itself ({before} -> {})",
            f.browser.current_url().await?
        );

        f.set_password(false).await?;
        f.dev_inbox(2).await?;
        Ok(())
    })
    .await;
}

// --- the support console ----------------------------------------------------------------

const OPERATOR_PASSWORD: &str = "operator password of some length";

/// Runs `passage` on the node's database (operators are managed from the command line),
/// feeding `stdin`; returns its standard output.
fn passage_on(node: &Node, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(common::PASSAGE)
        .arg("--db")
        .arg(node.dir.db())
        .arg("--workflows")
        .arg(common::REPO_WORKFLOWS)
        .args(args)
        .current_dir(node.dir.path())
        .env("PASSAGE_SECRET", SECRET)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run passage");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for passage");
    assert!(
        out.status.success(),
        "passage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Flow {
    /// Waits until `css` shows text containing `want`.
    async fn wait_text(&self, css: &str, want: &str) -> TestResult {
        let b = &self.browser;
        b.wait_for(&format!("`{css}` to show {want:?}"), PAGE, async || {
            let seen = b.text_of(css).await.unwrap_or_default();
            if seen.contains(want) {
                return Ok(());
            }
            Err(Pending(format!("`{css}` shows {seen:?}")))
        })
        .await?;
        Ok(())
    }
}

/// Support signs in to the console, finds alice's journey by her address, replays it step
/// by step and cancels it with a reason; the cancel shows in the timeline with the operator
/// as actor.
#[tokio::test]
async fn console_support_finds_replays_and_cancels() {
    let Some(flow) = Flow::start("console_support_finds_replays_and_cancels").await else {
        return;
    };
    flow.run(async |f: &mut Flow| {
        f.open_email_code().await?;
        let journey = f.journey()?.to_string();
        passage_on(
            &f.node,
            &[
                "operators",
                "add",
                "sam",
                "--role",
                "support",
                "--password-stdin",
            ],
            &format!("{OPERATOR_PASSWORD}\n"),
        );

        let b = &f.browser;
        b.goto(&f.url("/console")).await?;
        b.wait_for_css("form#console-sign-in", PAGE).await?;
        b.fill("input#name", "sam").await?;
        b.fill("input#password", OPERATOR_PASSWORD).await?;
        f.shot("console-sign-in").await?;
        let b = &f.browser;
        b.click_css("button#console-sign-in-button").await?;
        b.wait_for_css("main[data-kind=\"console-search\"]", PAGE)
            .await?;
        f.wait_text("#operator", "sam · support").await?;

        let b = &f.browser;
        b.fill("input#q", ALICE).await?;
        b.click_css("button#search-button").await?;
        b.wait_for_css("table#results a.journey-link", PAGE).await?;
        // The form was posted: the results' address holds the pseudonym, not the address.
        let results_url = b.current_url().await?;
        ensure!(
            results_url.contains("who=") && !results_url.to_lowercase().contains("alice"),
            "the search put the address in the URL: {results_url}"
        );
        f.shot("console-search").await?;
        let b = &f.browser;
        let link = b.find("table#results a.journey-link").await?;
        let href = b.property(&link, "href").await?;
        ensure!(
            href.as_str().is_some_and(|h| h.ends_with(&journey)),
            "the search's first result is {href}, not journey {journey}"
        );
        b.click(&link).await?;
        b.wait_for_css("main[data-kind=\"console-journey\"] table#timeline", PAGE)
            .await?;
        f.shot("console-timeline").await?;

        // Replay: first event, then one step on; the state follows.
        let b = &f.browser;
        b.click_css("a#replay-first").await?;
        f.wait_text("#replay-position", "State after event 1 of")
            .await?;
        f.wait_text("#state-step", "email").await?;
        f.shot("console-replay-first").await?;
        let b = &f.browser;
        b.click_css("a#replay-next").await?;
        f.wait_text("#replay-position", "State after event 2 of")
            .await?;
        f.shot("console-replay-second").await?;
        let b = &f.browser;
        b.click_css("a#replay-last").await?;
        f.wait_text("#state-status", "active").await?;

        // Cancel with a reason.
        let b = &f.browser;
        b.execute(
            "document.querySelector('select#action').value = 'cancel';",
            vec![],
        )
        .await?;
        b.fill("input#reason", "Caller asked to stop; ticket 4711")
            .await?;
        f.shot("console-cancel").await?;
        let b = &f.browser;
        b.click_css("button#act-button").await?;
        f.wait_text("#console-notice", "The journey was cancelled.")
            .await?;
        f.wait_text("#state-status", "cancelled").await?;
        let b = &f.browser;
        let actor = b
            .text_of("table#timeline tr[data-event=\"JourneyCancelled\"] td.actor")
            .await?;
        ensure!(
            actor.contains("support sam via console") && actor.contains("ticket 4711"),
            "the cancel's actor cell shows {actor:?}"
        );
        f.shot("console-cancelled").await?;

        // The person's page now says the journey is over.
        let b = &f.browser;
        b.goto(&f.url(&format!("/reset/{journey}"))).await?;
        let text = b.text_of("main").await?;
        ensure!(
            text.to_lowercase().contains("cancel") || text.to_lowercase().contains("start again"),
            "the person's page after the cancel shows {text:?}"
        );
        Ok(())
    })
    .await;
}

/// An auditor's API token downloads a signed export from the running node, and the offline
/// verifier accepts it; one changed byte makes it fail.
#[tokio::test]
async fn console_export_verifies_offline() {
    let node = Node::start("console_export_verifies_offline");
    let http = reqwest::Client::new();
    let started = http
        .post(node.url("/api/journeys"))
        .json(&json!({"workflow": "password-reset"}))
        .send()
        .await
        .expect("start a journey");
    assert!(started.status().is_success(), "{:?}", started.text().await);
    passage_on(
        &node,
        &[
            "operators",
            "add",
            "ada",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        &format!("{OPERATOR_PASSWORD}\n"),
    );
    let token = passage_on(
        &node,
        &["operators", "token", "ada", "--label", "export test"],
        "",
    )
    .trim()
    .to_owned();
    assert!(token.starts_with("pst_"), "{token}");
    let get = async |path: &str| {
        let res = http
            .get(node.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.bytes().await.expect("body").to_vec()
    };
    let body = get("/console/api/audit/export?from=1&to=1&format=jsonl").await;
    let manifest = get("/console/api/audit/manifest?from=1&to=1&format=jsonl").await;
    let m: Value = serde_json::from_slice(&manifest).expect("a JSON manifest");
    let file = node.dir.join(m["file"].as_str().expect("file"));
    std::fs::write(&file, &body).unwrap();
    std::fs::write(format!("{}.manifest.json", file.display()), &manifest).unwrap();
    let key = m["public_key"].as_str().expect("public_key").to_owned();
    let verify = |expect_ok: bool| {
        let out = Command::new(common::PASSAGE)
            .args(["audit", "verify-export"])
            .arg(&file)
            .current_dir(node.dir.path())
            .args(["--public-key", &key])
            .output()
            .expect("run verify-export");
        assert_eq!(
            out.status.success(),
            expect_ok,
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    verify(true);
    let mut changed = body.clone();
    let at = changed
        .iter()
        .position(|b| *b == b'J')
        .expect("an event type");
    changed[at] = b'K';
    std::fs::write(&file, &changed).unwrap();
    verify(false);

    // Support's token may not export.
    passage_on(
        &node,
        &[
            "operators",
            "add",
            "sam",
            "--role",
            "support",
            "--password-stdin",
        ],
        &format!("{OPERATOR_PASSWORD}\n"),
    );
    let support = passage_on(
        &node,
        &["operators", "token", "sam", "--label", "support"],
        "",
    )
    .trim()
    .to_owned();
    let res = http
        .get(node.url("/console/api/audit/export?from=1&to=1"))
        .bearer_auth(&support)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
}
