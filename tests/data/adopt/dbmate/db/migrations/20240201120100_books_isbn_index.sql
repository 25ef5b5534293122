-- migrate:up transaction:false
CREATE UNIQUE INDEX CONCURRENTLY books_isbn_key ON books (isbn);

-- migrate:down
DROP INDEX books_isbn_key;
