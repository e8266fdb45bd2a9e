//! A small W3C WebDriver client for the browser tests: headless Chromium driven by a
//! `chromedriver` this module starts on a free port, spoken to over `reqwest`. On drop the
//! session is deleted, chromedriver is shut down (killed if it lingers) and the temporary
//! directory it and Chromium used is removed.
//!
//! ```ignore
//! let Some(browser) = Browser::start("my-test").await else { return }; // skipped outside CI
//! browser.goto(&format!("{base}/reset")).await?;
//! browser.send_keys(&browser.find("#email").await?, "alice@example.com").await?;
//! browser.click(&browser.find("#send-code").await?).await?;
//! ```
//!
//! Every failing command becomes a [`WebDriverError`] naming the command and carrying the
//! WebDriver error JSON (`error`, `message`), so a test failure says what the browser said.
//!
//! Missing `/usr/bin/chromium` or `/usr/bin/chromedriver` (override with
//! `PASSAGE_TEST_CHROMIUM` / `PASSAGE_TEST_CHROMEDRIVER`): outside CI [`Browser::start`]
//! prints a loud `SKIPPED: ...` notice on stderr and returns `None`; with `CI=true` it panics.

use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// What went wrong talking to the browser.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// `POST /session/…/element {"using":…}` and the like.
    pub command: String,
    /// HTTP status (0 when the request itself failed).
    pub status: u16,
    /// The WebDriver error code, e.g. `no such element`, `stale element reference`
    /// (`transport` / `timeout` / `unexpected` for failures of this client).
    pub error: String,
    pub message: String,
    /// The whole `value` of the error response, when there was one.
    pub json: Value,
}

impl WebDriverError {
    fn local(command: impl Into<String>, error: &str, message: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            status: 0,
            error: error.into(),
            message: message.into(),
            json: Value::Null,
        }
    }

    pub fn is_no_such_element(&self) -> bool {
        self.error == "no such element"
    }
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebDriver {}: {}", self.command, self.error)?;
        if self.status != 0 {
            write!(f, " (HTTP {})", self.status)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.json.is_null() {
            // The stack trace of chromedriver's own frames says nothing useful to a test.
            let mut json = self.json.clone();
            if let Some(o) = json.as_object_mut() {
                o.remove("stacktrace");
            }
            write!(f, "\n  WebDriver error JSON: {json}")?;
        }
        Ok(())
    }
}

impl std::error::Error for WebDriverError {}

pub type Result<T, E = WebDriverError> = std::result::Result<T, E>;

