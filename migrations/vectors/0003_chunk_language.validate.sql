SELECT count(*) = 0 FROM document_chunks WHERE lang IS NULL;
