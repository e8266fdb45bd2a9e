-- Account-level limits (R16) and revocation after a reset (R44, R45).
--
-- journeys.subject   pseudonym of the address the journey is for (HMAC under the
--                    deployment's secret, passage_core::secrets::Keys::subject): the same
--                    for known and unknown addresses, so limits keyed on it leak nothing (R1).
-- journeys.failures  failed code attempts over the journey; R16 sums them per subject over
--                    the last hour, through the index below (cost independent of the number
--                    of other addresses' journeys).
ALTER TABLE journeys ADD COLUMN subject TEXT;
ALTER TABLE journeys ADD COLUMN failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0);
CREATE INDEX journeys_subject_updated ON journeys (subject, updated_at DESC)
    WHERE subject IS NOT NULL;

-- When the stored password was chosen: a reset applied late never overwrites one completed
-- after it (two concurrent resets end with the later password, attack 15).
ALTER TABLE accounts ADD COLUMN password_changed_at INTEGER;

-- Portal sessions. Only the SHA-256 of the token is stored (a copy of the file is not a
-- set of sessions).
--   kind        'sign-in' (password) or 'recovery' (handed out at the end of a reset; not
--               a step-up for changing email, phone or factors, R47)
--   amr         how the person proved who they are, space separated ('pwd', 'email-otp sms-otp')
--   journey_id  the reset that minted a recovery session; R45 revokes every other session
CREATE TABLE sessions (
    session_hash   TEXT    PRIMARY KEY,
    account_id     TEXT    NOT NULL,
    journey_id     TEXT,
    kind           TEXT    NOT NULL CHECK (kind IN ('sign-in', 'recovery')),
    amr            TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT
) STRICT;

CREATE INDEX sessions_live_by_account ON sessions (account_id) WHERE revoked_at IS NULL;
