-- Sends counted against the channels' budgets (R17, R18), shared by every node on this
-- database so that N nodes do not allow N times a budget. One row per budget and counted
-- message: `budget_key` is a keyed hash of the budget (its recipient never stored, R50),
-- `token` the message's idempotency key (a retry is not counted twice). Rows whose window
-- has passed are swept.
CREATE TABLE send_budget_uses (
    budget_key TEXT   NOT NULL,
    token      UUID   NOT NULL,
    used_at    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (budget_key, token)
);

CREATE INDEX send_budget_uses_by_expiry ON send_budget_uses (expires_at);
