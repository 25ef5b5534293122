DROP TRIGGER products_touch ON products;
ALTER TABLE products DROP COLUMN updated_at;
