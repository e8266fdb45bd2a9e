-- The head of the global log, moved by every append in the writer's transaction, as on
-- PostgreSQL: `audit verify` checks that the events reach it with its hash, so events cut
-- from the end after the newest checkpoint are caught unless this row is edited too.
-- Starts at the log's current last event (an empty log: position 0, a zero hash).
CREATE TABLE log_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    position  INTEGER NOT NULL CHECK (position >= 0),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;
INSERT INTO log_head (singleton, position, hash)
SELECT 1,
       COALESCE((SELECT position FROM events ORDER BY position DESC LIMIT 1), 0),
       COALESCE((SELECT hash FROM events ORDER BY position DESC LIMIT 1), zeroblob(32));
