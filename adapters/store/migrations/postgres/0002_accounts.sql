-- The account directory (passage_core::ports::AccountDirectory), as in
-- migrations/sqlite/0002_accounts.sql. The email constraint is named so the store can tell
-- "another account already uses that address" from other violations.
CREATE TABLE accounts (
    account_id   TEXT    PRIMARY KEY,
    email        TEXT    NOT NULL CHECK (email = lower(email)),
    display_name TEXT    NOT NULL,
    phone        TEXT,
    password_phc TEXT    NOT NULL,
    enabled      BOOLEAN NOT NULL,
    updated_at   BIGINT  NOT NULL,
    CONSTRAINT accounts_email_key UNIQUE (email)
);
