"""The provenance header an imported script starts with, written by ``import`` and read back by
``baseline`` to match the old tool's history rows to polyshift migrations.

    -- imported-from: flyway
    -- source: sql/V1_1__create_users.sql
    -- source-id: 1.1
    -- source-checksum: crc32:-1843210475

The header is part of the file (and so of its checksum): it travels with the migration and
says, to a reader and to polyshift, which file of which tool it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyshift.framework.adopt.model import Format

_KEYS = ("imported-from", "source", "source-id", "source-checksum")


@dataclass(frozen=True)
class Provenance:
    format: Format
    source: str
    source_id: str
    source_checksum: str | None = None


def render(comment: str, format: Format, source: str, source_id: str | None, source_checksum: str | None,
           directives: list[str]) -> str:
    lines = [f"{comment} imported-from: {format.value}", f"{comment} source: {source}"]
    if source_id is not None:
        lines.append(f"{comment} source-id: {source_id}")
    if source_checksum is not None:
        lines.append(f"{comment} source-checksum: {source_checksum}")
    lines += [f"{comment} polyshift: {d}" for d in directives]
    return "\n".join(lines) + "\n"


def read(script: str, comment: str) -> Provenance | None:
    """The provenance of a script's header, or None for a script polyshift did not import."""
    found: dict[str, str] = {}
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith(comment):
            break
        key, sep, value = stripped[len(comment):].strip().partition(":")
        if sep and key.strip() in _KEYS and key.strip() not in found:
            found[key.strip()] = value.strip()
    try:
        fmt = Format(found.get("imported-from", ""))
    except ValueError:
        return None
    if "source" not in found or "source-id" not in found:
        return None
    return Provenance(fmt, found["source"], found["source-id"], found.get("source-checksum"))
