"""OpenFeature provider: applications use the standard API and never import polyshift.

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    api.set_provider(PolyshiftProvider(FlagClient.from_config("polyshift.toml")))
    client = api.get_client()
    client.get_boolean_value("checkout_v2", False, EvaluationContext(targeting_key="user-42"))

The evaluation context's ``targeting_key`` is the subject. Reasons follow the spec: SPLIT
(percentage bucket), TARGETING_MATCH (allow/deny list), DISABLED (off or killed), STATIC
(0 or 100 percent), STALE (the store is unreachable, last known value served), and unknown
flags come back as the default with FLAG_NOT_FOUND. Polyshift flags are booleans: the other
types resolve to the default with TYPE_MISMATCH.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError, TypeMismatchError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from polyshift.feature_flags.client import FlagClient


class PolyshiftProvider(AbstractProvider):
    def __init__(self, client: FlagClient) -> None:
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name="polyshift")

    def shutdown(self) -> None:
        self.client.close()

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        subject = evaluation_context.targeting_key if evaluation_context is not None else None
        evaluation = self.client.evaluate(flag_key, subject)
        if evaluation is None:
            raise FlagNotFoundError(f"flag {flag_key!r} is not defined")
        reason: str = Reason.STALE if self.client.stale else evaluation.reason.value
        flag = self.client.flag(flag_key)
        metadata: dict[str, bool | int | float | str] = {"detail": evaluation.detail}
        if flag is not None:
            metadata |= {"version": flag.version, "percent": flag.percent}
            if flag.release:
                metadata["release"] = flag.release
        return FlagResolutionDetails(value=evaluation.value, reason=reason, variant=evaluation.variant, flag_metadata=metadata)

    def _not_boolean(self, flag_key: str) -> FlagResolutionDetails[Any]:
        raise TypeMismatchError(f"polyshift flag {flag_key!r} is a boolean")

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        return self._not_boolean(flag_key)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return self._not_boolean(flag_key)

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return self._not_boolean(flag_key)

    def resolve_object_details(self, flag_key: str, default_value: Sequence[Any] | Mapping[str, Any],
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[Any]:
        return self._not_boolean(flag_key)
