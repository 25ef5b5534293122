-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY accounts_search_idx ON accounts (search);

-- +goose Down
DROP INDEX CONCURRENTLY accounts_search_idx;
