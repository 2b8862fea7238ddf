"""Which files of a folder are whole: their writer closed them, or they were renamed in.

Linux's inotify reports ``IN_CLOSE_WRITE`` when a process that had a file open for writing
closes it, and ``IN_MOVED_TO`` when a file is renamed into the folder. A writer that pauses
half-way keeps its file open, so neither event comes until it is done: this is what the spool
needs to never read a package half-written, whatever the writer's pauses. Read without
blocking (the events are drained at each scan); through ctypes, as the standard library has
no binding. Where inotify is unavailable :func:`watch` returns ``None``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

from lienthong.logs import get_logger

_log = get_logger("lienthong.gateway.spool")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class CloseWatch:
    """Names in one folder that became whole since the last :meth:`drain`."""

    def __init__(self, fd: int, folder: Path) -> None:
        self.fd = fd
        self.folder = folder

    def drain(self) -> tuple[set[str], bool]:
        """The names closed after writing or renamed in, and whether events were lost (the
        kernel's queue overflowed: the caller must fall back to another rule)."""
        names: set[str] = set()
        overflow = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                break
            if not data:
                break
            at = 0
            while at + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, at)
                raw = data[at + _EVENT.size : at + _EVENT.size + length]
                at += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                name = raw.rstrip(b"\0")
                if name:
                    names.add(os.fsdecode(name))
        return names, overflow

    def close(self) -> None:
        """Stop watching."""
        os.close(self.fd)


def watch(folder: Path) -> CloseWatch | None:
    """Watch ``folder``; ``None`` where inotify cannot be used (not Linux, no more watches)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    fd = int(init(IN_NONBLOCK | IN_CLOEXEC))
    if fd < 0:
        _log.warning("spool_watch_unavailable", reason=os.strerror(ctypes.get_errno()))
        return None
    if add(fd, os.fsencode(folder), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
        _log.warning("spool_watch_unavailable", reason=os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return CloseWatch(fd, folder)
