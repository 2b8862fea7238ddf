"""The frames neighbours exchange over MQTT, and their topics. Pure codec: bytes in, values out.

Wire form of every frame: one JSON header line, a newline, then the raw payload (the chunk
bytes of a transfer frame; nothing for hop receipts). The header carries ``"v": 1`` and
``"type"``: ``transfer``, ``receipt`` (one hop receipt) or ``receipts`` (up to
:data:`MAX_RECEIPTS` of them, for packages stored in one commit: one message, and one PUBACK,
instead of one each). A decoder refuses any other version, unknown keys, wrong types and a
payload whose length differs from the header's ``"len"``. Payloads are never base64'd: a
chunk costs its own size plus a few hundred header bytes.

A package travels as one or more transfer frames (:class:`Outgoing` cuts it, from bytes or from
a file read a chunk at a time), each small enough for the broker's ``message_size_limit``: every
chunk but the last has the same length, at least :data:`MIN_CHUNK` bytes unless the package is
smaller, so a transfer of at most ``max_size`` bytes has at most ``max_chunks(max_size)`` chunks.
:class:`~lienthong.transport.reassembly.Reassembler` puts them together again in a file.
Everything malformed raises :class:`FrameError`, a :class:`~lienthong.errors.PeerInputError`:
the sender's fault, never retried.

Topic of a frame from node A to node B: ``lienthong/v1/<B>/in/<A>``, the codes written with the
broker engine's stand-in for a dot (:data:`TOPIC_DOT`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lienthong.edxml.codes import code_problem as _code_problem_uncached
from lienthong.errors import PeerInputError

__all__ = [
    "DEFAULT_MAX_PACKAGE",
    "HEADER_RESERVE",
    "MAX_RECEIPTS",
    "MIN_CHUNK",
    "TOPIC_DOT",
    "FrameError",
    "HopReceipt",
    "HopReceipts",
    "Outgoing",
    "Package",
    "TransferFrame",
    "decode_frame",
    "encode_frame",
    "inbox_filter",
    "inbox_topic",
    "max_chunk_for",
    "max_chunks",
    "parse_topic",
    "receipt_frame",
    "receipts_of",
    "split_into_frames",
]

VERSION = 1
TOPIC_PREFIX = "lienthong/v1"
MAX_HEADER = 64 * 1024
"""Largest header line accepted; also bounds the recipient list of one frame."""
HEADER_RESERVE = MAX_HEADER
"""Bytes kept free for the header when sizing chunks under a broker's message limit."""
DEFAULT_MAX_PACKAGE = 2 * 1024 * 1024 * 1024
"""The default ``transfer.max_package_bytes``."""
MIN_CHUNK = 1024
"""Smallest chunk :func:`max_chunk_for` gives; bounds the chunk count of a transfer."""
TOPIC_DOT = {"mosquitto": ".", "nats": "_"}
"""What stands for the dots of agency codes in topics, per broker engine. nats-server 2.9 maps
MQTT's ``/`` to its own ``.`` separator and refuses a ``.`` in a topic (it closes the
connection), so codes travel there with ``_``, which no agency code contains."""

Kind = Literal["edoc", "status"]
_KINDS: frozenset[str] = frozenset({"edoc", "status"})
_TRANSFER_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TRANSFER_KEYS = frozenset(
    {"v", "type", "transfer", "kind", "recipients", "sha256", "size", "index", "count", "len"}
)
_TRANSFER_LABELS = ("document", "origin")
"""Optional transfer header fields: the DocumentId and the sending agency, as the sender read
them. Labels for logs and traces on the way; never trusted for a decision."""
MAX_LABEL = 256
_RECEIPT_KEYS = frozenset({"v", "type", "transfer", "sha256", "status", "at"})
_RECEIPTS_KEYS = frozenset({"v", "type", "transfers", "status", "at"})
MAX_RECEIPTS = 256
"""Hop receipts in one ``receipts`` frame at most (their header stays under MAX_HEADER)."""


@functools.lru_cache(maxsize=4096)
def code_problem(code: str) -> str | None:
    """What is wrong with an agency code, or None; remembered, since every frame and topic
    names the same few codes again."""
    return _code_problem_uncached(code)


class FrameError(PeerInputError):
    """A frame, a topic or a reassembled package is malformed or inconsistent."""


