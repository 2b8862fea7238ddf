"""Store-and-forward engine: packages, transfers, inbox, receipts and the journal.

:class:`SqliteStore` is the one implementation of :class:`Store` (tests run it on a temporary
folder).
"""

from lienthong.store.base import Store
from lienthong.store.errors import (
    ConcurrentChange,
    CorruptPackage,
    DatabaseLocked,
    DigestMismatch,
    DiskFull,
    IllegalTransition,
    IntakeBlocked,
    StoreTransientError,
    UnknownId,
    WrongPeer,
)
from lienthong.store.lifecycle import InboxState, PackageState, TransferState
from lienthong.store.model import (
    FailOutcome,
    Lease,
    PackageMeta,
    PackageSource,
    Receipt,
    ReceiveOutcome,
    ReceiveResult,
    Reply,
)
from lienthong.store.sqlite import SqliteStore

__all__ = [
    "ConcurrentChange",
    "CorruptPackage",
    "DatabaseLocked",
    "DigestMismatch",
    "DiskFull",
    "FailOutcome",
    "IllegalTransition",
    "InboxState",
    "IntakeBlocked",
    "Lease",
    "PackageMeta",
    "PackageSource",
    "PackageState",
    "Receipt",
    "ReceiveOutcome",
    "ReceiveResult",
    "Reply",
    "SqliteStore",
    "Store",
    "StoreTransientError",
    "TransferState",
    "UnknownId",
    "WrongPeer",
]
