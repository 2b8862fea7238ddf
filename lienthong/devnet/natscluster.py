"""A three-member nats-server cluster on this machine as one tier's broker (JetStream + MQTT).

Each member is a :class:`NatsMember` process (a :class:`~lienthong.devnet.broker.Broker` with
another program and the configuration of :mod:`lienthong.transport.natsconf`), on free ports
of 127.0.0.1, with its own JetStream folder; routes go to ``localhost``, the DNS name the
development broker certificate carries, so the members accept one another's certificates.
Any member can be killed and started again on the same ports and storage.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from pathlib import Path

import aiomqtt

from lienthong.brokersetup import free_port
from lienthong.devnet.broker import Broker
from lienthong.devnet.pki import HOST, DevPki
from lienthong.transport.natsconf import ENGINE, NatsMember, render

MEMBERS = 3
READY_TIMEOUT_S = 60.0
ROUTE_HOST = "localhost"


class NatsNode(Broker):
    """One nats-server member of a :class:`NatsCluster`."""

    program = "nats-server"
    engine = ENGINE

    def __init__(
        self, pki: DevPki, workdir: Path, member: NatsMember, port: int | None = None
    ) -> None:
        """``member`` is the configuration without paths and ports; they are filled here."""
        self._member = member
        super().__init__(pki, workdir, port)

    def render_config(self) -> str:
        """The member's nats-server configuration."""
        return render(
            NatsMember(
                **{
                    **{f: getattr(self._member, f) for f in self._member.__dataclass_fields__},
                    "mqtt_port": self.port,
                    "cafile": self.pki.cafile,
                    "certfile": self.pki.server_cert,
                    "keyfile": self.pki.server_key,
                    "store_dir": self.persistence_dir,
                    "bind": HOST,
                }
            )
        )


class NatsCluster:
    """Three nats-server members forming one broker for the nodes ``nodes``."""

    engine = ENGINE

    def __init__(self, pki: DevPki, workdir: Path, nodes: Iterable[str], name: str) -> None:
        """Write every member's configuration under ``workdir``; start nothing yet."""
        self.pki = pki
        self.nodes = tuple(sorted(nodes))
        cluster_ports = [free_port() for _ in range(MEMBERS)]
        routes = tuple(f"{ROUTE_HOST}:{p}" for p in cluster_ports)
        self.members = [
            NatsNode(
                pki,
                workdir / f"n{i + 1}",
                NatsMember(
                    server_name=f"{name}-n{i + 1}",
                    cluster_name=name,
                    mqtt_port=1,
                    cluster_port=cluster_ports[i],
                    client_port=free_port(),
                    routes=routes,
                    nodes=self.nodes,
                    cafile=Path("/"),
                    certfile=Path("/"),
                    keyfile=Path("/"),
                    store_dir=Path("/"),
                    # Short enough that a frame in flight to a subscriber on a killed member is
                    # sent again well within a test's patience.
                    ack_wait_s=5,
                ),
            )
            for i in range(MEMBERS)
        ]

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every member's MQTT listener."""
        return [f"{m.host}:{m.port}" for m in self.members]

    @property
    def running(self) -> bool:
        """True while every member runs."""
        return all(m.running for m in self.members)

    def start(self) -> None:
        """Start the members that are not running; return once MQTT sessions can be made."""
        for member in self.members:
            if not member.running:
                member.start()
        asyncio.run(self.wait_mqtt())

    async def wait_mqtt(self, timeout: float = READY_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Wait until a node can open a session through every member (JetStream has a leader
        and the MQTT streams exist); raise with the members' logs otherwise."""
        code = self.nodes[0]
        async with asyncio.timeout(timeout):
            for member in self.members:
                while True:
                    try:
                        async with member.client(code, identifier=f"probe-{uuid.uuid4().hex}"):
                            break
                    except aiomqtt.MqttError:
                        await asyncio.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every member."""
        for member in self.members:
            member.stop()

    def kill(self) -> None:
        """SIGKILL every member."""
        for member in self.members:
            member.kill()

    def log(self) -> str:
        """Every member's log, one after the other."""
        return "\n".join(f"== {m.workdir.name}\n{m.log()}" for m in self.members)
