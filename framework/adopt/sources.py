"""Shared by the readers: listing a source directory and splitting annotated single-file migrations."""

from __future__ import annotations

from pathlib import Path

from polyshift.framework.core.errors import UsageError

# Left out of every listing: version-control and editor files are nobody's migrations.
_HIDDEN_PREFIXES = (".",)


def migration_files(source: Path, *, recursive: bool) -> list[Path]:
    """Every file under ``source`` in name order; UsageError when it is not a directory."""
    if not source.exists():
        raise UsageError(f"{source}: no such directory")
    if not source.is_dir():
        raise UsageError(f"{source} is not a directory; give the directory that holds the migrations")
    paths = source.rglob("*") if recursive else source.iterdir()
    return sorted((p for p in paths if p.is_file() and not any(part.startswith(_HIDDEN_PREFIXES)
                                                                  for part in p.relative_to(source).parts)),
                  key=lambda p: p.relative_to(source).as_posix())
