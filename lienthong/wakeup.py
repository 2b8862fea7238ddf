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
folder's path length (a socket file's path must fit in 108 bytes). Any local process can reach
it, so the daemon acts only on wake-ups from its own user or root (:class:`Listener`); all a
wake-up can do is make the daemon look at its queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import struct
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


class Listener:
    """The daemon's end: reads wake-ups as they come (on the event loop) until closed.

    Only wake-ups from processes of the daemon's own user, or of root, are acted on (the
    kernel says who sent each datagram): any local account can reach the socket, and a flood
    of wake-ups would have the senders read the queue without end. Others are counted and
    dropped, with a warning for the first."""

    def __init__(self, sock: socket.socket, on_wake: Callable[[Hops], None]) -> None:
        self._sock = sock
        self._on_wake = on_wake
        self._allowed = {0, os.geteuid()}
        self.refused = 0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(MAX_DATAGRAM, _CREDENTIALS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                _log.warning("wakeup_socket_error", reason=str(exc))
                return
            uid = _sender_uid(ancillary)
            if uid in self._allowed:
                self._on_wake(decode(data))
                continue
            self.refused += 1
            if self.refused == 1:
                _log.warning(
                    "wakeup_refused", uid=uid, reason="not the daemon's user; later ones unlogged"
                )

    def close(self) -> None:
        """Stop reading and release the address."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The sending process's user id, from the credentials the kernel attached."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_CREDENTIALS.unpack(data[: _CREDENTIALS.size])[1])
    return None


async def listen(state_dir: Path, on_wake: Callable[[Hops], None]) -> Listener | None:
    """Call ``on_wake(hops)`` for each wake-up sent to this state folder's daemon, until the
    returned listener is closed; None (with a warning) when the address is taken, by another
    daemon on the same folder: this one then finds queued work at its polls only."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        # The kernel attaches each sender's credentials, which the listener checks.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(address(state_dir))
    except OSError as exc:
        sock.close()
        _log.warning("wakeup_socket_unavailable", state_dir=str(state_dir), reason=str(exc))
        return None
    sock.setblocking(False)
    return Listener(sock, on_wake)