/// `true` when the tests run in CI (`CI=true`): nothing may be skipped there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn tool_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// A `chromedriver` process; stopped (and reaped) on drop.
#[derive(Debug)]
struct Driver {
    child: Child,
    port: u16,
    /// Scratch directory: `chromedriver.log`, and `tmp/`, the TMPDIR of chromedriver and
    /// Chromium (profiles, singleton sockets), removed on drop so no run leaves files behind.
    dir: PathBuf,
    log: PathBuf,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until `/status` says it is ready.
    async fn start(http: &reqwest::Client, chromedriver: &Path, dir: PathBuf) -> Result<Self> {
        let log = dir.join("chromedriver.log");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| {
            WebDriverError::local(
                "start chromedriver",
                "unexpected",
                format!("create {}: {e}", tmp.display()),
            )
        })?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).map_err(|e| {
                WebDriverError::local(
                    "start chromedriver",
                    "unexpected",
                    format!("create {}: {e}", log.display()),
                )
            })?;
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .env("TMPDIR", &tmp)
                .stdin(Stdio::null())
                .stdout(
                    log_file
                        .try_clone()
                        .map_or_else(|_| Stdio::null(), Stdio::from),
                )
                .stderr(log_file)
                .spawn()
                .map_err(|e| {
                    WebDriverError::local(
                        "start chromedriver",
                        "unexpected",
                        format!("spawn {}: {e}", chromedriver.display()),
                    )
                })?;
            let mut driver = Driver {
                child,
                port,
                dir: dir.clone(),
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = driver.child.try_wait() {
                    last = format!("chromedriver exited with {status}: {}", driver.log_text());
                    break;
                }
                let ready = http
                    .get(format!("http://127.0.0.1:{port}/status"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if let Ok(res) = ready
                    && let Ok(v) = res.json::<Value>().await
                    && v["value"]["ready"] == true
                {
                    return Ok(driver);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if last.is_empty() {
                last = format!(
                    "chromedriver on port {port} not ready within 10 s: {}",
                    driver.log_text()
                );
            }
            // Most likely the port was taken between choosing and binding it: again.
        }
        Err(WebDriverError::local(
            "start chromedriver",
            "unexpected",
            last,
        ))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Driver {
    /// One blocking request to chromedriver, for destructors (no async runtime there): sent
    /// with `Connection: close`, and done once the status line is back (chromedriver answers
    /// a command only when it is carried out, and may keep the connection open).
    fn blocking(&self, method: &str, path: &str) -> std::io::Result<()> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        );
        s.write_all(request.as_bytes())?;
        let mut status = [0u8; 64];
        let _ = s.read(&mut status)?;
        Ok(())
    }
}

impl Drop for Driver {
    /// Asks chromedriver to shut down (it cleans up after itself), then kills it if it has
    /// not exited within 3 s. Its directory is removed, but for the log if the test fails.
    fn drop(&mut self) {
        let _ = self.blocking("GET", "/shutdown");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.dir.join("tmp"));
            let _ = writeln!(
                std::io::stderr(),
                "chromedriver log: {}",
                self.log.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A reference to an element of the current page, with the selector it was found by (for
/// error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub id: String,
    pub css: String,
}

/// One headless Chromium session. Deleted (best effort) and its chromedriver killed on drop.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    session_id: String,
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1280×900).
    ///
    /// `None` when Chromium or chromedriver is not installed and the tests do not run in CI
    /// (a loud `SKIPPED` notice goes to stderr); in CI that panics instead. Any other failure
    /// to start panics with chromedriver's log.
    pub async fn start(test: &str) -> Option<Browser> {
        let chromium = tool_path("PASSAGE_TEST_CHROMIUM", DEFAULT_CHROMIUM);
        let chromedriver = tool_path("PASSAGE_TEST_CHROMEDRIVER", DEFAULT_CHROMEDRIVER);
        let missing: Vec<String> = [&chromium, &chromedriver]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            let what = format!(
                "{test} needs Chromium and chromedriver, but {} missing. Install them with \
                 `apt-get install -y chromium chromium-driver` (or point PASSAGE_TEST_CHROMIUM / \
                 PASSAGE_TEST_CHROMEDRIVER at them)",
                if missing.len() == 1 {
                    format!("{} is", missing[0])
                } else {
                    format!("{} are", missing.join(" and "))
                }
            );
            if in_ci() {
                panic!("CI=true: {what}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!!!!! SKIPPED: {what}.\n!!!!!!!! The browser test did NOT run.\n"
            );
            return None;
        }
        match Self::launch(test, &chromium, &chromedriver).await {
            Ok(b) => Some(b),
            Err(e) => panic!("could not start a headless Chromium session: {e}"),
        }
    }

    async fn launch(test: &str, chromium: &Path, chromedriver: &Path) -> Result<Browser> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| {
                WebDriverError::local("build the HTTP client", "transport", e.to_string())
            })?;
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        // Short: Chromium puts a Unix socket under this directory, and socket paths longer
        // than 108 bytes make it exit at start ("Chrome instance exited").
        let short: String = test.chars().take(12).collect();
        let dir = std::env::temp_dir().join(format!(
            "passage-cd-{short}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let driver = Driver::start(&http, chromedriver, dir).await?;
        let root = format!("http://127.0.0.1:{}", driver.port);
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "implicit": 0, "pageLoad": 30000, "script": 10000 },
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,900",
                            "--hide-scrollbars",
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--disable-extensions",
                            "--force-device-scale-factor=1",
                            "--lang=en-AU",
                        ],
                    },
                },
            },
        });
        let value = send(&http, "POST", &format!("{root}/session"), Some(caps))
            .await
            .map_err(|mut e| {
                e.message = format!("{}\n  chromedriver log:\n{}", e.message, driver.log_text());
                e
            })?;
        let session_id = value["sessionId"]
            .as_str()
            .ok_or_else(|| {
                WebDriverError::local(
                    "POST /session",
                    "unexpected",
                    format!("no sessionId in {value}"),
                )
            })?
            .to_owned();
        Ok(Browser {
            http,
            session: format!("{root}/session/{session_id}"),
            session_id,
            driver,
        })
    }

    /// The session's id, as chromedriver knows it.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        send(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    async fn el_cmd(
        &self,
        el: &Element,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.cmd(method, &format!("/element/{}{path}", el.id), body)
            .await
            .map_err(|mut e| {
                e.command = format!("{} (element `{}`)", e.command, el.css);
                e
            })
    }

    // --- navigation -------------------------------------------------------------------

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    pub async fn current_url(&self) -> Result<String> {
        let v = self.cmd("GET", "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn title(&self) -> Result<String> {
        let v = self.cmd("GET", "/title", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The page's HTML as the browser now has it.
    pub async fn page_source(&self) -> Result<String> {
        let v = self.cmd("GET", "/source", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn back(&self) -> Result<()> {
        self.cmd("POST", "/back", Some(json!({}))).await.map(drop)
    }

    pub async fn refresh(&self) -> Result<()> {
        self.cmd("POST", "/refresh", Some(json!({})))
            .await
            .map(drop)
    }

    // --- elements ---------------------------------------------------------------------

    /// The first element matching the CSS selector (`no such element` if none).
    pub async fn find(&self, css: &str) -> Result<Element> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .map_err(|mut e| {
                e.command = format!("find `{css}`");
                e
            })?;
        element_of(&v, css)
    }

    /// Every element matching the CSS selector, in document order (maybe none).
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .map_err(|mut e| {
                e.command = format!("find all `{css}`");
                e
            })?;
        v.as_array()
            .map(|a| a.iter().map(|x| element_of(x, css)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Whether at least one element matches the selector now.
    pub async fn exists(&self, css: &str) -> Result<bool> {
        Ok(!self.find_all(css).await?.is_empty())
    }

    pub async fn click(&self, el: &Element) -> Result<()> {
        self.el_cmd(el, "POST", "/click", Some(json!({})))
            .await
            .map(drop)
    }

    /// Types `text` into the element (after what it already holds).
    pub async fn send_keys(&self, el: &Element, text: &str) -> Result<()> {
        self.el_cmd(el, "POST", "/value", Some(json!({ "text": text })))
            .await
            .map(drop)
    }

    pub async fn clear(&self, el: &Element) -> Result<()> {
        self.el_cmd(el, "POST", "/clear", Some(json!({})))
            .await
            .map(drop)
    }

    /// The element's rendered text.
    pub async fn text(&self, el: &Element) -> Result<String> {
        let v = self.el_cmd(el, "GET", "/text", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// An HTML attribute (`None` when absent).
    pub async fn attribute(&self, el: &Element, name: &str) -> Result<Option<String>> {
        let v = self
            .el_cmd(el, "GET", &format!("/attribute/{name}"), None)
            .await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// A DOM property (`value`, `type`, `checked`, …) as JSON.
    pub async fn property(&self, el: &Element, name: &str) -> Result<Value> {
        self.el_cmd(el, "GET", &format!("/property/{name}"), None)
            .await
    }

    /// A computed CSS value, e.g. `color`.
    pub async fn css_value(&self, el: &Element, name: &str) -> Result<String> {
        let v = self
            .el_cmd(el, "GET", &format!("/css/{name}"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn is_enabled(&self, el: &Element) -> Result<bool> {
        let v = self.el_cmd(el, "GET", "/enabled", None).await?;
        Ok(v.as_bool().unwrap_or(false))
    }

    pub async fn is_displayed(&self, el: &Element) -> Result<bool> {
        let v = self.el_cmd(el, "GET", "/displayed", None).await?;
        Ok(v.as_bool().unwrap_or(false))
    }

    // --- convenience by selector ------------------------------------------------------

    pub async fn click_css(&self, css: &str) -> Result<()> {
        self.click(&self.find(css).await?).await
    }

    /// Clears the field matched by `css`, then types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.clear(&el).await?;
        self.send_keys(&el, text).await
    }

    pub async fn text_of(&self, css: &str) -> Result<String> {
        self.text(&self.find(css).await?).await
    }

    // --- scripts, screenshots, window -------------------------------------------------

    /// Runs `script` (a function body; `arguments[i]` are `args`) synchronously and returns
    /// what it returns. Pass elements with [`Element::arg`].
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Saves a PNG of the viewport at `path` (creating its directory).
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.cmd("GET", "/screenshot", None).await?;
        let b64 = v.as_str().ok_or_else(|| {
            WebDriverError::local(
                "GET /screenshot",
                "unexpected",
                "the screenshot is not a string",
            )
        })?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                WebDriverError::local("GET /screenshot", "unexpected", format!("base64: {e}"))
            })?;
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &png)
        };
        write().map_err(|e| {
            WebDriverError::local(
                "GET /screenshot",
                "unexpected",
                format!("write {}: {e}", path.display()),
            )
        })
    }

    /// Resizes the window (outer size), e.g. 390×844 for a phone-sized screenshot.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await
        .map(drop)
    }

    // --- waiting ----------------------------------------------------------------------

    /// Polls `probe` every 50 ms until it returns `Ok`, or fails after `timeout` with what it
    /// last observed (its `Err` text: say what you expected and what you saw). WebDriver
    /// errors convert with `?` and count as "not yet" (the page may be navigating).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> Result<T, Pending>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            match probe().await {
                Ok(v) => return Ok(v),
                Err(Pending(last)) => {
                    if start.elapsed() >= timeout {
                        let url = self.current_url().await.unwrap_or_default();
                        return Err(WebDriverError::local(
                            format!("wait for {what}"),
                            "timeout",
                            format!(
                                "not within {:.1} s; last observed: {last}; page: {url}",
                                timeout.as_secs_f64()
                            ),
                        ));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an element matches `css` and returns it.
    pub async fn wait_for_css(&self, css: &str, timeout: Duration) -> Result<Element> {
        self.wait_for(&format!("an element `{css}`"), timeout, async || {
            Ok(self.find(css).await?)
        })
        .await
    }
}

/// A "not yet" from a [`Browser::wait_for`] probe, with what it observed.
#[derive(Debug, Clone)]
pub struct Pending(pub String);

impl From<WebDriverError> for Pending {
    fn from(e: WebDriverError) -> Self {
        Pending(e.to_string())
    }
}

impl From<String> for Pending {
    fn from(s: String) -> Self {
        Pending(s)
    }
}

impl From<&str> for Pending {
    fn from(s: &str) -> Self {
        Pending(s.to_owned())
    }
}

impl Element {
    /// This element as an argument of [`Browser::execute`].
    pub fn arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

fn element_of(v: &Value, css: &str) -> Result<Element> {
    v[ELEMENT_KEY]
        .as_str()
        .map(|id| Element {
            id: id.to_owned(),
            css: css.to_owned(),
        })
        .ok_or_else(|| {
            WebDriverError::local(
                format!("find `{css}`"),
                "unexpected",
                format!("no element reference in {v}"),
            )
        })
}

/// One WebDriver command: the response's `value`, or its error.
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let path = url
        .find("/session")
        .map(|at| &url[at..])
        .unwrap_or(url)
        .to_owned();
    let command = match &body {
        Some(b) if b.as_object().is_some_and(|o| !o.is_empty()) => {
            let mut shown = b.to_string();
            if shown.len() > 300 {
                let mut cut = 300;
                while !shown.is_char_boundary(cut) {
                    cut -= 1;
                }
                shown.truncate(cut);
                shown.push('…');
            }
            format!("{method} {path} {shown}")
        }
        _ => format!("{method} {path}"),
    };
    let req = match method {
        "GET" => http.get(url),
        "POST" => http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        "DELETE" => http.delete(url),
        other => {
            return Err(WebDriverError::local(
                command,
                "unexpected",
                format!("method {other}"),
            ));
        }
    };
    let res = req
        .send()
        .await
        .map_err(|e| WebDriverError::local(command.clone(), "transport", e.to_string()))?;
    let status = res.status().as_u16();
    let text = res
        .text()
        .await
        .map_err(|e| WebDriverError::local(command.clone(), "transport", e.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|_| WebDriverError {
        command: command.clone(),
        status,
        error: "unexpected".into(),
        message: format!("not JSON: {text:?}"),
        json: Value::Null,
    })?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    let error = value.get("error").and_then(Value::as_str);
    if status >= 400 || error.is_some() {
        return Err(WebDriverError {
            command,
            status,
            error: error.unwrap_or("unknown error").to_owned(),
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            json: value,
        });
    }
    Ok(value)
}

impl Drop for Browser {
    /// Deletes the session (chromedriver closes Chromium); the driver is stopped after.
    fn drop(&mut self) {
        let _ = self
            .driver
            .blocking("DELETE", &format!("/session/{}", self.session_id));
    }
}
