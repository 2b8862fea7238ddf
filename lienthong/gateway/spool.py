"""Spool folders for office software that can only drop and pick up files.

Under the spool folder:

- ``outbox/``: a package dropped here is taken, validated, signed and sent. The contract is
  maildir's: **write the file under a temporary name** (starting with ``.`` or ending in
  ``.tmp``/``.part``, which are never taken) **and rename it to ``<name>.xml`` when it is
  whole**; a file written in place is taken only once its writer has closed it (Linux inotify,
  :mod:`lienthong.gateway.closewatch`), never while a paused writer still holds it. Files
  found at start, or when the kernel lost events or cannot watch, are taken once their size
  and time have stayed the same for ``settle_s``. Only regular ``*.xml`` files are taken: a
  symbolic link is refused (moved to ``rejected/`` with the reason), never followed, and a
  file over the package limit is refused unread. A taken file is first renamed into
  ``outbox/.taken/`` (atomic), then submitted; once the package is in the store it is removed.
- ``rejected/``: a refused package is moved here, with ``<name>.error`` beside it listing every
  problem, one per line. Nothing is deleted.
- ``inbox/``: every delivered document as ``<entry>.<DocumentId>.<recipient>.xml`` (``<entry>``
  the inbox entry number, so two documents with the same DocumentId never share a name), its
  attachments extracted beside it into the folder of the same name. The folder is filled
  under a hidden temporary name and renamed whole; the file is written under a hidden
  temporary name and linked into place. Nothing here is ever overwritten or followed: a name
  taken by something this node did not write is reported, not replaced. The inbox entry is
  then acknowledged as retrieved.
- ``status/``: status packages received, as ``<entry>.<DocumentId>.<code>.<from>.xml``.

Names this module writes are made from DocumentIds and attachment names with every character
outside letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``, and are kept well under the
file system's 255-byte limit (a long name is cut and given a digest of the whole); no name can
leave its folder. One file that fails never stops the others; the failures show in
``/healthz`` (:meth:`Spool.check`) until the file goes through.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import stat
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lienthong.edxml import EdocPackage, parse
from lienthong.edxml.streamed import LARGE_PACKAGE, validate_file
from lienthong.errors import ConfigError, LienthongError
from lienthong.gateway.closewatch import CloseWatch, watch
from lienthong.health import Check
from lienthong.logs import get_logger
from lienthong.processing import Processor, SubmissionRefused
from lienthong.store import Store
from lienthong.store.blobs import fsync_folder  # the one directory fsync of the project
from lienthong.store.model import InboxEntry

_log = get_logger("lienthong.gateway.spool")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SKIP_SUFFIXES = (".tmp", ".part", ".error")
MAX_NAME = 150
NAME_MAX = 255
"""The file system's limit on one name, in bytes."""
READ_PIECE = 1024 * 1024
FOLDERS = ("outbox", "outbox/.taken", "inbox", "status", "rejected")


class SpoolError(LienthongError):
    """A file of the spool that cannot be handled; it stays where it is and is reported."""


def safe_name(text: str, fallback: str = "file") -> str:
    """``text`` as a file name that stays inside its folder: ASCII letters, digits, ``._-``.

    Vietnamese letters lose their marks (``Công văn`` -> ``Cong_van``); ``..`` and leading
    dots are removed; an empty result becomes ``fallback``.
    """
    ascii_text = (
        unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
        .encode("ascii", "ignore")
        .decode()
    )
    name = _UNSAFE.sub("_", ascii_text).strip("._")
    name = re.sub(r"\.{2,}", ".", name)[:MAX_NAME]
    return name or fallback


def bounded(name: str, limit: int = MAX_NAME) -> str:
    """``name`` in at most ``limit`` bytes (UTF-8), its suffix kept; a cut name ends with a
    digest of the whole, so two long names that share a beginning stay two names."""
    if len(os.fsencode(name)) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix}" if dot and stem and len(suffix) <= 10 else ""
    stem = name[: len(name) - len(suffix)]
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    room = limit - len(suffix) - len(digest) - 1
    cut = os.fsencode(stem)[:room].decode("utf-8", errors="ignore")
    return f"{cut}-{digest}{suffix}"


