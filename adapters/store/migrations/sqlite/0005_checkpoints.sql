-- Signed checkpoints of the hash chain's head (docs/audit.md): position, the hash of the
-- event there, when, and an Ed25519 signature over the three by the deployment's audit key.
-- A rewrite of the whole chain changes the hash at a checkpointed position; a truncation
-- removes a checkpointed position. Published copies (printed, posted) survive both.
CREATE TABLE checkpoints (
    position   INTEGER PRIMARY KEY CHECK (position >= 1),
    hash       BLOB    NOT NULL CHECK (length(hash) = 32),
    created_at INTEGER NOT NULL,
    public_key TEXT    NOT NULL,
    signature  TEXT    NOT NULL
) STRICT;
