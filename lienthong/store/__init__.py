"""Store-and-forward engine: packages, transfers, inbox, receipts and the journal.

:class:`SqliteStore` is the durable one; :class:`MemoryStore` the in-memory one beside it.
Both follow :class:`Store`.
"""

from lienthong.store.base import Store
from lienthong.store.errors import (
    ConcurrentChange,
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
from lienthong.store.memory import MemoryStore
from lienthong.store.model import (
    FailOutcome,
    Lease,
    PackageMeta,
    Receipt,
    ReceiveOutcome,
    ReceiveResult,
)
from lienthong.store.sqlite import SqliteStore

__all__ = [
    "ConcurrentChange",
    "DatabaseLocked",
    "DigestMismatch",
    "DiskFull",
    "FailOutcome",
    "IllegalTransition",
    "InboxState",
    "IntakeBlocked",
    "Lease",
    "MemoryStore",
    "PackageMeta",
    "PackageState",
    "Receipt",
    "ReceiveOutcome",
    "ReceiveResult",
    "SqliteStore",
    "Store",
    "StoreTransientError",
    "TransferState",
    "UnknownId",
    "WrongPeer",
]
