SELECT to_regclass('document_chunks') IS NOT NULL;
