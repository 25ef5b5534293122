-- +goose Up
-- Reserved: this version shipped as a data fix on another database only.

-- +goose Down
