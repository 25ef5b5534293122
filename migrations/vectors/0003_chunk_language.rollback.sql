ALTER TABLE document_chunks DROP COLUMN IF EXISTS lang;
