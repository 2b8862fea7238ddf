"""The life cycles of a package and of a transfer: states and the table of legal transitions.

Pure: no I/O. Every state change the store makes is checked here first, and the SQLite store
then guards its ``UPDATE`` with the state it read, so an illegal move raises
:class:`IllegalTransition` and a concurrent one :class:`ConcurrentChange`; nothing is ever
updated silently.

Package (DESIGN.md section 4)::

    submitted -> validated -> signed -> stored -> routed -> done      (from office software)
    received -> stored -> verified -> delivered -> done               (from a neighbour, for us)
                                   -> routed -> done                  (forwarded onwards)
                                   -> quarantined                     (refused: status 02)
    delivered -> routed                        (also forwarded for recipients elsewhere)
    stored | verified | routed -> expired (dead-lettered by age); expired -> stored | routed
    by requeue, or -> done when late hop receipts complete it.

``routed`` means transfers are queued per next hop (for a received package: forwarded);
``done`` that every transfer got its hop receipt, or every inbox entry was retrieved.

Transfer (one per package and next hop)::

    queued -> in_flight -> acked                  (hop receipt)
                        -> queued                 (failed or lease ran out: retry later)
                        -> dead                   (schedule exhausted: dead letter)
    queued -> dead (too old); dead -> queued (requeue)
    queued | dead -> rerouted                     (a new directory routes its recipients
                                                   elsewhere: replaced by new transfers and
                                                   inbox entries, in the same transaction)
    queued | dead | rerouted -> acked             (a late hop receipt still proves delivery)

Inbox entry (a package delivered here, per local recipient)::

    new -> done | failed (the office software's updateStatus); failed -> done | failed
    new | failed | done -> revoked (the sender revoked or replaced the document)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from lienthong.errors import LienthongError


class PackageState(enum.StrEnum):
    """Where a package is in its life at this node."""

    SUBMITTED = "submitted"
    VALIDATED = "validated"
    SIGNED = "signed"
    RECEIVED = "received"
    STORED = "stored"
    VERIFIED = "verified"
    ROUTED = "routed"
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"
    EXPIRED = "expired"
    DONE = "done"


class TransferState(enum.StrEnum):
    """Where one copy of a package, bound for one next hop, is."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    ACKED = "acked"
    DEAD = "dead"
    REROUTED = "rerouted"


class InboxState(enum.StrEnum):
    """Whether the office software has retrieved an inbox entry, or the sender revoked it."""

    NEW = "new"
    DONE = "done"
    FAILED = "failed"
    REVOKED = "revoked"


_P = PackageState
_T = TransferState

PACKAGE_TRANSITIONS: Mapping[PackageState, frozenset[PackageState]] = {
    _P.SUBMITTED: frozenset({_P.VALIDATED, _P.QUARANTINED}),
    _P.VALIDATED: frozenset({_P.SIGNED, _P.QUARANTINED}),
    _P.SIGNED: frozenset({_P.STORED}),
    _P.RECEIVED: frozenset({_P.STORED, _P.QUARANTINED}),
    _P.STORED: frozenset({_P.VERIFIED, _P.ROUTED, _P.QUARANTINED, _P.EXPIRED}),
    _P.VERIFIED: frozenset({_P.DELIVERED, _P.ROUTED, _P.QUARANTINED, _P.EXPIRED}),
    # A package whose bytes on disk no longer match its id (its sha256) is quarantined from
    # whatever state it is in: it is never sent or served again.
    _P.ROUTED: frozenset({_P.DONE, _P.EXPIRED, _P.QUARANTINED}),
    # Delivered here, then forwarded for its recipients elsewhere.
    _P.DELIVERED: frozenset({_P.DONE, _P.ROUTED, _P.QUARANTINED}),
    _P.EXPIRED: frozenset({_P.STORED, _P.ROUTED, _P.DONE, _P.QUARANTINED}),
    _P.QUARANTINED: frozenset(),
    _P.DONE: frozenset({_P.QUARANTINED}),
}

TRANSFER_TRANSITIONS: Mapping[TransferState, frozenset[TransferState]] = {
    _T.QUEUED: frozenset({_T.IN_FLIGHT, _T.DEAD, _T.ACKED, _T.REROUTED}),
    _T.IN_FLIGHT: frozenset({_T.ACKED, _T.QUEUED, _T.DEAD}),
    _T.DEAD: frozenset({_T.QUEUED, _T.ACKED, _T.REROUTED}),
    _T.REROUTED: frozenset({_T.ACKED}),
    _T.ACKED: frozenset(),
}

INBOX_TRANSITIONS: Mapping[InboxState, frozenset[InboxState]] = {
    InboxState.NEW: frozenset({InboxState.DONE, InboxState.FAILED, InboxState.REVOKED}),
    InboxState.FAILED: frozenset({InboxState.DONE, InboxState.FAILED, InboxState.REVOKED}),
    InboxState.DONE: frozenset({InboxState.REVOKED}),
    InboxState.REVOKED: frozenset(),
}

# Packages in these states are still being worked on, so they can grow too old.
PACKAGE_EXPIRABLE = frozenset(
    s for s, targets in PACKAGE_TRANSITIONS.items() if _P.EXPIRED in targets
)


class IllegalTransition(LienthongError):
    """A state change the life cycle does not allow: a bug in the caller, never retried."""

    def __init__(self, entity: str, entity_id: str, from_state: str, to_state: str) -> None:
        super().__init__(f"illegal {entity} transition for {entity_id}: {from_state} -> {to_state}")
        self.entity = entity
        self.entity_id = entity_id
        self.from_state = from_state
        self.to_state = to_state


class ConcurrentChange(LienthongError):
    """The row changed state between reading and updating it (another writer got there first)."""

    def __init__(self, entity: str, entity_id: str, expected: str, to_state: str) -> None:
        super().__init__(
            f"{entity} {entity_id} is no longer {expected} (moving to {to_state}): "
            "changed concurrently"
        )
        self.entity = entity
        self.entity_id = entity_id


_TABLES: Mapping[str, Mapping[Any, frozenset[Any]]] = {
    "package": PACKAGE_TRANSITIONS,
    "transfer": TRANSFER_TRANSITIONS,
    "inbox entry": INBOX_TRANSITIONS,
}


def check(entity: str, entity_id: str, from_state: str, to_state: str) -> None:
    """Raise :class:`IllegalTransition` unless ``from_state -> to_state`` is legal for
    ``entity`` (``package``, ``transfer`` or ``inbox entry``)."""
    table = _TABLES[entity]
    if to_state not in table.get(from_state, frozenset()):
        raise IllegalTransition(entity, entity_id, from_state, to_state)


def check_package(package_id: str, from_state: PackageState, to_state: PackageState) -> None:
    """Raise :class:`IllegalTransition` unless the package move is legal."""
    check("package", package_id, from_state, to_state)


def check_transfer(transfer_id: str, from_state: TransferState, to_state: TransferState) -> None:
    """Raise :class:`IllegalTransition` unless the transfer move is legal."""
    check("transfer", transfer_id, from_state, to_state)
