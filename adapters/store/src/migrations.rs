//! What both embedded migration runners share: the migration list entry, its checksum, and
//! the check of what a database already applied against what this build knows.
//!
//! sqlx's `migrate` feature is not enabled in this workspace (it pulls the macros and a
//! second host SQLite build), and the schemas are small, so each backend's runner is a few
//! lines around [`pending`]: the SQL files under `migrations/<backend>/NNNN_name.sql` are
//! compiled in with `include_str!` and applied in order, each recorded in
//! `schema_migrations` with a checksum of its text.

use crate::error::Error;
use sha2::{Digest, Sha256};

pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

pub(crate) fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// The migrations of `known` that still have to run, given the `(version, name, checksum)`
/// rows of `schema_migrations`. Refuses a database migrated by a newer build (reported
/// first: it explains any other difference too) and one whose applied migration text was
/// edited afterwards.
pub(crate) fn pending<'a>(
    applied: &[(i64, String, Vec<u8>)],
    known: &'a [Migration],
) -> Result<Vec<&'a Migration>, Error> {
    let newest = known.last().map_or(0, |m| m.version);
    if let Some(found) = applied
        .iter()
        .map(|(v, ..)| *v)
        .filter(|v| *v > newest)
        .max()
    {
        return Err(Error::SchemaTooNew {
            found,
            known: newest,
        });
    }
    for (version, name, sum) in applied {
        let edited = known
            .iter()
            .find(|m| m.version == *version)
            .is_none_or(|m| checksum(m.sql) != *sum);
        if edited {
            return Err(Error::MigrationChanged {
                version: *version,
                name: name.clone(),
            });
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|(v, ..)| *v == m.version))
        .collect())
}

/// For a read-only handle: `applied` must be exactly what this build knows (none pending,
/// none unknown, none edited), since it cannot migrate.
pub(crate) fn current(
    applied: &[(i64, String, Vec<u8>)],
    known: &[Migration],
) -> Result<(), Error> {
    let missing = pending(applied, known)?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::SchemaBehind {
        found: applied.iter().map(|(v, ..)| *v).max().unwrap_or(0),
        known: known.last().map_or(0, |m| m.version),
        behind: missing.len(),
    })
}

#[cfg(test)]
pub(crate) fn assert_contiguous(known: &[Migration]) {
    for (i, m) in known.iter().enumerate() {
        assert_eq!(
            m.version,
            i as i64 + 1,
            "migration {} is out of order",
            m.name
        );
    }
}
