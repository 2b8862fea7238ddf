"""sd_notify messages reach a real unix datagram socket, and are no-ops without one."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lienthong.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing where systemd's notify socket would be."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_ready_sends_ready_and_status(listener: tuple[socket.socket, str]) -> None:
    """READY=1 and STATUS travel in one datagram."""
    sock, path = listener
    assert Notifier(path).ready("links up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=links up"


def test_watchdog_and_stopping(listener: tuple[socket.socket, str]) -> None:
    """WATCHDOG=1 and STOPPING=1 are sent as systemd expects them."""
    sock, path = listener
    notifier = Notifier(path)
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping("draining 3 transfers")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining 3 transfers"


def test_abstract_namespace_address() -> None:
    """An address starting with @ is the abstract namespace."""
    name = f"lienthong-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).status("ok")
        assert sock.recv(4096) == b"STATUS=ok"


def test_without_socket_everything_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd nothing is sent and nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_unreachable_socket_reports_false(tmp_path: Path) -> None:
    """A socket path nobody listens on gives False, not an exception."""
    assert not Notifier(str(tmp_path / "absent.sock")).watchdog()


def test_watchdog_interval_is_half_the_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_USEC=30 s gives a 15 s ping interval, and only for our own pid."""
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


def test_a_listener_that_never_reads_does_not_block(listener: tuple[socket.socket, str]) -> None:
    """Once the listener's queue is full, sends fail at once instead of waiting forever."""
    _, path = listener
    notifier = Notifier(path)
    results = [notifier.watchdog() for _ in range(2000)]
    assert results[0]
    assert not all(results)
