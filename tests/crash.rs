//! SIGKILL in the middle of journeys: nothing committed is lost, and the pending outbox
//! entries and timers are delivered after a restart (issue: engine foundation, acceptance 5).

use sqlx::Row;
use sqlx::sqlite::SqlitePoolOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOURNEYS: usize = 30;

/// The test drives many journeys for one account on purpose: lift the per-recipient budgets
/// that would (rightly) stop that in production (docs/channels.md, Limits).
const UNLIMITED_CHANNELS: &str = include_str!("fixtures/unlimited-channels.toml");

/// A journey whose email code expires 3 s after issue, so its expiry timer is still pending
/// when the worker is killed, and due soon after the restart.
const DEFINITION: &str = r#"
id = "crash-test"
version = 1
title = "Crash test"
lifetime = "10m"
start = "email"

[[steps]]
id = "email"
kind = "identify"
prompt = "Enter your registered Email address"
action = "Send verification code"
next = "email-code"

[[steps]]
id = "email-code"
kind = "code"
channel = "email"
prompt = "Enter the code"
lifetime = "3s"
resend = { label = "Re-send code", max = 1, cooldown = "1s" }
next = "new-password"

[[steps]]
id = "new-password"
kind = "set-password"
prompt = "Reset Password"
policy = "portal"
next = "done"

[[steps]]
id = "done"
kind = "complete"
prompt = "Done"

[policies.portal]
min_length = 15
max_length = 128
"#;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn passage(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_passage"));
    c.arg("--db")
        .arg(dir.join("passage.db"))
        .arg("--workflows")
        .arg(dir.join("workflows"))
        .env_remove("PASSAGE_SECRET")
        .env("PASSAGE_CHANNELS_CONFIG", dir.join("channels.toml"))
        .env("RUST_LOG", "warn");
    c
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run passage");
    assert!(
        out.status.success(),
        "passage failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn events(db: &Path) -> BTreeMap<i64, Vec<u8>> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("open the event store read-only");
    let rows = sqlx::query("SELECT position, hash FROM events ORDER BY position")
        .fetch_all(&pool)
        .await
        .expect("read events");
    pool.close().await;
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn scalar(db: &Path, sql: &'static str) -> i64 {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("open read-only");
    let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
    pool.close().await;
    v
}

/// A worker process that is killed when dropped, so a failing assertion leaves none behind.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(dir: &Path) -> Worker {
    Worker(
        passage(dir)
            .args(["worker", "--lease", "1s", "--batch", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the worker"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_journey_loses_nothing_and_pending_work_resumes() {
    let dir = Dir(std::env::temp_dir().join(format!("passage-crash-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(dir.0.join("workflows")).unwrap();
    std::fs::write(dir.0.join("workflows/crash-test.toml"), DEFINITION).unwrap();
    std::fs::write(dir.0.join("channels.toml"), UNLIMITED_CHANNELS).unwrap();
    let db = dir.0.join("passage.db");
    let outbox = dir.0.join("passage-outbox.db");

    // Journeys commit their events, outbox entries and timers, but nothing is delivered:
    // delivery is left to a worker.
    for _ in 0..JOURNEYS {
        run_ok(passage(&dir.0).args([
            "journey",
            "start",
            "--workflow",
            "crash-test",
            "--email",
            "alice@example.com",
            "--no-deliver",
        ]));
    }
    let before = events(&db).await;
    assert_eq!(
        before.len(),
        JOURNEYS * 3,
        "started, email submitted, code issued"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM outbox WHERE status = 'pending'").await,
        JOURNEYS as i64
    );

    // Start a worker and SIGKILL it as soon as it has delivered something.
    let mut worker = spawn_worker(&dir.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if outbox.exists() && scalar(&outbox, "SELECT COUNT(*) FROM messages").await > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker delivered nothing in 20 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    worker.0.kill().expect("SIGKILL the worker"); // Child::kill is SIGKILL on Unix.
    worker.0.wait().unwrap();
    let delivered_at_kill = scalar(&outbox, "SELECT COUNT(*) FROM messages").await;
    let timers_pending_at_kill =
        scalar(&db, "SELECT COUNT(*) FROM timers WHERE status = 'pending'").await;
    eprintln!(
        "killed with {delivered_at_kill}/{JOURNEYS} emails delivered and {timers_pending_at_kill} timers pending"
    );
    assert!(
        timers_pending_at_kill >= JOURNEYS as i64,
        "code-expiry timers were pending at the kill"
    );

    // Restart: everything pending is finished, nothing is lost or doubled.
    let worker = spawn_worker(&dir.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let msgs = scalar(&outbox, "SELECT COUNT(*) FROM messages").await;
        let expired = scalar(
            &db,
            "SELECT COUNT(*) FROM events WHERE event_type = 'CodeExpired'",
        )
        .await;
        if msgs == JOURNEYS as i64 && expired == JOURNEYS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart: {msgs}/{JOURNEYS} emails, {expired}/{JOURNEYS} code expiries"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(worker);

    let after = events(&db).await;
    for (pos, hash) in &before {
        assert_eq!(
            after.get(pos),
            Some(hash),
            "event {pos} committed before the kill is intact"
        );
    }
    let delivered_events = scalar(
        &db,
        "SELECT COUNT(*) FROM events WHERE event_type = 'MessageDelivered'",
    )
    .await;
    assert_eq!(
        delivered_events, JOURNEYS as i64,
        "each delivery is recorded once (idempotent command ids)"
    );
    assert_eq!(
        scalar(
            &outbox,
            "SELECT COUNT(DISTINCT idempotency_key) FROM messages"
        )
        .await,
        JOURNEYS as i64,
        "one message per code issued"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM outbox WHERE status <> 'done'").await,
        0
    );
    let verify = run_ok(passage(&dir.0).args(["audit", "verify"]));
    assert!(verify.contains("audit verify ok"), "{verify}");
}
