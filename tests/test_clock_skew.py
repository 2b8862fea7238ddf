"""The parent's clock against this node's: measured from hop receipts, read by ``check``."""

from __future__ import annotations

import http.server
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from lienthong.config import parse_config
from lienthong.devnet.network import topology_text
from lienthong.directory import Directory
from lienthong.metrics import Metrics
from lienthong.nodecheck import parent_skew_check

DISTRICT, PROVINCE = "000.00.05.H49", "000.00.00.H49"


@pytest.fixture
def served() -> Iterator[tuple[int, list[bytes]]]:
    """A real local HTTP server answering ``/metrics`` with the text put in the list."""
    body: list[bytes] = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, body
    finally:
        server.shutdown()


def _district(port: int):  # type: ignore[no-untyped-def]
    config = parse_config(
        f'[node]\ncode = "{DISTRICT}"\n[gateway]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    directory = Directory.from_mapping(tomllib.loads(topology_text("four-tier")))
    return config, directory


def test_check_reports_the_parents_skew_the_daemon_measured(
    served: tuple[int, list[bytes]],
) -> None:
    """A skew measured from the parent's receipts is read from the daemon's /metrics: within a
    minute it is OK, beyond it the check fails and says what to do."""
    port, body = served
    metrics = Metrics()
    metrics.clock_skew(PROVINCE, 2.5)
    body[0] = metrics.render()
    config, directory = _district(port)
    check = parent_skew_check(config, directory)
    assert check.ok
    assert f"the parent {PROVINCE}'s clock is 2.5 s ahead of this one" in check.reason
    metrics.clock_skew(PROVINCE, -300.0)
    body[0] = metrics.render()
    check = parent_skew_check(config, directory)
    assert not check.ok
    assert "300.0 s behind" in check.reason
    assert "timedatectl set-ntp true" in check.reason


def test_check_says_when_nothing_is_measured(
    served: tuple[int, list[bytes]], tmp_path: Path
) -> None:
    """No receipt from the parent yet, or no daemon answering: not a failure, and it says so."""
    port, body = served
    body[0] = Metrics().render()
    config, directory = _district(port)
    check = parent_skew_check(config, directory)
    assert check.ok
    assert "no hop receipt from" in check.reason
    closed, _ = _district(1)
    check = parent_skew_check(closed, directory, timeout=1.0)
    assert check.ok
    assert "does not answer" in check.reason
