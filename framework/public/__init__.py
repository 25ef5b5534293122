"""polyshift: safe, reversible migrations across PostgreSQL, pgvector, Neo4j and Redis.

The public face. An application that reads feature flags needs only::

    from polyshift import FlagClient

which imports the flag client and nothing of the migration engine or the store drivers.
The engine lives in ``polyshift.framework``, the store adapters in ``polyshift.adapters`` and
the flags in ``polyshift.feature_flags``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polyshift.framework import __version__

if TYPE_CHECKING:
    from polyshift.feature_flags.client import FlagClient
    from polyshift.feature_flags.model import Evaluation, Flag, Reason

__all__ = ["Evaluation", "Flag", "FlagClient", "Reason", "__version__"]

# Every ``polyshift`` command imports this package first; the flag client is loaded when an
# application names it, not by every CLI start (issue 19).
_LAZY = {"FlagClient": "polyshift.feature_flags.client", "Evaluation": "polyshift.feature_flags.model",
         "Flag": "polyshift.feature_flags.model", "Reason": "polyshift.feature_flags.model"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'polyshift' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
