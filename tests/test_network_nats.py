"""The four-tier network with the national broker on a three-member NATS cluster (the other
tiers on mosquitto): a member SIGKILLed while documents cross between the provinces both ways
costs nothing.

Waits are bounded polls of the nodes' stores, never timed assertions.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_network import (
    COMMUNE_A,
    COMMUNE_B,
    FAST,
    NATIONAL,
    PROVINCE_A,
    TOPOLOGY,
    document_ids,
    inbox,
    send,
    wait_for,
    write_batch,
)

from lienthong.devnet.natscluster import NatsCluster
from lienthong.devnet.network import Network

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/nats-server").exists(), reason="nats-server is not installed"
)
PER_BATCH = 10


def test_nats_member_killed_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """While documents flow between the two provinces' communes both ways, the NATS member
    every link is on is SIGKILLed, then started again: every document arrives exactly once,
    every sender gets its status 01, and every node's journal verifies."""
    net = Network(
        tmp_path / "net",
        TOPOLOGY.read_text(encoding="utf-8"),
        overrides=FAST,
        national_cluster=True,
    )
    cluster = net.brokers[NATIONAL]
    assert isinstance(cluster, NatsCluster)
    docs = tmp_path / "docs"
    docs.mkdir()

    def batch(sender: str, to: str, number: int) -> list[Path]:
        return write_batch(docs, sender, to, number, PER_BATCH)

    a_to_b = [batch(COMMUNE_A, COMMUNE_B, 1), batch(COMMUNE_A, COMMUNE_B, 2)]
    b_to_a = [batch(COMMUNE_B, COMMUNE_A, 3), batch(COMMUNE_B, COMMUNE_A, 4)]
    try:
        net.start()
        send(net, COMMUNE_A, *a_to_b[0])
        send(net, COMMUNE_B, *b_to_a[0])
        first = cluster.members[0]  # every link's first address
        first.kill()
        send(net, COMMUNE_A, *a_to_b[1])
        send(net, COMMUNE_B, *b_to_a[1])
        first.start()
        today = time.strftime("%Y/%m/%d")
        for sender, to, batches in ((COMMUNE_A, COMMUNE_B, a_to_b), (COMMUNE_B, COMMUNE_A, b_to_a)):
            expected = sorted(f"{sender},{today},{d.stem}/UBND-VP" for b in batches for d in b)
            wait_for(
                f"every document from {sender} in {to}'s inbox",
                lambda to=to, sender=sender, expected=expected: (
                    sorted(  # type: ignore[misc]
                        {i for i in document_ids(inbox(net, to)) if i.startswith(sender)}
                    )
                    == expected
                ),
                net,
            )
            wait_for(
                f"a status 01 at {sender} for each",
                lambda to=to, sender=sender, expected=expected: (
                    sorted(  # type: ignore[misc]
                        {
                            i
                            for i in document_ids(inbox(net, sender), "status")
                            if i.startswith(sender)
                        }
                    )
                    == expected
                ),
                net,
            )
            delivered = [i for i in document_ids(inbox(net, to)) if i.startswith(sender)]
            assert delivered == expected  # one copy each: nothing lost, nothing twice
        # The fault was felt: the province lost the member its link was on, and moved on.
        assert '"link_down"' in net.nodes[PROVINCE_A].log()
        for code in net.nodes:
            verify = net.lienthong(code, "journal", "verify")
            assert verify.returncode == 0, f"{code}: {verify.stdout}{verify.stderr}"
    finally:
        net.stop()
        net.kill()
