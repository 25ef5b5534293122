"""The flag record and its evaluation: the switch between the blue and the green shape of the data.

Evaluation order for ``is_enabled(name, subject)``:
  kill switch → deny list → allow list → disabled → percentage.

Percentage rollout buckets each subject by a keyed blake2b hash of (flag name, subject key) into
0..9999; the subject is on when its bucket is below ``percent * 100``. The bucket never changes
for a subject, so raising the percentage only ever turns subjects on (monotonic rollout), and
keying by flag name makes different flags bucket independently.

Without a subject, a flag at 0 < percent < 100 is **off**: there is nothing to be sticky about, so
polyshift never flips a coin per call. At 100 it is on, at 0 off.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from polyshift.framework.core.errors import UsageError

NAME = re.compile(r"^[a-z0-9_.-]{1,100}$")
BUCKETS = 10_000


class Reason(StrEnum):
    """Why a flag evaluated as it did; the values are OpenFeature's reasons."""

    DISABLED = "DISABLED"                # disabled, or killed (off for everyone)
    TARGETING_MATCH = "TARGETING_MATCH"  # the subject is on the allow or deny list
    SPLIT = "SPLIT"                      # decided by the subject's percentage bucket
    STATIC = "STATIC"                    # 0 or 100 percent: the same for every subject
    DEFAULT = "DEFAULT"                  # unknown flag: the caller's default


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise UsageError(f"flag name {name!r} must be 1-100 characters of [a-z0-9_.-]")
    return name


def validate_percent(percent: Any) -> float:
    try:
        value = float(percent)
    except (TypeError, ValueError):
        raise UsageError(f"rollout percentage must be a number from 0 to 100, got {percent!r}") from None
    if not 0 <= value <= 100 or value != value:
        raise UsageError(f"rollout percentage must be between 0 and 100, got {percent!r}")
    return value


@dataclass(frozen=True)
class Flag:
    name: str
    description: str = ""
    owner: str = ""
    enabled: bool = False
    percent: float = 0.0
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    killed: bool = False
    release: str | None = None
    updated_by: str = ""
    updated_at: str = ""
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "owner": self.owner, "enabled": self.enabled,
            "percent": self.percent, "allow": sorted(self.allow), "deny": sorted(self.deny), "killed": self.killed,
            "release": self.release, "updated_by": self.updated_by, "updated_at": self.updated_at, "version": self.version,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Flag:
        return Flag(
            name=data["name"], description=data.get("description", ""), owner=data.get("owner", ""),
            enabled=bool(data.get("enabled", False)), percent=float(data.get("percent", 0.0)),
            allow=frozenset(data.get("allow", ())), deny=frozenset(data.get("deny", ())), killed=bool(data.get("killed", False)),
            release=data.get("release"), updated_by=data.get("updated_by", ""), updated_at=data.get("updated_at", ""),
            version=int(data.get("version", 0)),
        )

    def changed(self, *, actor: str, **changes: Any) -> Flag:
        return replace(self, **changes, updated_by=actor, updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
                       version=self.version + 1)


@dataclass(frozen=True)
class Evaluation:
    value: bool
    reason: Reason
    variant: str
    detail: str


# Every possible outcome exists once; the hot path returns one of these and allocates nothing.
KILLED = Evaluation(False, Reason.DISABLED, "off", "kill switch")
DENIED = Evaluation(False, Reason.TARGETING_MATCH, "off", "deny list")
ALLOWED = Evaluation(True, Reason.TARGETING_MATCH, "on", "allow list")
DISABLED = Evaluation(False, Reason.DISABLED, "off", "disabled")
EVERYONE = Evaluation(True, Reason.STATIC, "on", "100 percent")
NOBODY = Evaluation(False, Reason.STATIC, "off", "0 percent")
NO_SUBJECT = Evaluation(False, Reason.SPLIT, "off", "partial rollout without a subject")
SPLIT_ON = Evaluation(True, Reason.SPLIT, "on", "in the rollout bucket")
SPLIT_OFF = Evaluation(False, Reason.SPLIT, "off", "outside the rollout bucket")


@dataclass
class CompiledFlag:
    """A flag prepared for the hot path: threshold and keyed hash computed once."""

    flag: Flag
    threshold: int = field(init=False)
    _hasher: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.threshold = round(self.flag.percent * 100)
        self._hasher = hashlib.blake2b(self.flag.name.encode() + b"\0", digest_size=8)

    def bucket(self, subject: str) -> int:
        h = self._hasher.copy()
        h.update(subject.encode())
        return int.from_bytes(h.digest(), "big") % BUCKETS

    def evaluate(self, subject: str | None) -> Evaluation:
        flag = self.flag
        if flag.killed:
            return KILLED
        if subject is not None:
            if subject in flag.deny:
                return DENIED
            if subject in flag.allow:
                return ALLOWED
        if not flag.enabled:
            return DISABLED
        if self.threshold >= BUCKETS:
            return EVERYONE
        if self.threshold <= 0:
            return NOBODY
        if subject is None:
            return NO_SUBJECT
        return SPLIT_ON if self.bucket(subject) < self.threshold else SPLIT_OFF
