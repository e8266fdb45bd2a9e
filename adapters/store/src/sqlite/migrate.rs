//! The SQLite migration runner (see [`crate::migrations`] for the shared part).

use crate::error::Error;
use crate::migrations::{Migration, checksum, current, pending};
use sqlx::{Connection, Row, SqliteConnection};

/// Every migration this build knows, in order. Never edit an applied one: add a new file
/// (open refuses a database whose applied migration text changed).
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_log",
        sql: include_str!("../../migrations/sqlite/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "accounts",
        sql: include_str!("../../migrations/sqlite/0002_accounts.sql"),
    },
    Migration {
        version: 3,
        name: "subjects_sessions",
        sql: include_str!("../../migrations/sqlite/0003_subjects_sessions.sql"),
    },
    Migration {
        version: 4,
        name: "stalls",
        sql: include_str!("../../migrations/sqlite/0004_stalls.sql"),
    },
    Migration {
        version: 5,
        name: "checkpoints",
        sql: include_str!("../../migrations/sqlite/0005_checkpoints.sql"),
    },
    Migration {
        version: 6,
        name: "search",
        sql: include_str!("../../migrations/sqlite/0006_search.sql"),
    },
    Migration {
        version: 7,
        name: "operators",
        sql: include_str!("../../migrations/sqlite/0007_operators.sql"),
    },
    Migration {
        version: 8,
        name: "operator_sessions",
        sql: include_str!("../../migrations/sqlite/0008_operator_sessions.sql"),
    },
    Migration {
        version: 9,
        name: "journey_keys",
        sql: include_str!("../../migrations/sqlite/0009_journey_keys.sql"),
    },
    Migration {
        version: 10,
        name: "directory_seeds",
        sql: include_str!("../../migrations/sqlite/0010_directory_seeds.sql"),
    },
    Migration {
        version: 11,
        name: "session_password",
        sql: include_str!("../../migrations/sqlite/0011_session_password.sql"),
    },
    Migration {
        version: 12,
        name: "send_budgets",
        sql: include_str!("../../migrations/sqlite/0012_send_budgets.sql"),
    },
    Migration {
        version: 13,
        name: "deployment_key",
        sql: include_str!("../../migrations/sqlite/0013_deployment_key.sql"),
    },
    Migration {
        version: 14,
        name: "log_head",
        sql: include_str!("../../migrations/sqlite/0014_log_head.sql"),
    },
];

/// Applies the missing migrations, all in one `BEGIN IMMEDIATE` transaction.
///
/// The write lock is taken before `schema_migrations` is read, so two processes opening a
/// fresh file at the same moment serialize here: the second one finds everything applied.
/// SQLite DDL is transactional, so a failing migration leaves the file as it was.
pub(crate) async fn run(conn: &mut SqliteConnection, now_ms: i64) -> Result<(), Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             checksum   BLOB    NOT NULL,
             applied_at INTEGER NOT NULL
         ) STRICT",
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
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m.sql))
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(wrap)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    tx.commit().await?;
    Ok(())
}

/// For a read-only handle: checks that the file's schema is exactly what this build knows,
/// with reads only.
pub(crate) async fn check(conn: &mut SqliteConnection) -> Result<(), Error> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if table.is_none() {
        return Err(Error::NotAStore);
    }
    let applied = applied(conn).await?;
    current(&applied, MIGRATIONS)
}

/// The `(version, name, checksum)` rows of `schema_migrations`, in order.
async fn applied(conn: &mut SqliteConnection) -> Result<Vec<(i64, String, Vec<u8>)>, Error> {
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
}
