ALTER TABLE orders DROP COLUMN shipping_address_id;
