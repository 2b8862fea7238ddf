"""Real mosquitto brokers for tests: the project's tier config, mTLS from the development PKI.

A test module that needs a broker imports the fixtures (named ``broker`` and ``broker_pki``)::

    from brokers import broker_fixture, broker_pki_fixture  # noqa: F401 (fixtures)

``broker_pki`` (one per session) holds a CA, the broker's server certificate and agency client
certificates written to files on demand; ``broker`` starts one mosquitto on a free port with
``config/mosquitto/tier.conf.in`` and ``acl.conf`` and stops it after the test. The classes live
in :mod:`lienthong.devnet`, which the demo uses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lienthong.brokersetup import free_port
from lienthong.devnet.broker import Broker
from lienthong.devnet.pki import HOST, DevPki

Pki = DevPki
__all__ = ["HOST", "Broker", "Pki", "broker_fixture", "broker_pki_fixture", "free_port"]


@pytest.fixture(scope="session", name="broker_pki")
def broker_pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One development CA with the broker's certificate, shared by the session's brokers."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="broker")
def broker_fixture(broker_pki: Pki, tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto with the tier config on a free port, stopped after the test."""
    instance = Broker(broker_pki, tmp_path / "broker")
    instance.start()
    try:
        yield instance
    finally:
        instance.kill()
