"""Real mosquitto brokers for tests: the project's tier config, mTLS from the development PKI.

A test module that needs a broker imports the fixtures (named ``broker`` and ``broker_pki``)::

    from brokers import broker_fixture, broker_pki_fixture  # noqa: F401 (fixtures)

``broker_pki`` (one per session) holds a CA, the broker's server certificate and agency client
certificates written to files on demand; ``broker`` starts one mosquitto on a free port with
``config/mosquitto/tier.conf.in`` and ``acl.conf`` and stops it after the test. The classes live
in :mod:`lienthong.devnet`, which the demo uses too. ``nats_cluster`` (one per module) is a
three-member nats-server cluster serving the nodes of ``NATS_NODES``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from lienthong.brokersetup import free_port
from lienthong.devnet.broker import Broker
from lienthong.devnet.natscluster import NatsCluster
from lienthong.devnet.pki import HOST, DevPki

Pki = DevPki
__all__ = [
    "HOST",
    "NATS_NODES",
    "Broker",
    "NatsCluster",
    "Pki",
    "broker_fixture",
    "broker_pki_fixture",
    "free_port",
    "nats_cluster_fixture",
    "next_message",
    "nothing_more",
    "session",
]

RECEIVE_S = 10.0
QUIET_S = 0.5
CONNECT_TRIES = 3


@contextlib.asynccontextmanager
async def session(broker: Broker, code: str | None, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
    """``broker.client(code, **kwargs)``, connected, as ``async with`` gives it; a connect that
    times out is made again with a new client, up to three tries, as a node's link reconnects:
    a NATS member under load can leave a CONNECT unanswered."""
    for attempt in range(1, CONNECT_TRIES + 1):
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(broker.client(code, **kwargs))
        except aiomqtt.MqttError as exc:
            if attempt == CONNECT_TRIES or "timed out" not in str(exc):
                raise
            continue
        async with stack:
            yield client
        return


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    """The next message ``client`` receives (bounded wait: fails instead of hanging)."""
    async with asyncio.timeout(RECEIVE_S):
        return await anext(aiter(client.messages))


async def nothing_more(client: aiomqtt.Client) -> list[str]:
    """Topics of whatever reaches ``client`` within a short quiet period."""
    got: list[str] = []
    try:
        async with asyncio.timeout(QUIET_S):
            async for message in client.messages:
                got.append(str(message.topic))
    except TimeoutError:
        pass
    return got


NATS_NODES = ("000.00.00.H49", "000.00.05.H49", "000.00.07.H41")
"""The nodes the ``nats_cluster`` fixture serves: a province, a district under it, another."""


@pytest.fixture(scope="session", name="broker_pki")
def broker_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One development CA with the broker's certificate, shared by the session's brokers."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="broker")
def broker_fixture(broker_pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto with the tier config on a free port, stopped after the test."""
    instance = Broker(broker_pki, tmp_path / "broker")
    instance.start()
    try:
        yield instance
    finally:
        instance.kill()


@pytest.fixture(scope="module", name="nats_cluster")
def nats_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A running three-member NATS cluster serving ``NATS_NODES``, for one test module."""
    root = tmp_path_factory.mktemp("nats")
    cluster = NatsCluster(Pki(root / "pki"), root, NATS_NODES, "lienthong-test")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()
