"""polyshift: safe, reversible migrations across PostgreSQL, pgvector, Neo4j and Redis.

The public face. An application that reads feature flags needs only::

    from polyshift import FlagClient

which imports the flag client and nothing of the migration engine or the store drivers.
The engine lives in ``polyshift.framework``, the store adapters in ``polyshift.adapters`` and
the flags in ``polyshift.feature_flags``.
"""

from polyshift.feature_flags.client import FlagClient
from polyshift.feature_flags.model import Evaluation, Flag, Reason
from polyshift.framework import __version__

__all__ = ["Evaluation", "Flag", "FlagClient", "Reason", "__version__"]
