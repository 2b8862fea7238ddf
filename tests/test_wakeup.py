"""Waking a running daemon from another process: the datagram, the listener, and a real
`lienthong send` beside a real daemon that would otherwise look at its queue only every ten
minutes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import pytest
import structlog

from lienthong import wakeup
from lienthong.devnet.network import Network, poll_until
from lienthong.edxml import build, new_edoc

TOPOLOGY = Path(__file__).resolve().parents[1] / "config" / "topologies" / "two-tier.toml"
PROVINCE_A, PROVINCE_B = "000.00.00.H49", "000.00.00.H41"


def test_a_datagram_names_hops_or_every_hop() -> None:
    hops = wakeup.decode(wakeup.encode([PROVINCE_B, PROVINCE_A, PROVINCE_B]))
    assert hops is not None
    assert sorted(hops) == [PROVINCE_B, PROVINCE_A]
    assert wakeup.decode(wakeup.encode(None)) is None
    # Too many hops for one datagram: every hop is woken instead.
    assert (
        wakeup.decode(wakeup.encode([f"000.{i // 100:02d}.{i % 100:02d}.H49" for i in range(400)]))
        is None
    )


def test_a_garbled_datagram_wakes_nobody() -> None:
    assert wakeup.decode(b"\xff\xfe") == ()
    assert wakeup.decode(b"not a code\n../etc\n" + PROVINCE_A.encode()) == (PROVINCE_A,)


def test_a_poke_with_no_daemon_listening_is_no_error(tmp_path: Path) -> None:
    assert wakeup.poke(tmp_path, [PROVINCE_A]) is False


def test_the_listener_hears_pokes_for_its_state_folder_only(tmp_path: Path) -> None:
    mine, other = tmp_path / "a" / "state", tmp_path / "b" / "state"

    async def main() -> list[wakeup.Hops]:
        heard: list[wakeup.Hops] = []
        transport = await wakeup.listen(mine, heard.append)
        assert transport is not None
        try:
            assert wakeup.poke(mine, [PROVINCE_B])
            assert wakeup.poke(mine)
            assert not wakeup.poke(other, [PROVINCE_A])
            for _ in range(200):
                if len(heard) == 2:
                    break
                await asyncio.sleep(0.01)
        finally:
            transport.close()
        return heard

    assert asyncio.run(main()) == [(PROVINCE_B,), None]


def test_a_second_listener_on_one_state_folder_is_refused_with_a_warning(tmp_path: Path) -> None:
    async def main() -> tuple[object, object]:
        first = await wakeup.listen(tmp_path, lambda hops: None)
        try:
            with structlog.testing.capture_logs() as logs:
                second = await wakeup.listen(tmp_path, lambda hops: None)
        finally:
            assert first is not None
            first.close()
        return second, logs

    second, logs = asyncio.run(main())
    assert second is None
    assert [entry["event"] for entry in logs] == ["wakeup_socket_unavailable"]  # type: ignore[attr-defined]


def test_send_beside_a_daemon_is_sent_before_its_next_poll(tmp_path: Path) -> None:
    """Both daemons look at their queues every 600 s; a document given to `lienthong send`
    still reaches the other province (through the national node) and its status 01 comes
    back, well within the 60 s this waits."""
    slow = {"transfer": {"poll_s": 600.0}, "daemon": {"drain_grace_s": 2.0}}
    net = Network(tmp_path / "net", TOPOLOGY.read_text(encoding="utf-8"), overrides=slow)
    try:
        net.start()
        pkg = new_edoc(
            from_code=PROVINCE_A,
            to_codes=[PROVINCE_B],
            subject="Đánh thức",
            attachments=[("cong-van.txt", "Nội dung".encode(), "text/plain")],
            today=dt.date.today(),
            number="606",
            notation="UBND-VP",
        )
        doc = tmp_path / "606.xml"
        doc.write_bytes(build(pkg))
        result = net.lienthong(PROVINCE_A, "send", str(doc))
        assert result.returncode == 0, result.stderr
        document_id = f"{PROVINCE_A},{dt.date.today():%Y/%m/%d},606/UBND-VP"

        def delivered() -> bool:
            return any(e.document_id == document_id for e in net.inbox(PROVINCE_B))

        def answered() -> bool:
            return any(r.code == "01" for r in net.receipts(PROVINCE_A, document_id))

        assert poll_until(delivered, 60.0), net.nodes[PROVINCE_A].log()[-2000:]
        assert poll_until(answered, 60.0)
    finally:
        net.stop()
        net.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="sending as another user needs root")
def test_a_poke_from_another_user_wakes_nobody(tmp_path: Path) -> None:
    """Only the daemon's own user (and root) may wake it: a flood of wake-ups from any local
    account would otherwise make its senders read the queue without end. The poke of user
    ``nobody`` is read and ignored; the daemon's user's next poke is heard."""
    # The system's Python, which user nobody may run (this one may live under /root).
    poke = (
        "import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
        f" s.sendto({wakeup.encode([PROVINCE_A])!r}, {wakeup.address(tmp_path)!r})"
    )

    async def main() -> list[wakeup.Hops]:
        heard: list[wakeup.Hops] = []
        listener = await wakeup.listen(tmp_path, heard.append)
        assert listener is not None
        try:
            stranger = await asyncio.create_subprocess_exec(
                "/usr/bin/python3", "-c", poke, user="nobody", cwd="/"
            )
            assert await stranger.wait() == 0  # sent: the socket took it
            await asyncio.sleep(0.2)
            assert wakeup.poke(tmp_path, [PROVINCE_B])
            for _ in range(200):
                if heard:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
        finally:
            listener.close()
        return heard

    assert asyncio.run(main()) == [(PROVINCE_B,)]
