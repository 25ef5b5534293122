"""psycopg's errors, read by their classes and SQLSTATE: the ``DriverErrors`` of the PostgreSQL adapters."""

from __future__ import annotations

import psycopg
from psycopg import errors

from polyshift.framework.core.secrets import redact

# The server went away or would not take us now: SQLSTATE class 08 (connection exception),
# 57P01-57P03 (admin or crash shutdown, cannot connect now).
_GONE = (errors.ConnectionException, errors.AdminShutdown, errors.CrashShutdown, errors.CannotConnectNow)


class PsycopgErrors:
    catches: tuple[type[BaseException], ...] = (psycopg.Error,)

    def unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, _GONE):
            return True
        if not isinstance(exc, psycopg.OperationalError) or exc.sqlstate is not None:
            return False  # the server answered with a SQLSTATE: it is there
        # No SQLSTATE: refused, lost or timed out on the client's side, or a login the server
        # refused (libpq gives no SQLSTATE for those). A login that never finished (no server
        # version) after the server asked for a password was refused by a server that answered.
        pgconn = exc.pgconn
        refused_login = pgconn is not None and pgconn.server_version == 0 and (pgconn.used_password or pgconn.needs_password)
        return not refused_login

    def describe(self, exc: BaseException) -> str:
        diag = getattr(exc, "diag", None)
        primary = (diag.message_primary if diag is not None else None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        sqlstate = getattr(exc, "sqlstate", None)
        code = f"SQLSTATE {sqlstate}: " if sqlstate else ""
        return redact(f"{code}{primary}")


PSYCOPG_ERRORS = PsycopgErrors()
