CREATE INDEX products_price_idx ON products (price_cents) WHERE stock > 0;
