"""Queued and dead transfers follow a new directory: at the province node, over a real SQLite
store, a version moves a commune from its district to the province while documents for it
wait for the district; they are delivered here with a status 01, the rest re-queued."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PROVINCE, Clock

from lienthong.devnet.network import topology_text
from lienthong.devnet.pki import DevPki
from lienthong.directory import Directory
from lienthong.dirholder import DirectoryHolder
from lienthong.dirversion import DirectoryVersion
from lienthong.edxml import build, new_edoc
from lienthong.keyfiles import load_identity
from lienthong.processing import Processor
from lienthong.store import PackageMeta, PackageState, SqliteStore, TransferState
from lienthong.trust import TrustStore, sign_package

NATIONAL, DISTRICT, COMMUNE_A = "000.00.00.G22", "000.00.05.H49", "000.01.05.H49"
MOVED = "000.02.05.H49"  # a commune without a node: served by the district, then the province
FAR = "000.03.07.H41"


def _document(moved_parent: str | None) -> dict[str, Any]:
    document = tomllib.loads(topology_text("four-tier"))
    entry: dict[str, Any] = {"code": MOVED, "name": "UBND xã Duy Hòa"}
    if moved_parent is not None:
        entry["parent"] = moved_parent
    document["agency"].append(entry)
    return document


def _version(number: int, moved_parent: str | None) -> DirectoryVersion:
    document = _document(moved_parent)
    return DirectoryVersion(
        number=number,
        issued=dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
        expires=None,
        directory=Directory.from_mapping(document),
        document=document,
    )


@dataclass
class Province:
    processor: Processor
    store: SqliteStore
    holder: DirectoryHolder
    clock: Clock
    pki: DevPki

    async def receive(self, recipients: list[str], number: str) -> str:
        """A document from the far commune, signed there, arriving from the national node
        and routed on here; its package id."""
        cert, key = self.pki.client_files(FAR)
        pkg = new_edoc(
            from_code=FAR,
            to_codes=recipients,
            subject="Gửi xã trước khi sáp nhập",
            attachments=[("a.txt", b"noi dung", "text/plain")],
            today=dt.date.today(),
            number=number,
        )
        data = sign_package(build(pkg), load_identity(key, cert))
        meta = PackageMeta.for_bytes(data, pkg.document_id, "edoc", FAR, recipients)
        result = await self.store.receive(f"t-{number}", data, meta, NATIONAL, self.clock())
        await self.processor.process_received(result.package_id)
        return result.package_id

    async def reroute_all(self) -> int:
        """One pass as the node makes it: every queued or dead transfer; how many moved."""
        moved = 0
        for transfer in await self.store.open_transfers():
            if transfer.state != TransferState.IN_FLIGHT:
                moved += await self.processor.reroute(transfer, self.store.reroute) is not None
        return moved

    async def transfers(self) -> list[tuple[str, tuple[str, ...], TransferState]]:
        return sorted(
            (t.next_hop, t.recipients, t.state) for t in await self.store.open_transfers()
        )


@pytest.fixture
async def province(tmp_path: Path) -> AsyncIterator[Province]:
    """The province node's processor and store; version 1 hangs the commune under the
    district (by its code)."""
    pki = DevPki(tmp_path / "pki", key_type="rsa")
    cert, key = pki.client_files(PROVINCE)
    clock = Clock()
    holder = DirectoryHolder(_version(1, None), clock(), clock=clock)
    store = SqliteStore(tmp_path / "state")
    processor = Processor(
        me=PROVINCE,
        directory=holder,
        identity=load_identity(key, cert),
        trust=TrustStore.from_pem([pki.cafile.read_bytes()]),
        store=store,
        clock=clock,
    )
    async with store:
        yield Province(processor, store, holder, clock, pki)


async def test_a_commune_moved_to_the_province_gets_its_queued_documents_here(
    province: Province,
) -> None:
    """A transfer queued for the district is split when the commune moves under the
    province: the commune's copy is verified and delivered here with its status 01 to the
    sender, the other commune's recipients are re-queued for the district, all journaled;
    a second pass changes nothing."""
    both = await province.receive([MOVED, COMMUNE_A], "1")
    only = await province.receive([MOVED], "2")
    assert await province.transfers() == [
        (DISTRICT, (MOVED,), TransferState.QUEUED),
        (DISTRICT, (MOVED, COMMUNE_A), TransferState.QUEUED),
    ]
    assert await province.reroute_all() == 0  # the directory has not changed

    province.holder.swap(_version(2, PROVINCE), province.clock())
    assert await province.reroute_all() == 2

    inbox = await province.store.inbox_list()
    assert sorted((e.package_id, e.recipient) for e in inbox) == sorted(
        [(both, MOVED), (only, MOVED)]
    )
    statuses = [
        p for p in await province.store.packages(PackageState.ROUTED) if p.meta.kind == "status"
    ]
    assert sorted(p.meta.sender for p in statuses) == [MOVED, MOVED]
    assert {p.meta.recipients for p in statuses} == {(FAR,)}
    assert await province.transfers() == [
        (NATIONAL, (FAR,), TransferState.QUEUED),
        (NATIONAL, (FAR,), TransferState.QUEUED),
        (DISTRICT, (COMMUNE_A,), TransferState.QUEUED),
    ]
    assert (await province.store.queue_summary(province.clock())).transfers[
        TransferState.REROUTED
    ] == 2
    assert await province.reroute_all() == 0
    assert len(await province.store.inbox_list()) == 2
    assert (await province.store.journal_verify()).ok


async def test_a_dead_transfer_is_rerouted_and_its_late_receipt_still_counts(
    province: Province,
) -> None:
    """A transfer dead-lettered while the district was away is re-routed by the new version
    (the package comes back from expired), and a hop receipt the district sends late for it
    is still recorded."""
    package_id = await province.receive([MOVED], "3")
    (transfer,) = await province.store.open_transfers()
    province.clock.now += 30 * 86400
    expired = await province.store.expire(province.clock())
    assert expired.transfers == (transfer.transfer_id,)
    assert (await province.store.get_package(package_id)).state == PackageState.EXPIRED

    province.holder.swap(_version(2, PROVINCE), province.clock())
    assert await province.reroute_all() == 1
    assert [e.package_id for e in await province.store.inbox_list()] == [package_id]
    assert (await province.store.get_package(package_id)).state == PackageState.ROUTED
    assert await province.store.dead_letters() == []

    assert await province.store.ack(transfer.transfer_id, package_id, province.clock(), DISTRICT)
    document_id = (await province.store.get_package(package_id)).meta.document_id
    hops = [r.by for r in await province.store.receipts(document_id) if r.level == "hop"]
    assert hops == [DISTRICT]
    summary = await province.store.queue_summary(province.clock())
    assert summary.per_hop[DISTRICT] == {TransferState.ACKED: 1}


async def test_transit_hops_follow_the_directory_in_force(province: Province) -> None:
    """The next hops of a package passing through are answered from what was worked out for
    the same recipients, until a new directory version is in force."""
    transit = province.processor.transit_hops
    assert transit([MOVED]) == {DISTRICT: (MOVED,)}
    assert transit((MOVED,)) is transit([MOVED])  # the answer kept, not worked out again
    assert transit([MOVED, COMMUNE_A]) == {DISTRICT: (MOVED, COMMUNE_A)}
    assert transit([PROVINCE]) is None  # served here: read here
    province.holder.swap(_version(2, PROVINCE), province.clock())
    assert transit([MOVED]) is None  # now the province serves the commune itself
    assert transit([COMMUNE_A]) == {DISTRICT: (COMMUNE_A,)}
