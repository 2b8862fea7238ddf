"""The MQTT link of a node against a real mosquitto with the tier config (mTLS + inbox ACL).

Waits are bounded (a test fails instead of hanging) and nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
from brokers import Broker, Pki, broker_fixture, broker_pki_fixture  # noqa: F401 (fixtures)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from lienthong.metrics import Metrics
from lienthong.store import SqliteStore
from lienthong.transport.frames import (
    HopReceipt,
    HopReceipts,
    decode_frame,
    encode_frame,
    receipts_of,
    split_into_frames,
)
from lienthong.transport.link import Link, LinkDown, LinkSettings, OnMessage
from lienthong.transport.receiver import Receiver
from lienthong.transport.sender import ReceiptWaiter

A = "000.00.00.H49"  # a province
B = "000.00.05.H49"  # a district under it
C = "000.00.07.H41"  # a district elsewhere
WAIT_S = 20.0
"""Upper bound of every wait: generous, for a loaded machine; reached only when a test fails."""


class Inbox:
    """What a link's on_message received, in order, with a way to wait for the next one."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def __call__(self, sender: str, payload: bytes) -> None:
        await self.frames.put((sender, payload))

    async def next(self) -> tuple[str, bytes]:
        async with asyncio.timeout(WAIT_S):
            return await self.frames.get()


def _settings(broker: Broker, pki: Pki, code: str, **changes: Any) -> LinkSettings:
    certfile, keyfile = pki.client_files(code)
    values: dict[str, Any] = {
        "name": "parent",
        "host": broker.host,
        "port": broker.port,
        "cafile": broker.pki.cafile,
        "certfile": certfile,
        "keyfile": keyfile,
        "backoff_base": 0.05,
        "backoff_cap": 0.5,
        "connect_timeout": 5.0,
        "publish_timeout": 5.0,
    }
    values.update(changes)
    return LinkSettings(**values)


@contextlib.asynccontextmanager
async def running(link: Link, *, wait_up: bool = True) -> AsyncIterator[Link]:
    """Run ``link`` in a task (up first, unless told otherwise); cancel it on the way out."""
    task = asyncio.create_task(link.run(), name=f"link-{link.me}")
    try:
        if wait_up:
            assert await link.wait_up(WAIT_S), f"link never came up: {link.last_error}"
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def a_and_b(
    broker: Broker, pki: Pki, on_message_b: OnMessage, **changes_a: Any
) -> AsyncIterator[tuple[Link, Link]]:
    """Links of B (handing frames to ``on_message_b``) and of A to ``broker``, both up."""
    async with (
        running(Link(_settings(broker, pki, B), B, on_message_b)) as b,
        running(Link(_settings(broker, pki, A, **changes_a), A, Inbox())) as a,
    ):
        yield a, b


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds; fail naming ``what`` otherwise."""
    try:
        async with asyncio.timeout(WAIT_S):
            # Polls the public state, as a health check would; the link offers no change hook.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"gave up waiting until {what}")


async def test_frame_published_by_one_node_reaches_the_other(
    broker: Broker, broker_pki: Pki
) -> None:
    """A publishes to B; B's on_message gets (A, payload) and both links are up."""
    inbox = Inbox()
    async with a_and_b(broker, broker_pki, inbox) as (a, b):
        await a.publish(B, b"transfer frame")
        assert await inbox.next() == (A, b"transfer frame")
        assert (a.state, b.state) == ("up", "up")
        assert (a.connects, b.connects) == (1, 1)


async def test_frames_sent_while_a_node_is_away_wait_in_its_session(
    broker: Broker, broker_pki: Pki
) -> None:
    """B stopped, A publishes 5 frames, B started again: B receives all 5, in order."""
    settings_b = _settings(broker, broker_pki, B)
    async with running(Link(settings_b, B, Inbox())):
        pass  # the broker now holds B's persistent session and its subscription
    sent = [f"frame {i}".encode() for i in range(5)]
    async with running(Link(_settings(broker, broker_pki, A), A, Inbox())) as a:
        for payload in sent:
            await a.publish(B, payload)
    inbox = Inbox()
    async with running(Link(settings_b, B, inbox)):
        received = [await inbox.next() for _ in sent]
    assert received == [(A, payload) for payload in sent]