@dataclass(frozen=True, slots=True)
class TransferFrame:
    """One chunk of a package on its way to a neighbour.

    ``recipients`` are the recipient codes this hop carries; ``sha256`` (hex) and ``size``
    describe the whole package; ``index`` counts from 0 to ``count - 1``. ``document`` and
    ``origin`` (the DocumentId and the sending agency, empty when unknown) let a node that only
    passes the package on name it without reading it; the package itself is what counts.
    """

    transfer_id: str
    kind: Kind
    recipients: tuple[str, ...]
    sha256: str
    size: int
    index: int
    count: int
    chunk: bytes
    document: str = ""
    origin: str = ""

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        for name in _TRANSFER_LABELS:
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_LABEL:
                raise FrameError(f"frame {name} {value!r:.40} is not text of at most {MAX_LABEL}")
        _check_sha256(self.sha256)
        if self.kind not in _KINDS:
            raise FrameError(f"frame kind {self.kind!r} is neither 'edoc' nor 'status'")
        if not self.recipients:
            raise FrameError("a transfer frame names at least one recipient")
        for code in self.recipients:
            problem = code_problem(code) if isinstance(code, str) else "not text"
            if problem is not None:
                raise FrameError(f"recipient {code!r} in a transfer frame: {problem}")
        if self.size < 0:
            raise FrameError(f"package size {self.size} is negative")
        if not 1 <= self.count <= max(1, self.size):
            raise FrameError(f"chunk count {self.count} is impossible for {self.size} bytes")
        if not 0 <= self.index < self.count:
            raise FrameError(f"chunk index {self.index} is outside 0..{self.count - 1}")
        if len(self.chunk) > self.size:
            raise FrameError(f"a {len(self.chunk)}-byte chunk of a {self.size}-byte package")

    def metadata(self) -> tuple[object, ...]:
        """What every chunk of one transfer must agree on."""
        return (
            self.transfer_id,
            self.kind,
            self.recipients,
            self.sha256,
            self.size,
            self.count,
            self.document,
            self.origin,
        )


@dataclass(frozen=True, slots=True)
class HopReceipt:
    """The next hop has durably stored transfer ``transfer_id`` with digest ``sha256``;
    ``at`` is its wall clock when it said so (seconds since the epoch), from which the sender
    learns how far the two clocks differ (None from a node that does not say)."""

    transfer_id: str
    sha256: str
    status: Literal["stored"] = "stored"
    at: float | None = None

    def __post_init__(self) -> None:
        _check_transfer_id(self.transfer_id)
        _check_sha256(self.sha256)
        if self.status != "stored":
            raise FrameError(f"hop receipt status {self.status!r} is not 'stored'")
        if self.at is not None and not (isinstance(self.at, int | float) and 0 < self.at < 1e11):
            raise FrameError(f"hop receipt time {self.at!r} is not a time in seconds")


@dataclass(frozen=True, slots=True)
class HopReceipts:
    """Hop receipts of several transfers in one frame (``"type": "receipts"``): what a node
    stored in one commit for one neighbour, answered with one message instead of one each.
    Each entry says what a :class:`HopReceipt` says; ``at`` is shared."""

    receipts: tuple[HopReceipt, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.receipts) <= MAX_RECEIPTS:
            raise FrameError(
                f"a receipts frame holds 1 to {MAX_RECEIPTS} hop receipts, not {len(self.receipts)}"
            )
        if len({r.at for r in self.receipts}) != 1:
            raise FrameError("the hop receipts of one frame share one time")


def receipts_of(frame: HopReceipt | HopReceipts) -> tuple[HopReceipt, ...]:
    """The hop receipts a receipt frame carries, one or several."""
    return frame.receipts if isinstance(frame, HopReceipts) else (frame,)


def receipt_frame(transfers: Sequence[tuple[str, str]], at: float | None) -> Frame:
    """The frame answering ``transfers`` (transfer id, sha256) stored together: a
    :class:`HopReceipt` for one, :class:`HopReceipts` for more (at most MAX_RECEIPTS)."""
    receipts = tuple(HopReceipt(tid, sha256, at=at) for tid, sha256 in transfers)
    return receipts[0] if len(receipts) == 1 else HopReceipts(receipts)


@dataclass(frozen=True, slots=True)
class Package:
    """A transfer reassembled and checked against its digest: ``source`` is its ``size``
    bytes (a small package that came in one frame) or the file holding them, which whoever
    receives it owns (``document`` and ``origin`` are the sender's labels, empty when it gave
    none)."""

    transfer_id: str
    kind: Kind
    recipients: tuple[str, ...]
    sha256: str
    source: bytes | Path
    size: int
    document: str = ""
    origin: str = ""


Frame = TransferFrame | HopReceipt | HopReceipts


def _check_transfer_id(value: object) -> None:
    if not isinstance(value, str) or not _TRANSFER_ID_RE.match(value):
        raise FrameError(
            f"transfer id {value!r} is not 1 to 128 characters of letters, digits, '.', '_', '-'"
        )


def _check_sha256(value: object) -> None:
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise FrameError(f"sha256 {value!r} is not 64 lower-case hex digits")


