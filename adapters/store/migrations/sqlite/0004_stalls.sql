-- Chat-ops stall detection: when the scanner should look at a journey next.
--   stall_at    ms; NULL = never (finished journeys, steps without `stall_after`, unknown
--               addresses). The partial index makes "what is due" a range scan over due
--               journeys only, whatever the number of healthy ones.
--   stall_keep  1 when the last append was not progress by the person (a delivery, a
--               timer): the upsert then keeps the stored stall_at.
ALTER TABLE journeys ADD COLUMN stall_at INTEGER;
ALTER TABLE journeys ADD COLUMN stall_keep INTEGER NOT NULL DEFAULT 0 CHECK (stall_keep IN (0, 1));
CREATE INDEX journeys_stall_due ON journeys (stall_at) WHERE stall_at IS NOT NULL;
