CREATE DOMAIN email_address AS text CHECK (VALUE ~ '^[^@\s]+@[^@\s]+$');
ALTER TABLE users ALTER COLUMN email TYPE email_address;
