-- Support search by masked address (docs/audit.md): newest first among one address's
-- journeys, through an index rather than a scan of the read model.
CREATE INDEX journeys_email_updated ON journeys (email_masked, updated_at DESC)
    WHERE email_masked IS NOT NULL;
