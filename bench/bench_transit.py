"""One transit node: packages per second through a single ``lienthong run`` daemon, against a
raw aiomqtt relay of the same frames on the same broker, in the same run.

Run: ``.venv/bin/python bench/bench_transit.py [--small N] [--large N] [--rounds R]``; with
``--profile FILE``, py-spy (CPU mode) records the daemon over each lienthong round.

The network is config/topologies/four-tier.toml; only its national broker and, for the
lienthong rows, the national node's daemon (000.00.00.G22) run. A raw producer with the
province 000.00.00.H49's certificate publishes transfer frames (QoS 1) into the national
node's inbox, for the recipient 000.00.07.H41, whose next hop from the national node is the
province 000.00.00.H41; a raw consumer with that province's certificate reads its inbox,
counts each package once its last chunk is in, and answers every transfer with a hop receipt,
as a neighbour node does. The packages are random bytes with the labels a sending node puts
in its frames (DocumentId, sending agency): a transit node reads neither, so bytes are bytes.

- lienthong: the daemon stores each package durably (routed in the same commit), answers the
  producer with a hop receipt, and sends the package on until the consumer's receipt.
- raw relay (the baseline): a plain aiomqtt client in a process of its own (as the daemon is),
  with the national node's certificate, subscribed to its inbox, republishing each frame from
  the producer into the consumer's inbox (no storage, no receipts of its own). It runs while
  the daemon is stopped: the broker forces client id = certificate CN, so the two cannot be
  connected at once. Rounds alternate the two modes, so load from elsewhere on the machine
  hits both alike.

Producer, consumer and relay set TCP_NODELAY, as a node's links do: with Nagle's algorithm on,
the producer's PUBACK for a hop receipt holds back its next PUBLISH until the broker's delayed
ACK (up to 40 ms), and the producer, not the node, sets the pace.

Throughput = packages / (first publish -> last package complete at the consumer); latency
per package from its publish to its completion. CPU: the daemon's or the relay process's user
+ system time over the phase, from /proc, divided by the packages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from bench_network import (
    TOPOLOGY,
    cpu_seconds,
    interrupted,
    percentile,
    run_async,
    start_profile,
    stop_profile,
    stop_tasks,
)

from lienthong.devnet.network import Network
from lienthong.logs import configure
from lienthong.transport.frames import (
    HopReceipt,
    TransferFrame,
    decode_frame,
    encode_frame,
    inbox_filter,
    inbox_topic,
    max_chunk_for,
    split_into_frames,
)

TRANSIT = "000.00.00.G22"
PRODUCER = "000.00.00.H49"
CONSUMER = "000.00.00.H41"
RECIPIENT = "000.00.07.H41"
TIMEOUT_S = 300.0
MESSAGE_LIMIT = 1024 * 1024
# A node's links set it (transport.link); the stand-ins for its neighbours do too.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass(frozen=True, slots=True)
class Row:
    """One measured phase."""

    label: str
    size: int
    count: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float

    @property
    def rate(self) -> float:
        """Packages per second."""
        return self.count / self.seconds


def make_packages(count: int, size: int) -> list[list[bytes]]:
    """``count`` packages of ``size`` random bytes, each as its wire frames."""
    chunk = max_chunk_for(MESSAGE_LIMIT)
    out = []
    for _ in range(count):
        data = os.urandom(size)
        key = uuid.uuid4().hex
        frames = split_into_frames(
            key, "edoc", [RECIPIENT], data, chunk, document=key, origin=PRODUCER
        )
        out.append([encode_frame(frame) for frame in frames])
    return out


class Consumer:
    """The next hop: counts complete packages and answers each transfer with a hop receipt.

    Packages are recognised by their document label, which the producer set to its transfer id
    (a transit node sends them on under transfer ids of its own)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.done: dict[str, float] = {}
        self._chunks: dict[str, set[int]] = {}

    async def run(self) -> None:
        """Read the inbox until cancelled."""
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            frame = decode_frame(message.payload)
            if not isinstance(frame, TransferFrame):
                continue
            seen = self._chunks.setdefault(frame.transfer_id, set())
            seen.add(frame.index)
            if len(seen) == frame.count and frame.document not in self.done:
                self.done[frame.document] = time.time()
                receipt = encode_frame(HopReceipt(frame.transfer_id, frame.sha256))
                await self.client.publish(inbox_topic(TRANSIT, CONSUMER), receipt, qos=1)


