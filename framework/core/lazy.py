"""Names a package exports without importing them until they are used: every ``polyshift``
command imports the ``polyshift`` and ``polyshift.feature_flags`` packages first, and an import
there is paid by each command's start (issue 19)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(namespace: dict[str, Any], sources: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``sources[name]`` (a module) on first use of ``name``
    and keeps the value in ``namespace``, so later uses do not come back here."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
