-- Semantic search: each document is split into chunks, each with an embedding (model v1,
-- 16 dimensions in the sample). Lives in its own database, next to PostgreSQL's 'main'.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS document_chunks (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL,
    chunk int NOT NULL,
    content text NOT NULL,
    embedding vector(16) NOT NULL,
    UNIQUE (document_id, chunk)
);
CREATE INDEX IF NOT EXISTS document_chunks_embedding_hnsw ON document_chunks USING hnsw (embedding vector_l2_ops);
