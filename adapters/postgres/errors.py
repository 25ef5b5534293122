"""psycopg's errors, read by their classes and SQLSTATE: the ``DriverErrors`` of the PostgreSQL adapters."""

from __future__ import annotations

import psycopg
from polyshift.framework.core.secrets import redact
from psycopg import errors

# The server went away or would not take us now: SQLSTATE class 08 (connection exception),
# 57P01-57P03 (admin or crash shutdown, cannot connect now).
_GONE = (errors.ConnectionException, errors.AdminShutdown, errors.CrashShutdown, errors.CannotConnectNow)


class PsycopgErrors:
    catches: tuple[type[BaseException], ...] = (psycopg.Error,)

    def unavailable(self, exc: BaseException) -> bool:
        # An OperationalError without a SQLSTATE never reached the server's answer: refused,
        # lost or timed out on the client's side. With one (a password refused, 28P01) it did.
        return isinstance(exc, _GONE) or (isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None)

    def describe(self, exc: BaseException) -> str:
        diag = getattr(exc, "diag", None)
        primary = (diag.message_primary if diag is not None else None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        sqlstate = getattr(exc, "sqlstate", None)
        code = f"SQLSTATE {sqlstate}: " if sqlstate else ""
        return redact(f"{code}{primary}")


PSYCOPG_ERRORS = PsycopgErrors()
