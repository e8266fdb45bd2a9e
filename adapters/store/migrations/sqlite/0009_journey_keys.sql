-- Crypto-shredding (ADR 0005): one personal-data key per journey, wrapped under a key
-- derived from the deployment's secret. Erasure sets data_key to NULL and says when and why;
-- the events keep their sealed values, which then read "[erased]".
CREATE TABLE journey_keys (
    journey_id    TEXT    PRIMARY KEY,
    data_key      TEXT,
    created_at    INTEGER NOT NULL,
    erased_at     INTEGER,
    erased_reason TEXT,
    CHECK ((data_key IS NULL) = (erased_at IS NOT NULL))
) STRICT;

-- Retention looks for finished journeys by start time.
CREATE INDEX journeys_started ON journeys (started_at);
