"""Feature flags: the switch between the blue and green shape of the data.

    from polyshift.feature_flags import FlagClient
    flags = FlagClient.from_config("polyshift.toml")
    if flags.is_enabled("checkout_v2", subject=user_id):
        ...
"""

from polyshift.feature_flags.client import FlagClient
from polyshift.feature_flags.model import Evaluation, Flag, Reason

__all__ = ["Evaluation", "Flag", "FlagClient", "Reason"]
