"""The national tier on more than one machine: its broker a three-member NATS cluster, its
daemon a pair (active and standby) on one PostgreSQL store, in the four-tier network.

While 300 documents flow between the two provinces' communes, one NATS member is SIGKILLed,
then the active national daemon; both come back. Every document arrives exactly once with
its status 01, and every node's journal verifies. Waits are bounded polls, never timed
asserts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_network import (
    COMMUNE_A,
    COMMUNE_B,
    FAST,
    NATIONAL,
    TOPOLOGY,
    document_ids,
    inbox,
    send,
    write_batch,
)

from lienthong.devnet.natscluster import NatsCluster
from lienthong.devnet.network import Network, poll_until
from lienthong.devnet.pgdb import ScratchDatabase

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path("/usr/sbin/nats-server").exists(), reason="nats-server is not installed"
    ),
]
PER_BATCH = 50  # three batches each way: 300 documents
WAIT_S = 300.0


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Network]:
    """The four-tier network, national broker on NATS, national daemon a pair on PostgreSQL."""
    database = ScratchDatabase("lienthong_national_tier")
    database.create_sync()
    network = Network(
        tmp_path / "net",
        TOPOLOGY.read_text(encoding="utf-8"),
        overrides=FAST,
        national_cluster=True,
        postgres={NATIONAL: database.dsn},
    )
    try:
        yield network
    finally:
        network.stop()
        network.kill()
        database.drop_sync()


def test_the_national_tier_survives_a_broker_member_and_its_active_daemon(
    net: Network, tmp_path: Path
) -> None:
    """A NATS member and then the active national daemon are SIGKILLed while 300 documents
    cross the national tier both ways, and both come back: each document once, each with its
    status 01 at its sender, every journal whole."""
    cluster = net.brokers[NATIONAL]
    assert isinstance(cluster, NatsCluster)
    docs = tmp_path / "docs"
    docs.mkdir()

    def batch(sender: str, to: str, number: int) -> list[Path]:
        return write_batch(docs, sender, to, number, PER_BATCH)

    batches = {
        (COMMUNE_A, COMMUNE_B): [batch(COMMUNE_A, COMMUNE_B, n) for n in (1, 2, 3)],
        (COMMUNE_B, COMMUNE_A): [batch(COMMUNE_B, COMMUNE_A, n) for n in (4, 5, 6)],
    }

    def send_batch(index: int) -> None:
        for (sender, _), files in batches.items():
            send(net, sender, *files[index])

    net.start()
    active = net.nodes[NATIONAL]
    send_batch(0)
    member = cluster.members[0]
    member.kill()
    send_batch(1)
    assert poll_until(lambda: len(inbox(net, COMMUNE_B)) > 0, WAIT_S), active.log()[-3000:]
    active.kill()
    send_batch(2)
    member.start()
    active.start()  # back as the standby of the daemon that took over
    today = time.strftime("%Y/%m/%d")
    for (sender, to), files in batches.items():
        expected = sorted(f"{sender},{today},{d.stem}/UBND-VP" for b in files for d in b)

        def arrived(to: str = to, sender: str = sender) -> list[str]:
            return [i for i in document_ids(inbox(net, to)) if i.startswith(sender)]

        def answered(sender: str = sender) -> set[str]:
            return {i for i in document_ids(inbox(net, sender), "status") if i.startswith(sender)}

        assert poll_until(lambda e=expected: sorted(set(arrived())) == e, WAIT_S), (
            f"documents from {sender}: {len(set(arrived()))} of {len(expected)} arrived"
        )
        assert poll_until(lambda e=expected: sorted(answered()) == e, WAIT_S), (
            f"status 01 at {sender}: {len(answered())} of {len(expected)}"
        )
        assert sorted(arrived()) == expected  # one copy each: nothing lost, nothing twice
    assert '"store_taken_over"' in net.standbys[NATIONAL].log()
    for code in net.nodes:
        verify = net.lienthong(code, "journal", "verify")
        assert verify.returncode == 0, f"{code}: {verify.stdout}{verify.stderr}"
