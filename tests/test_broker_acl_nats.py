"""The NATS tier broker (three nats-server members, JetStream, MQTT) holds the inbox ACL.

The same rules as tests/test_broker_acl.py against mosquitto, with real aiomqtt clients and
real certificates, publishing through one member and receiving through another. "Nothing
arrives" is shown with a positive control: a message that must arrive after the forbidden one
on the same path.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiomqtt
import pytest
from brokers import (
    NATS_NODES,
    Broker,
    Pki,
    nats_cluster_fixture,  # noqa: F401 (fixture)
    next_message,
    nothing_more,
    session,
)

from lienthong.devnet.natscluster import NatsCluster
from lienthong.transport.frames import TOPIC_DOT, inbox_filter, inbox_topic
from lienthong.transport.natsconf import NatsMember, node_permissions, render

A, B, C = NATS_NODES  # a province, a district under it, a district elsewhere
OUTSIDER = "000.00.09.H41"  # a certificate from the CA for a node this broker does not serve
DOT = TOPIC_DOT["nats"]
CONNECT_S = 15.0
RETRY_S = 90.0


def topic(to: str, sender: str) -> str:
    return inbox_topic(to, sender, dot=DOT)


def inbox(me: str) -> str:
    return inbox_filter(me, dot=DOT)


def _refused(granted: list[object]) -> bool:
    return all(getattr(code, "value", code) >= 0x80 for code in granted)  # type: ignore[operator]


async def test_frame_published_through_one_member_arrives_through_another(
    nats_cluster: NatsCluster,
) -> None:
    """A's frame to B's inbox, published via member 1, reaches B connected to member 2."""
    first, second, _ = nats_cluster.members
    async with session(second, B) as b, session(first, A) as a:
        await b.subscribe(inbox(B), qos=1)
        await a.publish(topic(B, A), b"frame", qos=1)
        message = await next_message(b)
    assert (str(message.topic), message.payload) == (topic(B, A), b"frame")


async def test_node_cannot_read_another_nodes_inbox(nats_cluster: NatsCluster) -> None:
    """C's subscriptions to B's inbox, to everything and to the server's delivery subjects are
    refused, and C receives none of B's frames; its own inbox works."""
    member = nats_cluster.members[0]
    async with session(member, B) as b, session(member, C) as c, session(member, A) as a:
        await b.subscribe(inbox(B), qos=1)
        for forbidden in (f"lienthong/v1/{B.replace('.', DOT)}/in/#", "#", "$MQTT/sub/#"):
            assert _refused(await c.subscribe(forbidden, qos=1)), forbidden
        assert not _refused(await c.subscribe(inbox(C), qos=1))
        await a.publish(topic(B, A), b"for B only", qos=1)
        await a.publish(topic(C, A), b"for C", qos=1)
        assert (await next_message(b)).payload == b"for B only"
        assert str((await next_message(c)).topic) == topic(C, A)
        assert await nothing_more(c) == []


async def test_forged_sender_segment_gets_nothing_through(nats_cluster: NatsCluster) -> None:
    """C publishing to B's inbox as if from A is dropped; C's genuine frame still arrives."""
    member = nats_cluster.members[1]
    async with session(member, B) as b, session(member, C) as c:
        await b.subscribe(inbox(B), qos=1)
        await c.publish(topic(B, A), b"forged", qos=1)
        await c.publish(topic(B, C), b"genuine", qos=1)
        message = await next_message(b)
        assert (str(message.topic), message.payload) == (topic(B, C), b"genuine")
        assert await nothing_more(b) == []


async def test_client_id_of_another_node_never_gets_its_frames(nats_cluster: NatsCluster) -> None:
    """C connecting with B's client id receives none of B's frames, and B finds them waiting
    when it reconnects. (Unlike mosquitto, nats-server lets the impostor end B's connection.)"""
    member = nats_cluster.members[2]
    async with session(member, B, clean_session=False) as b:
        await b.subscribe(inbox(B), qos=1)
    async with session(member, C, identifier=B, clean_session=False) as impostor:
        assert _refused(await impostor.subscribe(inbox(B), qos=1))
        async with session(member, A) as a:
            await a.publish(topic(B, A), b"still B's", qos=1)
        assert await nothing_more(impostor) == []
    async with session(member, B, clean_session=False) as b:
        assert (await next_message(b)).payload == b"still B's"


async def _connects(host: str, port: int, context: ssl.SSLContext) -> bool:
    try:
        async with asyncio.timeout(CONNECT_S):
            client = aiomqtt.Client(host, port, identifier=A, tls_context=context, timeout=5)
            async with client:
                return True
    except (aiomqtt.MqttError, TimeoutError, ssl.SSLError, OSError):
        return False


