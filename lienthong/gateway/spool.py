"""Spool folders for office software that can only drop and pick up files.

Under the spool folder:

- ``outbox/``: a package dropped here is taken, validated, signed and sent. Only ``*.xml``
  files are taken, and only once their size and modification time have stayed the same for
  ``settle_s`` (a file still being written is never taken half-written); names starting with
  ``.`` or ending in ``.tmp``/``.part`` are left alone, so writers that rename into place are
  taken at once after settling. A taken file is first renamed into ``outbox/.taken/`` (atomic),
  then submitted; once the package is in the store the file is removed.
- ``rejected/``: a refused package is moved here, with ``<name>.error`` beside it listing every
  problem, one per line. Nothing is deleted.
- ``inbox/``: every delivered document, written atomically (temporary file, fsync, rename) as
  ``<DocumentId>.xml``, its attachments extracted beside it into ``<DocumentId>/`` with safe
  names. The inbox entry is then acknowledged as retrieved.
- ``status/``: status packages received, as ``<DocumentId>.<code>.<from>.xml``.

File names are made from DocumentIds and attachment names with every character outside
letters, digits, ``.``, ``-`` and ``_`` replaced by ``_``; no name can leave its folder.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lienthong.edxml import EdocPackage, parse
from lienthong.errors import LienthongError
from lienthong.logs import get_logger
from lienthong.processing import Processor, SubmissionRefused
from lienthong.store import Store
from lienthong.store.blobs import write_durably
from lienthong.store.model import InboxEntry

_log = get_logger("lienthong.gateway.spool")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SKIP_SUFFIXES = (".tmp", ".part", ".error")
MAX_NAME = 150


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


def _unique(path: Path) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext``... when it exists already."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


@dataclass
class Spool:
    """The spool folders of one node, served by :meth:`run`."""

    root: Path
    processor: Processor
    store: Store
    settle_s: float = 2.0
    poll_s: float = 1.0
    clock: Callable[[], float] = time.time
    _seen: dict[Path, tuple[int, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("outbox", "outbox/.taken", "inbox", "status", "rejected"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    async def run(self) -> None:
        """Scan the outbox and export the inbox every ``poll_s``, until cancelled."""
        while True:
            try:
                await self._retake()
                await self.scan_outbox()
                await self.export_inbox()
            except Exception as exc:  # a file moved away mid-scan, a full disk: next round
                _log.error("spool_scan_failed", reason=str(exc), exc_info=True)
            await asyncio.sleep(self.poll_s)

    async def _retake(self) -> None:
        """Files taken but not finished (by a previous run, or refused for a transient fault)
        are submitted again (a duplicate submission is recognised by the store)."""
        for path in sorted((self.root / "outbox" / ".taken").iterdir()):
            await self._submit(path)

    # -- outbox -------------------------------------------------------------------------------

    def _settled(self, path: Path, now: float) -> bool:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime)
        seen = self._seen.get(path)
        if seen is None or seen[:2] != key:
            self._seen[path] = (*key, now)
            return False
        return now - seen[2] >= self.settle_s

    async def scan_outbox(self) -> int:
        """Take every settled package in ``outbox/``; how many were taken."""
        now = self.clock()
        taken = 0
        outbox = self.root / "outbox"
        present = set()
        for path in sorted(outbox.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix != ".xml":
                continue
            present.add(path)
            if not self._settled(path, now):
                continue
            self._seen.pop(path, None)
            moved = _unique(outbox / ".taken" / path.name)
            path.replace(moved)
            await self._submit(moved)
            taken += 1
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return taken

    async def _submit(self, path: Path) -> None:
        data = await asyncio.to_thread(path.read_bytes)
        try:
            done = await self.processor.submit(data)
        except SubmissionRefused as exc:
            self._reject(path, exc.problems)
            return
        except LienthongError as exc:
            # Not the package's fault (disk full, database locked): leave it taken, retry later.
            _log.error("spool_submit_failed", file=path.name, reason=str(exc))
            return
        await asyncio.to_thread(path.unlink)
        _log.info("spool_taken", file=path.name, document_id=done.document_id)

    def _reject(self, path: Path, problems: tuple[str, ...]) -> None:
        target = _unique(self.root / "rejected" / path.name)
        reasons = "".join(f"{problem}\n" for problem in problems)
        write_durably(target.with_name(target.name + ".error"), reasons.encode(), "error file")
        path.replace(target)
        _log.warning("spool_rejected", file=path.name, problems=list(problems))

    # -- inbox and status ---------------------------------------------------------------------

    async def export_inbox(self) -> int:
        """Write every pending inbox entry to ``inbox/`` or ``status/``; how many."""
        count = 0
        for entry in await self.store.inbox_list(pending=True):
            data = await self.store.read_package(entry.package_id)
            if entry.kind == "edoc":
                self._write_document(entry, data)
            else:
                self._write_status(entry, data)
            await self.store.inbox_ack(entry.entry_id, True, self.clock(), "spool")
            count += 1
        return count

    def _write_document(self, entry: InboxEntry, data: bytes) -> None:
        stem = safe_name(f"{entry.document_id}.{entry.recipient}", "document")
        folder = self.root / "inbox" / stem
        try:
            pkg = parse(data)
        except LienthongError:
            pkg = None
        if isinstance(pkg, EdocPackage) and pkg.attachments:
            folder.mkdir(exist_ok=True)
            for attachment in pkg.attachments:
                name = safe_name(attachment.name, f"attachment-{attachment.content_id}")
                write_durably(_unique(folder / name), attachment.content, "attachment")
        write_durably(self.root / "inbox" / f"{stem}.xml", data, "inbox file")
        _log.info("spool_delivered", document_id=entry.document_id, recipient=entry.recipient)

    def _write_status(self, entry: InboxEntry, data: bytes) -> None:
        try:
            code = getattr(parse(data), "status_code", "status")
        except LienthongError:
            code = "status"
        stem = safe_name(f"{entry.document_id}.{code}.{entry.sender}", "status")
        write_durably(_unique(self.root / "status" / f"{stem}.xml"), data, "status file")