async def relay(host: str, port: int, cafile: str, cert: str, key: str) -> None:
    """The raw relay: every frame from the producer, republished to the consumer, until
    cancelled. Prints ``ready`` once subscribed."""
    context = ssl.create_default_context(cafile=cafile)
    context.load_cert_chain(cert, key)
    source = inbox_topic(TRANSIT, PRODUCER)
    target = inbox_topic(CONSUMER, TRANSIT)
    pending: set[asyncio.Task[None]] = set()
    async with aiomqtt.Client(
        host,
        port,
        identifier=TRANSIT,
        clean_session=True,
        tls_context=context,
        socket_options=NODELAY,
    ) as client:
        client.pending_calls_threshold = 1_000_000
        await client.subscribe(inbox_filter(TRANSIT), qos=1)
        print("ready", flush=True)
        async for message in client.messages:
            if str(message.topic) == source:
                task = asyncio.ensure_future(client.publish(target, message.payload, qos=1))
                pending.add(task)
                task.add_done_callback(pending.discard)


async def drain_receipts(client: aiomqtt.Client) -> None:
    """Read (and drop) the hop receipts the transit node sends the producer."""
    async for _ in client.messages:
        pass


async def measure(
    net: Network, label: str, packages: list[list[bytes]], pids: Callable[[], float]
) -> Row:
    """Publish every package from the producer; wait until the consumer has each one."""
    broker = net.brokers[TRANSIT]
    async with contextlib.AsyncExitStack() as stack:
        producer = await stack.enter_async_context(
            broker.client(PRODUCER, clean_session=True, socket_options=NODELAY)
        )
        producer.pending_calls_threshold = 1_000_000
        consumer_client = await stack.enter_async_context(
            broker.client(CONSUMER, clean_session=True, socket_options=NODELAY)
        )
        await producer.subscribe(inbox_filter(PRODUCER), qos=1)
        await consumer_client.subscribe(inbox_filter(CONSUMER), qos=1)
        consumer = Consumer(consumer_client)
        tasks = [
            asyncio.create_task(consumer.run()),
            asyncio.create_task(drain_receipts(producer)),
        ]
        try:
            ids = [decode_frame(frames[0]).transfer_id for frames in packages]
            sent: dict[str, float] = {}
            cpu_before = pids()
            topic = inbox_topic(TRANSIT, PRODUCER)
            for transfer_id, frames in zip(ids, packages, strict=True):
                sent[transfer_id] = time.time()
                for frame in frames:
                    # A PUBACK that never comes is named, not waited for forever.
                    await producer.publish(topic, frame, qos=1, timeout=TIMEOUT_S)
            deadline = time.monotonic() + TIMEOUT_S
            while len(consumer.done) < len(ids):
                for task in tasks:
                    if task.done():
                        task.result()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{label}: {len(consumer.done)} of {len(ids)} arrived")
                await asyncio.sleep(0.05)
            cpu = pids() - cpu_before
        finally:
            await stop_tasks(tasks)
    latencies = sorted(consumer.done[t] - sent[t] for t in ids)
    seconds = max(consumer.done.values()) - min(sent.values())
    size = sum(len(f) for f in packages[0])
    return Row(
        label,
        size,
        len(ids),
        seconds,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        cpu * 1000 / len(ids),
    )


