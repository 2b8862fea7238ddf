"""End to end across six hops: packages per second and latency (p50, p99) through seven
``lienthong run`` daemons and five mosquitto brokers (TLS client certificates + ACL), against raw
aiomqtt QoS 1 publish-to-receive on the same brokers in the same run.

Run: ``.venv/bin/python bench/bench_network.py [--packages N] [--paced N] [--rate R]... [--keep]``
(``--help`` for the rest; ``--keep`` leaves the folder with every daemon's log and store).

The network is config/topologies/four-tier.toml (:class:`lienthong.devnet.network.Network`);
the route is commune 000.01.05.H49 -> district -> province H49 -> national -> province H41 ->
district -> commune 000.03.07.H41. Packages are ~5 KB signed edocs (a random attachment sized
so the signed package is ``--size`` bytes).

lienthong: the commune's :class:`~lienthong.processing.Processor` runs in this process on the
commune's store (as ``lienthong send`` does, without a process per package): it validates,
signs, stores and queues each unsigned package, and wakes the commune's daemon as that command
does (:mod:`lienthong.wakeup`); the daemon also looks every ``transfer.poll_s`` (``--poll``).
Latency = ``added_at`` of the inbox entry at the destination minus the time ``submit`` was
called (one machine, one clock). Throughput = packages / (first submission -> last arrival).
Every arrival makes a signed status 01 travel the six hops back; the phase ends when those
are back too, so the next phase does not compete with them.

Baseline: the same six hops as a relay chain of plain aiomqtt clients presenting the nodes'
certificates (the ACL lets node X read only lienthong/v1/X/in/# and publish only with X as the
sender segment): each relay subscribes its inbox on the broker of the hop it receives on and
republishes each message, QoS 1, into the next node's inbox; also a single hop, and the six
hops with TCP_NODELAY (aiomqtt, like the daemon's links, leaves Nagle's algorithm on). It runs
before the daemons start: the brokers force client id = certificate CN, so a relay client and a
daemon of the same node cannot be connected at once. Same payload size, same pacing.

Two shapes for each: ``paced`` (``--paced`` messages at ``--rate`` per second: latency at light
load; ``--rate`` may be given more than once) and ``burst`` (``--packages`` messages submitted by
``--concurrency`` callers at once: throughput, and latency including queueing).

CPU: over each burst, the user + system CPU time of every process involved is read from
``/proc/<pid>/stat``. For lienthong, each daemon's CPU is divided by the transfers it handled
(packages it stored in the burst: each document and its status 01); for the raw relay, this
process (which runs every relay client) and the five brokers are divided by messages x hops.
``--profile CODE`` records a py-spy flame graph of that node's daemon over the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from lienthong import wakeup
from lienthong.config import load_config
from lienthong.devnet.network import Network
from lienthong.edxml import build, new_edoc
from lienthong.logs import configure
from lienthong.node import load_directory, load_keys
from lienthong.processing import Processor
from lienthong.store import SqliteStore
from lienthong.transport.frames import inbox_filter, inbox_topic
from lienthong.trust import sign_package

TOPOLOGY = Path(__file__).resolve().parents[1] / "config" / "topologies" / "four-tier.toml"
ROUTE = [
    "000.01.05.H49",  # commune Duy Sơn
    "000.00.05.H49",  # district Duy Xuyên
    "000.00.00.H49",  # province Quảng Nam
    "000.00.00.G22",  # national
    "000.00.00.H41",  # province Khánh Hòa
    "000.00.07.H41",  # district Diên Khánh
    "000.03.07.H41",  # commune Diên An
]
SOURCE, DESTINATION = ROUTE[0], ROUTE[-1]
ARRIVAL_TIMEOUT_S = 120.0
POLL_STORE_S = 0.2
TICKS = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")
Item = tuple[str, bytes]
"""(key, payload): the key is how the arrival is recognised (DocumentId, or a sequence)."""


@dataclass(frozen=True, slots=True)
class Figures:
    """One measured row: ``count`` messages, first submission to last arrival, latencies."""

    label: str
    count: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Messages per second, first submission to last arrival."""
        return self.count / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5) (utime, stime), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / TICKS


