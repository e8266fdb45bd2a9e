//! `assets/portal.js` run under Node with a fake DOM and fake clocks: the code's timeout
//! message counts the time the server said was left, whatever the browser's wall clock
//! says, and shows the server's words; the press-# call page reloads the journey's own
//! page; a spoken-code call page does not reload at all. Skipped (with a note) where Node
//! is not installed; `tests/browser.rs` covers the script in Chromium.

use std::process::Command;

const SCRIPT: &str = include_str!("../assets/portal.js");

/// A fake `document`, `window`, `performance`, timers and `fetch`, then the scenario.
/// `Date.now()` runs ten minutes fast: the script must not depend on it.
const HARNESS: &str = r#"
"use strict";
let now = 0;
const timers = [];
const fetched = [];
const replaced = [];
globalThis.performance = { now: () => now };
const realDate = Date;
globalThis.Date = class extends realDate {
  static now() { return realDate.now() + 10 * 60 * 1000; }
};
globalThis.setTimeout = (f, ms) => timers.push({ at: now + (ms || 0), f, every: 0 });
globalThis.setInterval = (f, ms) => timers.push({ at: now + ms, f, every: ms });
globalThis.clearTimeout = globalThis.clearInterval = (id) => {
  if (timers[id - 1]) timers[id - 1].dead = true;
};
async function advance(ms) {
  const end = now + ms;
  for (;;) {
    const next = timers
      .filter((t) => !t.dead && t.at <= end)
      .sort((a, b) => a.at - b.at)[0];
    if (!next) break;
    now = next.at;
    if (next.every) next.at += next.every; else next.dead = true;
    next.f();
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }
  now = end;
}
function element(attrs) {
  return {
    attrs: Object.assign({}, attrs),
    className: "aside",
    textContent: "The code is valid for 5 more minutes.",
    getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; },
    setAttribute(name, value) { this.attrs[name] = String(value); },
  };
}
const elements = {};
globalThis.document = {
  getElementById: (id) => elements[id] || null,
  querySelectorAll: () => ({ forEach() {} }),
};
globalThis.window = {
  location: {
    pathname: "/reset/j1/choose",
    replace(url) { replaced.push(url); },
  },
};
globalThis.fetch = (url) => {
  fetched.push(url);
  return Promise.resolve({
    ok: true,
    json: () => Promise.resolve({ status: "active", step: "new-password", view: "active.new-password.none" }),
  });
};
function check(ok, what) {
  if (!ok) { console.log("FAILED: " + what); process.exit(1); }
}
"#;

/// Runs `scenario` after loading the script into the harness; panics with Node's output
/// unless it exits 0. `None` when Node is not installed.
fn run(setup: &str, scenario: &str) -> Option<()> {
    if let Err(e) = Command::new("node").arg("--version").output() {
        // In CI nothing skips silently: Node is on the machine there (MailDev runs on it).
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("node is needed for the portal.js checks in CI: {e}");
        }
        eprintln!(
            "\n*** SKIPPED: node is not installed ({e}): the portal.js checks did not run ***\n"
        );
        return None;
    }
    let program = format!(
        "{HARNESS}\n{setup}\n(0, eval)({});\n(async () => {{\n{scenario}\nconsole.log(\"ok\");\n}})().catch((e) => {{ console.log(\"FAILED: \" + e); process.exit(1); }});\n",
        serde_json::to_string(SCRIPT).unwrap()
    );
    let path = std::env::temp_dir().join(format!("portal-js-{}.js", uuid::Uuid::new_v4()));
    std::fs::write(&path, program).unwrap();
    let out = Command::new("node").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok"), "{text}");
    Some(())
}

/// The timeout notice appears when the time the server gave has passed on the page's own
/// clock, not when the (ten minutes fast) wall clock says, with the server's words.
#[test]
fn the_timeout_message_counts_the_time_left_on_the_pages_clock() {
    let setup = r#"
elements["code-expiry"] = element({
  "data-remaining-ms": "300000",
  "data-expired-message": "The code has timed out. Select \u201cSend another\u201d to get a new one.",
});
"#;
    let scenario = r#"
const e = elements["code-expiry"];
await advance(299000);
check(e.textContent === "The code is valid for 5 more minutes.", "not before its time: " + e.textContent);
await advance(2000);
check(e.textContent === "The code has timed out. Select \u201cSend another\u201d to get a new one.", "the server's words: " + e.textContent);
check(e.className === "notice warn", "shown as a warning");
check(e.getAttribute("role") === "alert", "announced");
"#;
    run(setup, scenario);
}

/// A press-# call page shown at the POST route it answered reloads the journey's page.
#[test]
fn the_call_page_reloads_the_journeys_page_not_its_own_address() {
    let setup = r#"
elements["main"] = element({
  "data-kind": "voice",
  "data-watch": "true",
  "data-step": "voice-call",
  "data-view": "active.voice-call.open-2",
  "data-status-url": "/reset/j1/status",
  "data-page-url": "/reset/j1",
});
"#;
    let scenario = r#"
await advance(1000);
check(fetched.length === 1 && fetched[0] === "/reset/j1/status", "polled: " + fetched);
check(replaced.length === 1 && replaced[0] === "/reset/j1", "reloaded: " + replaced);
"#;
    run(setup, scenario);
}

/// A spoken-code call page, where the person types the code, is never reloaded.
#[test]
fn a_spoken_code_call_page_is_not_polled_or_reloaded() {
    let setup = r#"
elements["main"] = element({
  "data-kind": "voice",
  "data-step": "voice-call",
  "data-view": "active.voice-call.open-2",
  "data-status-url": "/reset/j1/status",
  "data-page-url": "/reset/j1",
});
"#;
    let scenario = r#"
await advance(10000);
check(fetched.length === 0, "polled: " + fetched);
check(replaced.length === 0, "reloaded: " + replaced);
"#;
    run(setup, scenario);
}
