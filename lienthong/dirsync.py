"""Directory versions travel down the tree over the same links as documents.

Two frames of their own, on the same inbox topics as transfers (so the brokers' ACLs already
allow them), each a JSON header line then a payload, like every frame::

    {"v":1,"type":"directory","version":N,"sha256":...,"size":S,"index":i,"count":c,"len":l}
    <chunk of the zlib-compressed version file>

    {"v":1,"type":"directory-request","have":N}

The node hands a frame whose first bytes are ``{"v":1,"type":"directory`` to
:meth:`DirectorySync.on_frame` and every other frame to the receiver, so the transport is not
changed. An offer is chunked below the brokers' message limit (a state-sized version is about
0.9 MB, 0.4 MB compressed) and taken only from this node's parent node; a request only from
its child nodes.

What a node does:

- A version published here (a file in ``<state_dir>/directory/incoming/``, put there by
  ``lienthong directory publish --config`` or ``apply``) or offered by the parent is checked
  (:func:`~lienthong.dirversion.read_version` against ``[directory] authority``, then
  :func:`~lienthong.dirversion.check_applicable`), stored durably (:mod:`lienthong.dirfiles`),
  swapped into the :class:`~lienthong.dirholder.DirectoryHolder`, handed to ``on_applied``
  (the node re-wires its senders and re-routes queued transfers), and offered to every child
  node. A refused version is logged with its reason (``directory_version_refused``), a refused
  file kept in ``refused/``; the version in force stays.
- Each time the parent link comes up, and every ``ask_parent_s``, the node asks its parent
  for a version newer than its own; the parent answers with its version when it is newer.
  So a node that was off for a week catches up by itself, and an offer lost on the way is
  made again at the next ask; offers need no receipts.
- Expiry: the state of the version in force is logged when it changes (``directory_expiring``,
  ``directory_expired``) and again every hour while it lasts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from lienthong.dirfiles import VersionFiles
from lienthong.dirholder import DirectoryHolder
from lienthong.dirversion import DirectoryVersion, VersionRefused, check_applicable, read_version
from lienthong.logs import get_logger
from lienthong.transport.frames import FrameError
from lienthong.transport.link import Link, LinkDown

__all__ = ["DirectorySync", "Offer", "Request", "claims", "decode", "offer_frames", "request_frame"]

_log = get_logger("lienthong.dirsync")

FRAME_PREFIX = b'{"v":1,"type":"directory'
MAX_COMPRESSED = 64 * 1024 * 1024
MAX_VERSION = 256 * 1024 * 1024
EXPIRY_LOG_EVERY_S = 3600.0
_OFFER_KEYS = frozenset({"v", "type", "version", "sha256", "size", "index", "count", "len"})


@dataclass(frozen=True, slots=True)
class Offer:
    """One chunk of a compressed version file."""

    number: int
    sha256: str
    size: int
    index: int
    count: int
    chunk: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """A child asks for a version newer than ``have``."""

    have: int


def claims(payload: bytes) -> bool:
    """True for the frames of this module (the node routes them here, not to the receiver)."""
    return payload.startswith(FRAME_PREFIX)


def _line(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode("ascii") + b"\n"


def request_frame(have: int) -> bytes:
    """The frame asking the parent for a version newer than ``have``."""
    return _line({"v": 1, "type": "directory-request", "have": have})


def offer_frames(version: DirectoryVersion, max_chunk: int) -> list[bytes]:
    """The frames carrying ``version`` (compressed, cut below ``max_chunk`` bytes each)."""
    packed = zlib.compress(version.raw, 6)
    digest = hashlib.sha256(packed).hexdigest()
    count = max(1, -(-len(packed) // max_chunk))
    frames = []
    for index in range(count):
        chunk = packed[index * max_chunk : (index + 1) * max_chunk]
        header = {
            "v": 1,
            "type": "directory",
            "version": version.number,
            "sha256": digest,
            "size": len(packed),
            "index": index,
            "count": count,
            "len": len(chunk),
        }
        frames.append(_line(header) + chunk)
    return frames


def _int(header: Mapping[str, Any], key: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError(f"directory frame field {key!r} is missing or not a whole number")
    return value


def decode(payload: bytes) -> Offer | Request:
    """Parse a directory frame; :class:`FrameError` naming what is wrong."""
    end = payload.find(b"\n", 0, 4096)
    if end < 0:
        raise FrameError("a directory frame has no header line")
    try:
        header = json.loads(payload[:end])
    except ValueError:
        raise FrameError("the directory frame header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != 1:
        raise FrameError("the directory frame header is not a version 1 object")
    body = payload[end + 1 :]
    if header.get("type") == "directory-request":
        if set(header) != {"v", "type", "have"} or body:
            raise FrameError("a directory request carries only its header")
        return Request(_int(header, "have"))
    if header.get("type") != "directory" or set(header) != _OFFER_KEYS:
        raise FrameError(f"unknown directory frame: {sorted(header)}")
    offer = Offer(
        _int(header, "version"),
        str(header.get("sha256")),
        _int(header, "size"),
        _int(header, "index"),
        _int(header, "count"),
        body,
    )
    if _int(header, "len") != len(body) or offer.size > MAX_COMPRESSED:
        raise FrameError("a directory offer's length or size is wrong")
    if not 0 <= offer.index < offer.count or offer.count > offer.size + 1:
        raise FrameError("a directory offer's chunk index or count is wrong")
    return offer


class _Collect:
    """The chunks of one offer, until all are in."""

    def __init__(self, offer: Offer) -> None:
        self.sha256 = offer.sha256
        self.count = offer.count
        self.chunks: dict[int, bytes] = {}

    def add(self, offer: Offer) -> bytes | None:
        self.chunks[offer.index] = offer.chunk
        if len(self.chunks) < self.count:
            return None
        packed = b"".join(self.chunks[i] for i in range(self.count))
        if hashlib.sha256(packed).hexdigest() != self.sha256:
            raise FrameError("a directory offer reassembled with another sha256 than announced")
        inflate = zlib.decompressobj()
        try:
            data = inflate.decompress(packed, MAX_VERSION)
        except zlib.error as exc:
            raise FrameError(f"a directory offer does not decompress: {exc}") from None
        if inflate.unconsumed_tail:
            raise FrameError(f"a directory offer inflates beyond {MAX_VERSION} bytes")
        return data


OnApplied = Callable[[DirectoryVersion, DirectoryVersion], Awaitable[None]]


class DirectorySync:
    """Receives, applies and passes on directory versions at node ``me``."""

    def __init__(
        self,
        *,
        me: str,
        holder: DirectoryHolder,
        files: VersionFiles,
        authority: x509.Certificate | None,
        links: Mapping[str, Link],
        max_chunk: int,
        ask_parent_s: float = 600.0,
        check_s: float = 2.0,
        on_applied: OnApplied | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Without an ``authority`` no version can be checked: none is applied or offered."""
        self.me = me
        self.holder = holder
        self.files = files
        self.authority = authority
        self.links = links
        self.max_chunk = max_chunk
        self.ask_parent_s = ask_parent_s
        self.check_s = check_s
        self.on_applied = on_applied
        self.clock = clock
        self._lock = asyncio.Lock()
        self._partial: dict[str, _Collect] = {}
        self._asked: tuple[int, float] = (-1, 0.0)
        self._expiry_logged: tuple[str, float] = ("", 0.0)
        self.applied = 0
        self.refused = 0

    # -- neighbours ---------------------------------------------------------------------------

    def parent(self) -> str | None:
        """My parent node in the directory in force."""
        return self.holder.directory.node_parent(self.me)

    def children(self) -> list[str]:
        """My child nodes in the directory in force."""
        directory = self.holder.directory
        return sorted(n for n in directory.nodes if directory.node_parent(n) == self.me)

    # -- frames -------------------------------------------------------------------------------

    async def on_frame(self, sender: str, payload: bytes) -> None:
        """Act on one directory frame from ``sender``; bad frames are logged and dropped."""
        try:
            frame = decode(payload)
            if isinstance(frame, Request):
                if sender not in self.children():
                    raise FrameError(f"{sender} is not a child node of {self.me}")
                await self._answer(sender, frame.have)
                return
            if sender != self.parent():
                raise FrameError(f"{sender} is not the parent node of {self.me}")
            collect = self._partial.get(sender)
            if collect is None or collect.sha256 != frame.sha256:
                collect = self._partial[sender] = _Collect(frame)
            data = collect.add(frame)
        except FrameError as exc:
            _log.warning("directory_frame_refused", peer=sender, reason=str(exc))
            return
        if data is not None:
            del self._partial[sender]
            await self._apply_quietly(data, f"node {sender}")

    async def _answer(self, child: str, have: int) -> None:
        version = self.holder.version
        if version.bootstrap or version.number <= have:
            return
        await self._offer(child, version)

    async def _offer(self, node: str, version: DirectoryVersion) -> None:
        link = self.links.get("children")
        if link is None:
            return
        try:
            for frame in offer_frames(version, self.max_chunk):
                await link.publish(node, frame)
        except LinkDown as exc:
            # The child asks again when its link comes back, or at its next periodic ask.
            _log.warning("directory_offer_not_sent", peer=node, reason=str(exc))
            return
        _log.info("directory_offered", peer=node, version=version.number)

    # -- applying -----------------------------------------------------------------------------

    async def apply(self, data: bytes, source: str) -> DirectoryVersion | None:
        """Check, store, swap in and pass on the version file ``data``; the version applied,
        or None when it was refused (logged with the reason) or is the one in force."""
        if self.authority is None:
            _log.warning(
                "directory_version_refused",
                source=source,
                reason="directory.authority is not set: no version can be checked",
            )
            return None
        async with self._lock:
            now = self.clock()
            try:
                version = await asyncio.to_thread(read_version, data, self.authority)
                check_applicable(
                    version, self.holder.version, self.me, dt.datetime.fromtimestamp(now, dt.UTC)
                )
            except VersionRefused as exc:
                if exc.reason != "same":
                    self.refused += 1
                    _log.warning(
                        "directory_version_refused",
                        source=source,
                        reason=str(exc),
                        kind=exc.reason,
                        in_force=self.holder.version.number,
                    )
                raise
            await asyncio.to_thread(self.files.write, version)
            previous = self.holder.swap(version, now)
            self.applied += 1
            _log.info(
                "directory_version_applied",
                source=source,
                version=version.number,
                previous=previous.number,
                agencies=len(version.directory),
                expires=version.expires.isoformat() if version.expires else None,
            )
        if self.on_applied is not None:
            await self.on_applied(previous, version)
        for child in self.children():
            await self._offer(child, version)
        return version

    async def _apply_quietly(self, data: bytes, source: str) -> str | None:
        """:meth:`apply`; the refusal's sentence instead of raising it (None when applied)."""
        try:
            await self.apply(data, source)
        except VersionRefused as exc:
            return None if exc.reason == "same" else str(exc)
        return None

    async def apply_published(self) -> None:
        """Apply the version files waiting in ``incoming/`` (each removed once applied, or
        moved to ``refused/`` with its reason). The node also calls this at start, before
        its links deliver anything, so a version handed to a stopped node is in force before
        it routes what waited for it."""
        for path in self.files.incoming():
            data = await asyncio.to_thread(path.read_bytes)
            refusal = await self._apply_quietly(data, f"file {path.name}")
            if refusal is None:
                path.unlink(missing_ok=True)
            else:
                self.files.refuse(path, refusal)

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply published files, ask the parent, log expiry; until cancelled."""
        _log.info("directory_in_force", version=self.holder.version.describe())
        while True:
            try:
                await self._round()
            except Exception as exc:  # retried at the next round; never stops the node
                _log.error("directory_round_failed", reason=str(exc), exc_info=True)
            await asyncio.sleep(self.check_s)

    async def _round(self) -> None:
        await self.apply_published()
        await self._ask_parent()
        self._log_expiry()

    async def _ask_parent(self) -> None:
        parent, link = self.parent(), self.links.get("parent")
        if parent is None or link is None or link.state != "up":
            return
        now = self.clock()
        connects, last = self._asked
        if link.connects == connects and now - last < self.ask_parent_s:
            return
        try:
            await link.publish(parent, request_frame(self.holder.version.number))
        except LinkDown:
            return
        self._asked = (link.connects, now)

    def _log_expiry(self) -> None:
        now = self.clock()
        expiry = self.holder.expiry(now)
        state, last = self._expiry_logged
        if expiry.state in ("ok", "none"):
            self._expiry_logged = (expiry.state, now)
            return
        if expiry.state == state and now - last < EXPIRY_LOG_EVERY_S:
            return
        self._expiry_logged = (expiry.state, now)
        event = "directory_expired" if expiry.state == "expired" else "directory_expiring"
        _log.warning(event, reason=expiry.message, version=self.holder.version.number)
