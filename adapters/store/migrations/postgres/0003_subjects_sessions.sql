-- Account-level limits (R16) and revocation after a reset (R44, R45); the columns mean what
-- they mean in migrations/sqlite/0003_subjects_sessions.sql.
ALTER TABLE journeys ADD COLUMN subject TEXT;
ALTER TABLE journeys ADD COLUMN failures BIGINT NOT NULL DEFAULT 0 CHECK (failures >= 0);
CREATE INDEX journeys_subject_updated ON journeys (subject, updated_at DESC)
    WHERE subject IS NOT NULL;

ALTER TABLE accounts ADD COLUMN password_changed_at BIGINT;

CREATE TABLE sessions (
    session_hash   TEXT    PRIMARY KEY,
    account_id     TEXT    NOT NULL,
    journey_id     TEXT,
    kind           TEXT    NOT NULL CHECK (kind IN ('sign-in', 'recovery')),
    amr            TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    revoked_at     BIGINT,
    revoked_reason TEXT
);

CREATE INDEX sessions_live_by_account ON sessions (account_id) WHERE revoked_at IS NULL;