async def test_link_survives_a_broker_killed_and_restarted(broker: Broker, broker_pki: Pki) -> None:
    """SIGKILLed broker: the link goes down with a reason, refuses to publish, then comes back."""
    inbox = Inbox()
    # A long publish timeout: a LinkDown before it expires comes from the state, not the timer.
    with structlog.testing.capture_logs() as logs:
        async with a_and_b(broker, broker_pki, inbox, publish_timeout=600.0) as (a, b):
            broker.kill()
            await until(lambda: a.state == "down" and b.state == "down", "both links are down")
            assert a.last_error is not None
            await _publish_while_down_then_recover(broker, a, b, inbox)
    first_down = next(e for e in logs if e["event"] == "link_down" and e["node"] == A)
    assert first_down["reason"].startswith("connection lost")
    assert first_down["retry_in"] >= 0
    assert [e["connects"] for e in logs if e["event"] == "link_up" and e["node"] == A] == [1, 2]


async def test_a_publish_whose_puback_does_not_come_fails_after_the_timeout(
    broker: Broker, broker_pki: Pki
) -> None:
    """The broker stops answering (SIGSTOP) with the connection open: a publish fails with
    LinkDown naming the wait, after ``publish_timeout``; once the broker goes on, so does the
    link, and the next frame arrives."""
    inbox = Inbox()
    async with a_and_b(broker, broker_pki, inbox, publish_timeout=0.5) as (a, _):
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(WAIT_S):
                with pytest.raises(LinkDown, match=r"no PUBACK within 0\.5 s"):
                    await a.publish(B, b"while the broker is stopped")
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        await a.publish(B, b"once it goes on")
        async with asyncio.timeout(WAIT_S):
            while (await inbox.next())[1] != b"once it goes on":
                pass


async def _publish_while_down_then_recover(broker: Broker, a: Link, b: Link, inbox: Inbox) -> None:
    """A refuses to publish while the broker is dead; both links come back once it restarts."""
    async with asyncio.timeout(WAIT_S):
        with pytest.raises(LinkDown, match="is down"):
            await a.publish(B, b"while the broker is dead")
    broker.start()
    assert await a.wait_up(WAIT_S), a.last_error
    assert await b.wait_up(WAIT_S), b.last_error
    assert (a.connects, b.connects) == (2, 2)
    await a.publish(B, b"after the restart")
    assert await inbox.next() == (A, b"after the restart")


