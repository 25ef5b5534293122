"""Journaling a run's steps: intent before, done or failed after.

The intent is written before the step touches anything, so a process that dies in the middle
leaves an intent without an ending, which is exactly what ``polyshift recover`` looks for. An
exception the caller does not name (a crash, ``KeyboardInterrupt``) therefore writes nothing: the
open intent is the truth about the step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from polyshift.framework.control.state import ControlPlane
from polyshift.framework.core.errors import PolyshiftError
from polyshift.framework.core.lifecycle import Phase, Step


@dataclass
class StepEntry:
    """What the block of a journaled step reports: the detail of its ending and whether it failed
    without raising (a validation that returned failures)."""

    detail: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    ending: dict[str, Any] = field(default_factory=dict)

    def done(self, **detail: Any) -> None:
        self.detail.update(detail)

    def end_with(self, **detail: Any) -> None:
        """Detail written with the step's ending, whether done or failed."""
        self.ending.update(detail)

    def fail(self, **detail: Any) -> None:
        self.failure = detail


@dataclass
class Journal:
    """The journal of one run; ``version`` is written with every entry that names none."""

    state: ControlPlane
    run_id: str
    version: str | None = None

    def write(self, step: Step, phase: Phase, *, store: str | None = None, version: str | None = None,
              **detail: Any) -> None:
        self.state.journal(self.run_id, step, phase, store=store,
                           version=version if version is not None else self.version, detail=detail)

    @contextmanager
    def step(self, step: Step, *, store: str | None = None, version: str | None = None,
             failing_on: type[BaseException] | tuple[type[BaseException], ...] = PolyshiftError,
             error_key: str = "error", **intent: Any) -> Iterator[StepEntry]:
        """Journal ``step`` around the block. An exception of ``failing_on`` is journaled as the
        step's failure (the block's ``fail`` detail, or the exception text under ``error_key``) and
        re-raised; a block that calls ``fail`` and returns is journaled failed too."""
        self.write(step, Phase.INTENT, store=store, version=version, **intent)
        entry = StepEntry()
        try:
            yield entry
        except failing_on as exc:
            failure = entry.failure if entry.failure is not None else {error_key: str(exc)}
            self.write(step, Phase.FAILED, store=store, version=version, **entry.ending, **failure)
            raise
        if entry.failure is not None:
            self.write(step, Phase.FAILED, store=store, version=version, **entry.ending, **entry.failure)
        else:
            self.write(step, Phase.DONE, store=store, version=version, **entry.ending, **entry.detail)
