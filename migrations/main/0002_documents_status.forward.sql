-- Publishing workflow: every document gets a status. NOT NULL with a default is a
-- metadata-only change since PostgreSQL 11; the index is built without blocking writes.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'draft';
CREATE INDEX CONCURRENTLY IF NOT EXISTS documents_status_idx ON documents (status);
