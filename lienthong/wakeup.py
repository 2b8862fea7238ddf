"""Waking a running daemon from another process on the same machine.

Commands that queue transfers in the node's store beside the running daemon (``lienthong
send``, ``status``, ``requeue``) would otherwise be seen only at the daemon's next look at its
queue, every ``transfer.poll_s`` (1 s by default). So the daemon listens on a Unix datagram
socket, and such a process sends it one datagram naming the next hops it queued transfers for
(agency codes, one per line; an empty datagram: every hop).

A wake-up only makes senders look for due work sooner, so nothing depends on it: a datagram
that is lost, malformed or names hops the daemon does not send to changes nothing but the
delay, no process waits for the daemon, and a daemon that is not running is no error (the
poke says whether one listened).

The socket is in Linux's abstract namespace under a random name, which the daemon writes to
``wake.address`` in its state folder (mode 0600: only its own user, and root, can read it, as
they are the ones who run those commands): no socket file to leave behind when a daemon is
killed, no limit on the folder's path length (a socket file's path must fit in 108 bytes), and
no name another account could take first. Every local process can still list the name (in
``/proc/net/unix``) and send to it, so the daemon acts only on wake-ups sent by a process
whose real user is the daemon's own effective user, or root (:class:`Listener`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

from lienthong.edxml.codes import code_problem
from lienthong.logs import get_logger

_log = get_logger("lienthong.wakeup")

MAX_DATAGRAM = 4096
"""Largest wake-up read; a longer list of hops is sent as "every hop"."""
ADDRESS_FILE = "wake.address"
"""The file in the state folder naming the running daemon's socket."""
_PREFIX = "lienthong-wake-"

Hops = tuple[str, ...] | None
"""The next hops to wake, or None for every one."""


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
    try:
        name = (state_dir / ADDRESS_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False  # no daemon has listened here (or this user may not know where)
    if not name.startswith(_PREFIX) or len(name) > 64:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(encode(hops), "\0" + name)
        except OSError:
            return False  # the daemon is gone, or its queue of datagrams full: it polls anyway
    return True


def poker(state_dir: Path) -> Callable[[Iterable[str]], bool]:
    """``poke`` for ``state_dir``, as a processor's ``on_enqueued`` wants it."""
    return lambda hops: poke(state_dir, hops)


class Listener:
    """The daemon's end: reads wake-ups as they come (on the event loop) until closed.

    Only wake-ups sent by a process whose real user is this daemon's effective user, or root,
    are acted on (the kernel attaches each sender's credentials): others are counted in
    :attr:`refused` and dropped, with a warning for the first. A socket error other than an
    empty queue stops the listening, with a warning: the daemon then polls only."""

    def __init__(
        self, sock: socket.socket, name: str, address_file: Path, on_wake: Callable[[Hops], None]
    ) -> None:
        self._sock = sock
        self._name = name
        self._address_file = address_file
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
                _log.warning("wakeup_socket_error", reason=f"{exc}; polling only from now")
                self.close()
                return
            uid = _sender_uid(ancillary)
            if uid not in self._allowed:
                self.refused += 1
                if self.refused == 1:
                    _log.warning("wakeup_refused", uid=uid, reason="not the daemon's user")
                continue
            try:
                self._on_wake(decode(data))
            except Exception as exc:  # a wake-up is a hint: never stop reading for one
                _log.error("wakeup_failed", reason=str(exc), exc_info=True)

    def close(self) -> None:
        """Stop reading, release the name, and remove the address file if it still names this
        listener (a daemon started since on the same folder wrote its own)."""
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        try:
            if self._address_file.read_text(encoding="ascii").strip() == self._name:
                self._address_file.unlink()
        except OSError:
            pass


_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_CREDENTIALS_SPACE = socket.CMSG_SPACE(_CREDENTIALS.size)


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The sending process's real user id, from the credentials the kernel attached."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_CREDENTIALS.unpack(data[: _CREDENTIALS.size])[1])
    return None


def listen(state_dir: Path, on_wake: Callable[[Hops], None]) -> Listener | None:
    """Call ``on_wake(hops)`` for each wake-up sent to this state folder's daemon, until the
    returned listener is closed (from the running event loop); None, with a warning, when no
    socket can be made here (the daemon then finds queued work at its polls only). The newest
    listener on a folder is the one woken: its name replaces the address file's."""
    name = _PREFIX + secrets.token_hex(16)
    address_file = state_dir / ADDRESS_FILE
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        # The kernel attaches each sender's credentials, which the listener checks.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind("\0" + name)
        sock.setblocking(False)
        _write_private(address_file, name)
        return Listener(sock, name, address_file, on_wake)
    except (OSError, AttributeError) as exc:  # AttributeError: no SO_PASSCRED (not Linux)
        sock.close()
        _log.warning("wakeup_socket_unavailable", state_dir=str(state_dir), reason=str(exc))
        return None


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only, replacing it in one rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(text + "\n")
    os.replace(temporary, path)
