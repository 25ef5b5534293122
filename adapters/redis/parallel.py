"""One thread per Redis primary: a cluster's backup and restore scale with its primaries, and on a
single node the server's work overlaps with the client's (compression, decoding, hashing).

Queues are bounded, so memory stays flat whatever the number of keys; the first error raised on
any thread is raised again on the caller's, after every thread has stopped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_POLL = 0.1


class _Stop(Exception):
    """The other side gave up: a thread stops quietly."""


def _put(q: queue.Queue[T], item: T, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=_POLL)
            return
        except queue.Full:
            continue


class _Done(Generic[T]):
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def fan_in(producers: list[Callable[[], Iterable[T]]], depth: int = 4) -> Iterator[T]:
    """The items of every producer, each run on its own thread, in the order they arrive.

    Closing the iterator early (or an error in one producer) stops the others."""
    q: queue.Queue[T | _Done[T]] = queue.Queue(maxsize=depth * max(len(producers), 1))
    stop = threading.Event()

    def run(produce: Callable[[], Iterable[T]]) -> None:
        error: BaseException | None = None
        try:
            for item in produce():
                _put(q, item, stop)
        except _Stop:
            return
        except BaseException as exc:  # carried to the caller's thread
            error = exc
        try:
            _put(q, _Done(error), stop)
        except _Stop:
            pass

    threads = [threading.Thread(target=run, args=(p,), name=f"redis-node-{i}", daemon=True) for i, p in enumerate(producers)]
    for thread in threads:
        thread.start()
    remaining = len(threads)
    try:
        while remaining:
            item = q.get()
            if isinstance(item, _Done):
                remaining -= 1
                if item.error is not None:
                    raise item.error
            else:
                yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def fan_out(items: Iterable[tuple[int, T]], handlers: list[Callable[[T], None]], depth: int = 4) -> None:
    """Each ``(index, item)`` handled by ``handlers[index]`` on that handler's own thread, in order."""
    queues: list[queue.Queue[T | None]] = [queue.Queue(maxsize=depth) for _ in handlers]
    failed = threading.Event()  # a handler raised, or the items did: every thread stops after its current item
    errors: list[BaseException] = []

    def run(index: int) -> None:
        handle, q = handlers[index], queues[index]
        try:
            while not failed.is_set():
                try:
                    item = q.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if item is None:
                    return
                handle(item)
        except BaseException as exc:  # carried to the caller's thread
            errors.append(exc)
            failed.set()

    threads = [threading.Thread(target=run, args=(i,), name=f"redis-node-{i}", daemon=True) for i in range(len(handlers))]
    for thread in threads:
        thread.start()
    try:
        for index, item in items:
            _put(queues[index], item, failed)
        for q in queues:
            _put(q, None, failed)
    except _Stop:
        pass
    except BaseException:
        failed.set()
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
