"""Where an adapter meets code polyshift did not write: the store's driver, and a migration's Python.

Driver errors are translated here, one way for every adapter: each driver gets a ``DriverErrors``
that reads its exceptions with the driver's own classes and attributes (psycopg's SQLSTATE
classes, redis-py's ConnectionError and TimeoutError, the neo4j driver's ServiceUnavailable and
``is_retryable()``), never by matching message text. A server that did not answer becomes
StoreUnavailable (trying again later may work), anything else the error class the caller names.

A Python step runs through ``run_python_step`` and a Python validate through ``python_checks``,
so a failure reads the same whatever the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NoReturn, Protocol

from polyshift.framework.core.errors import PolyshiftError, StepFailed, StoreError, StoreUnavailable
from polyshift.framework.core.migration import Migration, MigrationContext, Step, describe_failure
from polyshift.framework.core.secrets import redact


class DriverErrors(Protocol):
    """How one driver's exceptions read."""

    @property
    def catches(self) -> tuple[type[BaseException], ...]:
        """The driver's error classes (and OSError where the driver lets socket errors through)."""

    def unavailable(self, exc: BaseException) -> bool:
        """The server did not answer: refused, lost, timed out, shutting down."""

    def describe(self, exc: BaseException) -> str:
        """The server's message with its code where it has one, passwords redacted."""


def translate(errors: DriverErrors, exc: BaseException, message: str,
              error: type[PolyshiftError] = StoreError, *, hint: str | None = None) -> PolyshiftError:
    """``message: <the driver's description>`` as StoreUnavailable when the server did not answer,
    otherwise as ``error``."""
    cls = StoreUnavailable if errors.unavailable(exc) else error
    return cls(f"{message}: {errors.describe(exc)}", hint=hint)


@contextmanager
def translated(errors: DriverErrors, message: str, error: type[PolyshiftError] = StoreError, *,
               hint: str | None = None) -> Iterator[None]:
    """The driver's errors raised in the block leave it translated (see ``translate``)."""
    try:
        yield
    except PolyshiftError:
        raise
    except errors.catches as exc:
        raise translate(errors, exc, message, error, hint=hint) from None


def step_failed(store: str, migration: Migration, step: Step, exc: BaseException, errors: DriverErrors,
                at: str = "") -> NoReturn:
    """Raise the StepFailed an exception out of a step becomes: the server's description when the
    store refused the work (``at``: the statement), the exception itself for a bug in a Python step."""
    if isinstance(exc, errors.catches):
        where = f" at `{' '.join(at.split())[:120]}`" if at else ""
        raise StepFailed(f"{store} {migration.id} {step.name} failed{where}: {errors.describe(exc)}", step=step.name) from None
    raise StepFailed(f"{store} {migration.id} {step.name} raised {redact(describe_failure(exc))}", step=step.name) from exc


def run_python_step(step: Step, ctx: MigrationContext, errors: DriverErrors) -> Any:
    """Run a Python forward or rollback. StepFailed and StoreError (the store itself failing, as
    a transport reports it) leave as they are; anything else becomes StepFailed."""
    try:
        return step.call(ctx)
    except (StepFailed, StoreError):
        raise
    except Exception as exc:  # a Python step's own bug is a failed step, not a crash
        step_failed(ctx.store, ctx.migration, step, exc, errors)


def check_failures(result: Any) -> list[str]:
    """What a Python ``validate(ctx)`` returned, read one way: False fails, a list or tuple names
    each failure (empty: none), anything else passes."""
    if result is False:
        return ["validate returned False"]
    if isinstance(result, (list, tuple)):
        return [str(r) for r in result]
    return []


def python_checks(step: Step, ctx: MigrationContext,
                  inside: Callable[[], AbstractContextManager[Any]] = nullcontext) -> list[str]:
    """Run a Python validate (within ``inside()``, a savepoint for instance); what it raised is a failure too."""
    try:
        with inside():
            result = step.call(ctx)
    except Exception as exc:
        return [f"validate raised {redact(describe_failure(exc))}"]
    return check_failures(result)
