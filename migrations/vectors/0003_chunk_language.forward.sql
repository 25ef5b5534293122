-- Per-chunk language for the notes export; a metadata-only change (constant default).
ALTER TABLE document_chunks ADD COLUMN IF NOT EXISTS lang text NOT NULL DEFAULT 'en';
