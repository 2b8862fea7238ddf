"""Putting one transfer's chunks together again, in a file.

A :class:`Reassembler` holds an open file and a running SHA-256, never the package: each chunk
is written at its place in the file as it arrives, and hashed as soon as every chunk before it
is in (a chunk that comes early is read back from the file when its turn comes). So memory
depends on the chunk size, not on the package size: a few hundred bytes of bookkeeping, one bit
per chunk, and at most one chunk held while the chunk length is not known yet (the last chunk,
when it comes first: every other chunk has the transfer's chunk length).

It collects chunks in any order, tolerates duplicates (a duplicate is compared with what the
file holds), refuses inconsistent metadata, chunks of uneven length, more chunks than
``max_chunks(max_size)`` and packages larger than ``max_size``, and yields the package (its
file closed, handed to the caller) once every chunk is in and its sha256 matches. Everything
malformed raises :class:`~lienthong.transport.frames.FrameError`; :meth:`Reassembler.discard`
closes and removes the file of a transfer given up.

File I/O happens in the calling thread: chunks are written to the page cache, which the store
flushes (fdatasync) when it adopts the file. A package that comes whole in one frame of at
most ``in_memory_max`` bytes never gets a file: it is checked and handed over as bytes (the
store keeps such a package in its row, so a file would only be written, read back and removed).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from lienthong.transport.frames import (
    DEFAULT_MAX_PACKAGE,
    FrameError,
    Package,
    TransferFrame,
    max_chunks,
)

SUFFIX = ".part"
"""The name ending of the files of transfers being reassembled."""


class Reassembler:
    """Collects the chunks of one transfer into a new file in ``folder``."""

    def __init__(
        self, folder: Path, max_size: int = DEFAULT_MAX_PACKAGE, in_memory_max: int = 0
    ) -> None:
        """``max_size`` caps the announced package size (and so the chunk count); a package
        in one frame of at most ``in_memory_max`` bytes (0: none) is handed over as bytes."""
        self.folder = folder
        self.max_size = max_size
        self.in_memory_max = in_memory_max
        self._path: Path | None = None
        self._fd: int | None = None
        self._metadata: tuple[object, ...] | None = None
        self._have = bytearray()
        self._received = 0
        self._chunk = 0  # the length of every chunk but the last; 0 while not known
        self._last: bytes | None = None  # the last chunk, while the chunk length is unknown
        self._hashed = 0  # chunks hashed so far, in order
        self._sha = hashlib.sha256()
        self.done = False

    @property
    def path(self) -> Path:
        """The transfer's file (named when first asked: a package kept in memory has none)."""
        if self._path is None:
            self._path = self.folder / f"{uuid.uuid4().hex}{SUFFIX}"
        return self._path

    @property
    def received(self) -> int:
        """How many distinct chunks are held."""
        return self._received

    def add(self, frame: TransferFrame) -> Package | None:
        """Take one frame; return the package when this frame completes it, else ``None``.

        Frames arriving after completion (duplicates) return ``None``.
        """
        meta = frame.metadata()
        if self._metadata is None:
            self._first(frame)
            self._metadata = meta
        elif meta != self._metadata:
            raise FrameError(
                f"frame {frame.index} of transfer {frame.transfer_id} disagrees with the"
                " transfer's earlier frames (recipients, kind, digest, size, count or labels)"
            )
        if self.done:
            return None
        if self.in_memory_max and frame.count == 1 and frame.size <= self.in_memory_max:
            return self._whole(frame)
        if self._has(frame.index):
            if self._held(frame) != frame.chunk:
                raise FrameError(
                    f"chunk {frame.index} of transfer {frame.transfer_id} arrived twice"
                    " with different bytes"
                )
            return None
        last = frame.index == frame.count - 1
        if not last:
            self._learn_chunk(frame, len(frame.chunk))
        if last and not self._chunk and frame.count > 1:
            self._last = frame.chunk  # its place is known once another chunk tells the length
        else:
            self._check_length(frame, len(frame.chunk))
            self._write(frame.index, frame.chunk)
        self._mark(frame.index)
        self._catch_up(frame, frame.chunk)
        if self._received < frame.count:
            return None
        return self._finish(frame)

    def _whole(self, frame: TransferFrame) -> Package:
        """The package of a transfer in one small frame, checked, as bytes."""
        self._check_length(frame, len(frame.chunk))
        self._verify(frame, hashlib.sha256(frame.chunk).hexdigest())
        self._received = 1
        self.done = True
        return self._package(frame, frame.chunk)

    def discard(self) -> None:
        """Give the transfer up: close and remove its file (unless already handed over)."""
        self._close()
        if not self.done and self._path is not None:
            self._path.unlink(missing_ok=True)

    # -- bookkeeping -------------------------------------------------------------------------

    def _first(self, frame: TransferFrame) -> None:
        if frame.size > self.max_size:
            raise FrameError(
                f"transfer {frame.transfer_id} announces {frame.size} bytes,"
                f" more than the {self.max_size} accepted"
            )
        if frame.count > max_chunks(self.max_size):
            raise FrameError(
                f"transfer {frame.transfer_id} announces {frame.count} chunks,"
                f" more than the {max_chunks(self.max_size)} a package of at most"
                f" {self.max_size} bytes takes"
            )
        self._have = bytearray(-(-frame.count // 8))

    def _has(self, index: int) -> bool:
        return bool(self._have[index >> 3] & (1 << (index & 7)))

    def _mark(self, index: int) -> None:
        self._have[index >> 3] |= 1 << (index & 7)
        self._received += 1

    def _learn_chunk(self, frame: TransferFrame, length: int) -> None:
        """Every chunk but the last has the same length, and together they make the size."""
        if self._chunk:
            if length != self._chunk:
                raise FrameError(
                    f"chunk {frame.index} of transfer {frame.transfer_id} has {length} bytes,"
                    f" its other chunks {self._chunk}"
                )
            return
        if length < 1 or not (frame.count - 1) * length < frame.size <= frame.count * length:
            raise FrameError(
                f"transfer {frame.transfer_id} cannot be {frame.count} chunks of {length} bytes"
                f" making {frame.size}"
            )
        self._chunk = length
        if self._last is not None:
            held, self._last = self._last, None
            self._check_length(frame, len(held), frame.count - 1)
            self._write(frame.count - 1, held)

    def _check_length(self, frame: TransferFrame, length: int, index: int | None = None) -> None:
        index = frame.index if index is None else index
        if frame.count == 1:
            expected = frame.size
        elif index == frame.count - 1:
            expected = frame.size - (frame.count - 1) * self._chunk
        else:
            expected = self._chunk
        if length != expected:
            raise FrameError(
                f"transfer {frame.transfer_id} sent more than its announced {frame.size} bytes"
                if length > expected
                else f"chunk {index} of transfer {frame.transfer_id} has {length} bytes,"
                f" not {expected}"
            )

    # -- the file ----------------------------------------------------------------------------

    def _offset(self, index: int) -> int:
        return index * self._chunk

    def _write(self, index: int, chunk: bytes) -> None:
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        view = memoryview(chunk)
        offset = self._offset(index)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def _held(self, frame: TransferFrame) -> bytes:
        """The chunk at ``frame.index`` as held (in memory or in the file)."""
        if frame.index == frame.count - 1 and self._last is not None:
            return self._last
        if self._fd is None:  # only an empty package's one empty chunk was taken
            return b""
        offset = self._offset(frame.index)
        length = self._chunk if frame.index < frame.count - 1 else frame.size - offset
        return os.pread(self._fd, length, offset)

    def _catch_up(self, frame: TransferFrame, chunk: bytes) -> None:
        """Hash the chunks that are now in order: ``chunk`` (just taken) if its turn has come,
        then those that came before their turn, read back from the file (the last one perhaps
        from memory)."""
        while self._hashed < frame.count and self._has(self._hashed):
            index = self._hashed
            if index == frame.index:
                self._sha.update(chunk)
            elif index == frame.count - 1 and self._last is not None:
                self._sha.update(self._last)
            else:
                offset = self._offset(index)
                length = frame.size - offset if index == frame.count - 1 else self._chunk
                assert self._fd is not None
                self._sha.update(os.pread(self._fd, length, offset))
            self._hashed += 1

    def _finish(self, frame: TransferFrame) -> Package:
        # Every chunk is in: the chunk length is known (or there is one chunk), so the last
        # chunk is in the file and every chunk is hashed.
        self._verify(frame, self._sha.hexdigest())
        if self._fd is None:  # an empty package: an empty file
            self._write(0, b"")
        self._close()
        self.done = True
        return self._package(frame, self.path)

    @staticmethod
    def _verify(frame: TransferFrame, digest: str) -> None:
        if digest != frame.sha256:
            raise FrameError(
                f"transfer {frame.transfer_id} reassembled with sha256 {digest},"
                f" not the announced {frame.sha256}"
            )

    @staticmethod
    def _package(frame: TransferFrame, source: bytes | Path) -> Package:
        return Package(
            frame.transfer_id,
            frame.kind,
            frame.recipients,
            frame.sha256,
            source,
            frame.size,
            frame.document,
            frame.origin,
        )

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