@contextlib.contextmanager
def relay_process(net: Network) -> Iterator[int]:
    """The raw relay running in a process of its own; yields its pid."""
    broker = net.brokers[TRANSIT]
    cert, key = net.pki.client_files(TRANSIT)
    command = [sys.executable, __file__, "--serve-relay"]
    command += [broker.host, str(broker.port), str(net.pki.cafile), str(cert), str(key)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the raw relay did not start (exit {process.wait()})")
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def raw_round(net: Network, label: str, packages: list[list[bytes]]) -> Row:
    """The raw relay between producer and consumer."""
    with relay_process(net) as pid:
        return run_async(measure(net, label, packages, lambda: cpu_seconds(pid)))


def daemon_cpu(net: Network) -> Callable[[], float]:
    """The transit daemon's CPU seconds so far."""
    process = net.nodes[TRANSIT].process
    assert process is not None
    return lambda: cpu_seconds(process.pid)


async def lienthong_round(net: Network, label: str, packages: list[list[bytes]]) -> Row:
    """The transit daemon between producer and consumer."""
    return await measure(net, label, packages, daemon_cpu(net))


def run(root: Path, args: argparse.Namespace) -> list[Row]:
    """Alternate raw and lienthong rounds for each size; every row measured."""
    overrides = {
        "transfer": {"poll_s": args.poll, "window": args.window},
        "daemon": {"drain_grace_s": 2.0},
    }
    net = Network(root, TOPOLOGY.read_text(encoding="utf-8"), overrides=overrides)
    rows: list[Row] = []
    sizes = [(args.size, args.small), (args.large_size, args.large)]
    try:
        net.brokers[TRANSIT].start()
        for round_ in range(args.rounds):
            for size, count in sizes:
                if count <= 0:
                    continue
                packages = make_packages(count, size)
                rows.append(raw_round(net, f"raw relay {round_ + 1}", packages))
                net.nodes[TRANSIT].start()
                net.nodes[TRANSIT].wait_ready()
                out = f"{args.profile}.{round_ + 1}.{size}" if args.profile else ""
                profiler = start_profile(net, TRANSIT if out else "", out, args.profile_format)
                try:
                    rows.append(
                        run_async(lienthong_round(net, f"lienthong {round_ + 1}", packages))
                    )
                finally:
                    stop_profile(profiler)
                    net.nodes[TRANSIT].stop()
    finally:
        try:
            net.stop()
        finally:
            net.kill()
    return rows


def print_rows(rows: list[Row], args: argparse.Namespace) -> None:
    """The table, then lienthong/raw per size (medians of the rounds)."""
    print(f"transit node {TRANSIT}; window {args.window}; {args.rounds} round(s), alternating")
    print(
        f"{'mode':<16} {'bytes':>8} {'packages':>8} {'pkg/s':>8} {'MB/s':>7}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/pkg':>10}"
    )
    for row in rows:
        print(
            f"{row.label:<16} {row.size:>8} {row.count:>8} {row.rate:>8.1f}"
            f" {row.rate * row.size / 1e6:>7.1f} {row.p50_ms:>8.1f} {row.p99_ms:>8.1f}"
            f" {row.cpu_ms:>10.2f}"
        )
    for size in sorted({row.size for row in rows}):
        raw = [r.rate for r in rows if r.size == size and r.label.startswith("raw")]
        ours = [r.rate for r in rows if r.size == size and r.label.startswith("lienthong")]
        # Each round's lienthong row against the raw row measured just before it.
        ratios = sorted(o / r for o, r in zip(ours, raw, strict=True))
        if ratios:
            each = ", ".join(f"{x:.2f}" for x in ratios)
            print(
                f"{size} bytes: lienthong/raw packages per second"
                f" {statistics.median(ratios):.2f} (median; rounds {each})"
            )


def main() -> None:
    """Parse the options and run in a temporary folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=500, help="small packages per round")
    parser.add_argument("--large", type=int, default=40, help="large packages per round")
    parser.add_argument("--size", type=int, default=5120, help="small package bytes (5120)")
    parser.add_argument(
        "--large-size", type=int, default=1024 * 1024, help="large package bytes (1 MiB)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each mode (2)")
    parser.add_argument("--window", type=int, default=8, help="transfer.window (8)")
    parser.add_argument("--poll", type=float, default=0.05, help="transfer.poll_s (0.05)")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (a temp dir)")
    parser.add_argument(
        "--profile",
        default="",
        help="py-spy records the daemon in each lienthong round into PROFILE.ROUND.SIZE",
    )
    parser.add_argument(
        "--profile-format", default="flamegraph", help="py-spy format (flamegraph, raw, ...)"
    )
    parser.add_argument("--serve-relay", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        host, port, cafile, cert, key = args.serve_relay
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay(host, int(port), cafile, cert, key))
        return
    configure(json=False, level="warning", stream=sys.stderr)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-transit-", dir=args.dir) as tmp:
        rows = run(Path(tmp), args)
    print_rows(rows, args)


if __name__ == "__main__":
    interrupted(main)
