ALTER TABLE payments DROP COLUMN currency;
