-- Seeds applied to the account directory, each at most once: a seeded account that is
-- missing later was erased (`passage subjects erase`) and must not come back.
CREATE TABLE directory_seeds (
    name      TEXT    PRIMARY KEY,
    seeded_at INTEGER NOT NULL
) STRICT;

-- A store opened before this table existed was seeded already if it holds any account or
-- any event (its demo accounts may all have been erased since).
INSERT INTO directory_seeds (name, seeded_at)
SELECT 'demo', 0
WHERE EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM events);
