ALTER TABLE reviews DROP COLUMN helpful_votes;
