//! Test support for the PostgreSQL tests: where the server is, a fresh schema per test, and
//! the skip-or-fail rule when the server cannot be reached.
//!
//! - `PASSAGE_TEST_DATABASE_URL` names the server (default
//!   `postgres://root@127.0.0.1:5432/test`).
//! - Unreachable outside CI: each test prints a loud SKIPPED notice and passes.
//!   Unreachable in CI (`CI=true`): each test fails, so a missing server cannot pass CI.
//! - Every test runs in a schema of its own (`t_<uuid>`), dropped afterwards, also when
//!   the test panics.

#![allow(dead_code)] // each test file uses a different part of this module

use passage_store::{PgOptions, PgStore};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

pub const DEFAULT_URL: &str = "postgres://root@127.0.0.1:5432/test";

pub fn url() -> String {
    std::env::var("PASSAGE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The server's URL if it answers; `None` (after a loud notice) if it does not and this is
/// not CI. Panics in CI.
pub async fn reachable() -> Option<String> {
    use sqlx::Connection;
    let url = url();
    let attempt =
        tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await;
    let failure = match attempt {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            return Some(url);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 5 s".to_owned(),
    };
    if in_ci() {
        panic!(
            "PostgreSQL not reachable at {url} ({failure}); CI=true, so the PostgreSQL \
             tests fail instead of skipping. Start the server or set PASSAGE_TEST_DATABASE_URL."
        );
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests,
    // and a skip must be seen. The banner once per test binary, then one line per test.
    use std::io::Write;
    static BANNER: std::sync::Once = std::sync::Once::new();
    let mut stderr = std::io::stderr().lock();
    BANNER.call_once(|| {
        let _ = writeln!(
            stderr,
            "\n********************************************************************************\n\
             SKIPPED: PostgreSQL not reachable at {url} (set PASSAGE_TEST_DATABASE_URL)\n\
             reason: {failure}\n\
             The PostgreSQL store tests pass without running. In CI (CI=true) they fail.\n\
             ********************************************************************************"
        );
    });
    let test = std::thread::current()
        .name()
        .unwrap_or("a PostgreSQL test")
        .to_owned();
    let _ = writeln!(
        stderr,
        "SKIPPED: {test} (PostgreSQL not reachable at {url})"
    );
    None
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    format!("t_{}", Uuid::new_v4().simple())
}

pub fn options(schema: &str) -> PgOptions {
    PgOptions {
        schema: Some(schema.to_owned()),
        ..PgOptions::default()
    }
}

pub async fn connect(url: &str, options: PgOptions) -> PgStore {
    PgStore::connect_with(url, options)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e:?}"))
}

/// Runs `body` with a store on a fresh schema (skipping when the server is unreachable
/// outside CI), then drops the schema, also when `body` panics. `body` gets the URL and the
/// schema name too, to open more handles on the same schema.
pub async fn with_store<F, Fut>(options: PgOptions, body: F)
where
    F: FnOnce(PgStore, String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = reachable().await else {
        return;
    };
    let schema = fresh_schema();
    let store = connect(
        &url,
        PgOptions {
            schema: Some(schema.clone()),
            ..options
        },
    )
    .await;
    // Run on a task of its own so a panic comes back as a JoinError and cleanup still runs.
    let outcome = tokio::spawn(body(store.clone(), url, schema)).await;
    let dropped = store.drop_schema().await;
    store.close().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
    dropped.expect("drop the test schema");
}
