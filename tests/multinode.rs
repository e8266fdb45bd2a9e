//! Several engine nodes on one PostgreSQL database (issue: PostgreSQL event store and several
//! engine nodes). Two real `passage serve` processes share a fresh database and one dev
//! outbox; 500 journeys are driven through both, one node is SIGKILLed midway and started
//! again, and every journey must end in the state its inputs imply, every event must
//! verify, and every issued code must have been delivered once.

mod common;

use serde_json::{Value, json};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

const JOURNEYS: usize = 500;

/// The test drives 500 journeys for one account on purpose: lift the per-recipient budgets
/// that would (rightly) stop that in production (docs/channels.md, Limits).
const UNLIMITED_CHANNELS: &str = include_str!("fixtures/unlimited-channels.toml");
const CONCURRENCY: usize = 48;
const SECRET: &str = "multinode-test-secret-0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "harbour lantern meadow copper violet";

struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    // A failing assertion must not leave nodes running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path, db_url: &str) -> Node {
    // One test client plays 500 people: per-client limits are not under test.
    start_node_limited(dir, db_url, 100_000)
}

/// A node allowing each client `starts` journeys started per 10 minutes.
fn start_node_limited(dir: &Path, db_url: &str, starts: u32) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_passage"))
        .args(["--database-url", db_url])
        .arg("--outbox")
        .arg(dir.join("outbox.db"))
        .arg("--workflows")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"))
        .args(["serve", "--listen", "127.0.0.1:0", "--lease", "2s"])
        .args(["--limit-starts", &starts.to_string()])
        .args(["--limit-answers", "100000"])
        .env("PASSAGE_SECRET", SECRET)
        .env("PASSAGE_CHANNELS_CONFIG", dir.join("channels.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a passage node");
    let stdout = child.stdout.take().expect("node stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the node's address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line from the node: {line:?}"))
        .to_owned();
    Node { child, addr }
}

