"""One large package across six hops: peak memory of each of the seven daemons, and the time,
against copying the same bytes through a raw aiomqtt relay on the same brokers.

Run: ``.venv/bin/python bench/bench_large.py [--size-mb 20 --size-mb 200] [--gb]``
(``--gb`` adds the 1 GB attachment: slow; ``--dir`` to work on a disk with room: every node
keeps its copy).

The network is config/topologies/four-tier.toml (:class:`lienthong.devnet.network.Network`),
the route commune 000.01.05.H49 -> district -> province H49 -> national -> province H41 ->
district -> commune 000.03.07.H41. For each size, an unsigned edoc with an attachment of that
many MB (MiB) is written to a file in pieces (:func:`write_large_package`) and sent through
the origin's office API (``sendEdoc``, the body streamed from the file); the time runs from the
call to the inbox entry at the destination (polled every 0.2 s). Before each package, every
daemon's peak RSS is reset (``5 > /proc/<pid>/clear_refs``) and its RSS read (*idle*); after,
its peak (``VmHWM`` in ``/proc/<pid>/status``) is read. The attachment's SHA-256 is checked
at the destination, decoded from the stored package.

Baseline, in the same run before the daemons start: the package's bytes cut into the same
frames (``message_size_limit`` less the header reserve) go through a relay chain of plain
aiomqtt clients along the same six hops (``bench_network.RelayChain``), published one at a time
(QoS 1) as a daemon publishes a transfer's frames; the time runs until the sink has every frame.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench_network import ROUTE, TOPOLOGY, RelayChain, interrupted, run_async

from lienthong.devnet.bigpackage import write_large_package
from lienthong.devnet.network import Network
from lienthong.edxml import build, new_edoc
from lienthong.edxml.streamed import validate_file
from lienthong.logs import configure
from lienthong.transport.brokerconf import DEFAULT_MESSAGE_SIZE_LIMIT
from lienthong.transport.frames import max_chunk_for

ORIGIN, DESTINATION = ROUTE[0], ROUTE[-1]
MIB = 1024 * 1024


def write_package(folder: Path, attachment_mib: int) -> tuple[Path, str]:
    """An unsigned edoc from the origin to the destination with an attachment of that many
    MiB, in a file; the attachment's sha256."""
    template = new_edoc(
        from_code=ORIGIN,
        to_codes=[DESTINATION],
        subject=f"Hồ sơ {attachment_mib} MB",
        attachments=[("ho-so.pdf", b"placeholder", "application/pdf")],
        today=dt.date.today(),
        number=str(attachment_mib),
        notation="UBND-VP",
    )
    path = folder / f"package-{attachment_mib}.xml"
    return path, write_large_package(build(template), path, attachment_mib * MIB)


def memory(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


async def raw_copy(net: Network, package: Path, size: int, chunk: int) -> float:
    """Seconds to move the package's ``size`` bytes, in frames of ``chunk`` bytes, along the
    six hops through plain aiomqtt relays."""
    count = -(-size // chunk)
    async with RelayChain(net, ROUTE) as chain:
        started = time.monotonic()
        with open(package, "rb") as source:  # noqa: ASYNC230 - the relay reads as a node does
            for index in range(count):
                await chain.publish(f"{index:012d}".encode() + source.read(chunk))
        while len(chain.arrived) < count:
            if chain.errors:
                raise RuntimeError(f"a relay failed: {chain.errors[0]!r}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started


def send_through(
    net: Network, package: Path, digest: str
) -> tuple[float, dict[str, tuple[int, int]]]:
    """Send the package at the origin and wait for it at the destination: seconds, and per
    daemon (idle RSS, peak RSS) in bytes."""
    pids = {code: node.process.pid for code, node in net.nodes.items() if node.process}
    for pid in pids.values():
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    idle = {code: memory(pid, "VmRSS") for code, pid in pids.items()}
    before = {e.entry_id for e in net.inbox(DESTINATION)}
    office = net.office(ORIGIN)
    params = {"from": ORIGIN, "servicetype": "eDoc", "messagetype": "edoc", "to": [DESTINATION]}
    started = time.monotonic()
    reply = asyncio.run(office.send_edoc_file(params, package))
    if not reply.ok:
        raise RuntimeError(f"sendEdoc refused: {reply.desc}")
    while True:
        new = [e for e in net.inbox(DESTINATION) if e.entry_id not in before]
        if new:
            break
        time.sleep(0.2)
    took = time.monotonic() - started
    peaks = {code: (idle[code], memory(pid, "VmHWM")) for code, pid in pids.items()}
    stored = net.nodes[DESTINATION].workdir / "state" / "packages"
    stored = stored / new[0].package_id[:2] / new[0].package_id
    (attachment,) = validate_file(stored, max_bytes=1 << 40).attachments
    if attachment.sha256 != digest:
        raise RuntimeError("the attachment arrived with another SHA-256")
    return took, peaks


def run(root: Path, sizes: list[int]) -> None:
    """Build the network under ``root``, measure each size, print the table."""
    net = Network(
        root,
        TOPOLOGY.read_text(encoding="utf-8"),
        overrides={
            "transfer": {"receipt_timeout_s": 600.0},
            "daemon": {"drain_grace_s": 2.0},
        },
    )
    packages = [write_package(root, size) for size in sizes]
    chunk = max_chunk_for(DEFAULT_MESSAGE_SIZE_LIMIT)
    try:
        for broker in net.brokers.values():
            broker.start()
        raw = [run_async(raw_copy(net, path, path.stat().st_size, chunk)) for path, _ in packages]
        net.start()
        results = [send_through(net, path, digest) for path, digest in packages]
    finally:
        try:
            net.stop()
        finally:
            net.kill()
    for size, (path, _), seconds, (took, peaks) in zip(sizes, packages, raw, results, strict=True):
        mb = path.stat().st_size / MIB
        print(
            f"\nattachment {size} MiB (package {mb:.0f} MiB): lienthong {took:.1f} s,"
            f" raw relay {seconds:.1f} s ({took / seconds:.1f}x); attachment SHA-256 equal"
        )
        print(f"  {'node':<15} {'idle MiB':>9} {'peak MiB':>9} {'peak-idle':>10} {'x package':>10}")
        for code in ROUTE:
            idle, peak = peaks[code]
            grown = (peak - idle) / MIB
            print(
                f"  {code:<15} {idle / MIB:9.1f} {peak / MIB:9.1f} {grown:10.1f} {grown / mb:10.2f}"
            )


def main() -> None:
    """Parse the options and run the benchmark in a temporary folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mb", type=int, action="append", help="attachment MiB, repeatable (20, 200)"
    )
    parser.add_argument("--gb", action="store_true", help="also a 1024 MiB attachment (slow)")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (a temp dir)")
    args = parser.parse_args()
    sizes = (args.size_mb or [20, 200]) + ([1024] if args.gb else [])
    configure(json=False, level="warning", stream=sys.stderr)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="bench-large-", dir=args.dir) as tmp:
        run(Path(tmp), sizes)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    interrupted(main)