def wakeups(pid: int) -> int:
    """Times the threads of process ``pid`` have gone to sleep and been woken so far (their
    voluntary context switches; 0 when it is gone). On a virtual machine each costs CPU of
    its own, so this counts what work at light load pays beyond the work itself."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


class CpuMeter:
    """CPU seconds (and wake-ups) of named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self.woken: dict[str, int] = {}
        self._start: dict[str, float] = {}
        self._woken_start: dict[str, int] = {}
        self._self_start = 0.0

    def start(self) -> None:
        """Note every process's CPU time and wake-ups now (and this process's CPU time)."""
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._woken_start = {name: wakeups(pid) for name, pid in self.pids.items()}
        self._self_start = time.process_time()

    def stop(self) -> None:
        """CPU seconds and wake-ups of each process since :meth:`start`; ``"bench"`` is this
        process (its CPU only)."""
        self.used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        self.woken = {
            name: wakeups(pid) - self._woken_start[name] for name, pid in self.pids.items()
        }
        self.used["bench"] = time.process_time() - self._self_start


async def stop_tasks(tasks: Collection[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again any that goes on:
    under Python 3.11, asyncio.wait_for (in every aiomqtt publish) drops a cancellation that
    comes in the loop turn its acknowledgement does, and a reading loop then runs forever."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of already sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def figures(label: str, sent: dict[str, float], arrived: dict[str, float]) -> Figures:
    """The row for messages sent at ``sent[key]`` and received at ``arrived[key]``."""
    latencies = sorted(arrived[key] - sent[key] for key in sent)
    seconds = max(arrived[key] for key in sent) - min(sent.values())
    return Figures(
        label,
        len(sent),
        seconds,
        percentile(latencies, 0.50) * 1000,
        percentile(latencies, 0.99) * 1000,
    )


async def submit_all(
    items: Sequence[Item],
    submit: Callable[[bytes], Awaitable[object]],
    *,
    rate: float | None,
    concurrency: int,
) -> dict[str, float]:
    """Submit every item (``rate`` per second, or as fast as ``concurrency`` callers go);
    the wall-clock time each submission started, by key."""
    sent: dict[str, float] = {}
    slots = asyncio.Semaphore(concurrency)
    start = time.time()

    async def one(index: int, key: str, payload: bytes) -> None:
        if rate is not None:
            await asyncio.sleep(max(0.0, start + index / rate - time.time()))
        async with slots:
            sent[key] = time.time()
            await submit(payload)

    await asyncio.gather(*(one(i, key, payload) for i, (key, payload) in enumerate(items)))
    return sent


async def wait_until(
    what: str, done: Callable[[], Awaitable[bool]], details: Callable[[], str] = str
) -> None:
    """Poll ``done`` until it holds; after :data:`ARRIVAL_TIMEOUT_S` raise naming ``what``,
    followed by ``details()``."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while not await done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}{details()}")
        await asyncio.sleep(POLL_STORE_S)


# -- the baseline: raw aiomqtt ------------------------------------------------------------------


def hop_broker(net: Network, a: str, b: str) -> str:
    """The broker carrying frames between neighbours ``a`` and ``b``: the parent's one."""
    return a if net.directory.node_parent(b) == a else b


class RelayChain:
    """Plain aiomqtt clients moving messages along ``path``: a source, relays, a sink.

    One client per (node, broker) pair, each presenting the node's certificate, with a clean
    session so nothing is left queued on the brokers for the daemons.
    """

    def __init__(self, net: Network, path: Sequence[str], *, nodelay: bool = False) -> None:
        """``nodelay`` sets TCP_NODELAY on the clients' sockets (aiomqtt leaves Nagle on)."""
        self.net = net
        self.path = list(path)
        self.socket_options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)] if nodelay else []
        self.arrived: dict[str, float] = {}
        self.errors: list[BaseException] = []
        self._clients: dict[tuple[str, str], aiomqtt.Client] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._source: aiomqtt.Client | None = None
        self._first_topic = ""

    async def _client(self, code: str, broker: str) -> aiomqtt.Client:
        key = (code, broker)
        if key not in self._clients:
            client = self.net.brokers[broker].client(
                code, clean_session=True, socket_options=self.socket_options
            )
            client.pending_calls_threshold = 1_000_000
            self._clients[key] = await self._stack.enter_async_context(client)
        return self._clients[key]

    async def __aenter__(self) -> RelayChain:
        try:
            await self._connect()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _connect(self) -> None:
        hops = list(itertools.pairwise(self.path))
        for index, (previous, here) in enumerate(hops):
            inbound = await self._client(here, hop_broker(self.net, previous, here))
            await inbound.subscribe(inbox_filter(here), qos=1)
            if index + 1 < len(hops):
                following = hops[index + 1][1]
                outbound = await self._client(here, hop_broker(self.net, here, following))
                self._spawn(self._relay(inbound, outbound, inbox_topic(following, here)))
            else:
                self._spawn(self._sink(inbound))
        first, second = self.path[0], self.path[1]
        self._source = await self._client(first, hop_broker(self.net, first, second))
        self._first_topic = inbox_topic(second, first)

    async def __aexit__(self, *exc: object) -> None:
        await stop_tasks(self._tasks)
        await self._stack.aclose()

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)

        def settled(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and done.exception() is not None:
                self.errors.append(done.exception())  # type: ignore[arg-type]

        task.add_done_callback(settled)

    async def _relay(self, inbound: aiomqtt.Client, outbound: aiomqtt.Client, topic: str) -> None:
        async for message in inbound.messages:
            # Republished concurrently, as a node keeps several transfers in flight per hop.
            self._spawn(outbound.publish(topic, message.payload, qos=1))

    async def _sink(self, inbound: aiomqtt.Client) -> None:
        async for message in inbound.messages:
            assert isinstance(message.payload, bytes)
            self.arrived.setdefault(message.payload[:12].decode(), time.time())

    async def publish(self, payload: bytes) -> None:
        """Publish one message (QoS 1) from the first node of the path to the second."""
        assert self._source is not None
        await self._source.publish(self._first_topic, payload, qos=1)

    async def measure(
        self, label: str, items: Sequence[Item], rate: float | None, concurrency: int
    ) -> Figures:
        """Send ``items`` through the chain and wait until the sink has each one."""
        sent = await submit_all(items, self.publish, rate=rate, concurrency=concurrency)

        async def all_arrived() -> bool:
            if self.errors:
                raise RuntimeError(f"{label}: a relay failed: {self.errors[0]!r}")
            return all(key in self.arrived for key in sent)

        await wait_until(f"{label}: every message at the sink", all_arrived)
        return figures(label, sent, self.arrived)


def raw_items(prefix: str, count: int, size: int) -> list[Item]:
    """``count`` payloads of ``size`` bytes whose first 12 bytes are their key."""
    out = []
    for i in range(count):
        key = f"{prefix}{i:011d}"
        out.append((key, key.encode() + os.urandom(max(0, size - len(key)))))
    return out


async def baseline(net: Network, args: argparse.Namespace, size: int) -> list[Figures]:
    """The raw aiomqtt rows: one hop, six hops paced and in a burst, six hops without Nagle."""
    rows = []
    async with RelayChain(net, ROUTE[:2]) as chain:
        items = raw_items("h", args.packages, size)
        rows.append(await chain.measure("raw aiomqtt, 1 hop, burst", items, None, args.concurrency))
    async with RelayChain(net, ROUTE, nodelay=True) as chain:
        rate = args.rate[0]
        items = raw_items("n", paced_count(args, rate), size)
        label = f"raw, TCP_NODELAY, 6 hops, paced {rate:g}/s"
        rows.append(await chain.measure(label, items, rate, 1))
    async with RelayChain(net, ROUTE) as chain:
        for rate in args.rate:
            items = raw_items("p", paced_count(args, rate), size)
            label = paced_label("raw aiomqtt", rate)
            rows.append(await chain.measure(label, items, rate, args.concurrency))
        items = raw_items("b", args.packages, size)
        meter = CpuMeter(broker_pids(net))
        meter.start()
        rows.append(
            await chain.measure("raw aiomqtt, 6 hops, burst", items, None, args.concurrency)
        )
        meter.stop()
    hops = len(ROUTE) - 1
    ms = sum(meter.used.values()) * 1000 / (args.packages * hops)
    CPU_LINES.append(
        f"raw relay: {ms:.2f} ms CPU per message per hop (relay clients and five brokers,"
        f" {sum(meter.used.values()):.1f} CPU-s for {args.packages} x {hops})"
    )
    return rows


CPU_LINES: list[str] = []
"""CPU figures of the run, printed after the table."""


def broker_pids(net: Network) -> dict[str, int]:
    """The process id of every broker, by name."""
    return {
        f"broker {code}": broker.process.pid
        for code, broker in net.brokers.items()
        if broker.process is not None
    }


def paced_count(args: argparse.Namespace, rate: float) -> int:
    """Messages of a paced phase at ``rate``: ``--paced``, or ``--paced-seconds`` worth."""
    return int(args.paced_seconds * rate) if args.paced_seconds else args.paced


def paced_label(what: str, rate: float) -> str:
    """The row label of a paced phase."""
    return f"{what}, 6 hops, paced {rate:g}/s"


# -- lienthong ----------------------------------------------------------------------------------


def edoc_items(prefix: int, count: int, attachment_bytes: int) -> list[Item]:
    """``count`` unsigned edocs from the source commune to the destination commune."""
    today = dt.date.today()
    out = []
    for i in range(count):
        pkg = new_edoc(
            from_code=SOURCE,
            to_codes=[DESTINATION],
            subject=f"Đo thông lượng {prefix}-{i}",
            attachments=[("du-lieu.bin", os.urandom(attachment_bytes), "application/octet-stream")],
            today=today,
            number=f"{prefix}{i:05d}",
            notation="UBND-VP",
        )
        out.append((pkg.document_id, build(pkg)))
    return out


class LienthongRoute:
    """Submission at the source commune's node and arrivals read from the destination's store."""

    def __init__(self, net: Network) -> None:
        self.net = net
        config = load_config(net.nodes[SOURCE].config_path)
        self.identity, trust = load_keys(config)
        self.source_store = SqliteStore(config.node.state_dir, config.store)
        self.processor = Processor(
            me=SOURCE,
            directory=load_directory(config),
            identity=self.identity,
            trust=trust,
            store=self.source_store,
            max_package_bytes=config.transfer.max_package_bytes,
            # As `lienthong send` does: the source daemon is told at once what was queued.
            on_enqueued=wakeup.poker(config.node.state_dir),
        )
        self.destination_store = SqliteStore(net.nodes[DESTINATION].workdir / "state")

    def attachment_for(self, size: int) -> tuple[int, int]:
        """(attachment bytes, signed package bytes) for signed packages of about ``size``."""
        empty = len(sign_package(edoc_items(9, 1, 0)[0][1], self.identity))
        attachment = max(0, (size - empty) * 3 // 4)
        signed = len(sign_package(edoc_items(9, 1, attachment)[0][1], self.identity))
        return attachment, signed

    async def __aenter__(self) -> LienthongRoute:
        await self.source_store.open()
        await self.destination_store.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.destination_store.close()
        await self.source_store.close()

    async def measure(
        self, label: str, items: Sequence[Item], rate: float | None, concurrency: int
    ) -> Figures:
        """Submit ``items``; wait for each in the destination's inbox and its status 01 back."""
        sent = await submit_all(items, self.processor.submit, rate=rate, concurrency=concurrency)
        arrived: dict[str, float] = {}
        copies: dict[str, int] = {}

        async def all_arrived() -> bool:
            copies.clear()
            for entry in await self.destination_store.inbox_list(pending=False):
                if entry.kind == "edoc" and entry.document_id in sent:
                    arrived.setdefault(entry.document_id, entry.added_at)
                    copies[entry.document_id] = copies.get(entry.document_id, 0) + 1
            return len(arrived) == len(sent)

        async def statuses_back() -> bool:
            entries = await self.source_store.inbox_list(pending=False)
            back = {e.document_id for e in entries if e.kind == "status"}
            return back >= sent.keys()

        await wait_until(f"{label}: every package at {DESTINATION}", all_arrived, self._warnings)
        result = figures(label, sent, arrived)
        doubled = sorted(key for key, n in copies.items() if n > 1)
        if doubled:
            raise RuntimeError(f"{label}: delivered more than once: {doubled}")
        await wait_until(
            f"{label}: every status 01 back at {SOURCE}", statuses_back, self._warnings
        )
        return result

    def _warnings(self) -> str:
        lines = [
            f"{code}: {line}"
            for code, node in self.net.nodes.items()
            for line in node.log().splitlines()
            if '"warning"' in line or '"error"' in line
        ]
        return "; daemon warnings:\n" + "\n".join(lines[-30:]) if lines else ""


async def lienthong(net: Network, args: argparse.Namespace, attachment: int) -> list[Figures]:
    """The lienthong rows: six hops paced, then in a burst (with each daemon's CPU)."""
    rows = []
    async with LienthongRoute(net) as route:
        for n, rate in enumerate(args.rate):
            paced = edoc_items(10 + n, paced_count(args, rate), attachment)
            # Several submitters, each starting on the schedule: one alone (it validates and
            # signs) could not keep up with the faster rates.
            label = paced_label("lienthong", rate)
            rows.append(await route.measure(label, paced, rate, args.concurrency))
        burst = edoc_items(2, args.packages, attachment)
        pids = {code: node.process.pid for code, node in net.nodes.items() if node.process}
        meter = CpuMeter({**pids, **broker_pids(net)})
        profiler = start_profile(net, args.profile, args.profile_out, args.profile_format)
        started = time.time()
        meter.start()
        rows.append(await route.measure("lienthong, 6 hops, burst", burst, None, args.concurrency))
        meter.stop()
        stop_profile(profiler)
        for code in ROUTE:
            handled = max(1, stored_since(net, code, started))
            CPU_LINES.append(
                f"lienthong {code}: {meter.used[code] * 1000 / handled:.2f} ms CPU and"
                f" {meter.woken[code] / handled:.1f} wake-ups per transfer"
                f" ({meter.used[code]:.1f} CPU-s, {handled} packages stored)"
            )
        brokers = sum(v for k, v in meter.used.items() if k.startswith("broker"))
        CPU_LINES.append(
            f"lienthong burst: brokers {brokers:.1f} CPU-s, this process (submission at"
            f" {SOURCE}) {meter.used['bench']:.1f} CPU-s"
        )
    return rows


def stored_since(net: Network, code: str, since: float) -> int:
    """Packages ``code``'s node stored at or after ``since`` (documents and statuses)."""
    path = net.nodes[code].workdir / "state" / "store.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM packages WHERE created_at >= ?", (since,)
        ).fetchone()
    return int(count)


def start_profile(net: Network, code: str, out: str, fmt: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording the daemon of node ``code`` (CPU mode) into ``out`` in format ``fmt``
    (flamegraph, raw, ...); None when ``code`` is empty."""
    if not code:
        return None
    node = net.nodes[code]
    assert node.process is not None
    print(f"profiling {code} into {out}", file=sys.stderr)
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(node.process.pid),
            "--rate",
            "200",
            "--format",
            fmt,
            "-o",
            out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    """Stop py-spy so it writes its output."""
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(60)


# -- the run ------------------------------------------------------------------------------------


def print_table(rows: Sequence[Figures], args: argparse.Namespace, size: int) -> None:
    """The rows, then the raw-to-lienthong ratios over six hops."""
    rates = ", ".join(f"{rate:g}/s" for rate in args.rate)
    print(f"payload {size} bytes; paced at {rates}; burst from {args.concurrency} submitters")
    print(f"lienthong transfer.poll_s = {args.poll:g}, transfer.window = {args.window}")
    print(f"{'mode':<32} {'messages':>8} {'msg/s':>8} {'p50 ms':>9} {'p99 ms':>9}")
    for row in rows:
        print(
            f"{row.label:<32} {row.count:>8} {row.rate:>8.1f} {row.p50_ms:>9.1f} {row.p99_ms:>9.1f}"
        )
    by_label = {row.label: row for row in rows}
    shapes = [f"paced {rate:g}/s" for rate in args.rate] + ["burst"]
    for shape in shapes:
        raw = by_label[f"raw aiomqtt, 6 hops, {shape}"]
        ours = by_label[f"lienthong, 6 hops, {shape}"]
        # Paced rows run at the pacing rate by construction: only their latencies compare.
        speed = f"msg/s raw/lienthong {raw.rate / ours.rate:.1f}; " if shape == "burst" else ""
        print(
            f"6 hops, {shape}: {speed}latency lienthong/raw"
            f" p50 {ours.p50_ms / raw.p50_ms:.1f}, p99 {ours.p99_ms / raw.p99_ms:.1f}"
        )
    for line in CPU_LINES:
        print(line)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` where SIGTERM cancels ``main``, so its stores and MQTT clients are
    closed (an exception raised by a signal handler inside the loop would skip that, and the
    stores' threads would keep the process alive)."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        return asyncio.run(guarded())
    finally:
        # Closing the loop reset SIGTERM to its default (die at once, cleaning nothing).
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def run(root: Path, args: argparse.Namespace) -> None:
    """Build the network under ``root``, measure, print; every process is ended on the way out."""
    overrides = {
        "transfer": {"poll_s": args.poll, "window": args.window},
        "daemon": {"drain_grace_s": 2.0},
    }
    net = Network(root, TOPOLOGY.read_text(encoding="utf-8"), overrides=overrides)
    try:
        for broker in net.brokers.values():
            broker.start()
        probe = LienthongRoute(net)
        attachment, size = probe.attachment_for(args.size)
        rows = run_async(baseline(net, args, size))
        started = time.monotonic()
        net.start()
        print(f"seven daemons ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        rows += run_async(lienthong(net, args, attachment))
    finally:
        try:
            net.stop()
        finally:
            net.kill()
    print_table(rows, args, size)


def main() -> None:
    """Parse the options and run the benchmark in a temporary folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200, help="burst size (default 200)")
    parser.add_argument("--paced", type=int, default=30, help="paced messages (default 30)")
    parser.add_argument(
        "--rate", type=float, action="append", help="paced rate per s, repeatable (default 5)"
    )
    parser.add_argument(
        "--paced-seconds", type=float, default=0.0, help="paced phases this long (not --paced)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="burst submitters (8)")
    parser.add_argument("--size", type=int, default=5120, help="package bytes (5120)")
    parser.add_argument("--poll", type=float, default=0.05, help="transfer.poll_s (0.05)")
    parser.add_argument("--window", type=int, default=8, help="transfer.window (8)")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the folder (logs, stores)")
    parser.add_argument("--profile", default="", help="node code whose daemon py-spy records")
    parser.add_argument("--profile-out", default="profile.svg", help="py-spy output file")
    parser.add_argument(
        "--profile-format", default="flamegraph", help="py-spy format (flamegraph, raw, ...)"
    )
    args = parser.parse_args()
    args.rate = args.rate or [5.0]
    configure(json=False, level="warning", stream=sys.stderr)
    # SIGTERM unwinds like Ctrl-C (see run_async), so every process is ended on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.keep:
        root = Path(tempfile.mkdtemp(prefix="bench-network-", dir=args.dir))
        print(f"working in {root}", file=sys.stderr)
        run(root, args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-network-", dir=args.dir) as tmp:
        run(Path(tmp), args)


def interrupted(main: Callable[[], None]) -> None:
    """Run ``main``; on Ctrl-C or SIGTERM say so and exit 130 (clean-up has run by then)."""
    try:
        main()
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every daemon and broker was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    interrupted(main)
