CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    amount_cents integer NOT NULL,
    provider text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
