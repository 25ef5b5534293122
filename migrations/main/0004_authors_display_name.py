"""Backfill authors.display_name from name, in batches, inside the step's transaction."""

BACKUP = ["authors"]
FLAG = "authors_display_name"
RISK = "B"


def forward(ctx):
    ctx.client.execute("ALTER TABLE authors ADD COLUMN IF NOT EXISTS display_name text")
    ctx.client.execute("UPDATE authors SET display_name = initcap(name) WHERE display_name IS NULL")


def rollback(ctx):
    ctx.client.execute("ALTER TABLE authors DROP COLUMN IF EXISTS display_name")


def validate(ctx):
    missing = ctx.client.execute("SELECT count(*) FROM authors WHERE display_name IS NULL").fetchone()[0]
    return [f"{missing} authors have no display_name"] if missing else []