def _unique(path: Path, limit: int = NAME_MAX) -> Path:
    """``path`` (its name bounded), or ``name-2.ext``, ``name-3.ext``... when it exists."""
    base = bounded(path.name, limit - 4)
    candidate, n = path.with_name(base), 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        stem, dot, suffix = base.rpartition(".")
        candidate = path.with_name(f"{stem}-{n}.{suffix}" if dot and stem else f"{base}-{n}")
    return candidate


def _hidden(name: str) -> str:
    """The temporary name of ``name`` while it is written (ignored by readers of the folder)."""
    return "." + bounded(name, NAME_MAX - 6) + ".part"


def _create(path: Path, data: bytes | Path) -> None:
    """Write a new file holding ``data`` (a path: that file's bytes, copied in pieces), never
    following or replacing what is at ``path``; fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    with os.fdopen(fd, "wb") as out:
        if isinstance(data, Path):
            with data.open("rb") as source:
                shutil.copyfileobj(source, out, READ_PIECE)
        else:
            view = memoryview(data)
            for at in range(0, len(view), READ_PIECE):
                out.write(view[at : at + READ_PIECE])
        out.flush()
        os.fsync(out.fileno())


def _clear(path: Path) -> None:
    """Remove our leftover temporary ``path`` (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_new(folder: Path, name: str, data: bytes | Path) -> bool:
    """Create ``folder/name`` holding ``data`` (a path: that file's bytes, copied in pieces),
    atomically and durably, never overwriting.

    False when a regular file of that name is there already (an earlier run wrote it before
    it could acknowledge); :class:`SpoolError` when something else holds the name.
    """
    final = folder / name
    tmp = folder / _hidden(name)
    _clear(tmp)
    _create(tmp, data)
    try:
        os.link(tmp, final, follow_symlinks=False)
    except FileExistsError:
        if final.is_symlink() or not final.is_file():
            raise SpoolError(f"{final} exists and is not a file this node wrote") from None
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(folder)
    return True


def write_folder(parent: Path, name: str, files: Iterable[tuple[str, bytes | Path]]) -> bool:
    """Create the folder ``parent/name`` holding ``files`` (name, bytes or a file to copy in
    pieces), filled under a hidden name and renamed whole; False when an earlier run made it
    already."""
    final = parent / name
    if final.is_dir() and not final.is_symlink():
        return False
    if final.exists() or final.is_symlink():
        raise SpoolError(f"{final} exists and is not a folder this node made")
    tmp = parent / _hidden(name)
    _clear(tmp)
    os.mkdir(tmp, 0o750)
    used: set[str] = set()
    for file_name, data in files:
        unique, n = file_name, 1
        while unique.lower() in used:
            n += 1
            stem, dot, suffix = file_name.rpartition(".")
            unique = f"{stem}-{n}.{suffix}" if dot and stem else f"{file_name}-{n}"
        used.add(unique.lower())
        _create(tmp / unique, data)
    fsync_folder(tmp)
    os.rename(tmp, final)
    fsync_folder(parent)
    return True


def read_regular(path: Path, limit: int, large: int | None = None) -> bytes | Path:
    """The bytes of the regular file ``path``, read in pieces (``path`` itself, unread, when
    it has more than ``large`` bytes); :class:`SpoolError` for a link, anything but a regular
    file, or a file over ``limit`` bytes (refused unread)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if path.is_symlink():
            raise SpoolError("a symbolic link: only regular files are taken") from exc
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SpoolError("not a regular file: only regular files are taken")
        if info.st_size > limit:
            raise SpoolError(f"the file has {info.st_size} bytes, over the limit of {limit}")
        if large is not None and info.st_size > large:
            return path
        data = bytearray()
        while piece := file.read(READ_PIECE):
            data += piece
            if len(data) > limit:
                raise SpoolError(f"the file grew over the limit of {limit} bytes")
        return bytes(data)


@dataclass
class Spool:
    """The spool folders of one node, served by :meth:`run`."""

    root: Path
    processor: Processor
    store: Store
    settle_s: float = 2.0
    poll_s: float = 1.0
    clock: Callable[[], float] = time.time
    _seen: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    _whole: set[str] = field(default_factory=set)
    _watch: CloseWatch | None = None
    _failing: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in FOLDERS:
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            if folder.is_symlink() or not folder.is_dir():
                raise ConfigError(f"{folder} must be a folder, not a link", key="spool.dir")
        self._watch = watch(self.root / "outbox")
        # Files there before the watch began may still be written: the settle rule for them.
        for path in (self.root / "outbox").iterdir():
            self._seen[path.name] = (-1, -1.0, 0.0)

    def close(self) -> None:
        """Stop watching the outbox."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    async def run(self) -> None:
        """Scan the outbox and export the inbox every ``poll_s``, until cancelled."""
        try:
            while True:
                await self.scan_once()
                await asyncio.sleep(self.poll_s)
        finally:
            self.close()

    async def scan_once(self) -> None:
        """One round: retake, scan the outbox, export the inbox. Every failing file is tried
        again in each round, so the failures recorded are those of the last round."""
        self._failing = {}
        for step in (self._retake, self.scan_outbox, self.export_inbox):
            await self._attempt(step.__name__, step())

    def check(self) -> Check:
        """For ``/healthz``: failing while any file or scan of the spool is failing."""
        if not self._failing:
            return Check("spool", True, f"{self.root}: every file went through")
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(self._failing.items())[:5])
        return Check("spool", False, f"{len(self._failing)} failing in {self.root}: {shown}")

    async def _attempt(self, key: str, work: Awaitable[object]) -> bool:
        """Await ``work``, recording its failure under ``key`` (cleared when it succeeds)."""
        try:
            await work
        except Exception as exc:  # one file or one round failing must never stop the others
            self._failing[key] = str(exc) or repr(exc)
            _log.error("spool_failed", item=key, reason=str(exc), exc_info=True)
            return False
        self._failing.pop(key, None)
        return True

    async def _retake(self) -> None:
        """Files taken but not finished (by a previous run, or refused for a transient fault)
        are submitted again (a duplicate submission is recognised by the store)."""
        for path in sorted((self.root / "outbox" / ".taken").iterdir()):
            await self._attempt(f"outbox/.taken/{path.name}", self._submit(path))

    # -- outbox -------------------------------------------------------------------------------

    def _ready(self, entry: os.DirEntry[str], now: float, fallback: bool) -> bool:
        """Whole: its writer closed it or it was renamed in; else, by ``fallback``, settled."""
        if entry.name in self._whole:
            return True
        if not fallback:
            return False
        info = entry.stat(follow_symlinks=False)
        key = (info.st_size, info.st_mtime)
        seen = self._seen.get(entry.name)
        if seen is None or seen[:2] != key:
            self._seen[entry.name] = (*key, now)
            return False
        return now - seen[2] >= self.settle_s

    async def scan_outbox(self) -> int:
        """Take every whole package in ``outbox/``; how many were taken."""
        now = self.clock()
        outbox = self.root / "outbox"
        closed, lost = self._watch.drain() if self._watch is not None else (set(), True)
        self._whole |= closed
        fallback = lost or self._watch is None
        taken = 0
        present: set[str] = set()
        with os.scandir(outbox) as entries:
            listed = sorted(entries, key=lambda e: e.name)
        for entry in listed:
            name = entry.name
            if name.startswith(".") or name.endswith(_SKIP_SUFFIXES) or not name.endswith(".xml"):
                continue
            if not entry.is_symlink() and not entry.is_file(follow_symlinks=False):
                continue
            present.add(name)
            settle = fallback or name in self._seen
            ready = entry.is_symlink() or self._ready(entry, now, settle)
            if ready and await self._attempt(f"outbox/{name}", self._take(Path(entry.path))):
                taken += 1
        self._whole &= present
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return taken

    async def _take(self, path: Path) -> None:
        moved = _unique(path.parent / ".taken" / path.name)
        os.replace(path, moved)  # a rename within one folder tree: atomic, never blocks long
        self._seen.pop(path.name, None)
        self._whole.discard(path.name)
        await self._submit(moved)

    async def _submit(self, path: Path) -> None:
        try:
            data = await asyncio.to_thread(
                read_regular, path, self.processor.max_package_bytes, LARGE_PACKAGE
            )
        except SpoolError as exc:
            self._reject(path, (str(exc),))
            return
        try:
            done = await self.processor.submit(data)
        except SubmissionRefused as exc:
            self._reject(path, exc.problems)
            return
        except LienthongError as exc:
            # Not the package's fault (disk full, database locked): leave it taken, retry later.
            raise SpoolError(f"{path.name} could not be stored, tried again: {exc}") from exc
        await asyncio.to_thread(path.unlink)
        _log.info("spool_taken", file=path.name, document_id=done.document_id)

    def _reject(self, path: Path, problems: tuple[str, ...]) -> None:
        target = _unique(self.root / "rejected" / path.name, NAME_MAX - len(".error"))
        reasons = "".join(f"{problem}\n" for problem in problems)
        write_new(target.parent, target.name + ".error", reasons.encode())
        path.replace(target)
        _log.warning("spool_rejected", file=path.name, problems=list(problems))

    # -- inbox and status ---------------------------------------------------------------------

    async def export_inbox(self) -> int:
        """Write every pending inbox entry to ``inbox/`` or ``status/``; how many."""
        count = 0
        for entry in await self.store.inbox_list(pending=True):
            if await self._attempt(f"inbox entry {entry.entry_id}", self._export(entry)):
                count += 1
        return count

    async def _export(self, entry: InboxEntry) -> None:
        path = await self.store.package_file(entry.package_id)
        if path is not None and (await asyncio.to_thread(os.stat, path)).st_size > LARGE_PACKAGE:
            await asyncio.to_thread(self._write_large, entry, path)
            await self.store.inbox_ack(entry.entry_id, True, self.clock(), "spool")
            return
        data = await self.store.read_package(entry.package_id)
        if entry.kind == "edoc":
            await asyncio.to_thread(self._write_document, entry, data)
        else:
            await asyncio.to_thread(self._write_status, entry, data)
        await self.store.inbox_ack(entry.entry_id, True, self.clock(), "spool")

    def _write_large(self, entry: InboxEntry, path: Path) -> None:
        """A large package to ``inbox/`` (or ``status/``), copied in pieces, its attachments
        decoded to files in pieces as they are read (never held whole)."""
        if entry.kind != "edoc":
            self._write_status(entry, path)
            return
        stem = self._stem(entry)
        work = self.root / "inbox" / _hidden(f"{stem}.decoding")
        _clear(work)
        os.mkdir(work, 0o750)
        try:
            outs: list[BinaryIO] = []

            def decode_to(index: int) -> BinaryIO:
                outs.append((work / str(index)).open("wb"))
                return outs[-1]

            try:
                checked = validate_file(path, max_bytes=path.stat().st_size, decode_to=decode_to)
            finally:
                for out in outs:
                    out.close()
            pkg = checked.result.package
            if isinstance(pkg, EdocPackage) and len(pkg.attachments) == len(outs):
                files = [
                    (safe_name(a.name, f"attachment-{a.content_id}"), work / str(i))
                    for i, a in enumerate(pkg.attachments)
                ]
                write_folder(self.root / "inbox", stem, files)
        finally:
            _clear(work)
        write_new(self.root / "inbox", f"{stem}.xml", path)
        _log.info("spool_delivered", document_id=entry.document_id, recipient=entry.recipient)

    @staticmethod
    def _stem(entry: InboxEntry) -> str:
        return safe_name(f"{entry.entry_id}.{entry.document_id}.{entry.recipient}", "document")

    def _write_document(self, entry: InboxEntry, data: bytes) -> None:
        stem = self._stem(entry)
        try:
            pkg = parse(data)
        except LienthongError:
            pkg = None
        if isinstance(pkg, EdocPackage) and pkg.attachments:
            files = [
                (safe_name(a.name, f"attachment-{a.content_id}"), a.content)
                for a in pkg.attachments
            ]
            write_folder(self.root / "inbox", stem, files)
        write_new(self.root / "inbox", f"{stem}.xml", data)
        _log.info("spool_delivered", document_id=entry.document_id, recipient=entry.recipient)

    def _write_status(self, entry: InboxEntry, data: bytes | Path) -> None:
        try:
            if isinstance(data, Path):  # a large status package: an odd thing, kept as it is
                code = getattr(validate_file(data).result.package, "status_code", "status")
            else:
                code = getattr(parse(data), "status_code", "status")
        except LienthongError:
            code = "status"
        stem = safe_name(f"{entry.entry_id}.{entry.document_id}.{code}.{entry.sender}", "status")
        write_new(self.root / "status", f"{stem}.xml", data)
