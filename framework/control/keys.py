"""The control plane's names that both of its paths share: the schema's version, the advisory
lock keys and the table names. Kept apart from ``schema`` (SQLAlchemy's table definitions) so that
``database``, which reads and writes on the driver itself, knows them without importing SQLAlchemy."""

from __future__ import annotations

from enum import IntEnum

SCHEMA_VERSION = 2

# The two-int advisory lock keys of the control plane ("psCP"); the store adapters use "poly".
LOCK_CLASS = 0x70734350


class AdvisoryLock(IntEnum):
    SCHEMA = 1
    AUDIT = 2


# Session-level advisory locks a run holds on PostgreSQL while its process lives (see runs.py).
RUN_LOCK_CLASS = 0x70735255  # "psRU"

RUNS = "polyshift_runs"
JOURNAL = "polyshift_journal"
AUDIT = "polyshift_audit"
BACKUPS = "polyshift_backups"
SCHEMA = "polyshift_schema"
FLAGS = "polyshift_flags"
FLAGS_VERSION = "polyshift_flags_version"
