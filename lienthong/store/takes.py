"""What this process has taken from the transfer queue, so that no transfer is taken twice.

Taking a transfer reads the queue through a connection that sees committed data only, reserves
the transfer at once, and hands its move to in_flight to the next grouped commit. So a read may
return a transfer that is reserved, or one whose take was committed after the read began (the
read saw it still queued). :class:`Takes` remembers both: reservations until their take is
committed, and committed takes for as long as rows read before them may still be used.

Rows read ahead: one read returns up to :data:`AHEAD` due transfers for a next hop, and the
next takes for that hop use them without reading again (a burst of transfers costs one read per
:data:`AHEAD` takes, not one each), for at most :data:`AHEAD_TTL_S` seconds. Any write that may
move a queued transfer elsewhere (re-routing, dead-lettering, a requeue) drops them, when it is
handed over and again when it is committed; a read that began before such a drop keeps nothing.
While a batch with such a write commits (on the event loop, in a thread or on a server) and is
made durable, rows read ahead are neither used nor kept (:meth:`Takes.hold`): its rows can be
visible to reads before the writer hears back.

Pure bookkeeping on the event loop: no I/O. Rows are whatever the engine's reads return, indexed
by column name (``row["transfer_id"]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

AHEAD = 16
"""Due transfers one read returns, beyond those it must skip."""
AHEAD_TTL_S = 1.0
"""Rows read ahead are used for at most this long after their read."""


class Takes:
    """Reservations, committed takes and rows read ahead, per store."""

    def __init__(self) -> None:
        self.reserved: dict[str, float] = {}
        """Transfers taken whose move to in_flight is not committed yet, with the lease end."""
        self._commits = 0  # takes committed so far: the clock reads are compared against
        self._committed: dict[str, int] = {}  # transfer -> its take's number, while needed
        self._reads: dict[int, tuple[int, int]] = {}  # read -> (takes seen, generation)
        self._ids = itertools.count()
        self._ahead: dict[str | None, tuple[int, float, list[Any]]] = {}
        self._generation = 0  # bumped whenever rows read ahead must be dropped
        self._held = 0  # batches moving queued transfers being committed now

    # -- reads ------------------------------------------------------------------------------

    def begin_read(self) -> int:
        """A read of the queue starts now; its token for :meth:`end_read`."""
        token = next(self._ids)
        self._reads[token] = (self._commits, self._generation)
        return token

    def end_read(self, token: int, found: Sequence[Any]) -> tuple[list[Any], int, bool]:
        """The read is over and returned ``found``: the rows of it that may be taken, the
        takes it may have seen, and whether those rows may be kept ahead (nothing dropped
        them meanwhile)."""
        seen, generation = self._reads.pop(token)
        rows = [row for row in found if self.usable(row, seen)]
        self._prune()
        return rows, seen, generation == self._generation and not self._held

    @property
    def skip(self) -> int:
        """How many due rows a read may find taken already (its LIMIT adds these)."""
        return len(self.reserved) + len(self._committed)

    def usable(self, row: Any, seen: int) -> bool:
        """Whether a transfer read as queued, by a read that had seen ``seen`` takes, may be
        taken: not reserved, and not taken in a commit the read may have missed."""
        tid = row["transfer_id"]
        return tid not in self.reserved and self._committed.get(tid, 0) <= seen

    # -- rows read ahead --------------------------------------------------------------------

    def keep_ahead(self, hop: str | None, seen: int, now: float, rows: list[Any]) -> None:
        """Keep ``rows`` (read with ``seen`` takes seen, at ``now``) for the next takes."""
        if rows:
            self._ahead[hop] = (seen, now, rows)
        else:
            self._ahead.pop(hop, None)
        self._prune()

    def next_ahead(self, hop: str | None, now: float) -> Any | None:
        """The next usable row read ahead for ``hop``; None when there is none (or they are
        too old)."""
        kept = self._ahead.pop(hop, None)
        if kept is None:  # always, while held: hold dropped them and end_read keeps none
            return None
        seen, read_at, rows = kept
        if not 0 <= now - read_at <= AHEAD_TTL_S:
            self._prune()
            return None
        while rows:
            row = rows.pop(0)
            if self.usable(row, seen):
                if rows:
                    self._ahead[hop] = (seen, read_at, rows)
                self._prune()
                return row
        self._prune()
        return None

    def drop_ahead(self) -> None:
        """A write may move queued transfers elsewhere: forget every row read ahead, and keep
        none from reads already under way."""
        self._ahead.clear()
        self._generation += 1
        self._prune()

    def hold(self) -> None:
        """A batch that may move queued transfers elsewhere starts committing: drop the rows
        read ahead, and read none ahead until :meth:`release`."""
        self._held += 1
        self.drop_ahead()

    def release(self) -> None:
        """That batch is committed (or failed): rows may be read ahead again, from reads that
        begin now."""
        self._held -= 1
        self.drop_ahead()

    # -- takes ------------------------------------------------------------------------------

    def reserve(self, transfer_id: str, expires: float) -> None:
        """``transfer_id`` is taken; its move to in_flight is on its way to the database."""
        self.reserved[transfer_id] = expires

    def extend(self, transfer_id: str, expires: float) -> None:
        """A reservation's lease now ends at ``expires`` (if still reserved)."""
        if transfer_id in self.reserved:
            self.reserved[transfer_id] = max(self.reserved[transfer_id], expires)

    def committed(self, transfer_id: str) -> None:
        """The take of ``transfer_id`` is committed (or failed: it is settled either way)."""
        self.reserved.pop(transfer_id, None)
        self._commits += 1
        if self._reads or self._ahead:
            self._committed[transfer_id] = self._commits

    def _prune(self) -> None:
        """Forget committed takes that every read still in use has seen."""
        floors = [seen for seen, _ in self._reads.values()]
        floors += [seen for seen, _, _ in self._ahead.values()]
        if not floors:
            self._committed.clear()
        elif self._committed:
            floor = min(floors)
            if min(self._committed.values()) <= floor:
                self._committed = {t: n for t, n in self._committed.items() if n > floor}
