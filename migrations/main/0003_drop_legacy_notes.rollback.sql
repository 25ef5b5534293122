-- Recreates the shape; the rows come back with 'polyshift backup restore <id>'.
CREATE TABLE IF NOT EXISTS legacy_notes (
    id serial PRIMARY KEY,
    document_id bigint REFERENCES documents (id),
    note text NOT NULL
);
