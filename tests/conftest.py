"""Shared test fixtures."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lienthong.devnet.network import topology_text
from lienthong.devnet.pki import DevPki
from lienthong.directory import Directory
from lienthong.keyfiles import load_identity
from lienthong.processing import Processor
from lienthong.store import SqliteStore
from lienthong.trust import TrustStore

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """The corpus of sample packages shipped with the tests."""
    return DATA


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


PROVINCE = "000.00.00.H49"
"""The province node of the four-tier directory; it also serves its department 000.00.01.H49."""


@pytest.fixture
def province(tmp_path: Path) -> Processor:
    """The processor of the province node over a SQLite store in a temporary folder (the test
    opens it), with real RSA keys, the four-tier directory and a hand-moved clock
    (``processor.clock.now``)."""
    pki = DevPki(tmp_path / "pki", key_type="rsa")
    cert, key = pki.client_files(PROVINCE)
    directory = Directory.from_mapping(tomllib.loads(topology_text("four-tier")))
    return Processor(
        me=PROVINCE,
        directory=directory,
        identity=load_identity(key, cert),
        trust=TrustStore.from_pem([pki.cafile.read_bytes()]),
        store=SqliteStore(tmp_path / "province-state"),
        clock=Clock(),
    )
