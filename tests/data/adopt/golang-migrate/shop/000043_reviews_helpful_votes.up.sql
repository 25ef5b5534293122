ALTER TABLE reviews ADD COLUMN helpful_votes integer NOT NULL DEFAULT 0;
