BEGIN;
ALTER TABLE orders ADD COLUMN gift_message text;
COMMENT ON COLUMN orders.gift_message IS 'Printed on the packing slip';
COMMIT;
