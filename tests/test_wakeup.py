"""Waking a running daemon from another process: the datagram, the listener, and a real
`lienthong send` beside a real daemon that would otherwise look at its queue only every ten
minutes."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from test_store_sqlite import expired_transfer, write_config

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


async def _until(check: Callable[[], bool]) -> None:
    """Let the loop read datagrams until ``check`` holds (two seconds at most)."""
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)


def test_the_listener_hears_pokes_for_its_state_folder_only(tmp_path: Path) -> None:
    mine, other = tmp_path / "a" / "state", tmp_path / "b" / "state"
    mine.mkdir(parents=True)
    other.mkdir(parents=True)

    async def main() -> list[wakeup.Hops]:
        heard: list[wakeup.Hops] = []
        listener = wakeup.listen(mine, heard.append)
        assert listener is not None
        try:
            assert stat.S_IMODE((mine / wakeup.ADDRESS_FILE).stat().st_mode) == 0o600
            assert wakeup.poke(mine, [PROVINCE_B])
            assert wakeup.poke(mine)
            assert not wakeup.poke(other, [PROVINCE_A])
            await _until(lambda: len(heard) == 2)
        finally:
            listener.close()
        assert not (mine / wakeup.ADDRESS_FILE).exists()
        assert not wakeup.poke(mine)
        return heard

    assert asyncio.run(main()) == [(PROVINCE_B,), None]


def test_the_newest_listener_on_a_folder_is_the_one_woken(tmp_path: Path) -> None:
    """A daemon started on a folder another left (or a standby taking over) takes the
    wake-ups; the one before closing leaves the newer one's address in place."""

    async def main() -> tuple[list[wakeup.Hops], list[wakeup.Hops]]:
        old: list[wakeup.Hops] = []
        new: list[wakeup.Hops] = []
        first = wakeup.listen(tmp_path, old.append)
        second = wakeup.listen(tmp_path, new.append)
        assert first is not None
        assert second is not None
        try:
            first.close()
            assert wakeup.poke(tmp_path, [PROVINCE_A])
            await _until(lambda: bool(new))
        finally:
            second.close()
        return old, new

    assert asyncio.run(main()) == ([], [(PROVINCE_A,)])


def test_no_socket_here_is_a_warning_and_polling(tmp_path: Path) -> None:
    async def main() -> tuple[object, list[object]]:
        with structlog.testing.capture_logs() as logs:
            listener = wakeup.listen(tmp_path / "missing", lambda hops: None)
        return listener, logs  # type: ignore[return-value]

    listener, logs = asyncio.run(main())
    assert listener is None
    assert [entry["event"] for entry in logs] == ["wakeup_socket_unavailable"]  # type: ignore[index]


def test_a_wake_up_that_fails_does_not_stop_the_listening(tmp_path: Path) -> None:
    async def main() -> list[wakeup.Hops]:
        heard: list[wakeup.Hops] = []

        def on_wake(hops: wakeup.Hops) -> None:
            heard.append(hops)
            if len(heard) == 1:
                raise RuntimeError("a sender that is gone")

        listener = wakeup.listen(tmp_path, on_wake)
        assert listener is not None
        try:
            with structlog.testing.capture_logs() as logs:
                assert wakeup.poke(tmp_path, [PROVINCE_A])
                await _until(lambda: bool(heard))
            assert [entry["event"] for entry in logs] == ["wakeup_failed"]
            assert wakeup.poke(tmp_path, [PROVINCE_B])
            await _until(lambda: len(heard) == 2)
        finally:
            listener.close()
        return heard

    assert asyncio.run(main()) == [(PROVINCE_A,), (PROVINCE_B,)]


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

    async def main() -> tuple[list[wakeup.Hops], int]:
        heard: list[wakeup.Hops] = []
        listener = wakeup.listen(tmp_path, heard.append)
        assert listener is not None
        # A stranger who found the name (every socket's is in /proc/net/unix), with the
        # system's Python, which user nobody may run (this one may live under /root).
        name = (tmp_path / wakeup.ADDRESS_FILE).read_text(encoding="ascii").strip()
        poke = (
            "import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
            f" s.sendto({wakeup.encode([PROVINCE_A])!r}, {chr(0) + name!r})"
        )
        try:
            stranger = await asyncio.create_subprocess_exec(
                "/usr/bin/python3", "-c", poke, user="nobody", cwd="/"
            )
            assert await stranger.wait() == 0  # sent: the socket took it
            await _until(lambda: listener.refused == 1)
            assert wakeup.poke(tmp_path, [PROVINCE_B])
            await _until(lambda: bool(heard))
        finally:
            listener.close()
        return heard, listener.refused

    assert asyncio.run(main()) == ([(PROVINCE_B,)], 1)


def test_requeue_beside_a_daemon_wakes_every_sender(tmp_path: Path) -> None:
    """`lienthong requeue` puts a dead transfer back and wakes the daemon listening on that
    store's folder: every hop (the command does not say which)."""
    config = write_config(tmp_path)
    asyncio.run(expired_transfer(tmp_path / "state"))

    async def main() -> list[wakeup.Hops]:
        heard: list[wakeup.Hops] = []
        listener = wakeup.listen(tmp_path / "state", heard.append)
        assert listener is not None
        try:
            command = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "lienthong", "requeue", "--all-dead"),
                *("--config", str(config)),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await command.communicate()
            assert b"requeued 1" in out
            await _until(lambda: bool(heard))
        finally:
            listener.close()
        return heard

    assert asyncio.run(main()) == [None]
