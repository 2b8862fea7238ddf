"""The daemon's event loop: asyncio's own, without waking itself up from its own thread.

aiomqtt asks the loop to watch the MQTT socket for writing each time paho has a packet to send,
through ``call_soon_threadsafe`` (paho may ask from the thread that connects). Called from the
loop's own thread, that writes a byte to the loop's wake-up pipe, and the loop reads it back
on its next turn: two system calls and a callback more for every packet a node sends (four
packets out per transfer at a node passing it on). On its own thread the loop is running a
callback, so its next turn runs whatever is scheduled without waiting in ``select``: a plain
``call_soon`` does the same there. From any other thread the wake-up is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``call_soon_threadsafe`` skips the wake-up on its thread."""

    def call_soon_threadsafe(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> asyncio.Handle:
        """``call_soon`` when called on this loop's own thread while it runs; else asyncio's."""
        if asyncio._get_running_loop() is self:
            return self.call_soon(callback, *args, context=context)
        return super().call_soon_threadsafe(callback, *args, context=context)


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a :class:`DaemonLoop`."""
    with asyncio.Runner(loop_factory=DaemonLoop) as runner:
        return runner.run(main)
