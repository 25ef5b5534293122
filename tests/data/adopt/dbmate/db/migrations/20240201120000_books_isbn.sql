-- migrate:up transaction:false
ALTER TABLE books ADD COLUMN isbn text;
CREATE UNIQUE INDEX CONCURRENTLY books_isbn_key ON books (isbn);

-- migrate:down
DROP INDEX books_isbn_key;
ALTER TABLE books DROP COLUMN isbn;
