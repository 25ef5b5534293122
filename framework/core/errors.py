"""The one exception hierarchy. Each class carries the CLI exit code it maps to.

Exit codes (mirrored in the README):
  0  success
  1  a check ran and reported failures (``validate``)
  2  bad input or configuration, or a refusal (drift, lock held, corrupted backup);
     nothing was changed in any store
  3  a migration failed and its store was returned to the prior state, verified
  4  a migration failed and the prior state could not be verified: operator action needed
"""

from __future__ import annotations

from typing import Any


class PolyshiftError(Exception):
    """``details``: machine-readable facts the CLI adds to the ``--json`` error object (what a
    command did before it failed, for instance)."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = dict(details or {})

    def __str__(self) -> str:
        return self.message


class ConfigError(PolyshiftError):
    """polyshift.toml is missing, malformed, or names something that does not exist."""


class ControlPlaneVersionError(ConfigError):
    """The control plane's schema was written by a newer polyshift than this one."""


class UsageError(PolyshiftError):
    """Command-line arguments that cannot be acted on."""


class MigrationLoadError(PolyshiftError):
    """A migration file is malformed, misnamed, or lacks a rollback."""


class DriftError(PolyshiftError):
    """An applied migration's source changed after it was applied."""


class LockHeldError(PolyshiftError):
    """Another runner holds the store's lock."""


class BackupError(PolyshiftError):
    """A backup could not be taken or is unusable."""


class BackupCorruptError(BackupError):
    """An artifact's content does not match the sha256 recorded in its manifest."""


class RefusedError(PolyshiftError):
    """The operation would be unsafe as asked (irreversible without opt-in, restore without --yes, ...)."""


class StoreError(PolyshiftError):
    """A store could not be reached or answered with an error (driver errors are translated to this)."""


class StoreUnavailable(StoreError):
    """The store did not answer (connection refused, timed out, lost): trying again later may work."""


class StepFailed(PolyshiftError):
    """A forward, rollback or validate step failed; ``cause`` is the translated store error."""

    def __init__(self, message: str, *, step: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.step = step


class ChecksFailed(PolyshiftError):
    """A read-only check found problems (exit 1)."""

    exit_code = 1


class MigrationFailedRestored(PolyshiftError):
    """The migration failed; the store is verified back in its prior state."""

    exit_code = 3


class MigrationFailedUnverified(PolyshiftError):
    """The migration failed and the prior state could not be verified."""

    exit_code = 4


class AuditChainBroken(PolyshiftError):
    def __init__(self, message: str, *, seq: int) -> None:
        super().__init__(message)
        self.seq = seq
