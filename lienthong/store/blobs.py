"""Package files: written to a temporary name, fsynced, renamed, and the directory fsynced,
so a file that exists under its final name is whole and durable before any row refers to it."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from lienthong.store.errors import DiskFull, StoreTransientError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def write_durably(path: Path, data: bytes, what: str) -> None:
    """Create ``path`` holding ``data`` atomically and durably; no-op if it exists.

    ``what`` names the file in errors ("package blob 3fa4..."). A full disk raises
    :class:`DiskFull`, any other OS error :class:`StoreTransientError`; neither leaves a
    partial file under ``path``.
    """
    if path.exists():
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(path.parent.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _FULL:
            raise DiskFull(
                f"disk full while writing {what} to {path.parent}: {exc.strerror}"
            ) from exc
        raise StoreTransientError(f"cannot write {what} to {path.parent}: {exc.strerror}") from exc


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobDir:
    """Content-addressed package files: ``<root>/<sha256[:2]>/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the package with this digest lives."""
        return self.root / sha256[:2] / sha256

    def write(self, sha256: str, data: bytes) -> None:
        """Store ``data`` under its digest (already checked by the caller)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_durably(self.path(sha256), data, f"package blob {sha256[:16]}")

    def read(self, sha256: str) -> bytes:
        """The package bytes."""
        return self.path(sha256).read_bytes()
