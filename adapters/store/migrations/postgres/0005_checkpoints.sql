-- Signed checkpoints of the chain head; see migrations/sqlite/0005_checkpoints.sql.
CREATE TABLE checkpoints (
    position   BIGINT PRIMARY KEY CHECK (position >= 1),
    hash       BYTEA  NOT NULL CHECK (length(hash) = 32),
    created_at BIGINT NOT NULL,
    public_key TEXT   NOT NULL,
    signature  TEXT   NOT NULL
);
