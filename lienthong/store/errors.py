"""Errors of the store, by who is at fault (see :mod:`lienthong.errors`)."""

from __future__ import annotations

from lienthong.errors import LienthongError, PeerInputError, TransientError
from lienthong.store.lifecycle import ConcurrentChange, IllegalTransition

__all__ = [
    "ConcurrentChange",
    "CorruptPackage",
    "DatabaseLocked",
    "DigestMismatch",
    "DiskFull",
    "IllegalTransition",
    "IntakeBlocked",
    "StoreTransientError",
    "UnknownId",
    "WrongPeer",
]


class StoreTransientError(TransientError):
    """The disk or the database is in the way; intake stops until it clears."""


class DiskFull(StoreTransientError):
    """No space left (or a file size limit hit) while writing a package or the database."""


class DatabaseLocked(StoreTransientError):
    """Another process held the database longer than the busy timeout."""


class IntakeBlocked(StoreTransientError):
    """Intake is stopped since an earlier disk or database fault; the message says which."""


class DigestMismatch(PeerInputError):
    """The package bytes do not match the sha256 or size they were announced with."""


class CorruptPackage(LienthongError):
    """A stored package's bytes no longer match its id (their sha256): the disk changed them.
    The store has quarantined the package and dead-lettered its transfers with the reason."""


class WrongPeer(PeerInputError):
    """A hop receipt came from a neighbour the transfer was not sent to."""


class UnknownId(LienthongError):
    """No package, transfer or inbox entry has this id (or it is not in a state that fits)."""
