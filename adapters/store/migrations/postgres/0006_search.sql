-- Support search by masked address; see migrations/sqlite/0006_search.sql.
CREATE INDEX journeys_email_updated ON journeys (email_masked, updated_at DESC, journey_id)
    WHERE email_masked IS NOT NULL;
