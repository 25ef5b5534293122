"""A readable account of a Redis scope, for naming what differs between two fingerprints: per
pattern the number of keys, how many expire, their types; then each key with its type, whether it
expires and a digest of its content (the first ``KEY_LIMIT`` keys only: past that the patterns'
figures still tell what changed, without holding millions of names in memory)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

KEY_LIMIT = 20_000


def account(patterns: tuple[str, ...], batches: Iterable[list[tuple[str, bytes, str, int, Any, str]]]) -> dict[str, str]:
    counts = dict.fromkeys(patterns, 0)
    expiring = dict.fromkeys(patterns, 0)
    types: dict[str, dict[str, int]] = {p: {} for p in patterns}
    keys: dict[str, str] = {}
    for rows in batches:
        for pattern, key, digest, pttl, _payload, kind in rows:
            counts[pattern] += 1
            expiring[pattern] += pttl > 0
            types[pattern][kind] = types[pattern].get(kind, 0) + 1
            if len(keys) < KEY_LIMIT:
                ttl = "expires" if pttl > 0 else "no TTL"
                keys[f"key {key.decode(errors='backslashreplace')}"] = f"{kind}, {ttl}, content {digest[:12]}"
    out: dict[str, str] = {}
    for p in patterns:
        out[f"keys {p}"] = f"{counts[p]} key(s)"
        out[f"expiring keys {p}"] = f"{expiring[p]} with a TTL"
        out[f"types {p}"] = ", ".join(f"{kind} {n}" for kind, n in sorted(types[p].items())) or "none"
    return out | dict(sorted(keys.items()))
