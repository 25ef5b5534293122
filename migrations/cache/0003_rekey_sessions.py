"""Sessions move to a versioned key format: session:<id> becomes sess:v2:<id> (values and TTLs kept)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polyshift.framework.core.migration import MigrationContext

BACKUP = ["session:*"]
RISK = "B"


def forward(ctx: MigrationContext) -> None:
    moved = ctx.helpers.rename_prefix("session:", "sess:v2:")
    ctx.log.info("moved %d sessions", moved)


def rollback(ctx: MigrationContext) -> None:
    ctx.helpers.rename_prefix("sess:v2:", "session:")


def validate(ctx: MigrationContext) -> list[str]:
    left = sum(1 for _ in ctx.client.scan_iter(match="session:*", count=1000))
    return [f"{left} sessions still use the old key format"] if left else []
