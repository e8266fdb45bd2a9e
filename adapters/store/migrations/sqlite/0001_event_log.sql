-- The event log and everything written in the same transaction as it.
--
-- Conventions for every table in this schema:
--   * ids (journeys, commands, effects, timers) are UUIDs as lowercase hyphenated TEXT, so
--     the file stays readable with the sqlite3 shell during an incident;
--   * times are INTEGER milliseconds since the Unix epoch, UTC (passage_core::time::Timestamp);
--   * tables are STRICT so a wrong type is refused at write time instead of being read back
--     as something else later.

-- The global, append-only event log. One journey is one stream.
--   position        global order, gap-free from 1. Assigned as max+1 inside the single write
--                   transaction (BEGIN IMMEDIATE), never by AUTOINCREMENT, so a rolled back
--                   append leaves no hole; INTEGER PRIMARY KEY makes it the rowid.
--   stream_version  place in the journey, from 1; UNIQUE(stream, stream_version) is the
--                   last line of defence against two writers appending the same version.
--   prev_hash/hash  the hash chain (passage_core::chain): hash = SHA-256(prev_hash ||
--                   canonical event). prev_hash of position 1 is 32 zero bytes.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version >= 1),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version BETWEEN 0 AND 65535),
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL,
    command_id     TEXT    NOT NULL,
    prev_hash      BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream, stream_version)
) STRICT;

-- Idempotency: one row per command that was appended (also commands that appended no
-- event). A retry with the same command_id stores nothing and gets `outcome` back.
CREATE TABLE commands (
    command_id  TEXT    PRIMARY KEY,
    stream      TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL
) STRICT;

-- Transactional outbox: effects (send a code, place a call, apply a password) written with
-- the events that caused them and delivered after commit by a dispatcher.
--   status        pending -> done (delivered) or dead (gave up); only pending rows are claimed.
--   attempts      failed deliveries so far (reschedule adds one).
--   leased_until  a dispatcher's claim; once it lapses another dispatcher may take the row
--                 over (a worker that died mid-delivery). NULL = not leased.
CREATE TABLE outbox (
    effect_id    TEXT    PRIMARY KEY,
    stream       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    available_at INTEGER NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    leased_until INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    done_at      INTEGER
) STRICT;

-- Claims and next_due look only at pending rows in due order.
CREATE INDEX outbox_pending_due ON outbox (available_at) WHERE status = 'pending';

-- Durable timers: each fires once by sending a command to its journey.
--   status        pending -> fired. leased_until works as in the outbox.
CREATE TABLE timers (
    timer_id     TEXT    PRIMARY KEY,
    stream       TEXT    NOT NULL,
    fire_at      INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fired')),
    leased_until INTEGER,
    created_at   INTEGER NOT NULL,
    fired_at     INTEGER
) STRICT;

CREATE INDEX timers_pending_due ON timers (fire_at) WHERE status = 'pending';

-- Workflow definitions by content hash, so a journey can always be replayed with the exact
-- definition it started under, even after the file on disk changed. Rows are never updated.
CREATE TABLE definitions (
    content_hash  TEXT    PRIMARY KEY,
    definition_id TEXT    NOT NULL,
    version       INTEGER NOT NULL CHECK (version >= 0),
    source        TEXT    NOT NULL,
    saved_at      INTEGER NOT NULL
) STRICT;

-- Read model: one searchable row per journey (passage_core::ports::JourneySummary), upserted
-- in the same transaction as the journey's events so a listing is never behind the log.
CREATE TABLE journeys (
    journey_id         TEXT    PRIMARY KEY,
    definition_id      TEXT    NOT NULL,
    definition_version INTEGER NOT NULL CHECK (definition_version >= 0),
    status             TEXT    NOT NULL,
    current_step       TEXT,
    email_masked       TEXT,
    started_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    version            INTEGER NOT NULL CHECK (version >= 0)
) STRICT;

-- Listings are "newest updated first", optionally filtered by status or definition: each
-- index serves one filter and the ordering without a sort step.
CREATE INDEX journeys_updated ON journeys (updated_at DESC);
CREATE INDEX journeys_status_updated ON journeys (status, updated_at DESC);
CREATE INDEX journeys_definition_updated ON journeys (definition_id, updated_at DESC);
