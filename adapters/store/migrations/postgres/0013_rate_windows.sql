-- Per-client request limits (R17) counted for every node at once: one fixed window per key
-- (a keyed hash of what is limited: no client address is stored). UNLOGGED: counters are
-- written on most requests and need no WAL; after a server crash they start again from
-- zero, which only forgives the clients of that moment.
CREATE UNLOGGED TABLE rate_windows (
    window_key TEXT    PRIMARY KEY,
    started_at BIGINT  NOT NULL,
    window_ms  BIGINT  NOT NULL,
    hits       INTEGER NOT NULL,
    -- Whether the latest hit was counted: what that hit's statement reads back.
    admitted   BOOLEAN NOT NULL
);

CREATE INDEX rate_windows_by_end ON rate_windows ((started_at + window_ms));
