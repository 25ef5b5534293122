"""Everything the CLI prints goes through here: redacted, literal unless markup is meant, JSON on demand."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from framework import secrets

# Without a terminal rich assumes 80 columns and truncates tables; pipelines read full values.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)
opts: dict[str, Any] = {"config": Path("polyshift.toml"), "json": False}


def say(text: str = "") -> None:
    if not opts["json"]:
        out.print(secrets.redact(text))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(secrets.redact_obj(data), indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[Text(secrets.redact("" if v is None else str(v))) for v in r])
    out.print(t)




def json_mode() -> bool:
    return bool(opts["json"])


def warn(text: str) -> None:
    """A warning on stderr, printed literally (never read as markup)."""
    err.print(Text(secrets.redact("warning: " + text)))
