"""A link that knows several addresses of one broker moves on when one fails, keeping its
session: against an unreachable address and mosquitto, and against a real NATS cluster whose
member the link is on gets SIGKILLed."""

from __future__ import annotations

import asyncio
from typing import Any

from brokers import (
    NATS_NODES,
    Broker,
    NatsCluster,
    Pki,
    broker_fixture,  # noqa: F401 (fixture)
    broker_pki_fixture,  # noqa: F401 (fixture)
    free_port,
    nats_cluster_fixture,  # noqa: F401 (fixture)
)
from test_link import Inbox, running

from lienthong.transport.link import Link, LinkDown, LinkSettings

A, B, _ = NATS_NODES
RETRY_S = 90.0


def _settings(pki: Pki, code: str, addresses: list[tuple[str, int]], **more: Any) -> LinkSettings:
    certfile, keyfile = pki.client_files(code)
    (host, port), *alternates = addresses
    return LinkSettings(
        name="parent",
        host=host,
        port=port,
        alternates=tuple(alternates),
        cafile=pki.cafile,
        certfile=certfile,
        keyfile=keyfile,
        backoff_base=0.05,
        backoff_cap=0.5,
        connect_timeout=5.0,
        publish_timeout=5.0,
        **more,
    )


async def test_link_moves_past_an_address_that_does_not_answer(
    broker: Broker, broker_pki: Pki
) -> None:
    """With a dead address first and the broker second, the link comes up on the broker."""
    dead = ("127.0.0.1", free_port())
    link = Link(_settings(broker_pki, A, [dead, (broker.host, broker.port)]), A, Inbox())
    async with running(link):
        assert link.address == (broker.host, broker.port)
        assert link.where == f"{broker.host}:{broker.port}"
        assert "connect" in (link.last_error or "")


def _nats(cluster: NatsCluster, code: str, first: int) -> LinkSettings:
    members = cluster.members[first:] + cluster.members[:first]
    return _settings(cluster.pki, code, [(m.host, m.port) for m in members], engine="nats")


async def _publish_until_accepted(link: Link, to: str, payload: bytes) -> None:
    """Publish until the broker acknowledges, as the node's sender retransmits: after a member
    dies, publishes wait until JetStream has new leaders for the streams it led (a frame that
    timed out may still arrive: QoS 1 is at least once, the receiver drops copies)."""
    async with asyncio.timeout(RETRY_S):
        while True:
            try:
                await link.publish(to, payload)
                return
            except LinkDown:
                await link.wait_up(RETRY_S)


async def test_link_fails_over_to_another_member_and_keeps_its_session(
    nats_cluster: NatsCluster,
) -> None:
    """B's link is on member 1, which is SIGKILLed; frames A publishes meanwhile (through
    member 2) all reach B once its link has moved to another member."""
    inbox = Inbox()
    b = Link(_nats(nats_cluster, B, 0), B, inbox)
    a = Link(_nats(nats_cluster, A, 1), A, Inbox())
    first = nats_cluster.members[0]
    async with running(b), running(a):
        await a.publish(B, b"before")
        assert await inbox.next() == (A, b"before")
        first.kill()
        try:
            sent = [f"frame {i}".encode() for i in range(20)]
            for payload in sent:
                await _publish_until_accepted(a, B, payload)
            received: set[tuple[str, bytes]] = set()
            while len(received) < len(sent):
                received.add(await inbox.next())
            assert b.address != (first.host, first.port)
            assert b.connects >= 2
        finally:
            first.start()
            await nats_cluster.wait_mqtt()
    assert received == {(A, payload) for payload in sent}
