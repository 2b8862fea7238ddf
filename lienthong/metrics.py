"""What a node counts for its operators, exposed in the Prometheus text format.

One :class:`Metrics` per node, over its own ``CollectorRegistry`` (never the process-wide one,
so several nodes or test cases in one process never share a counter). The receiver, the
senders and the processor call its methods as packages move: those are the counters and the
latency histograms. What describes the state of the store and the links (queue depths, the
oldest waiting transfer, dead letters, link states) is not counted but read at scrape time by
:meth:`Metrics.refresh`, so it can never drift from the store.

Series (all prefixed ``lienthong_``)::

    packages_received_total{kind,neighbour}   stored from a neighbour (duplicates apart)
    packages_sent_total{kind,neighbour}       handed to a neighbour: its hop receipt came
    packages_submitted_total{kind}            taken from the office software here
    packages_delivered_total{kind}            delivered to a local inbox (one per recipient)
    transfers_duplicate_total{neighbour}      a transfer received again (answered, not stored)
    transfer_failures_total{neighbour,outcome} no receipt / link down: retry or dead
    frames_refused_total{neighbour}           frames that could not be decoded or reassembled
    refusals_total{stage,reason}              see REFUSAL_REASONS and RefusalStage
    deviations_total{stage,kind}              QCVN 102 deviations tolerated (DEVIATION_KINDS),
                                              at submission or at delivery
    signature_checks_total{result}            ok | refused, at the destination
    bytes_received_total{neighbour}           frame bytes in (transfers and receipts)
    bytes_sent_total{neighbour}               frame bytes out (transfers and receipts)
    hop_latency_seconds{neighbour}            first frame published -> hop receipt
    end_to_end_latency_seconds                at the origin: submission -> status 01
    queue_transfers{next_hop,state}           queued | in_flight, at scrape time
    queue_oldest_waiting_seconds{next_hop}    see below
    dead_letters{kind}                        transfer | package
    store_packages{state}                     packages per life-cycle state
    intake_blocked                            1 while the store refuses new packages
    link_up{link,broker}                      1 up, 0 connecting or down
    clock_skew_seconds{neighbour}             the neighbour's clock minus this node's, from
                                              its last hop receipt (``lienthong check`` reads it)

``queue_oldest_waiting_seconds`` is the age of the oldest queued or in-flight transfer for
each next hop (:attr:`QueueSummary.oldest_per_hop`), 0 for hops with nothing waiting.

The end-to-end latency pairs a status 01 with the submission time remembered in memory (the
last :data:`E2E_REMEMBERED` submissions): a status 01 for a document submitted before a restart
is not observed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from lienthong.edxml.validate import Problem
from lienthong.store import Store
from lienthong.store.lifecycle import TransferState
from lienthong.store.model import DeadLetter, QueueSummary
from lienthong.transport.link import Link

__all__ = [
    "CONTENT_TYPE",
    "E2E_REMEMBERED",
    "REFUSAL_REASONS",
    "Metrics",
    "RefusalReason",
    "RefusalStage",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of :meth:`Metrics.render`'s output."""

RefusalReason = Literal["signature", "invalid", "unknown_recipient", "expired", "other"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = (
    "signature",
    "invalid",
    "unknown_recipient",
    "expired",
    "other",
)
"""The stable labels refusals are grouped under; a dashboard can rely on these five."""

RefusalStage = Literal["submission", "reception", "routing", "expiry"]
"""Where the refusal happened: office software's submission, a package received (quarantine),
recipients no route reaches, or a package dead-lettered by age."""

E2E_REMEMBERED = 10_000
"""How many submission times are kept to pair with their status 01."""

RECENT_DOCUMENTS = 50
"""How many recent document packages :attr:`Metrics.recent` remembers (newest last)."""

HOP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
E2E_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0,
)  # fmt: skip
_WAITING = (TransferState.QUEUED.value, TransferState.IN_FLIGHT.value)


