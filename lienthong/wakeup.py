"""Waking a running daemon from another process on the same machine.

Commands that queue transfers in the node's store beside the running daemon (``lienthong
send``, ``status``, ``requeue``) would otherwise be seen only at the daemon's next look at its
queue, every ``transfer.poll_s`` (1 s by default). So the daemon listens on a Unix datagram
socket named after its state folder, and such a process sends it one datagram naming the next
hops it queued transfers for (agency codes, one per line; an empty datagram: every hop).

A wake-up only makes senders look for due work sooner, so nothing depends on it: a datagram
that is lost, malformed or names hops the daemon does not send to changes nothing but the
delay, no process waits for the daemon, and a daemon that is not running is no error (the
poke says whether one listened).

The socket is in Linux's abstract namespace (``\\0lienthong-wake-`` and a digest of the state
folder's resolved path): no file to leave behind when a daemon is killed and no limit on the
folder's path length (a socket file's path must fit in 108 bytes). Any local process may send
to it; all it can do is make the daemon look at its queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from lienthong.edxml.codes import code_problem
from lienthong.logs import get_logger

_log = get_logger("lienthong.wakeup")

MAX_DATAGRAM = 4096
"""Largest wake-up read; a longer list of hops is sent as "every hop"."""

Hops = tuple[str, ...] | None
"""The next hops to wake, or None for every one."""


def address(state_dir: Path) -> str:
    """The socket address of the daemon whose store is in ``state_dir``."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:32]
    return f"\0lienthong-wake-{digest}"


def encode(hops: Iterable[str] | None) -> bytes:
    """The datagram for ``hops`` (None: every hop)."""
    if hops is None:
        return b""
    data = "\n".join(sorted(set(hops))).encode()
    return data if len(data) <= MAX_DATAGRAM else b""


def decode(data: bytes) -> Hops:
    """The hops a datagram names: None (every hop) for an empty one; only well-formed agency
    codes are kept, so a garbled datagram wakes nobody rather than raising."""
    if not data:
        return None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return ()
    return tuple(code for code in text.split("\n") if code_problem(code) is None)


def poke(state_dir: Path, hops: Iterable[str] | None = None) -> bool:
    """Tell the daemon of ``state_dir`` that transfers to ``hops`` are queued (None: look at
    every hop); True if a daemon listened. Never blocks and never raises."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(encode(hops), address(state_dir))
        except OSError:
            return False  # no daemon running, or its queue of datagrams full: it polls anyway
    return True


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, on_wake: Callable[[Hops], None]) -> None:
        self.on_wake = on_wake

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_wake(decode(data))

    def error_received(self, exc: Exception) -> None:
        _log.warning("wakeup_socket_error", reason=str(exc))


async def listen(state_dir: Path, on_wake: Callable[[Hops], None]) -> asyncio.BaseTransport | None:
    """Call ``on_wake(hops)`` for each wake-up sent to this state folder's daemon, until the
    returned transport is closed; None (with a warning) when the address is taken, by another
    daemon on the same folder: this one then finds queued work at its polls only."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address(state_dir))
    except OSError as exc:
        sock.close()
        _log.warning("wakeup_socket_unavailable", state_dir=str(state_dir), reason=str(exc))
        return None
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Listener(on_wake), sock=sock)
    return transport
