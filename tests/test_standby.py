"""The national node as a pair of real ``lienthong run`` processes on one PostgreSQL database:
the standby waits (connected to nothing else), the active one is SIGKILLed, the standby takes
over, and the documents sent before and after the kill each arrive once.

Three nodes (the national node and two provinces, whose documents to each other cross it) and
one real mosquitto broker, at the national node; waits are bounded polls, never timed asserts.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_network import FAST, document_ids, send, write_document

from lienthong.devnet.network import Network, poll_until, topology_text
from lienthong.devnet.pgdb import ScratchDatabase

NATIONAL, PROVINCE_A, PROVINCE_B = "000.00.00.G22", "000.00.00.H49", "000.00.00.H41"
DIRECTORY = topology_text("two-tier")
WAIT_S = 60.0


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of ``/healthz`` on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Network]:
    """The three-node network with the national node's store in a new PostgreSQL database,
    run by two daemons; everything killed and the database dropped afterwards."""
    database = ScratchDatabase("lienthong_standby")
    database.create_sync()
    network = Network(
        tmp_path / "net", DIRECTORY, overrides=FAST, postgres={NATIONAL: database.dsn}
    )
    try:
        yield network
    finally:
        network.stop()
        network.kill()
        database.drop_sync()


@pytest.mark.slow
def test_standby_takes_over_when_the_active_daemon_is_killed(pair: Network, tmp_path: Path) -> None:
    """The standby serves only a "standby" /healthz until the active national daemon is
    SIGKILLed while it forwards; then it takes over, and the documents sent before and after
    the kill reach the far province once each, with their status 01 back at the sender; the
    journal verifies."""
    docs = tmp_path / "docs"
    docs.mkdir()
    before = [
        write_document(docs, PROVINCE_A, [PROVINCE_B], f"Trước {i}", f"1{i:02d}") for i in range(5)
    ]
    after = [
        write_document(docs, PROVINCE_A, [PROVINCE_B], f"Sau {i}", f"2{i:02d}") for i in range(5)
    ]
    pair.start()
    active, standby = pair.nodes[NATIONAL], pair.standbys[NATIONAL]
    status, body = healthz(standby.api_port)
    assert (status, body["status"]) == (503, "standby")
    assert "another daemon of 000.00.00.G22 is active" in body["reason"]
    assert healthz(active.api_port)[1]["status"] == "healthy"
    # The standby is connected to nothing but the database: no broker link was started.
    assert '"link_up"' not in standby.log()

    send(pair, PROVINCE_A, *before)
    # Killed while it works: the first documents through it, the others on their way.
    assert poll_until(lambda: len(pair.inbox(PROVINCE_B)) > 0, WAIT_S), active.log()[-3000:]
    active.kill()
    send(pair, PROVINCE_A, *after)
    assert poll_until(lambda: healthz(standby.api_port)[1]["status"] != "standby", WAIT_S), (
        standby.log()
    )

    expected = sorted(pair_ids(before + after))
    assert poll_until(
        lambda: sorted(set(document_ids(pair.inbox(PROVINCE_B)))) == expected, WAIT_S
    ), standby.log()[-3000:]
    assert poll_until(
        lambda: sorted(set(document_ids(pair.inbox(PROVINCE_A), "status"))) == expected, WAIT_S
    ), standby.log()[-3000:]
    assert document_ids(pair.inbox(PROVINCE_B)) == expected  # each once
    assert '"store_taken_over"' in standby.log()
    verify = pair.lienthong(NATIONAL, "journal", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def pair_ids(files: list[Path]) -> list[str]:
    """The DocumentIds of documents written by :func:`write_document` at province A today."""
    today = time.strftime("%Y/%m/%d")
    return [f"{PROVINCE_A},{today},{f.stem}/UBND-VP" for f in files]


def test_a_database_that_refuses_the_daemon_is_a_configuration_error(tmp_path: Path) -> None:
    """A daemon whose DSN names a database that does not exist stops at once with exit status 2
    and the key at fault, instead of waiting as a standby for ever."""
    missing = ScratchDatabase("lienthong_missing")  # never created
    network = Network(tmp_path / "net", DIRECTORY, postgres={NATIONAL: missing.dsn})
    node = network.nodes[NATIONAL]
    node.start()
    try:
        assert node.process is not None
        assert node.process.wait(60) == 2
    finally:
        node.kill()
    assert "store.dsn: the database refuses this daemon" in node.log()
