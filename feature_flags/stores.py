"""Where flags live: the control-plane database (default, ``sql_store``) or Redis for shared
low-latency reads. Each store's driver is imported only when that store is opened, so an
application reading flags from Redis never imports SQLAlchemy or the control plane.

Both keep a global version number that every change increments in the same transaction, so a
client learns that anything changed with one cheap read, and reloads only then. Writes are
compare-and-set on the flag's own version: two operators changing one flag never lose an edit.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, cast

from polyshift.feature_flags.model import Flag
from polyshift.framework.core.errors import StoreError
from polyshift.framework.core.secrets import redact, url_without_password


class ConflictError(Exception):
    """The flag changed (or appeared) since it was read: re-read and try again."""


class FlagStore(Protocol):
    description: str

    def version(self) -> int:
        """Global change counter; raises StoreError when the store is unreachable."""

    def load(self) -> tuple[int, dict[str, Flag]]:
        """Every flag and the version they are consistent with."""

    def get(self, name: str) -> Flag | None: ...

    def save(self, flag: Flag, *, expected_version: int | None) -> None:
        """Write ``flag`` if the stored one still has ``expected_version`` (None: must not exist yet)."""

    def close(self) -> None: ...


class RedisFlagStore:
    """One hash ``<prefix>flags`` (name → JSON) and a counter ``<prefix>flags:version``."""

    def __init__(self, url: str, prefix: str = "polyshift:", *, timeout: float = 2.0) -> None:
        import redis

        self.description = f"redis {url_without_password(url)}"
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.key = f"{prefix}flags"
        self.version_key = f"{prefix}flags:version"

    def _fail(self, exc: Exception) -> StoreError:
        return StoreError(f"flags: {self.description} is unreachable: {redact(str(exc))}")

    def version(self) -> int:
        import redis

        try:
            return int(self.redis.get(self.version_key) or 0)
        except redis.RedisError as exc:
            raise self._fail(exc) from None

    def load(self) -> tuple[int, dict[str, Flag]]:
        import redis

        try:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.version_key)
                pipe.hgetall(self.key)
                version, raw = pipe.execute()
        except redis.RedisError as exc:
            raise self._fail(exc) from None
        flags = [Flag.from_json(json.loads(v)) for v in raw.values()]
        return int(version or 0), {f.name: f for f in flags}

    def get(self, name: str) -> Flag | None:
        import redis

        try:
            raw = self.redis.hget(self.key, name)
        except redis.RedisError as exc:
            raise self._fail(exc) from None
        return Flag.from_json(json.loads(raw)) if raw else None

    def save(self, flag: Flag, *, expected_version: int | None) -> None:
        import redis

        try:
            with self.redis.pipeline(transaction=True) as pipe:
                cast(Any, pipe).watch(self.key)  # EXEC fails if anyone wrote a flag since we read it
                raw = cast("bytes | None", pipe.hget(self.key, flag.name))  # immediate while watching
                current = Flag.from_json(json.loads(raw)).version if raw else None
                if current != expected_version:
                    raise ConflictError(flag.name)
                pipe.multi()
                pipe.hset(self.key, flag.name, json.dumps(flag.to_json(), sort_keys=True))
                pipe.incr(self.version_key)
                pipe.execute()
        except redis.WatchError:
            raise ConflictError(flag.name) from None
        except redis.RedisError as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        self.redis.close()
