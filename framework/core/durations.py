"""Durations in settings: ``5``, ``"5s"``, ``"250ms"``, ``"2min"``, each setting within its bounds.

Its own module so that what checks a setting (the config, the store kinds' option checks, the
release settings, the CLI) needs nothing else of the config to do it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from polyshift.framework.core.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, None: 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
# (minimum, maximum) seconds for every duration setting. Below the minimum a value means "no
# limit" to the server or a busy loop to us; above the maximum it is a typo ("1000000h").
DURATION_BOUNDS: dict[str, tuple[float, float]] = {
    "lock_timeout": (0.001, HOUR),
    "statement_timeout": (0.001, 7 * DAY),
    "retry_deadline": (0.0, DAY),
    "lock_wait": (0.0, DAY),
    "lock_ttl": (1.0, HOUR),
    "bake_seconds": (0.0, DAY),
    "timeout": (0.001, HOUR),          # a gate's
    "refresh_interval": (0.1, HOUR),   # [flags]
    "wait": (0.0, DAY),                # emergency-rollback --wait
}


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    for unit, size in (("days", DAY), ("h", HOUR), ("min", MINUTE)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def parse_duration(value: Any, *, what: str, bounds: tuple[float, float] = (0.0, 7 * DAY)) -> float:
    """Seconds from ``5``, ``"5s"``, ``"250ms"``, ``"2min"``, within ``bounds`` (inclusive).

    NaN and infinities are refused, whatever the bounds: a NaN deadline never passes."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a duration like '5s', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ConfigError(f"{what}: expected a duration like '5s' or '250ms', got {value!r}")
    low, high = bounds
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise ConfigError(f"{what}: must be between {human_duration(low)} and {human_duration(high)}, got {value!r}")
    return seconds


def setting_duration(value: Any, setting: str, *, where: str) -> float:
    """A duration setting named in DURATION_BOUNDS, checked against its bounds."""
    return parse_duration(value, what=f"{where} {setting}", bounds=DURATION_BOUNDS[setting])
