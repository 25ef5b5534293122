-- migrate:up
CREATE TABLE books (
    id serial PRIMARY KEY,
    author_id integer NOT NULL REFERENCES authors (id) ON DELETE CASCADE,
    title text NOT NULL,
    published date
);
CREATE INDEX books_author_id_idx ON books (author_id);

-- migrate:down
DROP TABLE books;
