"""What defines a migration: records, contracts, configuration and the files on disk."""
