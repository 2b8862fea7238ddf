"""The one place a running node keeps the directory in force; everything reads it from here.

The processor, the office-software API, the status page and the node's own wiring hold the
same :class:`DirectoryHolder` and read :attr:`DirectoryHolder.directory` each time they need
it, so a new version is swapped in by one assignment, between two reads, never half-way
through one. No I/O: the files are :mod:`lienthong.dirfiles`, the distribution
:mod:`lienthong.dirsync`.

Expiry (``[directory] on_expiry``): past the version's expiry the node says so in
``/healthz``, the status page and its log; with ``warn`` (the default) it keeps routing and
refuses nothing; with ``refuse_submissions`` it also refuses documents from office software
(what it already holds still moves, so nothing in flight is stranded).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lienthong.directory import Directory
from lienthong.dirversion import DirectoryVersion

__all__ = ["DirectoryHolder", "Expiry", "ExpiryPolicy", "fixed"]

ExpiryPolicy = Literal["warn", "refuse_submissions"]
EXPIRY_POLICIES: tuple[ExpiryPolicy, ...] = ("warn", "refuse_submissions")


@dataclass(frozen=True, slots=True)
class Expiry:
    """Where the version in force stands against its expiry at ``at``.

    ``state``: ``none`` (bootstrap, never expires), ``ok``, ``soon`` (within the warning
    period) or ``expired``; ``message`` the sentence for people.
    """

    state: Literal["none", "ok", "soon", "expired"]
    message: str

    @property
    def ok(self) -> bool:
        """False only when the version in force has expired."""
        return self.state != "expired"


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class DirectoryHolder:
    """The directory version in force at one node, since when, and its expiry."""

    def __init__(
        self,
        version: DirectoryVersion,
        since: float,
        *,
        policy: ExpiryPolicy = "warn",
        warn_before_s: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``since`` is when ``version`` came into force here (seconds since the epoch)."""
        self.policy: ExpiryPolicy = policy
        self.warn_before_s = warn_before_s
        self.clock = clock
        self._set(version, since)

    def _set(self, version: DirectoryVersion, since: float) -> None:
        self.version = version
        self.since = since
        self._set_day(self.clock())

    def _set_day(self, now: float) -> None:
        """The routing directory of the UTC day holding ``now``, with that day's bounds in
        seconds, kept in one assignment once made."""
        day = _utc(now).date()
        start = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
        self._today = (start, start + 86400.0, self.version.routing_directory(day))

    @property
    def directory(self) -> Directory:
        """The directory in force, with the aliases valid today (what routing reads)."""
        # Read for every frame and route: a comparison of seconds, no date made each time.
        now = self.clock()
        start, end, routing = self._today
        if start <= now < end:
            return routing
        self._set_day(now)  # aliases lapse at the end of their day
        return self._today[2]

    def swap(self, version: DirectoryVersion, since: float) -> DirectoryVersion:
        """Put ``version`` in force from ``since``; the version it replaces."""
        previous = self.version
        self._set(version, since)
        return previous

    def expiry(self, now: float) -> Expiry:
        """The expiry state of the version in force at ``now``."""
        version = self.version
        if version.expires is None:
            return Expiry("none", f"{version.describe()}")
        left = version.expires.timestamp() - now
        when = version.expires.strftime("%Y-%m-%d %H:%M UTC")
        if left <= 0:
            policy = (
                "documents from office software are refused"
                if self.refusing
                else "the node keeps routing and refuses nothing"
            )
            return Expiry(
                "expired",
                f"directory version {version.number} expired at {when}; {policy} until a"
                " newer version arrives",
            )
        if left <= self.warn_before_s:
            return Expiry(
                "soon",
                f"directory version {version.number} expires at {when} ({left / 3600:.0f} h)",
            )
        return Expiry("ok", f"directory version {version.number}, valid until {when}")

    @property
    def refusing(self) -> bool:
        """True when the policy refuses documents from office software past expiry."""
        return self.policy == "refuse_submissions"

    def submission_refusal(self, now: float) -> str | None:
        """Why a document from office software is refused now (expired directory under
        ``refuse_submissions``), or ``None``."""
        if not self.refusing:
            return None
        expiry = self.expiry(now)
        return None if expiry.ok else expiry.message


def fixed(directory: Directory, clock: Callable[[], float] = time.time) -> DirectoryHolder:
    """A holder of one directory that never changes (tests, commands that read a file)."""
    version = DirectoryVersion(
        number=0, issued=_utc(0), expires=None, directory=directory, document={}
    )
    return DirectoryHolder(version, 0.0, clock=clock)
