"""Backfill authors.display_name from name, in batches, inside the step's transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyshift.framework.core.migration import MigrationContext

BACKUP = ["authors"]
FLAG = "authors_display_name"
RISK = "B"


def forward(ctx: MigrationContext) -> None:
    ctx.client.execute("ALTER TABLE authors ADD COLUMN IF NOT EXISTS display_name text")
    ctx.client.execute("UPDATE authors SET display_name = initcap(name) WHERE display_name IS NULL")


def rollback(ctx: MigrationContext) -> None:
    ctx.client.execute("ALTER TABLE authors DROP COLUMN IF EXISTS display_name")


def validate(ctx: MigrationContext) -> list[str]:
    missing = ctx.client.execute("SELECT count(*) FROM authors WHERE display_name IS NULL").fetchone()[0]
    return [f"{missing} authors have no display_name"] if missing else []
