"""Cached documents move to a versioned key: doc:<id> becomes docs:v2:<id> (values and TTLs kept).

Readers on the docs_v2 flag look under the new prefix; the rollback moves keys back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyshift.framework.core.migration import MigrationContext

BACKUP = ["doc:*", "docs:v2:*"]
RISK = "B"


def forward(ctx: MigrationContext) -> None:
    moved = ctx.helpers.rename_prefix("doc:", "docs:v2:")
    ctx.log.info("moved %d cached documents", moved)


def rollback(ctx: MigrationContext) -> None:
    ctx.helpers.rename_prefix("docs:v2:", "doc:")


def validate(ctx: MigrationContext) -> list[str]:
    left = sum(1 for _ in ctx.client.scan_iter(match="doc:*", count=1000))
    return [f"{left} documents are still cached under doc:*"] if left else []
