SELECT count(*) = 0 FROM documents WHERE status IS NULL;
-- A failed CONCURRENTLY build leaves an INVALID index behind: refuse it.
SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('documents_status_idx');
