-- A sign-in session's fingerprint of the password hash it was verified against
-- (`secrets::password_fingerprint`): the portal refuses it once the account's password
-- changed, even if it was created during the reset's revocation (R45). NULL for recovery
-- sessions and for sessions created before this column.
ALTER TABLE sessions ADD COLUMN password_fp TEXT;
