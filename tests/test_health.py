"""``/healthz`` and its checks: the store writes, every broker link is up, the signing key is
loaded and valid, the disk has room. Checked one by one over real stores, keys and links, and
on real daemons whose broker is stopped and started again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PROVINCE
from test_metrics import NATIONAL, http, running, wait_for

from lienthong.devnet.network import Network
from lienthong.devnet.pki import DevPki
from lienthong.health import (
    Check,
    DiskLimits,
    check_disk,
    check_link,
    check_node,
    check_signing_key,
    check_store,
)
from lienthong.keyfiles import load_identity
from lienthong.store import SqliteStore
from lienthong.transport.link import Link, LinkSettings


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    """A development CA with agency certificates on demand."""
    return DevPki(tmp_path / "pki", key_type="ec")


def _link(pki: DevPki) -> Link:
    cert, key = pki.client_files(PROVINCE)

    async def nothing(sender: str, payload: bytes) -> None:
        return None

    settings = LinkSettings("parent", "127.0.0.1", 1, pki.cafile, cert, key)
    return Link(settings, PROVINCE, nothing)


async def test_store_check_commits_a_probe(tmp_path: Path) -> None:
    """An open SQLite store passes the write probe, which adds nothing to the journal; a closed
    one fails, saying it cannot write."""
    store = SqliteStore(tmp_path / "state")
    async with store:
        before = await store.journal_verify()
        ok = await check_store(store)
        after = await store.journal_verify()
    closed = await check_store(store)
    assert ok.ok, ok.reason
    assert after.ok
    assert after.entries == before.entries
    assert not closed.ok
    assert "cannot write" in closed.reason


def test_disk_check_applies_both_limits(tmp_path: Path) -> None:
    """The disk check passes with room to spare and fails, naming the limit, below either."""
    assert check_disk(tmp_path, DiskLimits(min_free_bytes=1, min_free_ratio=0.0)).ok
    by_size = check_disk(tmp_path, DiskLimits(min_free_bytes=1 << 60, min_free_ratio=0.0))
    by_share = check_disk(tmp_path, DiskLimits(min_free_bytes=1, min_free_ratio=1.01))
    assert not by_size.ok
    assert "MiB needed" in by_size.reason
    assert not by_share.ok
    assert "% needed" in by_share.reason
    missing = check_disk(tmp_path / "gone", DiskLimits())
    assert not missing.ok
    assert "gone" in missing.reason


def test_signing_key_check_sees_a_missing_or_expired_certificate(pki: DevPki) -> None:
    """A loaded key with a current certificate passes; no key, or a time past the certificate's
    end, fails saying which."""
    cert, key = pki.client_files(PROVINCE)
    identity = load_identity(key, cert)
    end = identity.certificate.not_valid_after_utc.timestamp()
    assert check_signing_key(identity, end - 86400).ok
    late = check_signing_key(identity, end + 86400)
    assert not late.ok
    assert "expired" in late.reason
    assert not check_signing_key(None, end).ok


def test_link_check_names_the_broker_and_the_state(pki: DevPki) -> None:
    """A link that is not up fails its check with the broker's address and its state."""
    check = check_link("parent", _link(pki))
    assert check.name == "link:parent"
    assert not check.ok
    assert "down to 127.0.0.1:1" in check.reason


async def test_node_is_unhealthy_when_any_check_fails(pki: DevPki, tmp_path: Path) -> None:
    """All checks together: a down link makes the whole node unhealthy, and the JSON body lists
    every check with its reason."""
    cert, key = pki.client_files(PROVINCE)
    async with SqliteStore(tmp_path / "state") as store:
        health = await check_node(
            node=PROVINCE,
            store=store,
            links={"parent": _link(pki)},
            identity=load_identity(key, cert),
            state_dir=tmp_path,
            now=load_identity(key, cert).certificate.not_valid_before_utc.timestamp() + 60,
            limits=DiskLimits(min_free_bytes=1, min_free_ratio=0.0),
        )
    body = health.as_json()
    assert body["status"] == "unhealthy"
    assert set(body["checks"]) == {"store", "link:parent", "signing_key", "disk"}
    assert [c.name for c in health.failing] == ["link:parent"]


async def test_checks_made_elsewhere_count(pki: DevPki, tmp_path: Path) -> None:
    """A failing check made elsewhere (the spool's) makes the node unhealthy."""
    cert, key = pki.client_files(PROVINCE)
    identity = load_identity(key, cert)
    async with SqliteStore(tmp_path / "state") as store:
        health = await check_node(
            node=PROVINCE,
            store=store,
            links={},
            identity=identity,
            state_dir=tmp_path,
            now=identity.certificate.not_valid_before_utc.timestamp() + 60,
            limits=DiskLimits(min_free_bytes=1, min_free_ratio=0.0),
            extra=[Check("spool", False, "1 failing in spool: outbox/x.xml: gone")],
        )
    assert [c.name for c in health.failing] == ["spool"]
    assert not health.ok


# -- real daemons --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The two-node network, started once for this module."""
    with running(tmp_path_factory.mktemp("health-net")) as network:
        yield network


def healthz(net: Network, code: str) -> tuple[int, dict[str, Any]]:
    """``/healthz`` of ``code``'s daemon: status and JSON body."""
    status, body = http(net, code, "/healthz")
    return status, json.loads(body)


def test_healthz_follows_the_broker(net: Network) -> None:
    """Healthy with every check passing; 503 naming the link once the broker stops; healthy
    again when it is back."""
    status, body = healthz(net, PROVINCE)
    assert status == 200, body
    assert body["status"] == "healthy"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "store": True,
        "link:parent": True,
        "signing_key": True,
        "disk": True,
        "directory": True,
    }
    broker = net.brokers[NATIONAL]
    broker.stop()
    try:
        wait_for("/healthz to turn unhealthy", lambda: healthz(net, PROVINCE)[0] == 503, net)
        status, body = healthz(net, PROVINCE)
        assert body["status"] == "unhealthy"
        assert not body["checks"]["link:parent"]["ok"]
        assert f":{broker.port}" in body["checks"]["link:parent"]["reason"]
        assert body["checks"]["store"]["ok"]
        wait_for("the national node unhealthy", lambda: healthz(net, NATIONAL)[0] == 503, net)
        assert not healthz(net, NATIONAL)[1]["checks"]["link:children"]["ok"]
    finally:
        broker.start()
    wait_for("/healthz to be healthy again", lambda: healthz(net, PROVINCE)[0] == 200, net)
    wait_for("the national node healthy again", lambda: healthz(net, NATIONAL)[0] == 200, net)
