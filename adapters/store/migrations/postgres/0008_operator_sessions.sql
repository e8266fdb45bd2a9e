-- Console sign-ins; see migrations/sqlite/0008_operator_sessions.sql.
CREATE TABLE operator_sessions (
    session_hash TEXT   PRIMARY KEY,
    operator     TEXT   NOT NULL REFERENCES operators (name),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