# -- encoding --------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of ``frame``: a JSON header line, then the raw chunk (if any)."""
    header: dict[str, Any]
    payload = b""
    if isinstance(frame, TransferFrame):
        payload = frame.chunk
        header = {
            "v": VERSION,
            "type": "transfer",
            "transfer": frame.transfer_id,
            "kind": frame.kind,
            "recipients": list(frame.recipients),
            "sha256": frame.sha256,
            "size": frame.size,
            "index": frame.index,
            "count": frame.count,
            "len": len(payload),
        }
        header.update(
            {name: getattr(frame, name) for name in _TRANSFER_LABELS if getattr(frame, name)}
        )
    elif isinstance(frame, HopReceipts):
        first = frame.receipts[0]
        header = {
            "v": VERSION,
            "type": "receipts",
            "transfers": [[r.transfer_id, r.sha256] for r in frame.receipts],
            "status": first.status,
        }
        if first.at is not None:
            header["at"] = round(first.at, 3)
    else:
        header = {
            "v": VERSION,
            "type": "receipt",
            "transfer": frame.transfer_id,
            "sha256": frame.sha256,
            "status": frame.status,
        }
        if frame.at is not None:
            header["at"] = round(frame.at, 3)
    line = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return line + b"\n" + payload


def _field(header: dict[str, Any], key: str, kind: type) -> Any:
    value = header.get(key)
    # bool is an int subclass; a count of `true` is still a malformed frame.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FrameError(f"frame header field {key!r} is missing or not {kind.__name__}")
    return value


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    end = data.find(b"\n", 0, MAX_HEADER + 1)
    if end < 0:
        raise FrameError(f"no frame header line within the first {MAX_HEADER} bytes")
    try:
        header = json.loads(data[:end].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"the frame header is not ASCII JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("the frame header is not a JSON object")
    version = header.get("v")
    if version != VERSION or isinstance(version, bool):
        raise FrameError(f"frame version {version!r} is not supported (this node speaks 1)")
    return header, data[end + 1 :]


def _refuse_unknown(header: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(header) - known)
    if unknown:
        raise FrameError(f"unknown frame header field(s): {', '.join(unknown)}")


def decode_frame(data: bytes) -> Frame:
    """Parse wire bytes into a :class:`TransferFrame`, :class:`HopReceipt` or
    :class:`HopReceipts`.

    Raises :class:`FrameError` naming what is wrong; never fails any other way on bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FrameError(f"a frame is bytes, not {type(data).__name__}")
    header, payload = _header(bytes(data))
    kind = header.get("type")
    if kind == "receipt":
        _refuse_unknown(header, _RECEIPT_KEYS)
        return HopReceipt(
            _field(header, "transfer", str),
            _field(header, "sha256", str),
            *_receipt_fields(header, payload),
        )
    if kind == "receipts":
        _refuse_unknown(header, _RECEIPTS_KEYS)
        status, at = _receipt_fields(header, payload)
        entries = _field(header, "transfers", list)
        if len(entries) > MAX_RECEIPTS:  # refused before a receipt is made of each
            raise FrameError(f"a receipts frame holds 1 to {MAX_RECEIPTS} hop receipts")
        if not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)
            for e in entries
        ):
            raise FrameError("frame header field 'transfers' is not a list of [transfer, sha256]")
        return HopReceipts(tuple(HopReceipt(tid, sha256, status, at) for tid, sha256 in entries))
    if kind != "transfer":
        raise FrameError(f"frame type {kind!r} is not 'transfer', 'receipt' or 'receipts'")
    _refuse_unknown(header, _TRANSFER_KEYS.union(_TRANSFER_LABELS))
    labels = {name: header[name] for name in _TRANSFER_LABELS if name in header}
    for name, value in labels.items():
        if not isinstance(value, str):
            raise FrameError(f"frame header field {name!r} is not text")
    length = _field(header, "len", int)
    if length != len(payload):
        raise FrameError(f"the header announces {length} payload bytes, {len(payload)} came")
    recipients = _field(header, "recipients", list)
    if not all(isinstance(code, str) for code in recipients):
        raise FrameError("frame header field 'recipients' holds something other than text")
    return TransferFrame(
        transfer_id=_field(header, "transfer", str),
        kind=_field(header, "kind", str),
        recipients=tuple(recipients),
        sha256=_field(header, "sha256", str),
        size=_field(header, "size", int),
        index=_field(header, "index", int),
        count=_field(header, "count", int),
        chunk=payload,
        **labels,
    )


def _receipt_fields(header: dict[str, Any], payload: bytes) -> tuple[Any, float | None]:
    """``status`` (text, checked by :class:`HopReceipt`) and ``at`` of a receipt frame, which
    carries no payload."""
    if payload:
        raise FrameError(f"a hop receipt carries {len(payload)} unexpected payload bytes")
    at = header.get("at")
    if at is not None and (not isinstance(at, int | float) or isinstance(at, bool)):
        raise FrameError("frame header field 'at' is not a number")
    return _field(header, "status", str), None if at is None else float(at)


# -- splitting and reassembly ----------------------------------------------------------------


def max_chunk_for(message_size_limit: int) -> int:
    """The largest chunk whose frame stays below a broker's ``message_size_limit``."""
    chunk = message_size_limit - HEADER_RESERVE
    if chunk < MIN_CHUNK:
        raise ValueError(
            f"a message size limit of {message_size_limit} bytes leaves no room for chunks"
        )
    return chunk


def max_chunks(max_size: int) -> int:
    """The most chunks a transfer of at most ``max_size`` bytes is cut into by a sender whose
    chunks are at least :data:`MIN_CHUNK` bytes."""
    return max(1, -(-max_size // MIN_CHUNK))


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One transfer about to be sent: cuts a ``size``-byte package with digest ``sha256`` into
    frames of at most ``max_chunk`` payload bytes (one frame if empty).

    ``document`` and ``origin`` label the frames; a label longer than :data:`MAX_LABEL` is left
    out (the next node then reads the package for it)."""

    transfer_id: str
    kind: Kind
    recipients: tuple[str, ...]
    sha256: str
    size: int
    max_chunk: int
    document: str = ""
    origin: str = ""

    def __post_init__(self) -> None:
        if self.max_chunk < 1:
            raise ValueError(f"max_chunk must be at least 1, not {self.max_chunk}")

    @property
    def count(self) -> int:
        """How many frames the transfer takes."""
        return max(1, -(-self.size // self.max_chunk))

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) in the package of chunk ``index``."""
        offset = index * self.max_chunk
        return offset, min(self.max_chunk, self.size - offset)

    def frame(self, index: int, chunk: bytes) -> TransferFrame:
        """Frame ``index``, carrying ``chunk`` (the bytes at :meth:`span`)."""
        document, origin = (
            label if len(label) <= MAX_LABEL else "" for label in (self.document, self.origin)
        )
        return TransferFrame(
            self.transfer_id,
            self.kind,
            self.recipients,
            self.sha256,
            self.size,
            index,
            self.count,
            chunk,
            document,
            origin,
        )


def split_into_frames(
    transfer_id: str,
    kind: Kind,
    recipients: Iterable[str],
    data: bytes,
    max_chunk: int,
    *,
    sha256: str | None = None,
    document: str = "",
    origin: str = "",
) -> list[TransferFrame]:
    """Cut ``data`` into frames of at most ``max_chunk`` payload bytes (one frame if empty).

    ``sha256`` is the digest of ``data`` when the caller knows it (the store's package id), so
    it is not computed again; ``document`` and ``origin`` label the frames (left out when
    longer than :data:`MAX_LABEL`)."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    out = Outgoing(
        transfer_id, kind, tuple(recipients), digest, len(data), max_chunk, document, origin
    )
    frames = []
    for index in range(out.count):
        offset, length = out.span(index)
        frames.append(out.frame(index, data[offset : offset + length]))
    return frames


# -- topics ----------------------------------------------------------------------------------


def _topic_code(code: str, role: str, dot: str) -> str:
    problem = code_problem(code)
    if problem is not None:
        raise ValueError(f"{role} of a topic: {problem}")
    return code.replace(".", dot)


def inbox_topic(to: str, from_: str, *, dot: str = ".") -> str:
    """The topic node ``from_`` publishes to for node ``to``: ``lienthong/v1/<to>/in/<from>``.

    ``dot`` is what stands for the dots of the codes (see :data:`TOPIC_DOT`).
    """
    recipient = _topic_code(to, "recipient node", dot)
    return f"{TOPIC_PREFIX}/{recipient}/in/{_topic_code(from_, 'sender', dot)}"


def inbox_filter(me: str, *, dot: str = ".") -> str:
    """The subscription that reads every frame sent to node ``me``."""
    return f"{TOPIC_PREFIX}/{_topic_code(me, 'node', dot)}/in/+"


def parse_topic(topic: str, *, dot: str = ".") -> tuple[str, str]:
    """``(to, from_)`` of an inbox topic written with ``dot``, or :class:`FrameError`."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[3] != "in":
        raise FrameError(f"topic {topic!r} is not of the form {TOPIC_PREFIX}/<to>/in/<from>")
    codes = []
    for segment in (parts[2], parts[4]):
        code = segment if dot == "." else segment.replace(".", " ").replace(dot, ".")
        problem = code_problem(code)
        if problem is not None:
            raise FrameError(f"topic {topic!r}: {problem}")
        codes.append(code)
    return codes[0], codes[1]
