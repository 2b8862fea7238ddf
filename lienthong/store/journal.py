"""The hash-chained journal of state changes (pure: no I/O).

Each entry's hash is ``sha256(previous hash + canonical JSON of the entry)``, the first entry
chaining from :data:`GENESIS`. The entry's ``seq`` is part of what is hashed, so changing,
removing or reordering an entry breaks the chain at a place :func:`verify_chain` names. The
store also keeps the head (last seq and hash) so that cutting entries off the end is seen too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One state change: ``entity`` (package, transfer, ...) moved ``from_state -> to_state``."""

    seq: int
    at: float
    entity: str
    entity_id: str
    from_state: str | None
    to_state: str
    detail: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class JournalReport:
    """Outcome of checking the chain: ``ok``, how many entries, and the first problem found."""

    ok: bool
    entries: int
    problem: str | None = None
    bad_seq: int | None = None


def canonical(fields: dict[str, Any]) -> bytes:
    """The canonical JSON of ``fields``: sorted keys, no spaces, UTF-8."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(
    prev_hash: str,
    seq: int,
    at: float,
    entity: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    detail: str,
) -> str:
    """The chained hash of one entry."""
    body = entry_body(seq, at, entity, entity_id, from_state, to_state, detail)
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


# The JSON string literal of a str, as json.dumps(..., ensure_ascii=False) writes it.
_text = json.encoder.encode_basestring


def entry_body(
    seq: int,
    at: float,
    entity: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    detail: str,
) -> bytes:
    """:func:`canonical` of one entry's fields: the bytes its hash covers.

    Every state change writes one entry, so this is on the path of every transfer: the usual
    entry (an int ``seq``, a finite float or int ``at``) is written out directly, which gives
    the same bytes as :func:`canonical` for a fraction of the work; anything else goes through
    :func:`canonical` itself."""
    if type(seq) is not int or type(at) not in (float, int) or not math.isfinite(at):
        fields = {
            "seq": seq,
            "at": at,
            "entity": entity,
            "entity_id": entity_id,
            "from": from_state,
            "to": to_state,
            "detail": detail,
        }
        return canonical(fields)
    before = "null" if from_state is None else _text(from_state)
    return (
        f'{{"at":{at!r},"detail":{_text(detail)},"entity":{_text(entity)},'
        f'"entity_id":{_text(entity_id)},"from":{before},"seq":{seq!r},"to":{_text(to_state)}}}'
    ).encode()


EntryRow = tuple[int, float, str, str, str | None, str, str, str, str]
"""A :class:`JournalEntry`'s fields in order, as the journal table stores them."""


def entry_row(
    prev: tuple[int, str],
    at: float,
    entity: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    detail: str = "",
) -> EntryRow:
    """The fields of the entry following ``prev`` (its seq and hash; ``(0, GENESIS)`` for
    the first), in :class:`JournalEntry`'s order: what a store writes for every state change,
    without building the entry itself."""
    seq = prev[0] + 1
    digest = entry_hash(prev[1], seq, at, entity, entity_id, from_state, to_state, detail)
    return (seq, at, entity, entity_id, from_state, to_state, detail, prev[1], digest)


def make_entry(
    prev: tuple[int, str],
    at: float,
    entity: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    detail: str = "",
) -> JournalEntry:
    """The entry following ``prev`` (its seq and hash; ``(0, GENESIS)`` for the first)."""
    return JournalEntry(*entry_row(prev, at, entity, entity_id, from_state, to_state, detail))


def verify_chain(entries: Iterable[JournalEntry], head: tuple[int, str] | None) -> JournalReport:
    """Check ``entries`` (in stored order) against each other and the recorded ``head``."""
    prev = (0, GENESIS)
    count = 0
    for e in entries:
        count += 1
        if e.seq != prev[0] + 1:
            what = (
                f"entries {prev[0] + 1}..{e.seq - 1} removed"
                if e.seq > prev[0] + 1
                else "out of order"
            )
            return JournalReport(
                False, count, f"entry {e.seq} follows entry {prev[0]}: {what}", e.seq
            )
        recomputed = entry_hash(
            e.prev_hash, e.seq, e.at, e.entity, e.entity_id, e.from_state, e.to_state, e.detail
        )
        if recomputed != e.hash:
            return JournalReport(
                False, count, f"entry {e.seq} changed: its content does not match its hash", e.seq
            )
        if e.prev_hash != prev[1]:
            return JournalReport(
                False,
                count,
                f"entry {e.seq} does not chain to entry {prev[0]}: "
                f"entry {prev[0]} was rewritten, or entries were removed or reordered",
                e.seq,
            )
        prev = (e.seq, e.hash)
    if head is not None and head != prev:
        return JournalReport(
            False,
            count,
            f"journal ends at entry {prev[0]} but its head records entry {head[0]}: "
            "entries at the end were removed or rewritten",
            prev[0] + 1,
        )
    return JournalReport(True, count)
