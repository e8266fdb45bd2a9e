-- The account directory (passage_core::ports::AccountDirectory) for the embedded setup: the
-- identity store a reset changes. Full addresses live only here, never in events (R50).
--   email         normalized (passage_core::mask::normalize_email: trimmed, lowercase) before
--                 it is written, so equality is the lookup and UNIQUE means one account per
--                 address. The CHECK catches a writer that forgot to normalize ASCII case.
--   password_phc  argon2id PHC string; never leaves this table except to verify or replace it.
--   enabled       0/1; a disabled account is found but cannot be reset.
CREATE TABLE accounts (
    account_id   TEXT    PRIMARY KEY,
    email        TEXT    NOT NULL UNIQUE CHECK (email = lower(email)),
    display_name TEXT    NOT NULL,
    phone        TEXT,
    password_phc TEXT    NOT NULL,
    enabled      INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    updated_at   INTEGER NOT NULL
) STRICT;
