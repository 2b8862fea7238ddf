"""The tier broker config (config/mosquitto) against a real mosquitto: mTLS and the inbox ACL.

"Nothing arrives" is never shown by sleeping alone: each such test also sends a message that
must arrive after the forbidden one on the same path (a positive control), then waits briefly.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from brokers import (  # noqa: F401 (fixtures)
    Broker,
    Pki,
    broker_fixture,
    broker_pki_fixture,
    next_message,
    nothing_more,
)

from lienthong.transport.brokerconf import ACL_PATH, BrokerSettings, render, render_acl, render_text
from lienthong.transport.frames import inbox_filter, inbox_topic

A = "000.00.00.H49"  # a province
B = "000.00.05.H49"  # a district under it
C = "000.00.07.H41"  # a district elsewhere
CONNECT_S = 15.0


async def test_node_publishes_to_a_neighbours_inbox_and_it_arrives(broker: Broker) -> None:
    """A frame published by A to B's inbox with A as sender reaches B, topic and bytes intact."""
    async with broker.client(B) as b, broker.client(A) as a:
        await b.subscribe(inbox_filter(B), qos=1)
        await a.publish(inbox_topic(B, A), b"frame", qos=1)
        message = await next_message(b)
    assert str(message.topic) == inbox_topic(B, A)
    assert message.payload == b"frame"


async def test_node_cannot_read_another_nodes_inbox(broker: Broker) -> None:
    """C subscribed to B's inbox (and to everything) receives none of B's frames."""
    async with broker.client(B) as b, broker.client(C) as c, broker.client(A) as a:
        await b.subscribe(inbox_filter(B), qos=1)
        await c.subscribe(f"lienthong/v1/{B}/in/#", qos=1)
        await c.subscribe("#", qos=1)
        await c.subscribe(inbox_filter(C), qos=1)
        await a.publish(inbox_topic(B, A), b"for B only", qos=1)
        await a.publish(inbox_topic(C, A), b"for C", qos=1)
        assert (await next_message(b)).payload == b"for B only"
        # Same publisher, same subscriber: had B's frame been delivered to C, it came first.
        first = await next_message(c)
        assert str(first.topic) == inbox_topic(C, A)
        assert await nothing_more(c) == []


async def test_forged_sender_segment_gets_nothing_through(broker: Broker) -> None:
    """C publishing to B's inbox as if from A is dropped; C's genuine frame still arrives."""
    async with broker.client(B) as b, broker.client(C) as c:
        await b.subscribe(inbox_filter(B), qos=1)
        await c.publish(inbox_topic(B, A), b"forged", qos=1)
        await c.publish(inbox_topic(B, C), b"genuine", qos=1)
        message = await next_message(b)
        assert (str(message.topic), message.payload) == (inbox_topic(B, C), b"genuine")
        assert await nothing_more(b) == []


async def test_client_id_of_another_node_does_not_take_over_its_session(broker: Broker) -> None:
    """C connecting with B's client id neither kicks B off nor receives B's frames."""
    async with broker.client(B) as b, broker.client(A) as a:
        await b.subscribe(inbox_filter(B), qos=1)
        async with broker.client(C, identifier=B) as impostor:
            await impostor.subscribe(inbox_filter(B), qos=1)
            await a.publish(inbox_topic(B, A), b"still B's", qos=1)
            assert (await next_message(b)).payload == b"still B's"
            assert await nothing_more(impostor) == []


async def _connects(server: Broker, context: ssl.SSLContext) -> bool:
    try:
        async with asyncio.timeout(CONNECT_S):
            client = aiomqtt.Client(
                server.host, server.port, identifier=A, tls_context=context, timeout=3
            )
            async with client:
                return True
    except (aiomqtt.MqttError, TimeoutError, ssl.SSLError, OSError):
        return False


async def test_client_without_certificate_cannot_connect(broker: Broker, broker_pki: Pki) -> None:
    """A TLS client presenting no certificate is refused; the same client with one connects."""
    assert not await _connects(broker, broker_pki.client_context(None))
    assert await _connects(broker, broker_pki.client_context(A))


