"""PostgreSQL and pgvector: the adapter, SQL analysis, the backup scope from the catalog, COPY backups."""
