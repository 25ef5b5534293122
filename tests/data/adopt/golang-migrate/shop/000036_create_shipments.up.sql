CREATE TABLE shipments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    carrier text NOT NULL,
    tracking_code text,
    shipped_at timestamptz
);
