-- Chat-ops stall detection; the columns mean what they mean in
-- migrations/sqlite/0004_stalls.sql.
ALTER TABLE journeys ADD COLUMN stall_at BIGINT;
ALTER TABLE journeys ADD COLUMN stall_keep BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX journeys_stall_due ON journeys (stall_at) WHERE stall_at IS NOT NULL;
