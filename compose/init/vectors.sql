-- The sample application keeps its embeddings in their own database (store 'vectors').
CREATE DATABASE vectors;
