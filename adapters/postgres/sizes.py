"""How big a table is, as the catalog estimates it, and when that size makes a lock finding a
refusal. Apart from ``hazards`` (which parses SQL with pglast) so that reading the catalog does not
load the SQL parser (issue 19: ``status`` never parses SQL)."""

from __future__ import annotations

from dataclasses import dataclass

# ``up`` refuses a lock finding on a table at least this big, as pg_class estimates it when the
# migration is planned: past it, holding SHARE or stronger for the whole rewrite, scan or build
# stalls the application for long enough to notice. Below it the finding is information.
LARGE_ROWS = 10_000
LARGE_BYTES = 64 * 2**20
THRESHOLD = "10,000 estimated rows or 64 MiB"


@dataclass(frozen=True)
class TableSize:
    """A table's size as the catalog estimates it (every partition summed).

    ``rows`` is pg_class.reltuples; for a table PostgreSQL has never counted (never vacuumed or
    analyzed) it is the rows actually there, counted up to LARGE_ROWS, or None when even that
    could not be read."""

    rows: float | None
    bytes: int
    counted: bool = False

    @property
    def large(self) -> bool:
        return self.rows is None or self.rows >= LARGE_ROWS or self.bytes >= LARGE_BYTES

    def describe(self) -> str:
        if self.rows is None and not self.bytes:
            return "which tables, and their size, unknown"
        if self.rows is None:
            rows = "rows unknown"
        elif self.counted:
            rows = f"at least {LARGE_ROWS:,} rows" if self.rows >= LARGE_ROWS else f"{self.rows:,.0f} rows (counted)"
        else:
            rows = f"~{self.rows:,.0f} rows"
        return f"{rows}, {self.bytes / 2**20:,.1f} MiB"
