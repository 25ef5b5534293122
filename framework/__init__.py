"""polyshift: safe, reversible migrations across PostgreSQL, pgvector, Neo4j and Redis."""

__version__ = "0.1.0"