/// A minimal HTTP/1.1 client: one request per connection, JSON in and out. `token` is the
/// journey's bearer token (from its start's answer), `key` the request's Idempotency-Key.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
    key: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(k) = key {
        req.push_str(&format!("Idempotency-Key: {k}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, payload) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let value = serde_json::from_str(payload).unwrap_or(Value::Null);
    Ok((status, value))
}

/// The load balancer: the preferred node first, the other one when it does not answer.
/// Requests carry an idempotency key, so a retry on the other node never applies twice;
/// the retry sends the same key (and the same journey token) as the first attempt.
struct Cluster {
    nodes: RwLock<Vec<String>>,
}

impl Cluster {
    /// `token`: the journey's bearer token (`None` for the start); `key`: the request's
    /// Idempotency-Key, 16 to 200 characters.
    async fn call(
        &self,
        prefer: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        key: &str,
    ) -> (u16, Value) {
        assert!(
            (16..=200).contains(&key.len()),
            "Idempotency-Key {key:?} is not 16 to 200 characters"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = prefer;
        loop {
            let addr = {
                let nodes = self.nodes.read().await;
                nodes[attempt % nodes.len()].clone()
            };
            let (m, p, b, t, k) = (
                method.to_owned(),
                path.to_owned(),
                body.clone(),
                token.map(str::to_owned),
                key.to_owned(),
            );
            let result = tokio::task::spawn_blocking(move || {
                http(&addr, &m, &p, b.as_ref(), t.as_deref(), Some(&k))
            })
            .await
            .expect("http task");
            match result {
                Ok((status, v)) if status < 500 => return (status, v),
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "no node answered {method} {path}: {other:?}"
                    );
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn code(outbox: &sqlx::SqlitePool, journey: &str, channel: &str, nth: i64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = sqlx::query(
            "SELECT body FROM messages WHERE journey_id = $1 AND channel = $2 ORDER BY id",
        )
        .bind(journey)
        .bind(channel)
        .fetch_all(outbox)
        .await;
        if let Ok(rows) = rows
            && rows.len() as i64 >= nth
        {
            let body: String = rows[(nth - 1) as usize].get(0);
            return passage_channels::find_code(&body).expect("a code in the message");
        }
        assert!(
            Instant::now() < deadline,
            "no {channel} message #{nth} for journey {journey}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Plan {
    /// Email code, SMS code, new password: completed.
    Complete,
    /// Stops after the email code: waiting at the choice.
    Abandon,
    /// Five wrong codes: failed.
    Lockout,
}

/// A driven journey: its id, its bearer token and what was done to it.
type Driven = (String, String, Plan);

/// Drives journey `i`. `run` (unique per test run) prefixes its Idempotency-Keys, so they are
/// long enough (16+ characters) and never meet another run's journeys.
async fn drive(i: usize, run: &str, cluster: &Cluster, outbox: &sqlx::SqlitePool) -> Driven {
    let plan = match i % 10 {
        0 | 1 => Plan::Abandon,
        2 => Plan::Lockout,
        _ => Plan::Complete,
    };
    let key = |step: &str| format!("{run}-j{i}-{step}");
    let (status, v) = cluster
        .call(
            i,
            "POST",
            "/api/journeys",
            // One person per journey: journeys of one address share its failure cap (R16)
            // and are cancelled when another of them resets the password (R44).
            Some(json!({"email": format!("user{i}@example.com")})),
            None,
            &key("start"),
        )
        .await;
    assert_eq!(status, 201, "start: {v}");
    let id = v["journey_id"].as_str().expect("journey id").to_owned();
    let token = v["journey_token"]
        .as_str()
        .expect("journey token")
        .to_owned();
    let auth = Some(token.as_str());
    let path = |p: &str| format!("/api/journeys/{id}/{p}");
    if plan == Plan::Lockout {
        for n in 0..5 {
            let (status, v) = cluster
                .call(
                    i + n,
                    "POST",
                    &path("code"),
                    Some(json!({"code": "000000"})),
                    auth,
                    &key(&format!("wrong{n}")),
                )
                .await;
            assert_eq!(status, 422, "wrong code {n}: {v}");
        }
        return (id, token, plan);
    }
    let email_code = code(outbox, &id, "email", 1).await;
    let (status, v) = cluster
        .call(
            i + 1,
            "POST",
            &path("code"),
            Some(json!({"code": email_code})),
            auth,
            &key("code"),
        )
        .await;
    assert_eq!(status, 200, "email code: {v}");
    if plan == Plan::Abandon {
        return (id, token, plan);
    }
    let (status, v) = cluster
        .call(
            i,
            "POST",
            &path("choice"),
            Some(json!({"option": "sms"})),
            auth,
            &key("choice"),
        )
        .await;
    assert_eq!(status, 200, "choice: {v}");
    let sms = code(outbox, &id, "sms", 1).await;
    let (status, v) = cluster
        .call(
            i + 1,
            "POST",
            &path("code"),
            Some(json!({"code": sms})),
            auth,
            &key("sms"),
        )
        .await;
    assert_eq!(status, 200, "sms code: {v}");
    let pw = json!({"new_password": PASSWORD, "confirm_password": PASSWORD});
    let (status, v) = cluster
        .call(
            i,
            "POST",
            &path("password"),
            Some(pw),
            auth,
            &key("password"),
        )
        .await;
    assert_eq!(status, 200, "password: {v}");
    (id, token, plan)
}

/// A fresh database named `name_<pid>` on the test server and a fresh directory holding
/// `channels` as the nodes' channels file; `None` when the server is unreachable outside CI.
async fn scratch(
    name: &str,
    channels: &str,
) -> Option<(common::postgres::ScratchServer, String, String, PathBuf)> {
    let server = common::postgres::ScratchServer::connect().await?;
    let db = format!("passage_{name}_{}", std::process::id());
    let db_url = server.fresh_database(&db).await;
    let dir = std::env::temp_dir().join(format!("passage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("channels.toml"), channels).unwrap();
    Some((server, db, db_url, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_database_survive_a_sigkill() {
    let Some((server, db, db_url, dir)) = scratch("multinode", UNLIMITED_CHANNELS).await else {
        return;
    };

    let a = start_node(&dir, &db_url);
    let mut b = start_node(&dir, &db_url);
    let cluster = Arc::new(Cluster {
        nodes: RwLock::new(vec![a.addr.clone(), b.addr.clone()]),
    });
    // The nodes migrated the schema before they printed their address.
    let seed = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO accounts (account_id, email, display_name, phone, password_phc, enabled, \
         updated_at) SELECT 'acct-mn-' || i, 'user' || i || '@example.com', 'Person ' || i, \
         '+614' || lpad(i::text, 8, '0'), '$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA', \
         true, 0 FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(JOURNEYS as i64)
    .execute(&seed)
    .await
    .expect("seed one account per journey");
    seed.close().await;
    let outbox = SqlitePoolOptions::new()
        .max_connections(4)
        .connect(&format!("sqlite://{}", dir.join("outbox.db").display()))
        .await
        .expect("open the shared dev outbox");

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (cluster, outbox, next, done, run) = (
            cluster.clone(),
            outbox.clone(),
            next.clone(),
            done.clone(),
            run.clone(),
        );
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= JOURNEYS {
                    return mine;
                }
                mine.push(drive(i, &run, &cluster, &outbox).await);
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    // Midway, SIGKILL node B, then start it again on a new port.
    let mut journeys = Vec::new();
    let midway = Instant::now() + Duration::from_secs(300);
    while done.load(Ordering::SeqCst) < JOURNEYS / 2 {
        // A driver that panicked never counts: fail with its message instead of waiting.
        if let Some(r) = tasks.try_join_next() {
            journeys.extend(r.expect("a driver task panicked"));
        }
        assert!(
            Instant::now() < midway,
            "only {} journeys finished in 5 minutes",
            done.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.child.kill().expect("SIGKILL node B");
    b.child.wait().unwrap();
    drop(b);
    eprintln!(
        "node B killed after {} journeys",
        done.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    b = start_node(&dir, &db_url);
    cluster.nodes.write().await[1] = b.addr.clone();

    while let Some(r) = tasks.join_next().await {
        journeys.extend(r.expect("a driver task panicked"));
    }
    assert_eq!(journeys.len(), JOURNEYS);

    // Every journey is where its inputs lead.
    for (id, token, plan) in &journeys {
        let (status, v) = cluster
            .call(
                0,
                "GET",
                &format!("/api/journeys/{id}"),
                None,
                Some(token),
                &format!("{run}-get-{id}"),
            )
            .await;
        assert_eq!(status, 200, "journey {id}: {v}");
        let (want_status, want_step) = match plan {
            Plan::Complete => ("completed", Some("complete")),
            Plan::Abandon => ("active", Some("choose")),
            Plan::Lockout => ("failed", None),
        };
        assert_eq!(
            v["journey"]["status"], want_status,
            "journey {id} ({plan:?}): {v}"
        );
        if let Some(kind) = want_step {
            assert_eq!(
                v["journey"]["step"]["kind"], kind,
                "journey {id} ({plan:?}): {v}"
            );
        }
    }

    // Every code issued was delivered, once per issued code.
    let pg = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
                .fetch_one(&pg)
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} outbox entries still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let issued: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'CodeIssued' ORDER BY position",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    let mut effect_ids: Vec<String> = issued
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["effect_id"].as_str().map(str::to_owned))
        .collect();
    effect_ids.sort();
    // Code messages only: not the "password changed" notices.
    let delivered: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM messages \
         WHERE channel = 'sms' OR (channel = 'email' AND subject NOT LIKE '%changed%') \
         ORDER BY idempotency_key",
    )
    .fetch_all(&outbox)
    .await
    .unwrap();
    assert_eq!(
        delivered, effect_ids,
        "one message per issued code, none lost, none doubled"
    );
    let handed_twice: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE deliveries > 1")
            .fetch_one(&outbox)
            .await
            .unwrap();
    eprintln!(
        "{} codes issued and delivered; {handed_twice} handed to the channel twice around the kill (deduplicated by idempotency key)",
        effect_ids.len()
    );

    // The whole log verifies.
    let out = Command::new(env!("CARGO_BIN_EXE_passage"))
        .args(["--database-url", &db_url, "audit", "verify"])
        .env("PASSAGE_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());

    drop((a, b));
    pg.close().await;
    outbox.close().await;
    server.drop_database(&db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `POST /api/journeys` with `body` on the node at `addr`, under Idempotency-Key `key`.
async fn start_reset(addr: &str, body: Value, key: String) -> (u16, Value) {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || {
        http(
            &addr,
            "POST",
            "/api/journeys",
            Some(&body),
            None,
            Some(&key),
        )
    })
    .await
    .unwrap()
    .expect("start a reset")
}

/// Dev channels with a per-recipient email budget of 3 an hour, and nothing else limited.
const SMALL_EMAIL_BUDGET: &str = r#"
email = "dev"
sms = "dev"
voice = "dev"
[limits.email]
per_recipient = { max = 3, window_secs = 3600 }
"#;

/// R17 across nodes: a budget is the deployment's, not each node's. Six resets for one
/// address, started on both nodes in turn, issue six codes; with a per-recipient budget of 3,
/// exactly three emails reach the address and the other three fail as over budget, whichever
/// node's worker took them, and although both nodes are restarted after the third. With
/// counters in each process's memory each node would have sent three, and more after the
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_send_budget() {
    let Some((server, db, db_url, dir)) = scratch("budget", SMALL_EMAIL_BUDGET).await else {
        return;
    };
    let mut nodes = [start_node(&dir, &db_url), start_node(&dir, &db_url)];
    let pg = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO accounts (account_id, email, display_name, phone, password_phc, enabled, \
         updated_at) VALUES ('acct-budget', 'budget@example.com', 'Budget Person', \
         '+61400000001', '$argon2id$v=19$m=256,t=1,p=1$c2FsdHNhbHQ$aGFzaA', true, 0)",
    )
    .execute(&pg)
    .await
    .expect("seed the account");

    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut effects = Vec::new();
    for i in 0..6 {
        if i == 3 {
            // The budget is spent: restarted nodes must still know it.
            nodes = [start_node(&dir, &db_url), start_node(&dir, &db_url)];
        }
        let (status, v) = start_reset(
            &nodes[i % 2].addr,
            json!({"email": "budget@example.com"}),
            format!("{run}-budget-start-{i}"),
        )
        .await;
        assert_eq!(status, 201, "start {i}: {v}");
        let journey = v["journey_id"].as_str().expect("journey id").to_owned();
        // Wait for this journey's code message to be handled before the next start, so the
        // six are spread over both nodes' workers rather than raced by one.
        let deadline = Instant::now() + Duration::from_secs(30);
        let effect = loop {
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT effect_id::text, status FROM outbox WHERE stream::text = $1 \
                 ORDER BY created_at LIMIT 1",
            )
            .bind(&journey)
            .fetch_optional(&pg)
            .await
            .expect("read the outbox");
            if let Some((effect, status)) = row
                && status != "pending"
            {
                break effect;
            }
            assert!(
                Instant::now() < deadline,
                "the code of reset {i} was not handled"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        effects.push(effect);
    }

    let outbox = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", dir.join("outbox.db").display()))
        .await
        .expect("open the shared dev outbox");
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM messages WHERE recipient = 'budget@example.com' \
         ORDER BY id",
    )
    .fetch_all(&outbox)
    .await
    .unwrap();
    assert_eq!(
        sent,
        effects[..3],
        "the first three codes were sent, and no more, by the two nodes together"
    );
    let failed: Vec<String> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE event_type = 'MessageFailed' ORDER BY position",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    assert_eq!(failed.len(), 3, "three codes over budget: {failed:?}");
    for payload in &failed {
        let v: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v["permanent"], true, "{v}");
        assert_eq!(v["channel"], "email", "{v}");
    }
    let errors: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT last_error FROM outbox WHERE effect_id::text = ANY($1) ORDER BY created_at",
    )
    .bind(&effects[3..])
    .fetch_all(&pg)
    .await
    .unwrap();
    assert_eq!(errors.len(), 3);
    for error in errors {
        let error = error.unwrap_or_default();
        assert!(
            error.contains("budget exceeded: email per recipient") && !error.contains("budget@"),
            "the refusal names the budget with the address masked: {error}"
        );
    }
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT budget_key FROM send_budget_uses ORDER BY budget_key")
            .fetch_all(&pg)
            .await
            .unwrap();
    assert_eq!(stored.len(), 3, "one row per counted message: {stored:?}");
    assert!(
        stored
            .iter()
            .all(|k| k.len() == 64 && !k.contains("budget")),
        "budgets are stored under a keyed hash, not the address: {stored:?}"
    );

    drop(nodes);
    pg.close().await;
    outbox.close().await;
    server.drop_database(&db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// R17 across nodes: a client's limit is the deployment's. With `--limit-starts 4` on both
/// nodes, six starts from one client spread over both get four journeys and then 429 with
/// a Retry-After, whichever node answers; counted per node, all six would have started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_client_limit() {
    let Some((server, db, db_url, dir)) = scratch("client_limit", UNLIMITED_CHANNELS).await else {
        return;
    };
    let nodes = [
        start_node_limited(&dir, &db_url, 4),
        start_node_limited(&dir, &db_url, 4),
    ];
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (status, v) = start_reset(
            &nodes[i % 2].addr,
            json!({"email": format!("limit{i}@example.com")}),
            format!("{run}-limit-start-{i}"),
        )
        .await;
        if status == 429 {
            assert_eq!(v["error"]["code"], "rate-limited", "{v}");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 429, 429],
        "four starts in all, over both nodes"
    );
    let pg = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT window_key FROM rate_windows")
        .fetch_all(&pg)
        .await
        .unwrap();
    assert!(
        !keys.is_empty()
            && keys
                .iter()
                .all(|k| k.len() == 64 && !k.contains("127.0.0.1")),
        "windows are stored under a keyed hash, not the client address: {keys:?}"
    );
    drop(nodes);
    pg.close().await;
    server.drop_database(&db).await;
    let _ = std::fs::remove_dir_all(&dir);
}
