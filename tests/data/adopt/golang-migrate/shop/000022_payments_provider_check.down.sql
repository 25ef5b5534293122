ALTER TABLE payments DROP CONSTRAINT payments_provider_check;
