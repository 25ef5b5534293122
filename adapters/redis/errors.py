"""redis-py's errors, read by their classes: the ``DriverErrors`` of the Redis adapter and of the
FalkorDB transport (the falkordb client raises redis-py's exceptions)."""

from __future__ import annotations

import redis
from redis import exceptions

from polyshift.framework.core.secrets import redact

# Connection errors redis-py raises for a server that answered, and refused us.
_REFUSED = (exceptions.AuthenticationError, exceptions.AuthorizationError)
# A server that did not answer, or a cluster that cannot serve now.
_GONE = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ClusterDownError, OSError)


class RedisErrors:
    catches: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, _GONE) and not isinstance(exc, _REFUSED)

    def describe(self, exc: BaseException) -> str:
        return redact(str(exc))

    def refused_statement(self, exc: BaseException) -> bool:
        """The server answered the command with an error (a bad query, a constraint it will not take)."""
        return isinstance(exc, exceptions.ResponseError) and not self.unavailable(exc)


REDIS_ERRORS = RedisErrors()
