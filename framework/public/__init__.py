"""polyshift: safe, reversible migrations across PostgreSQL, pgvector, Neo4j and Redis.

The public face. An application that reads feature flags needs only::

    from polyshift import FlagClient

which imports the flag client and nothing of the migration engine or the store drivers.
The engine lives in ``polyshift.framework``, the store adapters in ``polyshift.adapters`` and
the flags in ``polyshift.feature_flags``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyshift.framework import __version__
from polyshift.framework.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polyshift.feature_flags.client import FlagClient
    from polyshift.feature_flags.model import Evaluation, Flag, Reason

__all__ = ["Evaluation", "Flag", "FlagClient", "Reason", "__version__"]

__getattr__ = lazy_exports(globals(), {"FlagClient": "polyshift.feature_flags.client", "Evaluation": "polyshift.feature_flags.model",
                                       "Flag": "polyshift.feature_flags.model", "Reason": "polyshift.feature_flags.model"})
