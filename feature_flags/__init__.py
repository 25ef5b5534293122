"""Feature flags: the switch between the blue and green shape of the data.

    from polyshift.feature_flags import FlagClient
    flags = FlagClient.from_config("polyshift.toml")
    if flags.is_enabled("checkout_v2", subject=user_id):
        ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyshift.framework.core.lazy import lazy_exports

if TYPE_CHECKING:
    from polyshift.feature_flags.client import FlagClient
    from polyshift.feature_flags.model import Evaluation, Flag, Reason

__all__ = ["Evaluation", "Flag", "FlagClient", "Reason"]

__getattr__ = lazy_exports(globals(), {"FlagClient": "polyshift.feature_flags.client", "Evaluation": "polyshift.feature_flags.model",
                                       "Flag": "polyshift.feature_flags.model", "Reason": "polyshift.feature_flags.model"})
