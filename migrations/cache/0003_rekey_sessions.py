"""Sessions move to a versioned key format: session:<id> becomes sess:v2:<id> (values and TTLs kept)."""

BACKUP = ["session:*"]
RISK = "B"


def forward(ctx):
    moved = ctx.helpers.rename_prefix("session:", "sess:v2:")
    ctx.log.info("moved %d sessions", moved)


def rollback(ctx):
    ctx.helpers.rename_prefix("sess:v2:", "session:")


def validate(ctx):
    left = sum(1 for _ in ctx.client.scan_iter(match="session:*", count=1000))
    return [f"{left} sessions still use the old key format"] if left else []
