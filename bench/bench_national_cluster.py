"""Six hops end to end with the national broker on a three-member NATS cluster, against the same
run with the national broker on mosquitto: packages per second and latency (p50, p99).

Run: ``.venv/bin/python bench/bench_national_cluster.py [--packages N] [--paced N] [--rate R]
[--rounds N]`` (``--help`` for the rest).

The network, the route (commune 000.01.05.H49 -> ... -> national -> ... -> commune
000.03.07.H41), the packages and the measurement are those of ``bench/bench_network.py``'s
lienthong rows (:class:`bench_network.LienthongRoute`: submission in this process at the source
commune's store, arrival read from the destination's store, the phase ends when every status 01
is back). Only the national tier's broker differs: one mosquitto, or three nats-server members
with JetStream (``mqtt { stream_replicas: 3 }``, every QoS 1 frame stored on all three) that the
links to the national broker list; the province and district brokers are mosquitto in both.
Each round builds and runs both networks one after the other, mosquitto first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_network import (
    TOPOLOGY,
    Figures,
    LienthongRoute,
    interrupted,
    lienthong,
    run_async,
)

from lienthong.devnet.network import Network
from lienthong.logs import configure

ENGINES = ("mosquitto", "nats")


def one_network(root: Path, args: argparse.Namespace, engine: str) -> list[Figures]:
    """Build a network whose national broker runs on ``engine``, measure, stop it."""
    overrides = {
        "transfer": {"poll_s": args.poll, "window": args.window},
        "daemon": {"drain_grace_s": 2.0},
    }
    net = Network(
        root,
        TOPOLOGY.read_text(encoding="utf-8"),
        overrides=overrides,
        national_cluster=engine == "nats",
    )
    try:
        started = time.monotonic()
        net.start()
        print(f"{engine}: network ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        attachment, _ = LienthongRoute(net).attachment_for(args.size)
        rows = run_async(lienthong(net, args, attachment))
    finally:
        try:
            net.stop()
        finally:
            net.kill()
    return [Figures(f"{engine}: {r.label.removeprefix('lienthong, ')}", *_values(r)) for r in rows]


def _values(row: Figures) -> tuple[int, float, float, float]:
    return row.count, row.seconds, row.p50_ms, row.p99_ms


def print_table(rows: Sequence[Figures], args: argparse.Namespace) -> None:
    """Every row, then the cluster-to-mosquitto ratios per shape (medians over rounds)."""
    print(f"package ~{args.size} bytes; paced at {args.rate:g}/s; burst of {args.packages}")
    print(
        f"{'national broker: shape':<32} {'messages':>8} {'msg/s':>8} {'p50 ms':>9} {'p99 ms':>9}"
    )
    for row in rows:
        print(
            f"{row.label:<32} {row.count:>8} {row.rate:>8.1f} {row.p50_ms:>9.1f} {row.p99_ms:>9.1f}"
        )
    for shape in ("paced", "burst"):
        by = {e: [r for r in rows if r.label == f"{e}: 6 hops, {shape}"] for e in ENGINES}
        base, nats = (sorted(by[e], key=lambda r: r.p50_ms)[len(by[e]) // 2] for e in ENGINES)
        speed = f"msg/s nats/mosquitto {nats.rate / base.rate:.2f}; " if shape == "burst" else ""
        print(
            f"6 hops, {shape}: {speed}latency nats/mosquitto"
            f" p50 {nats.p50_ms / base.p50_ms:.2f}, p99 {nats.p99_ms / base.p99_ms:.2f}"
        )


def main() -> None:
    """Parse the options and run both networks in a temporary folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=200, help="burst size (default 200)")
    parser.add_argument("--paced", type=int, default=30, help="paced messages (default 30)")
    parser.add_argument("--rate", type=float, default=5.0, help="paced rate per s (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="burst submitters (8)")
    parser.add_argument("--size", type=int, default=5120, help="package bytes (5120)")
    parser.add_argument("--poll", type=float, default=0.05, help="transfer.poll_s (0.05)")
    parser.add_argument("--window", type=int, default=8, help="transfer.window (8)")
    parser.add_argument("--rounds", type=int, default=1, help="networks per engine (1)")
    args = parser.parse_args()
    configure(json=False, level="warning", stream=sys.stderr)
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bench-national-") as tmp:
        for round_ in range(args.rounds):
            for engine in ENGINES:
                rows += one_network(Path(tmp) / f"{engine}-{round_}", args, engine)
    print_table(rows, args)


if __name__ == "__main__":
    interrupted(main)
