"""Store-and-forward engine: packages, transfers, inbox, receipts and the journal.

Every operation of :class:`Store` is written once (:class:`~lienthong.store.sqlstore.SqlStore`),
on two engines: :class:`SqliteStore` (files in the node's state folder, the default) and
:class:`~lienthong.store.postgres.PostgresStore` (a PostgreSQL database two daemons of a node
share); :func:`~lienthong.store.factory.store_for` gives the one ``[store]`` names.
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
