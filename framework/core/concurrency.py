"""Small shared pieces for adapters: batching iterables, and a thread that keeps a lock alive."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` items, in order (itertools.batched arrives in Python 3.12)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Renewer:
    """Calls ``renew`` every ``interval`` seconds on a daemon thread until stopped or ``renew`` returns False.

    Locks with an expiry (Redis SET PX, the graph lock node) stay held while the run lives and
    expire on their own if the process dies, because nothing renews them any more.
    """

    def __init__(self, renew: Callable[[], bool], interval: float, name: str) -> None:
        self._renew = renew
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            if self._renew() is False:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