async def test_only_listed_nodes_with_the_cas_certificates_connect(
    nats_cluster: NatsCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No certificate, another CA's certificate and a certificate of the CA for a node the
    broker does not serve are refused; the listed node's certificate connects."""
    member = nats_cluster.members[0]
    pki = nats_cluster.pki
    foreign = Pki(tmp_path_factory.mktemp("foreign-pki"), "another CA")
    cert, key = foreign.client_files(A)
    other_ca = ssl.create_default_context(cafile=str(pki.cafile))
    other_ca.load_cert_chain(str(cert), str(key))
    for context in (pki.client_context(None), other_ca, pki.client_context(OUTSIDER)):
        assert not await _connects(member.host, member.port, context)
    # The listed node connects, if need be at a later attempt, as a node's link retries: on a
    # loaded machine the cluster can take longer than one attempt's timeout to open the MQTT
    # session (its JetStream streams).
    attempts = 1
    while not await _connects(member.host, member.port, pki.client_context(A)):
        assert attempts < 5, f"the listed node's certificate did not connect in {attempts} attempts"
        attempts += 1
        await asyncio.sleep(1.0)


async def _publish_until_accepted(member: Broker, code: str, to: str, payload: bytes) -> None:
    """Publish (QoS 1) until the cluster acknowledges, as a node's sender retransmits: after a
    member dies, publishes wait until JetStream has new leaders for the streams it led."""
    async with asyncio.timeout(RETRY_S):
        while True:
            try:
                async with member.client(code) as client:
                    await client.publish(to, payload, qos=1)
                    return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)


async def test_queued_frames_survive_the_loss_of_the_member_holding_the_session(
    nats_cluster: NatsCluster,
) -> None:
    """B's persistent session made on member 1 keeps a frame published while B is away and
    member 1 is SIGKILLed (published again until the cluster takes it, as senders do); B
    reconnecting to member 3 receives it."""
    first, second, third = nats_cluster.members
    async with session(first, B, clean_session=False) as b:
        await b.subscribe(inbox(B), qos=1)
    first.kill()
    try:
        await _publish_until_accepted(second, A, topic(B, A), b"while member 1 was down")
        async with session(third, B, clean_session=False) as b:
            assert (await next_message(b)).payload == b"while member 1 was down"
    finally:
        first.start()
        await nats_cluster.wait_mqtt()


def test_permissions_are_the_nats_form_of_the_mosquitto_acl() -> None:
    """A node publishes into any inbox only as itself and reads only its own inbox."""
    publish, subscribe = node_permissions(B)
    assert publish == ["lienthong.v1.*.in.000_00_05_H49"]
    assert subscribe == ["lienthong.v1.000_00_05_H49.in.>", "$MQTT.sub.>"]


def _member(tmp: Path, **changes: object) -> NatsMember:
    values: dict[str, object] = {
        "server_name": "n1",
        "cluster_name": "lienthong-G22",
        "mqtt_port": 8883,
        "cluster_port": 6222,
        "client_port": 4222,
        "routes": ("n1.example:6222", "n2.example:6222", "n3.example:6222"),
        "nodes": (A, B),
        "cafile": tmp / "ca.pem",
        "certfile": tmp / "broker.crt",
        "keyfile": tmp / "broker.key",
        "store_dir": tmp / "js",
    }
    values.update(changes)
    return NatsMember(**values)  # type: ignore[arg-type]


def test_rendered_config_lists_one_user_per_node_and_the_routes(tmp_path: Path) -> None:
    """The member config maps CN=<code> to a user per node, MQTT only, and routes to every
    member with certificate checks."""
    text = render(_member(tmp_path))
    assert text.count('allowed_connection_types: ["MQTT"]') == 2
    assert f'user: "CN={A}"' in text
    assert '"nats-route://n2.example:6222"' in text
    assert "verify_cert_and_check_known_urls: true" in text
    assert "stream_replicas: 3" in text
    assert 'listen: "127.0.0.1:4222"' in text


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"mqtt_port": 0}, "mqtt_port"),
        ({"cafile": Path("relative/ca.pem")}, "absolute path"),
        ({"routes": ("n1.example",)}, "host:port"),
        ({"nodes": ("not-a-code",)}, "agency code"),
        ({"nodes": ()}, "no node"),
        ({"subject": "CN=fixed"}, "{code}"),
        ({"server_name": "two words"}, "server_name"),
    ],
)
def test_bad_member_settings_are_refused(
    tmp_path: Path, changes: dict[str, object], needle: str
) -> None:
    """Settings nats-server would misread are refused before any config is written."""
    with pytest.raises(ValueError, match=needle):
        render(_member(tmp_path, **changes))
