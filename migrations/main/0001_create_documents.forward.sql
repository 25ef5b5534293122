-- The documents application: authors write documents; legacy_notes predates both.
CREATE TABLE IF NOT EXISTS authors (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE
);
CREATE TABLE IF NOT EXISTS documents (
    id bigserial PRIMARY KEY,
    author_id bigint NOT NULL REFERENCES authors (id),
    title text NOT NULL,
    body text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS legacy_notes (
    id serial PRIMARY KEY,
    document_id bigint REFERENCES documents (id),
    note text NOT NULL
);
