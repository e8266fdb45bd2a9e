//! PostgreSQL for the end-to-end tests: the server named by `PASSAGE_TEST_DATABASE_URL`
//! (default `postgres://root@127.0.0.1:5432/test`), and a fresh database per test on it.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// A connection to the server's `postgres` database, for creating and dropping others.
pub struct ScratchServer {
    /// The URL up to the database name: `postgres://user@host:port`.
    base: String,
    admin: PgPool,
}

impl ScratchServer {
    /// Connects to the test server. Unreachable outside CI: prints a loud SKIPPED line and
    /// returns `None`, so the caller returns; in CI (`CI=true`) it panics instead, so that no
    /// test passes silently without the database it is about.
    pub async fn connect() -> Option<Self> {
        let server = std::env::var("PASSAGE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let base = server
            .rsplit_once('/')
            .expect("PASSAGE_TEST_DATABASE_URL ends with /<database>")
            .0
            .to_owned();
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&format!("{base}/postgres"))
            .await;
        match admin {
            Ok(admin) => Some(Self { base, admin }),
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "\n*** SKIPPED: PostgreSQL not reachable at {server} ({e}); set PASSAGE_TEST_DATABASE_URL ***\n"
                );
                None
            }
            Err(e) => panic!("PostgreSQL not reachable at {server} in CI: {e}"),
        }
    }

    /// Drops database `name` if a previous run left it, creates it empty, and returns its
    /// URL. `name` must be a plain identifier (tests build it from letters, digits, `_`).
    pub async fn fresh_database(&self, name: &str) -> String {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "not a plain database name: {name}"
        );
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&self.admin)
                .await
                .unwrap_or_else(|e| panic!("prepare database {name}: {e}"));
        }
        self.url(name)
    }

    /// The URL of database `name` on the test server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// The server's databases whose names match the SQL `LIKE` pattern, sorted.
    pub async fn databases_like(&self, pattern: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1")
            .bind(pattern)
            .fetch_all(&self.admin)
            .await
            .unwrap_or_else(|e| panic!("list databases like {pattern}: {e}"))
    }

    /// Drops database `name` (cleanup at the end of a test).
    pub async fn drop_database(&self, name: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&self.admin)
        .await
        .unwrap_or_else(|e| panic!("drop database {name}: {e}"));
    }
}
