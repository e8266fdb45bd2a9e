-- The deployment's audit public key (Ed25519, derived from its secret), recorded by the
-- first command that writes to this database. A node started with another secret is
-- refused at once, before it seals or hashes anything under a key the others cannot read,
-- instead of only once a signed checkpoint exists. Public: it verifies, it cannot sign.
CREATE TABLE deployment_key (
    singleton        INTEGER PRIMARY KEY CHECK (singleton = 1),
    audit_public_key TEXT    NOT NULL,
    recorded_at      INTEGER  NOT NULL
);
