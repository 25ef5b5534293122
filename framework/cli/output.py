"""Everything the CLI prints goes through here: redacted, literal unless markup is meant, JSON on demand.

Markup (``[bold]``, ``[green]``) lives only in templates written in the code. Everything else
(names, SQL, key patterns, messages from stores) is a value filled into a template, and is
printed as written, once: redacted, then escaped so rich never reads it as markup.
"""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path
from typing import Any, LiteralString

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from polyshift.framework.core import secrets

# Without a terminal rich assumes 80 columns and truncates tables; pipelines read full values.
# emoji=False: ":thumbs_up:" in a value is text, not a picture.
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
# emitted: this command has written its JSON document (so an error after it writes no second one).
opts: dict[str, Any] = {"config": Path("polyshift.toml"), "json": False, "emitted": False}


class _LiteralFields(string.Formatter):
    """A template's fields are data: formatted with their spec, redacted, escaped."""

    def format_field(self, value: Any, format_spec: str) -> str:
        return escape(secrets.redact(format(value, format_spec)))


_FIELDS = _LiteralFields()


def render(template: LiteralString, /, **values: Any) -> str:
    """``template`` (markup written in the code, ``{name}`` fields) with ``values`` filled in literally."""
    return _FIELDS.format(template, **values)


def say(template: LiteralString = "", /, **values: Any) -> None:
    """Print ``template`` with ``values`` filled in literally (see ``render``); nothing in JSON mode."""
    if not opts["json"]:
        out.print(secrets.redact(render(template, **values)))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(secrets.redact_obj(data), indent=2, default=str) + "\n")
    opts["emitted"] = True


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
