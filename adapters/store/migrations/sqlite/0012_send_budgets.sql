-- Sends counted against the channels' budgets (R17, R18), shared by every process on this
-- file (`passage serve` and `passage bot` both deliver) and kept across restarts. One row
-- per budget and counted message: `budget_key` is a keyed hash of the budget (its recipient
-- never stored, R50), `token` the message's idempotency key (a retry is not counted twice).
-- Rows whose window has passed are swept.
CREATE TABLE send_budget_uses (
    budget_key TEXT    NOT NULL,
    token      TEXT    NOT NULL,
    used_at    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (budget_key, token)
) WITHOUT ROWID;

CREATE INDEX send_budget_uses_by_expiry ON send_budget_uses (expires_at);
