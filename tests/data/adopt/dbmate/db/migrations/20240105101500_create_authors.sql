-- migrate:up
CREATE TABLE authors (
    id serial PRIMARY KEY,
    name text NOT NULL
);

-- migrate:down
DROP TABLE authors;
