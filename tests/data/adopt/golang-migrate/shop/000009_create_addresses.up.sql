CREATE TABLE addresses (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    line1 text NOT NULL,
    city text NOT NULL,
    postcode text NOT NULL,
    country char(2) NOT NULL
);
