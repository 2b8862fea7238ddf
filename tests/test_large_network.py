"""A package of tens of megabytes crosses the four-tier network in bounded memory at every node.

Submitted through the office API at a commune, it crosses six hops to a commune of another
province; the attachment read back at the destination (from its store and through getEdoc)
has the SHA-256 it was written with, and no daemon's peak resident memory grew by anything
near the package's size (holding it once would). Waits are bounded polls, never timed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from lienthong.devnet.bigpackage import write_large_package
from lienthong.devnet.network import Network, poll_until
from lienthong.edxml import build, new_edoc
from lienthong.edxml.streamed import validate_file

TOPOLOGY = Path(__file__).resolve().parents[1] / "config" / "topologies" / "four-tier.toml"
COMMUNE_A, COMMUNE_B = "000.01.05.H49", "000.03.07.H41"
ATTACHMENT = 40 * 1024 * 1024
WAIT_S = 600.0
SETTINGS = {
    # A large package takes seconds per hop on a shared machine: no retry races it.
    "transfer": {"receipt_timeout_s": 120.0, "poll_s": 0.3},
    "store": {"lease_s": 20.0},
    "daemon": {"drain_grace_s": 3.0},
}


def _package(tmp: Path) -> tuple[Path, str]:
    """An unsigned edoc from commune A to commune B with a 40 MiB attachment; its file and
    the attachment's sha256."""
    template = new_edoc(
        from_code=COMMUNE_A,
        to_codes=[COMMUNE_B],
        subject="Hồ sơ quét lớn",
        attachments=[("ho-so.pdf", b"placeholder", "application/pdf")],
        today=dt.date.today(),
        number="77",
        notation="UBND-VP",
    )
    path = tmp / "large.xml"
    digest = write_large_package(build(template), path, ATTACHMENT)
    return path, digest


def test_large_package_crosses_six_hops_in_bounded_memory(tmp_path: Path) -> None:
    """A 40 MiB attachment (a 54 MB package) crosses the six hops intact (same SHA-256 at the
    destination's store and through getEdoc), and every daemon's peak memory grows by less than
    half the package's size above its idle peak."""
    net = Network(tmp_path / "net", TOPOLOGY.read_text(encoding="utf-8"), overrides=SETTINGS)
    try:
        net.start()
        idle = {code: node.peak_rss() for code, node in net.nodes.items()}
        package, digest = _package(tmp_path)
        size = package.stat().st_size
        office = net.office(COMMUNE_A)
        params = {"from": COMMUNE_A, "servicetype": "eDoc", "messagetype": "edoc"}
        reply = asyncio.run(office.send_edoc_file({**params, "to": [COMMUNE_B]}, package))
        assert reply.ok, reply.desc
        assert poll_until(lambda: bool(net.inbox(COMMUNE_B)), WAIT_S), "not delivered"
        (entry,) = net.inbox(COMMUNE_B)
        stored = net.nodes[COMMUNE_B].workdir / "state" / "packages"
        stored = stored / entry.package_id[:2] / entry.package_id
        (attachment,) = validate_file(stored, max_bytes=1 << 31).attachments
        assert (attachment.size, attachment.sha256) == (ATTACHMENT, digest)
        office_b = net.office(COMMUNE_B)
        fetched = asyncio.run(office_b.get_edoc({"docId": str(entry.entry_id)}))
        assert hashlib.sha256(base64.b64decode(fetched.json["data"])).hexdigest() == (
            entry.package_id
        )
        grown = {code: node.peak_rss() - idle[code] for code, node in net.nodes.items()}
        report = json.dumps({c: round(g / 2**20, 1) for c, g in grown.items()})
        assert all(g < size // 2 for g in grown.values()), f"peak growth MiB: {report}"
    finally:
        net.stop()
        net.kill()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
