-- Operators and API tokens; see migrations/sqlite/0007_operators.sql.
CREATE TABLE operators (
    name         TEXT    PRIMARY KEY,
    role         TEXT    NOT NULL CHECK (role IN ('support', 'auditor', 'admin')),
    password_phc TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE api_tokens (
    token_hash TEXT   PRIMARY KEY,
    token_id   TEXT   NOT NULL UNIQUE,
    operator   TEXT   NOT NULL REFERENCES operators (name),
    role       TEXT   NOT NULL CHECK (role IN ('support', 'auditor', 'admin')),
    label      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