async def test_client_with_certificate_from_another_ca_cannot_connect(
    broker: Broker, broker_pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A certificate for the right code from a CA the broker does not trust is refused."""
    foreign = Pki(tmp_path_factory.mktemp("foreign-pki"), "another CA")
    cert, key = foreign.client_files(A)
    context = ssl.create_default_context(cafile=str(broker_pki.cafile))
    context.load_cert_chain(str(cert), str(key))
    assert not await _connects(broker, context)
    assert await _connects(broker, broker_pki.client_context(A))


async def test_queued_frames_survive_a_broker_restart(broker: Broker) -> None:
    """A frame queued for an offline node's persistent session is delivered after a restart."""
    async with broker.client(B, clean_session=False) as b:
        await b.subscribe(inbox_filter(B), qos=1)
    async with broker.client(A) as a:
        await a.publish(inbox_topic(B, A), b"while you were away", qos=1)
    broker.restart()
    async with broker.client(B, clean_session=False) as b:
        message = await next_message(b)
    assert message.payload == b"while you were away"


def _settings(tmp: Path, **changes: Any) -> BrokerSettings:
    values: dict[str, Any] = {
        "port": 18830,
        "cafile": tmp / "ca.pem",
        "certfile": tmp / "broker.crt",
        "keyfile": tmp / "broker.key",
        "acl_file": ACL_PATH,
        "persistence_dir": tmp / "db",
    }
    values.update(changes)
    return BrokerSettings(**values)


def test_rendered_config_fills_every_placeholder(tmp_path: Path) -> None:
    """The tier template renders with no @PLACEHOLDER@ left and the values in place."""
    text = render(_settings(tmp_path, user="mosquitto", message_size_limit=2_000_000))
    assert "@" not in text.replace("@ signs", "")
    assert "listener 18830 0.0.0.0" in text
    assert "message_size_limit 2000000" in text
    assert f"persistence_location {tmp_path / 'db'}/" in text


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"port": 0}, "port 0"),
        ({"cafile": Path("relative/ca.pem")}, "absolute path"),
        ({"keyfile": Path("/with space/key")}, "absolute path"),
        ({"user": "two words"}, "one word"),
        ({"max_queued_bytes": 10}, "max_queued_bytes"),
    ],
)
def test_bad_broker_settings_are_refused(
    tmp_path: Path, changes: dict[str, Any], needle: str
) -> None:
    """Settings mosquitto would misread are refused before any config is written."""
    with pytest.raises(ValueError, match=needle):
        render(_settings(tmp_path, **changes))


def test_unknown_placeholder_in_a_template_is_refused(tmp_path: Path) -> None:
    """A template naming a value render() does not know is an error, not a silent blank."""
    with pytest.raises(ValueError, match="HOSTNAME"):
        render_text("listener @PORT@\nhost @HOSTNAME@\n", _settings(tmp_path))


def test_listener_options_follow_the_listener_line(broker: Broker) -> None:
    """The broker opens only its own port: no default listener on 1883 from misplaced options."""
    log = broker.log()
    assert f"listen socket on port {broker.port}" in log
    assert "port 1883" not in log


async def test_a_broker_for_its_members_grants_nothing_to_other_nodes(
    broker_pki: Pki, tmp_path: Path
) -> None:
    """A broker whose ACL is written for its members (A and B) takes nothing from C, a node of
    the same CA it does not serve: C's frame to B never arrives; A's, sent after it, does."""
    confined = Broker(broker_pki, tmp_path / "confined", members=[A, B])
    confined.start()
    try:
        async with confined.client(B) as b, confined.client(C) as c, confined.client(A) as a:
            await b.subscribe(inbox_filter(B), qos=1)
            await c.publish(inbox_topic(B, C), b"from a stranger", qos=1)
            await a.publish(inbox_topic(B, A), b"from a member", qos=1)
            message = await next_message(b)
            assert (str(message.topic), message.payload) == (inbox_topic(B, A), b"from a member")
            assert await nothing_more(b) == []
    finally:
        confined.kill()


def test_member_acl_grants_each_member_its_own_topics_only() -> None:
    """The rendered ACL names each member once with its two rules, and nothing for others."""
    text = render_acl([B, A, A])
    assert text.count("\nuser ") == 2
    assert f"user {A}\ntopic write lienthong/v1/+/in/{A}\ntopic read lienthong/v1/{A}/in/#" in text
    assert "pattern" not in text
    with pytest.raises(ValueError, match="cannot name a broker user"):
        render_acl(["a/b"])
