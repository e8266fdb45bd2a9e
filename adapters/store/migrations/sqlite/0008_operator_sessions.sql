-- Console sign-ins (issue #7). Only the SHA-256 of the cookie's token is stored; signing
-- out, expiry or disabling the operator ends the session.
CREATE TABLE operator_sessions (
    session_hash TEXT    PRIMARY KEY,
    operator     TEXT    NOT NULL REFERENCES operators (name),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) STRICT;
