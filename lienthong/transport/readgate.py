"""Stop reading from the broker while frames wait in memory: backpressure for large packages.

aiomqtt reads every message the broker sends into an unbounded queue, whatever the rate the
node handles them at. The frames of a large package arrive as fast as the neighbour publishes
them; a node that handles them a little slower (its disk, the CPU it shares) would hold a good
part of the package in that queue. The broker's ``max_inflight_messages`` should hold them back
until they are acknowledged, but mosquitto 2.0.11 lets two messages in per acknowledgement.

So the link stops reading the socket while :data:`PAUSE_AT` frames wait, and starts again once
at most :data:`RESUME_AT` do: the frames wait at the broker (TCP holds them back), never here.
aiomqtt offers no way to do this, so :class:`ReadGate` takes the socket's reader callback off
the event loop and puts the same callback back; on a loop without a selector (not asyncio's
own) it does nothing. While the socket is not read, no PUBACK is read either: so nothing that
handles a frame may wait for a publish over the same link (the receiver publishes its hop
receipts in tasks of their own), or the link would wait for itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt

PAUSE_AT = 8
"""Frames waiting in memory at which the link stops reading from the broker."""
RESUME_AT = 2
"""Frames waiting at which it reads again."""


class ReadGate:
    """Pauses and resumes the reading of one connected aiomqtt client's socket."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.pauses = 0
        self._reader: tuple[int, Callable[..., Any], tuple[Any, ...]] | None = None

    @property
    def paused(self) -> bool:
        """True while the socket is not read."""
        return self._reader is not None

    def taken(self) -> None:
        """A frame was taken from the queue: pause or resume as the frames waiting say."""
        waiting = len(self.client.messages)
        if self._reader is None and waiting >= PAUSE_AT:
            self._pause()
        elif self._reader is not None and waiting <= RESUME_AT:
            self._resume()

    def _pause(self) -> None:
        loop = asyncio.get_running_loop()
        selector = getattr(loop, "_selector", None)
        sock = self.client._client.socket()
        if selector is None or sock is None:
            return
        fd = sock.fileno()
        try:
            handle = selector.get_key(fd).data[0]
        except (KeyError, ValueError):
            return
        if handle is None:
            return
        self._reader = (fd, handle._callback, handle._args)
        loop.remove_reader(fd)
        self.pauses += 1

    def _resume(self) -> None:
        assert self._reader is not None
        fd, callback, args = self._reader
        self._reader = None
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, callback, *args)
        # Bytes the TLS layer decrypted before the pause raise no readiness: read them now.
        loop.call_soon(callback, *args)
