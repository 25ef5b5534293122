-- +goose Up
CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    handle text NOT NULL UNIQUE,
    bio text
);

-- +goose Down
DROP TABLE accounts;
