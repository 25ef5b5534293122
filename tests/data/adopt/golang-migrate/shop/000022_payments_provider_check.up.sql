ALTER TABLE payments ADD CONSTRAINT payments_provider_check CHECK (provider IN ('card', 'transfer', 'voucher'));
