"""The first result of recent work, by key: the same work asked again is answered from it.

The gateway uses it twice: an identical signed request (same client, operation and
``hash-header``) to an operation that changes something is answered with the first reply,
not run again; and the same package bytes submitted again (a re-send by a new SDK client
object) get the first submission's result. Work still running is joined, never started a
second time, and is shielded: a dropped connection never cuts it short.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FirstResults(Generic[K, V]):
    """The results of the last ``size`` pieces of work that ``keep`` accepted, by key."""

    def __init__(self, size: int, keep: Callable[[V], bool] = lambda value: True) -> None:
        """``keep(result)`` decides whether a result is remembered (a transient failure is
        not: the same request again must be tried again)."""
        self.size = size
        self.keep = keep
        self._done: OrderedDict[K, V] = OrderedDict()
        self._running: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """The result of ``work()`` for ``key``, and whether it is a repeat (an earlier or a
        running call's result, ``work`` not called)."""
        known = self._done.get(key)
        if known is not None:
            self._done.move_to_end(key)
            return known, True
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running), True
        task = asyncio.ensure_future(work())
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task), False

    def _finished(self, key: K, task: asyncio.Future[V]) -> None:
        self._running.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        result = task.result()
        if self.keep(result):
            self._done[key] = result
            while len(self._done) > self.size:
                self._done.popitem(last=False)
