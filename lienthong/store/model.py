"""The values the store takes and returns (frozen dataclasses)."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lienthong.store.errors import DigestMismatch
from lienthong.store.lifecycle import PackageState, TransferState

PackageKind = Literal["edoc", "status"]
ReceiptLevel = Literal["hop", "status", "retrieval"]
PackageSource = bytes | Path
"""A package handed to the store: its bytes, or a file holding them that the store takes as its
own (renamed into its folder, so on the same filesystem as the state folder; the caller has
checked its size and digest, and removes the file if it is still there after the call)."""


@dataclass(frozen=True, slots=True)
class PackageMeta:
    """What the caller knows of a package: the store keeps it beside the bytes."""

    document_id: str
    kind: PackageKind
    sender: str
    recipients: tuple[str, ...]
    sha256: str
    size: int

    @classmethod
    def for_bytes(
        cls,
        data: bytes,
        document_id: str,
        kind: PackageKind,
        sender: str,
        recipients: Sequence[str],
    ) -> PackageMeta:
        """Metadata of ``data`` with its digest and size computed."""
        return cls(
            document_id,
            kind,
            sender,
            tuple(recipients),
            hashlib.sha256(data).hexdigest(),
            len(data),
        )

    def check(self, data: bytes) -> None:
        """Raise :class:`DigestMismatch` unless ``data`` has this size and sha256."""
        if len(data) != self.size:
            raise DigestMismatch(
                f"package {self.document_id}: {len(data)} bytes, announced {self.size}"
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != self.sha256:
            raise DigestMismatch(
                f"package {self.document_id}: sha256 {actual}, announced {self.sha256}"
            )


@dataclass(frozen=True, slots=True)
class PackageRecord:
    """A stored package. ``package_id`` is its sha256; ``from_peer`` is None if submitted here."""

    package_id: str
    meta: PackageMeta
    state: PackageState
    from_peer: str | None
    created_at: float
    updated_at: float
    reason: str | None


class ReceiveOutcome(enum.StrEnum):
    """What :meth:`Store.receive` made of a transfer from a neighbour."""

    NEW = "new"  # stored now: send the hop receipt
    DUPLICATE = "duplicate"  # had it already: not stored again, send the hop receipt again
    CONFLICT = "conflict"  # same transfer id, other bytes: kept in quarantine, no receipt


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    """Outcome of a receive and the package it concerns (the stored one for a conflict)."""

    outcome: ReceiveOutcome
    package_id: str


@dataclass(frozen=True, slots=True)
class Lease:
    """A transfer taken for sending until ``expires_at``; ``attempt`` counts this one."""

    transfer_id: str
    package_id: str
    next_hop: str
    recipients: tuple[str, ...]
    kind: PackageKind
    document_id: str
    sha256: str
    attempt: int
    token: str
    expires_at: float
    sender: str
    """The sending agency of the package (carried in the frames for tracing on the way)."""


class FailOutcome(enum.StrEnum):
    """What :meth:`Store.fail` did with a failed attempt."""

    RETRY = "retry"
    DEAD = "dead"
    STALE = "stale"  # the lease had run out and the transfer was taken again: nothing changed


@dataclass(frozen=True, slots=True)
class FailResult:
    """The outcome and, for a retry, when the next attempt may start."""

    outcome: FailOutcome
    next_attempt_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead transfer (``kind == "transfer"``) or an expired package, with the reason."""

    kind: Literal["transfer", "package"]
    id: str
    package_id: str
    document_id: str
    next_hop: str | None
    attempts: int
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class Conflict:
    """A transfer id seen again with other bytes; those bytes are kept at ``quarantined``."""

    transfer_id: str
    from_peer: str
    stored_sha256: str
    other_sha256: str
    quarantined: str
    at: float


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A package delivered here for ``recipient``; ``state`` new, done or failed (retrieval),
    or revoked (by its sender)."""

    entry_id: int
    package_id: str
    document_id: str
    kind: PackageKind
    sender: str
    recipient: str
    state: Literal["new", "done", "failed", "revoked"]
    added_at: float


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt about a document: a hop receipt, a status code (01..16) or a retrieval."""

    document_id: str
    level: ReceiptLevel
    code: str
    by: str
    at: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Expired:
    """What :meth:`Store.expire` dead-lettered."""

    packages: tuple[str, ...] = ()
    transfers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OldestWaiting:
    """The transfer waiting longest for its hop receipt."""

    transfer_id: str
    next_hop: str
    state: TransferState
    age_s: float


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """Counts for ``lienthong queue``."""

    packages: Mapping[str, int] = field(default_factory=dict)
    transfers: Mapping[str, int] = field(default_factory=dict)
    per_hop: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    oldest_waiting: OldestWaiting | None = None
    duplicates_suppressed: int = 0
    conflicts: int = 0
    oldest_per_hop: Mapping[str, float] = field(default_factory=dict)
    """Age in seconds of the oldest queued or in-flight transfer, per next hop that has one."""


@dataclass(frozen=True, slots=True)
class OpenTransfer:
    """A transfer not yet acknowledged (queued, in flight or dead), as re-routing reads it."""

    transfer_id: str
    package_id: str
    next_hop: str
    recipients: tuple[str, ...]
    state: TransferState


@dataclass(frozen=True, slots=True)
class Rerouted:
    """What :meth:`SqlStore.reroute` made of one transfer: the new transfers by next hop
    and the recipients newly delivered to the inbox here (one already there is not counted)."""

    transfers: Mapping[str, str] = field(default_factory=dict)
    delivered: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """A package made here in answer to one being delivered (a signed status), stored in the
    same commit as that delivery: queued for ``hops``, and delivered to ``local`` recipients
    here with ``receipt`` recorded (a status whose sender is served here)."""

    data: bytes
    meta: PackageMeta
    hops: Mapping[str, Sequence[str]] = field(default_factory=dict)
    local: tuple[str, ...] = ()
    receipt: Receipt | None = None
