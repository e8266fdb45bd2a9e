-- The event log and everything written in the same transaction as it (PostgreSQL).
--
-- The same tables as migrations/sqlite/0001_event_log.sql, with these differences:
--   * ids are native UUID columns;
--   * payload, metadata and outcomes are TEXT, not jsonb: the hash chain covers the exact
--     bytes the engine wrote, and jsonb would normalise them (key order, whitespace);
--   * times stay BIGINT milliseconds since the Unix epoch (passage_core::time::Timestamp),
--     exactly what the ports carry, so a value reads back as it was written;
--   * `log_head` holds the head of the global log (see docs/adr/0004-postgres-global-order.md).
--
-- Every table lives in the schema the store was opened with (its search_path).

-- The global, append-only event log. One journey is one stream.
--   position        global order, gap-free from 1 and assigned in commit order: every
--                   append transaction locks the single `log_head` row first and moves it
--                   before COMMIT, so no sequence is involved and no position is ever
--                   skipped or committed late.
--   stream_version  place in the journey, from 1. The UNIQUE constraint is the last line of
--                   defence against two writers appending the same version; the store maps
--                   its violation to a Conflict.
--   prev_hash/hash  the hash chain (passage_core::chain).
CREATE TABLE events (
    position       BIGINT  PRIMARY KEY CHECK (position >= 1),
    stream         UUID    NOT NULL,
    stream_version BIGINT  NOT NULL CHECK (stream_version >= 1),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version BETWEEN 0 AND 65535),
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    BIGINT  NOT NULL,
    command_id     UUID    NOT NULL,
    prev_hash      BYTEA   NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash           BYTEA   NOT NULL CHECK (octet_length(hash) = 32),
    CONSTRAINT events_stream_version_key UNIQUE (stream, stream_version)
);

-- The head of the log: the last position and its hash, one row. Appenders take it FOR
-- UPDATE before they look at anything else and update it before COMMIT. That serializes
-- appends across every node (positions are handed out in commit order, the chain gets its
-- predecessor) and makes the duplicate and version checks that follow race-free.
CREATE TABLE log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    position  BIGINT  NOT NULL CHECK (position >= 0),
    hash      BYTEA   NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO log_head (singleton, position, hash)
VALUES (TRUE, 0, decode(repeat('00', 32), 'hex'));

-- Idempotency: one row per command that was appended (also commands that appended no
-- event). A retry with the same command_id stores nothing and gets `outcome` back.
CREATE TABLE commands (
    command_id  UUID   PRIMARY KEY,
    stream      UUID   NOT NULL,
    outcome     TEXT   NOT NULL,
    recorded_at BIGINT NOT NULL
);

-- Transactional outbox, as in SQLite. leased_until is also the claim's fencing token:
-- completing or rescheduling requires the token the claim returned.
CREATE TABLE outbox (
    effect_id    UUID    PRIMARY KEY,
    stream       UUID    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    available_at BIGINT  NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    leased_until BIGINT,
    last_error   TEXT,
    created_at   BIGINT  NOT NULL,
    done_at      BIGINT
);

-- Claims (FOR UPDATE SKIP LOCKED) and next_due look only at pending rows in due order.
CREATE INDEX outbox_pending_due ON outbox (available_at, created_at, effect_id)
    WHERE status = 'pending';

-- Durable timers: each fires once by sending a command to its journey.
CREATE TABLE timers (
    timer_id     UUID   PRIMARY KEY,
    stream       UUID   NOT NULL,
    fire_at      BIGINT NOT NULL,
    payload      TEXT   NOT NULL,
    status       TEXT   NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired')),
    leased_until BIGINT,
    created_at   BIGINT NOT NULL,
    fired_at     BIGINT
);

CREATE INDEX timers_pending_due ON timers (fire_at, created_at, timer_id)
    WHERE status = 'pending';

-- Workflow definitions by content hash; rows are never updated.
CREATE TABLE definitions (
    content_hash  TEXT   PRIMARY KEY,
    definition_id TEXT   NOT NULL,
    version       BIGINT NOT NULL CHECK (version >= 0),
    source        TEXT   NOT NULL,
    saved_at      BIGINT NOT NULL
);

-- Read model: one searchable row per journey, upserted in the append's transaction.
CREATE TABLE journeys (
    journey_id         UUID   PRIMARY KEY,
    definition_id      TEXT   NOT NULL,
    definition_version BIGINT NOT NULL CHECK (definition_version >= 0),
    status             TEXT   NOT NULL,
    current_step       TEXT,
    email_masked       TEXT,
    started_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    version            BIGINT NOT NULL CHECK (version >= 0)
);

CREATE INDEX journeys_updated ON journeys (updated_at DESC, journey_id);
CREATE INDEX journeys_status_updated ON journeys (status, updated_at DESC, journey_id);
CREATE INDEX journeys_definition_updated ON journeys (definition_id, updated_at DESC, journey_id);
