"""Package files too large to live in their database row, content-addressed:
``<root>/<sha256[:2]>/<sha256>``.

Two ways to write, both leaving no partial file under a final name once they return:

- :func:`write_durably`, one file: written to a temporary name, fsynced, renamed, and its
  directory fsynced. A file that exists under its final name is whole and durable, so an
  existing file is left alone. Used for the rare single files (quarantine, the disk probe).
- :meth:`BlobDir.write_batch`, the package files of one grouped commit: every file written to
  a temporary name (or, for a package already in a file of the caller's on the same
  filesystem, that file renamed there: it is adopted, never copied) and fdatasync-ed (in
  parallel), renamed to its final name, then each directory touched fsynced once for the
  batch. Only once that has succeeded may a row referring to those files be committed; if
  it fails, the files of the batch are removed and the error raised. Only the files and
  folders of the batch are flushed, never the whole filesystem
  (``syncfs`` would also flush every other process's dirty pages, the broker's included).

Here a file under its final name is not proof of durability by itself (power may fail between
the rename and the flush): what proves it is a committed row. So the caller passes only
digests that no committed row refers to, and this module overwrites whatever it finds under
those names (an orphan of an earlier crash or failure, perhaps empty), never trusting it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from lienthong.store.errors import DiskFull, StoreTransientError

T = TypeVar("T")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def datasync(fd: int) -> None:
    """fdatasync where the system has it (Linux), else fsync."""
    # Looked up at each call (a dict lookup beside a system call), so that an os.fdatasync
    # replaced later, as the tests of a failing disk do, is the one that runs.
    sync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def _store_error(exc: OSError, what: str, where: Path) -> StoreTransientError:
    """The OS error as :class:`DiskFull` or :class:`StoreTransientError`, naming the file."""
    if exc.errno in _FULL:
        return DiskFull(f"disk full while writing {what} to {where}: {exc.strerror}")
    return StoreTransientError(f"cannot write {what} to {where}: {exc.strerror}")


def _create(tmp: Path, data: bytes | Path, sync: bool) -> None:
    """Write ``data`` to the new file ``tmp`` (a path: adopt that file, renaming it to
    ``tmp``); fdatasync it if ``sync``."""
    if isinstance(data, Path):
        fd = os.open(data, os.O_RDONLY)
        try:
            if sync:
                datasync(fd)
        finally:
            os.close(fd)
        os.replace(data, tmp)
        return
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            datasync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size of a file, read in pieces."""
    with path.open("rb") as source:
        digest = hashlib.file_digest(source, "sha256")
        return digest.hexdigest(), source.tell()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def fsync_folder(directory: Path) -> None:
    """Make the entries of ``directory`` (files created, renamed, removed) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes | Path, what: str) -> None:
    """Create ``path`` holding ``data`` (a path: that file, adopted) atomically and durably;
    no-op if it exists.

    ``what`` names the file in errors ("conflicting transfer 3fa4..."). A full disk raises
    :class:`DiskFull`, any other OS error :class:`StoreTransientError`; neither leaves a
    partial file under ``path``.
    """
    if path.exists():
        return
    tmp = _temp_name(path)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_folder(path.parent.parent)
        _create(tmp, data, sync=True)
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _store_error(exc, what, path.parent) from exc


class BlobDir:
    """Content-addressed package files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.flushes = 0  # batches made durable, for the benchmark and tests

    def path(self, sha256: str) -> Path:
        """Where the package with this digest lives."""
        return self.root / sha256[:2] / sha256

    def read(self, sha256: str) -> bytes:
        """The package bytes."""
        return self.path(sha256).read_bytes()

    def collect(self, keep: Callable[[list[str]], set[str]]) -> list[Path]:
        """Remove the files a crash left behind: temporary ones, and package files whose
        digest ``keep(digests)`` does not return (no row names them); the files removed."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            names = [p.name for p in folder.iterdir()]
            wanted = keep([n for n in names if not n.startswith(".")])
            for name in names:
                if name not in wanted:
                    (folder / name).unlink(missing_ok=True)
                    removed.append(folder / name)
        return removed

    def write_batch(self, blobs: Mapping[str, bytes | Path]) -> None:
        """Make every ``sha256 -> bytes`` durable under its digest: each file fdatasync-ed,
        each folder touched fsynced once. A path instead of bytes is a file holding the package
        (its digest checked by the caller), adopted: renamed into place, so it is gone from
        where it was once this returns, or raises after the rename.

        The digests are already checked, and no committed row may refer to them yet: whatever
        is found under their names is overwritten. On return, all files are durable. A full
        disk raises :class:`DiskFull`, any other OS error (a flush's included)
        :class:`StoreTransientError`; then no file of the batch remains, final or temporary.
        """
        if not blobs:
            return
        written: list[tuple[Path, Path]] = []
        placed: list[Path] = []
        dirs: set[Path] = set()
        try:
            if not self.root.is_dir():
                self.root.mkdir(parents=True, exist_ok=True)
                dirs.add(self.root.parent)
            for sha256 in blobs:
                path = self.path(sha256)
                if not path.parent.is_dir():
                    path.parent.mkdir(exist_ok=True)
                    dirs.add(self.root)
                dirs.add(path.parent)
                written.append((_temp_name(path), path))
            _in_parallel(lambda w: _create(w[0], blobs[w[1].name], sync=True), written)
            for tmp, path in written:
                os.replace(tmp, path)
                placed.append(path)
            _in_parallel(fsync_folder, dirs)
        except OSError as exc:
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)
            for path in placed:
                path.unlink(missing_ok=True)
            what = f"package blob {next(iter(blobs))[:16]}"
            if len(blobs) > 1:
                what += f" and {len(blobs) - 1} more"
            raise _store_error(exc, what, self.root) from exc
        self.flushes += 1


@functools.cache
def _sync_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="blob-sync")


def _in_parallel(work: Callable[[T], None], items: Iterable[T]) -> None:
    """``work`` on every item at once: concurrent file creations and syncs overlap their
    waits, and the filesystem merges concurrent syncs into fewer journal commits."""
    futures = [_sync_pool().submit(work, item) for item in items]
    # Every one finishes before any error is raised: the caller's clean-up must not race a
    # file still being created.
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
