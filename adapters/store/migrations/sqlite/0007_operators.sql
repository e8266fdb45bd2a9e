-- Operators of the support console and the support API, apart from portal users
-- (docs/audit.md). Passwords are argon2id PHC strings; API tokens are kept as SHA-256 only.
--   role        support | auditor | admin (passage_core::roles)
--   token_id    the first 12 hex digits of the hash: how a token is listed and revoked
CREATE TABLE operators (
    name         TEXT    PRIMARY KEY,
    role         TEXT    NOT NULL CHECK (role IN ('support', 'auditor', 'admin')),
    password_phc TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
) STRICT;

CREATE TABLE api_tokens (
    token_hash TEXT    PRIMARY KEY,
    token_id   TEXT    NOT NULL UNIQUE,
    operator   TEXT    NOT NULL REFERENCES operators (name),
    role       TEXT    NOT NULL CHECK (role IN ('support', 'auditor', 'admin')),
    label      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