class Metrics:
    """The counters, histograms and scrape-time gauges of one node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.recent: deque[str] = deque(maxlen=RECENT_DOCUMENTS)
        """Package ids of the document packages seen lately (submitted or received)."""
        self._submitted_at: OrderedDict[str, float] = OrderedDict()
        counter = partial(Counter, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        self._received = counter(
            "lienthong_packages_received",
            "Packages stored from a neighbour, duplicates apart.",
            ["kind", "neighbour"],
        )
        self._sent = counter(
            "lienthong_packages_sent",
            "Packages handed to a neighbour (its hop receipt came).",
            ["kind", "neighbour"],
        )
        self._submitted = counter(
            "lienthong_packages_submitted",
            "Packages taken from the office software at this node.",
            ["kind"],
        )
        self._delivered = counter(
            "lienthong_packages_delivered",
            "Packages delivered to a local inbox, one per recipient.",
            ["kind"],
        )
        self._duplicates = counter(
            "lienthong_transfers_duplicate",
            "Transfers received again: answered with a hop receipt, not stored twice.",
            ["neighbour"],
        )
        self._failures = counter(
            "lienthong_transfer_failures",
            "Send attempts without a hop receipt; outcome retry or dead.",
            ["neighbour", "outcome"],
        )
        self._frames_refused = counter(
            "lienthong_frames_refused",
            "Frames from a neighbour that could not be decoded or reassembled.",
            ["neighbour"],
        )
        self._refusals = counter(
            "lienthong_refusals",
            "Packages refused, by stage and reason (" + ", ".join(REFUSAL_REASONS) + ").",
            ["stage", "reason"],
        )
        self._skew = gauge(
            "lienthong_clock_skew_seconds",
            "The neighbour's clock minus this node's, from its last hop receipt.",
            ["neighbour"],
        )
        self._deviations = counter(
            "lienthong_deviations",
            "Deviations from QCVN 102 in packages accepted, by stage and kind.",
            ["stage", "kind"],
        )
        self.deviations_of: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        """The deviations (``PATH: MESSAGE [kind]``) of the recent packages that had any, by
        package id, for the status page; the package itself is kept and can be checked again."""
        self._signatures = counter(
            "lienthong_signature_checks",
            "Signature verifications at the destination, by result (ok, refused).",
            ["result"],
        )
        self._bytes_in = counter(
            "lienthong_bytes_received", "Frame bytes received from a neighbour.", ["neighbour"]
        )
        self._bytes_out = counter(
            "lienthong_bytes_sent", "Frame bytes published to a neighbour.", ["neighbour"]
        )
        self._hop_latency = histogram(
            "lienthong_hop_latency_seconds",
            "From the first frame published to the neighbour's hop receipt.",
            ["neighbour"],
            buckets=HOP_BUCKETS,
        )
        self._e2e_latency = histogram(
            "lienthong_end_to_end_latency_seconds",
            "At the origin: from submission to a recipient's status 01.",
            buckets=E2E_BUCKETS,
        )
        self._queue = gauge(
            "lienthong_queue_transfers",
            "Transfers waiting for a hop receipt, per next hop and state (queued, in_flight).",
            ["next_hop", "state"],
        )
        self._oldest = gauge(
            "lienthong_queue_oldest_waiting_seconds",
            "Age of the oldest waiting transfer per next hop; 0 where none waits.",
            ["next_hop"],
        )
        self._dead = gauge(
            "lienthong_dead_letters",
            "Dead-lettered transfers and expired packages waiting for a requeue.",
            ["kind"],
        )
        self._packages = gauge(
            "lienthong_store_packages", "Packages in the store per life-cycle state.", ["state"]
        )
        self._blocked = gauge(
            "lienthong_intake_blocked",
            "1 while the store refuses new packages (disk full, database locked).",
        )
        self._link_up = gauge(
            "lienthong_link_up",
            "1 when the link to the broker is up, 0 when connecting or down.",
            ["link", "broker"],
        )

    # -- events (called as packages move) ------------------------------------------------------

    def received(self, kind: str, neighbour: str, package_id: str) -> None:
        """A new package from ``neighbour`` is stored."""
        self._received.labels(kind, neighbour).inc()
        if kind == "edoc":
            self.recent.append(package_id)

    def duplicate(self, neighbour: str) -> None:
        """A transfer ``neighbour`` had already sent came again."""
        self._duplicates.labels(neighbour).inc()

    def sent(self, kind: str, neighbour: str, latency_s: float) -> None:
        """``neighbour`` acknowledged a transfer ``latency_s`` after its first frame left."""
        self._sent.labels(kind, neighbour).inc()
        self._hop_latency.labels(neighbour).observe(latency_s)

    def send_failed(self, neighbour: str, outcome: str) -> None:
        """An attempt got no hop receipt; ``outcome`` is the store's decision (retry, dead)."""
        self._failures.labels(neighbour, outcome).inc()

    def frame_refused(self, neighbour: str) -> None:
        """A frame from ``neighbour`` could not be decoded or reassembled."""
        self._frames_refused.labels(neighbour).inc()

    def bytes_in(self, neighbour: str, size: int) -> None:
        """A frame of ``size`` bytes came from ``neighbour``."""
        self._bytes_in.labels(neighbour).inc(size)

    def bytes_out(self, neighbour: str, size: int) -> None:
        """A frame of ``size`` bytes was published to ``neighbour``."""
        self._bytes_out.labels(neighbour).inc(size)

    def submitting(self, document_id: str, at: float) -> None:
        """The office software hands over ``document_id`` at ``at`` (seconds since the epoch).

        Remembered before the package is routed: a recipient served here answers its status 01
        before the submission returns. A document submitted again keeps its first time.
        """
        self._submitted_at.setdefault(document_id, at)
        self._submitted_at.move_to_end(document_id)
        while len(self._submitted_at) > E2E_REMEMBERED:
            self._submitted_at.popitem(last=False)

    def submitted(self, kind: str, package_id: str) -> None:
        """A new package (not a re-submission) was taken from the office software."""
        self._submitted.labels(kind).inc()
        if kind == "edoc":
            self.recent.append(package_id)

    def delivered(self, kind: str, recipients: int) -> None:
        """A package was delivered to ``recipients`` local inboxes."""
        self._delivered.labels(kind).inc(recipients)

    def status_arrived(self, document_id: str, code: str, at: float) -> None:
        """A status ``code`` about ``document_id`` reached this node at ``at``.

        A 01 for a document submitted here (and remembered) is one end-to-end latency sample.
        """
        if code != "01":
            return
        submitted_at = self._submitted_at.get(document_id)
        if submitted_at is not None:
            self._e2e_latency.observe(max(0.0, at - submitted_at))

    def refused(self, stage: RefusalStage, reason: RefusalReason) -> None:
        """A package was refused at ``stage`` for ``reason``."""
        self._refusals.labels(stage, reason).inc()

    def deviated(self, stage: str, package_id: str, deviations: Iterable[Problem]) -> None:
        """A package accepted at ``stage`` (submission or delivery) had these deviations."""
        found = tuple(deviations)
        if not found:
            return
        for deviation in found:
            self._deviations.labels(stage, deviation.kind).inc()
        self.deviations_of[package_id] = tuple(f"{d} [{d.kind}]" for d in found)
        self.deviations_of.move_to_end(package_id)
        while len(self.deviations_of) > RECENT_DOCUMENTS:
            self.deviations_of.popitem(last=False)

    def clock_skew(self, neighbour: str, seconds: float) -> None:
        """``neighbour``'s clock was ``seconds`` ahead of this node's (behind if negative)."""
        self._skew.labels(neighbour).set(seconds)

    def signature_checked(self, ok: bool) -> None:
        """A signature verification ended ``ok`` or refused."""
        self._signatures.labels("ok" if ok else "refused").inc()

    # -- scrape ----------------------------------------------------------------------------------

    async def refresh(
        self, store: Store, links: Mapping[str, Link], hops: Iterable[str], now: float
    ) -> None:
        """Set the gauges from the store, the links and the node's next ``hops``."""
        summary = await store.queue_summary(now)
        dead = await store.dead_letters()
        # Everything is set after the reads, with no await in between: a scrape running
        # meanwhile never renders half-cleared gauges.
        self._set_queues(summary, hops)
        self._set_dead(dead)
        self._packages.clear()
        for state, count in summary.packages.items():
            self._packages.labels(state).set(count)
        self._blocked.set(1 if store.intake_blocked else 0)
        self._link_up.clear()
        for name, link in links.items():
            self._link_up.labels(name, link.where).set(1 if link.state == "up" else 0)

    def _set_queues(self, summary: QueueSummary, hops: Iterable[str]) -> None:
        self._queue.clear()
        self._oldest.clear()
        for hop in sorted({*hops, *summary.per_hop}):
            counts = summary.per_hop.get(hop, {})
            for state in _WAITING:
                self._queue.labels(hop, state).set(counts.get(state, 0))
            self._oldest.labels(hop).set(summary.oldest_per_hop.get(hop, 0.0))

    def _set_dead(self, dead: Iterable[DeadLetter]) -> None:
        counts = {"transfer": 0, "package": 0}
        for letter in dead:
            counts[letter.kind] += 1
        for kind, count in counts.items():
            self._dead.labels(kind).set(count)

    def render(self) -> bytes:
        """Every series in the Prometheus text format (call :meth:`refresh` first)."""
        return generate_latest(self.registry)
