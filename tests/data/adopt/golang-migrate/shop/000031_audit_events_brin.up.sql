CREATE INDEX events_at_brin ON audit.events USING brin (at);
