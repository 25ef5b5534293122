-- migrate:up
ALTER TABLE books ADD COLUMN isbn text;

-- migrate:down
ALTER TABLE books DROP COLUMN isbn;
