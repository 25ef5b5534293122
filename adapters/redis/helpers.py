"""Data-migration helpers for Redis migrations (``ctx.helpers``): batched, resumable, reversible.

Each helper walks its pattern with SCAN in pipelined batches and saves the SCAN cursor per node
under ``<prefix>progress:<migration>:<op>``; a rerun after a crash resumes where it stopped and
the cursor is deleted once the walk completes. A batch interrupted mid-way is redone on resume,
so transformations passed in must be idempotent (``fn(fn(x)) == fn(x)``). Every helper has an
inverse to call from ``rollback``:

  rename_prefix(a, b)              ↔ rename_prefix(b, a)
  rename_hash_field(p, old, new)   ↔ rename_hash_field(p, new, old)
  transform_hash_field(p, f, fn)   ↔ transform_hash_field(p, f, inverse)
  reshape_json(p, fn)              ↔ reshape_json(p, inverse)
  set_ttl(p, seconds)              ↔ set_ttl(p, previous seconds) (or restore from the backup)
  copy_prefix(a, b)  (expand)      ↔ drop_prefix(b)
  drop_prefix(a)     (contract)    ↔ restore from the backup taken before it
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_COUNT = 1000


class RedisHelpers:
    def __init__(self, client: Any, nodes: list[Any], *, progress_prefix: str, skip_prefix: bytes) -> None:
        self.client = client
        self.nodes = nodes
        self.progress_prefix = progress_prefix
        self.skip_prefix = skip_prefix
        self.cluster = len(nodes) > 1 or not hasattr(client, "connection_pool")

    def _each(self, op: str, pattern: str, handle: Callable[[list[bytes]], int]) -> int:
        state = f"{self.progress_prefix}{op}"
        saved = {k.decode(): int(v) for k, v in self.client.hgetall(state).items()}
        total = 0
        for index, node in enumerate(self.nodes):
            cursor = saved.get(str(index), 0)
            if cursor == -1:
                continue  # this node was finished before the interruption
            while True:
                cursor, keys = node.scan(cursor=cursor, match=pattern, count=_COUNT)
                keys = [k for k in keys if not k.startswith(self.skip_prefix)]
                if keys:
                    total += handle(keys)
                if cursor == 0:
                    break
                self.client.hset(state, str(index), cursor)
            self.client.hset(state, str(index), -1)
        self.client.delete(state)
        return total

    # -- keys -------------------------------------------------------------------------
    def rename_prefix(self, old: str, new: str) -> int:
        """Move every ``old…`` key to ``new…``, keeping values and TTLs. Returns the number moved."""
        if not old or not new or old == new:
            raise ValueError("rename_prefix needs two different, non-empty prefixes")
        old_b, new_b = old.encode(), new.encode()

        def move(keys: list[bytes]) -> int:
            targets = [new_b + k[len(old_b):] for k in keys]
            if not self.cluster:
                pipe = self.client.pipeline(transaction=False)
                for src, dst in zip(keys, targets, strict=True):
                    pipe.rename(src, dst)  # RENAME keeps the TTL
                pipe.execute(raise_on_error=False)
                return len(keys)
            return self._move_across_slots(keys, targets)

        return self._each(f"rename:{old}", _glob_prefix(old), move)

    def _dumps(self, keys: list[bytes]) -> list[tuple[bytes | None, int]]:
        """(DUMP payload, PTTL) per key, one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
            pipe.pttl(key)
        replies = pipe.execute()
        return list(zip(replies[0::2], replies[1::2], strict=True))

    def _move_across_slots(self, keys: list[bytes], targets: list[bytes]) -> int:
        """In a cluster RENAME cannot cross hash slots: DUMP, RESTORE under the new name with the TTL, UNLINK."""
        pipe = self.client.pipeline(transaction=False)
        moved = 0
        for key, dst, (payload, pttl) in zip(keys, targets, self._dumps(keys), strict=True):
            if payload is None:
                continue
            pipe.restore(dst, max(pttl, 0), payload, replace=True)
            pipe.unlink(key)
            moved += 1
        pipe.execute()
        return moved

    def copy_prefix(self, src: str, dst: str) -> int:
        """Expand: copy every ``src…`` key to ``dst…`` (values and TTLs), leaving the originals in place."""
        src_b, dst_b = src.encode(), dst.encode()

        def copy(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for key, (payload, pttl) in zip(keys, self._dumps(keys), strict=True):
                if payload is not None:
                    pipe.restore(dst_b + key[len(src_b):], max(pttl, 0), payload, replace=True)
            pipe.execute()
            return len(keys)

        return self._each(f"copy:{src}:{dst}", _glob_prefix(src), copy)

    def drop_prefix(self, prefix: str) -> int:
        """Contract: UNLINK every ``prefix…`` key (back them up first: they are gone)."""
        def drop(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.unlink(key)
            pipe.execute()
            return len(keys)

        return self._each(f"drop:{prefix}", _glob_prefix(prefix), drop)

    def set_ttl(self, pattern: str, seconds: int | None) -> int:
        """EXPIRE every matching key (``None``: PERSIST, no expiry)."""
        def apply(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                if seconds is None:
                    pipe.persist(key)
                else:
                    pipe.expire(key, seconds)
            pipe.execute()
            return len(keys)

        return self._each(f"ttl:{pattern}", pattern, apply)

    # -- values -----------------------------------------------------------------------
    def rename_hash_field(self, pattern: str, old: str, new: str) -> int:
        """Move hash field ``old`` to ``new`` in every matching hash that has it."""
        def rename(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, old)
            values = pipe.execute()
            pipe = self.client.pipeline(transaction=True)  # set-new and delete-old land together per batch
            changed = 0
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    pipe.hset(key, new, value)
                    pipe.hdel(key, old)
                    changed += 1
            if changed:
                pipe.execute()
            return changed

        return self._each(f"hfield:{pattern}:{old}:{new}", pattern, rename)

    def transform_hash_field(self, pattern: str, field: str, fn: Callable[[bytes], bytes | str]) -> int:
        """Rewrite one field of every matching hash through ``fn`` (skipped where the field is absent)."""
        def transform(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, field)
            values = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            changed = 0
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    pipe.hset(key, field, fn(value))
                    changed += 1
            pipe.execute()
            return changed

        return self._each(f"htransform:{pattern}:{field}", pattern, transform)

    def reshape_json(self, pattern: str, fn: Callable[[Any], Any]) -> int:
        """Rewrite JSON string values through ``fn(decoded) -> new`` keeping each key's TTL (SET KEEPTTL)."""
        def reshape(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            values = pipe.execute()
            pipe = self.client.pipeline(transaction=False)
            changed = 0
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    continue
                try:
                    decoded = json.loads(value)
                except ValueError as exc:
                    raise ValueError(f"key {key!r} does not hold JSON: {exc}") from None
                pipe.set(key, json.dumps(fn(decoded), separators=(",", ":")), keepttl=True)
                changed += 1
            pipe.execute()
            return changed

        return self._each(f"json:{pattern}", pattern, reshape)


def _glob_prefix(prefix: str) -> str:
    """A SCAN pattern matching keys that start with ``prefix`` literally."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return escaped + "*"
