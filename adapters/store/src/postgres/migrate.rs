//! The PostgreSQL migration runner (see [`crate::migrations`] for the shared part).
//!
//! Several nodes may start at once against a fresh database. Everything happens in one
//! transaction that first takes a transaction-scoped advisory lock keyed by the schema
//! name, so concurrent runners for the same schema queue up and each later one finds the
//! work done; runners for other schemas (parallel tests) do not wait for each other.
//! PostgreSQL DDL is transactional, so a failing migration leaves the schema as it was.

use crate::error::Error;
use crate::migrations::{Migration, checksum, current, pending};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, Row};

/// Every migration this build knows, in order. Never edit an applied one: add a new file.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../migrations/postgres/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "accounts",
        sql: include_str!("../../migrations/postgres/0002_accounts.sql"),
    },
    Migration {
        version: 3,
        name: "subjects_sessions",
        sql: include_str!("../../migrations/postgres/0003_subjects_sessions.sql"),
    },
    Migration {
        version: 4,
        name: "stalls",
        sql: include_str!("../../migrations/postgres/0004_stalls.sql"),
    },
    Migration {
        version: 5,
        name: "checkpoints",
        sql: include_str!("../../migrations/postgres/0005_checkpoints.sql"),
    },
    Migration {
        version: 6,
        name: "search",
        sql: include_str!("../../migrations/postgres/0006_search.sql"),
    },
    Migration {
        version: 7,
        name: "operators",
        sql: include_str!("../../migrations/postgres/0007_operators.sql"),
    },
    Migration {
        version: 8,
        name: "operator_sessions",
        sql: include_str!("../../migrations/postgres/0008_operator_sessions.sql"),
    },
    Migration {
        version: 9,
        name: "journey_keys",
        sql: include_str!("../../migrations/postgres/0009_journey_keys.sql"),
    },
    Migration {
        version: 10,
        name: "directory_seeds",
        sql: include_str!("../../migrations/postgres/0010_directory_seeds.sql"),
    },
    Migration {
        version: 11,
        name: "session_password",
        sql: include_str!("../../migrations/postgres/0011_session_password.sql"),
    },
    Migration {
        version: 12,
        name: "send_budgets",
        sql: include_str!("../../migrations/postgres/0012_send_budgets.sql"),
    },
    Migration {
        version: 13,
        name: "rate_windows",
        sql: include_str!("../../migrations/postgres/0013_rate_windows.sql"),
    },
    Migration {
        version: 14,
        name: "deployment_key",
        sql: include_str!("../../migrations/postgres/0014_deployment_key.sql"),
    },
];

/// The advisory lock key of a schema's migrations: derived from its name so every node
/// computes the same one without coordination.
fn lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("passage-migrate\0{schema}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

/// Brings `schema` (created if missing) up to date, or, with `None`, the schema the
/// connection's search_path resolves to. Returns the schema's name.
pub(crate) async fn run(
    conn: &mut PgConnection,
    schema: Option<&str>,
    now_ms: i64,
) -> Result<String, Error> {
    let mut tx = conn.begin().await?;
    let (schema, create) = match schema {
        Some(s) => (s.to_owned(), true),
        None => (
            sqlx::query_scalar::<_, Option<String>>("SELECT current_schema()")
                .fetch_one(&mut *tx)
                .await?
                .ok_or(Error::NoSchema)?,
            false,
        ),
    };
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(&schema))
        .execute(&mut *tx)
        .await?;
    // Only a schema of our own is created: the search_path's one exists already, and
    // CREATE SCHEMA would demand the CREATE privilege on the database even then. The name
    // was validated (letters, digits, underscores), so quoting it is enough.
    if create {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT   NOT NULL,
             checksum   BYTEA  NOT NULL,
             applied_at BIGINT NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await?;

    let applied = applied(&mut tx).await?;
    for m in pending(&applied, MIGRATIONS)? {
        let wrap = |source| Error::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(wrap)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(wrap)?;
        tracing::info!(version = m.version, name = m.name, %schema, "applied migration");
    }
    tx.commit().await?;
    Ok(schema)
}

/// For a read-only handle: checks that the connection's schema is exactly what this build
/// knows, with reads only (a role with SELECT alone may run it). Returns the schema's name.
pub(crate) async fn check(conn: &mut PgConnection, schema: Option<&str>) -> Result<String, Error> {
    let schema = match schema {
        Some(s) => s.to_owned(),
        None => sqlx::query_scalar::<_, Option<String>>("SELECT current_schema()")
            .fetch_one(&mut *conn)
            .await?
            .ok_or(Error::NoSchema)?,
    };
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('schema_migrations')::text")
        .fetch_one(&mut *conn)
        .await?;
    if table.is_none() {
        return Err(Error::NotAStore);
    }
    let applied = applied(conn).await?;
    current(&applied, MIGRATIONS)?;
    Ok(schema)
}

/// The `(version, name, checksum)` rows of `schema_migrations`, in order.
async fn applied(conn: &mut PgConnection) -> Result<Vec<(i64, String, Vec<u8>)>, Error> {
    let rows =
        sqlx::query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("version")?,
                row.try_get("name")?,
                row.try_get("checksum")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_contiguous_from_one() {
        crate::migrations::assert_contiguous(super::MIGRATIONS);
    }

    #[test]
    fn lock_keys_differ_by_schema() {
        assert_ne!(super::lock_key("a"), super::lock_key("b"));
        assert_eq!(super::lock_key("a"), super::lock_key("a"));
    }
}