async def test_certificate_from_another_ca_never_comes_up(
    broker: Broker, broker_pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A link presenting a foreign CA's certificate stays down, says why, and keeps retrying.

    The broker refuses the certificate with a TLS alert ("unknown ca") and closes; when the
    close overtakes the alert, an attempt can only report the connection closed, so the test
    waits for an attempt that read the alert (nearly all do)."""
    foreign = Pki(tmp_path_factory.mktemp("foreign-pki"), "another CA")
    link = Link(_settings(broker, foreign, C, connect_timeout=1.5), C, Inbox())

    def refused_for_its_ca() -> bool:
        return link.state == "down" and "unknown ca" in (link.last_error or "").lower()

    async with running(link, wait_up=False):
        await until(lambda: link.attempts >= 2 and refused_for_its_ca(), "two attempts failed")
        # No await before the publish: the error it names is the one just checked.
        with pytest.raises(LinkDown, match="unknown ca"):
            await link.publish(A, b"never sent")
        assert link.connects == 0
        assert not await link.wait_up(0)


async def test_a_failing_handler_does_not_stop_the_link(broker: Broker, broker_pki: Pki) -> None:
    """on_message raising on one frame is logged; the next frame still arrives."""
    inbox = Inbox()

    async def handler(sender: str, payload: bytes) -> None:
        if payload == b"poison":
            raise RuntimeError("the store refused it")
        await inbox(sender, payload)

    with structlog.testing.capture_logs() as logs:
        async with a_and_b(broker, broker_pki, handler) as (a, b):
            await a.publish(B, b"poison")
            await a.publish(B, b"healthy")
            assert await inbox.next() == (A, b"healthy")
            assert (b.state, b.connects) == ("up", 1)
    failures = [entry for entry in logs if entry["event"] == "frame_handler_failed"]
    assert len(failures) == 1
    assert failures[0]["peer"] == A
    assert "the store refused it" in failures[0]["error"]


async def test_frame_from_a_sender_that_is_no_node_is_logged_and_skipped(
    broker: Broker, broker_pki: Pki
) -> None:
    """A frame whose topic names a non-code sender is logged and skipped; the link goes on."""
    inbox = Inbox()
    stranger = "not-an-agency"  # a certificate the CA issued, but whose CN is not a node code
    with structlog.testing.capture_logs() as logs:
        async with a_and_b(broker, broker_pki, inbox) as (a, _):
            async with broker.client(stranger) as raw:
                await raw.publish(f"lienthong/v1/{B}/in/{stranger}", b"odd", qos=1)
            await a.publish(B, b"genuine")
            # The odd frame was acknowledged before A published: handed over, it would come first.
            assert await inbox.next() == (A, b"genuine")
    skipped = [entry for entry in logs if entry["event"] == "frame_unexpected_topic"]
    assert [entry["topic"] for entry in skipped] == [f"lienthong/v1/{B}/in/{stranger}"]


def test_bad_settings_fail_when_the_link_is_made(broker_pki: Pki, tmp_path: Path) -> None:
    """A missing key file, a bad port and a bad node code fail at construction, named."""
    certfile, keyfile = broker_pki.client_files(A)
    good: dict[str, Any] = {
        "name": "parent",
        "host": "127.0.0.1",
        "port": 8883,
        "cafile": broker_pki.cafile,
        "certfile": certfile,
        "keyfile": keyfile,
    }
    with pytest.raises(ValueError, match="port 0"):
        LinkSettings(**{**good, "port": 0})
    with pytest.raises(OSError, match="No such file"):
        Link(LinkSettings(**{**good, "keyfile": tmp_path / "missing.key"}), A, Inbox())
    with pytest.raises(ValueError, match="node"):
        Link(LinkSettings(**good), "not-a-code", Inbox())


async def _no_local_package(package_id: str) -> None:
    raise AssertionError(f"every package passes through, got {package_id}")


async def test_frames_waiting_behind_a_slow_handler_arrive_all_in_order(
    broker: Broker, broker_pki: Pki
) -> None:
    """While B's handler is busy with the first frame, the next ones wait in the link's queue;
    each is then handed over once, in the order A published them."""
    inbox = Inbox()
    busy = asyncio.Event()

    async def slow_first(sender: str, payload: bytes) -> None:
        if payload == b"0":
            busy.set()
            await asyncio.sleep(0.3)
        await inbox(sender, payload)

    async with a_and_b(broker, broker_pki, slow_first) as (a, _):
        await a.publish(B, b"0")
        await asyncio.wait_for(busy.wait(), WAIT_S)
        for n in range(1, 20):
            await a.publish(B, str(n).encode())
        got = [(await inbox.next())[1] for _ in range(20)]
        assert got == [str(n).encode() for n in range(20)]
        assert inbox.frames.empty()


async def test_a_burst_is_answered_while_the_link_pauses_reading(
    broker: Broker, broker_pki: Pki, tmp_path: Path
) -> None:
    """A neighbour publishes 120 small packages at once. The receiving link stops reading its
    socket while frames wait, and the receiver may store only two packages at a time; still
    every package is stored and answered with a hop receipt: no frame handler waits for a
    publish of its own, whose PUBACK only a reading link would see."""
    receipts = Inbox()
    async with SqliteStore(tmp_path / "state") as store:
        receiver = Receiver(
            store=store,
            receipts=ReceiptWaiter(),
            on_package=_no_local_package,
            partial_dir=tmp_path / "partial",
            max_package_bytes=1 << 20,
            concurrency=2,
            metrics=Metrics(),
            transit=lambda recipients: {C: tuple(recipients)},
            in_memory_max=16 * 1024,
        )

        async def to_receiver(sender: str, payload: bytes) -> None:
            await receiver.on_frame(link_b, sender, payload)

        link_b = Link(_settings(broker, broker_pki, B), B, to_receiver)
        frames = [
            split_into_frames(f"t{i:04d}", "edoc", [C], b"%04d" % i * 500, 4096)[0]
            for i in range(120)
        ]
        async with (
            running(link_b),
            running(Link(_settings(broker, broker_pki, A), A, receipts)) as a,
        ):
            await asyncio.gather(*(a.publish(B, encode_frame(f)) for f in frames))
            answered: list[str] = []
            while len(answered) < len(frames):
                # Packages stored in one commit are answered in one frame.
                answer = decode_frame((await receipts.next())[1])
                assert isinstance(answer, HopReceipt | HopReceipts)
                answered += [receipt.transfer_id for receipt in receipts_of(answer)]
            await receiver.drain()
        assert sorted(answered) == sorted(f.transfer_id for f in frames)  # each once
        assert receiver.received == 120


async def test_a_publish_cancelled_as_its_puback_arrives_ends_cancelled(
    broker: Broker, broker_pki: Pki
) -> None:
    """A task cancelled in the loop turn its PUBACK arrives in ends cancelled, as a stopping
    daemon expects of every task. (aiomqtt waits for the PUBACK with asyncio.wait_for, which
    under Python 3.11 returns the result then and drops the cancellation: the task went on.)
    The real PUBACK times the cancel: it is sent from paho's on_publish callback."""
    inbox = Inbox()
    async with a_and_b(broker, broker_pki, inbox) as (a, _):
        assert a._client is not None
        paho = a._client._client
        task = asyncio.create_task(a.publish(B, b"frame"))
        on_publish = paho.on_publish
        assert on_publish is not None

        def cancel_on_puback(*args: Any) -> None:
            on_publish(*args)
            task.cancel()

        paho.on_publish = cancel_on_puback
        await asyncio.wait([task], timeout=WAIT_S)
        assert task.cancelled()
        assert await inbox.next() == (A, b"frame")  # published all the same


@pytest.mark.parametrize("refused", [False, True])
async def test_a_link_cancelled_as_its_connack_arrives_stops(
    broker: Broker, broker_pki: Pki, monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    """A link task cancelled in the loop turn its CONNACK arrives in ends cancelled, whether
    the broker accepted the connection or refused it (then it would otherwise connect again,
    for ever if the broker kept refusing). The real CONNACK is handed to aiomqtt a moment
    late (it can come before the task waits for it) and the cancel follows it in the same
    turn; a refusal is put in its place there, since this broker refuses no client that passed
    its TLS handshake."""
    link = Link(_settings(broker, broker_pki, A), A, Inbox())
    task = asyncio.create_task(link.run())
    on_connect = aiomqtt.Client._on_connect

    def cancel_on_connack(client: aiomqtt.Client, *args: Any) -> None:
        if refused:
            args = (*args[:3], ReasonCode(PacketTypes.CONNACK, "Not authorized"), *args[4:])

        def answer() -> None:
            on_connect(client, *args)
            task.cancel()

        asyncio.get_running_loop().call_later(0.05, answer)

    monkeypatch.setattr(aiomqtt.Client, "_on_connect", cancel_on_connack)
    await asyncio.wait([task], timeout=WAIT_S)
    assert task.cancelled()
    assert link.state == "down"
