"""Progress reporting that adapters call without knowing whether a terminal is attached."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

from polyshift.framework.core.secrets import redact


class Progress(Protocol):
    def start(self, description: str, total: int | None = None) -> None: ...
    def advance(self, amount: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


class TerminalProgress:
    """A rich bar on stderr that appears only once a task has taken more than ``delay`` seconds."""

    def __init__(self, delay: float = 0.5, console: Console | None = None) -> None:
        self.delay = delay
        self.console = console or Console(file=sys.stderr)
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        self._started = 0.0
        self._description = ""
        self._total: int | None = None
        self._done = 0

    def start(self, description: str, total: int | None = None) -> None:
        self.finish()
        self._description, self._total, self._done = description, total, 0
        self._started = time.monotonic()

    def advance(self, amount: int) -> None:
        self._done += amount
        if self._bar is None and time.monotonic() - self._started > self.delay:
            self._bar = RichProgress(
                # The description names scopes (tables, key patterns): text, never markup.
                TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeElapsedColumn(), console=self.console, transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(redact(self._description), total=self._total, completed=self._done)
        elif self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self._done)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._task = None, None


def for_output(json_mode: bool) -> Progress:
    if json_mode or not sys.stderr.isatty():
        return NullProgress()
    return TerminalProgress()
