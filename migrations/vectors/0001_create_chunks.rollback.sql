DROP TABLE IF EXISTS document_chunks;
