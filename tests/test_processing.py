"""What a node does with packages, in-process over a store in a temporary folder: refusals at
submission, duplicates, local delivery with status 01 (never lost to a stop), expiry answered
with status 02."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import PROVINCE

from lienthong.devnet.network import topology_text
from lienthong.devnet.pki import DevPki
from lienthong.directory import Directory
from lienthong.edxml import BusinessDocType, build, new_edoc, parse
from lienthong.edxml.model import Business
from lienthong.keyfiles import load_identity
from lienthong.processing import Processor, SubmissionRefused
from lienthong.store import PackageMeta, PackageState, SqliteStore
from lienthong.trust import TrustStore, sign_package

DEPARTMENT = "000.00.01.H49"  # served by the province node
FAR = "000.03.07.H41"


def _document(sender: str, to: list[str], number: str = "1") -> bytes:
    return build(
        new_edoc(
            from_code=sender,
            to_codes=to,
            subject="Thử xử lý",
            attachments=[("a.txt", b"noi dung", "text/plain")],
            today=dt.date.today(),
            number=number,
        )
    )


async def test_invalid_package_is_refused_with_every_problem(province: Processor) -> None:
    """A package with several faults is refused listing each, and nothing is stored."""
    data = _document(PROVINCE, [FAR]).replace(b"<edXML:Subject>", b"<edXML:Subject>" + b"x" * 600)
    data = data.replace(b"<edXML:Priority>0<", b"<edXML:Priority>9<")
    async with province.store:
        with pytest.raises(SubmissionRefused) as info:
            await province.submit(data)
        text = " | ".join(info.value.problems)
        assert "Subject" in text
        assert "Priority" in text
        assert await province.store.packages(PackageState.STORED) == []


async def test_sender_not_served_here_is_refused(province: Processor) -> None:
    """A node refuses to send for an agency another node serves."""
    async with province.store:
        with pytest.raises(SubmissionRefused, match=f"does not serve the sending agency {FAR}"):
            await province.submit(_document(FAR, [PROVINCE]))


async def test_unknown_recipient_is_refused_naming_it(province: Processor) -> None:
    """A recipient the directory does not know is refused at submission, by code."""
    async with province.store:
        with pytest.raises(SubmissionRefused, match=r"recipient 000\.00\.09\.H49"):
            await province.submit(_document(PROVINCE, ["000.00.09.H49"]))


async def test_the_same_package_twice_is_sent_once(province: Processor) -> None:
    """Re-submitting the same bytes is recognised and queues nothing more."""
    data = _document(PROVINCE, [FAR])
    async with province.store:
        first = await province.submit(data)
        second = await province.submit(data)
        assert not first.duplicate
        assert second.duplicate
        assert first.hops == {"000.00.00.G22": (FAR,)}
        summary = await province.store.queue_summary(province.clock())
        assert sum(summary.transfers.values()) == 1


async def test_local_recipient_gets_it_in_the_inbox_and_the_sender_a_status_01(
    province: Processor,
) -> None:
    """A document for the department the node serves is delivered here, signed, and the
    department's status 01 is recorded for the sender, also served here."""
    async with province.store:
        done = await province.submit(_document(PROVINCE, [DEPARTMENT]))
        assert done.local == (DEPARTMENT,)
        entries = await province.store.inbox_list()
        kinds = sorted((e.kind, e.recipient) for e in entries)
        assert kinds == [("edoc", DEPARTMENT), ("status", PROVINCE)]
        stored = await province.store.read_package(done.package_id)
        assert parse(stored).signed
        receipts = await province.store.receipts(done.document_id)
        assert [(r.code, r.by) for r in receipts if r.level == "status"] == [("01", DEPARTMENT)]


async def test_expired_document_is_answered_with_status_02(province: Processor) -> None:
    """A document dead-lettered by age is answered 02 naming the expiry."""
    async with province.store:
        done = await province.submit(_document(PROVINCE, [FAR]))
        province.clock.now += province.max_age_s + 1  # type: ignore[attr-defined]
        expired = await province.store.expire(province.clock())
        assert done.package_id in expired.packages
        assert await province.answer_expired(expired.packages) == 1
        receipts = await province.store.receipts(done.document_id)
        refusals = [r for r in receipts if r.code == "02"]
        assert len(refusals) == 1
        assert "expired" in refusals[0].detail


def _revoke(target: str, number: str) -> bytes:
    pkg = new_edoc(
        from_code=PROVINCE,
        to_codes=[DEPARTMENT],
        subject="Thu hồi văn bản",
        attachments=[],
        today=dt.date.today(),
        number=number,
    )
    return build(dataclasses.replace(pkg, business=Business(target, BusinessDocType.REVOKE)))


async def test_revocation_marks_the_copy_revoked_and_is_answered_15(
    province: Processor,
) -> None:
    """A revoke request for a document delivered here withdraws that copy from the pending
    inbox and is answered 15; one for a document never delivered here is answered 16."""
    async with province.store:
        original = await province.submit(_document(PROVINCE, [DEPARTMENT], "7"))
        revoke = await province.submit(_revoke(original.document_id, "8"))
        entries = await province.store.inbox_list(recipient=DEPARTMENT, pending=False)
        states = {e.document_id: e.state for e in entries}
        assert states[original.document_id] == "revoked"
        assert states[revoke.document_id] == "new"
        codes = [r.code for r in await province.store.receipts(revoke.document_id)]
        assert "15" in codes
        stray = await province.submit(_revoke("000.00.00.H49,2026/01/01,1/VT", "9"))
        refusals = [r for r in await province.store.receipts(stray.document_id) if r.code == "16"]
        assert len(refusals) == 1
        assert "was not delivered here" in refusals[0].detail


class _Killed(Exception):
    """Stands for the process dying where it stands."""


class _DiesAfterFirstDelivery(SqliteStore):
    """A store whose process dies right after the first commit that delivers something: every
    later write fails as if the daemon had been killed."""

    dead = False

    async def _write(self, op: Any, blobs: Any = (), *, durable: bool = True) -> Any:
        if self.dead:
            raise _Killed("killed")
        result = await super()._write(op, blobs, durable=durable)
        if await self.inbox_list(pending=False):
            self.dead = True
        return result


async def test_no_stop_after_a_delivery_loses_its_status_01(tmp_path: Path) -> None:
    """A document received from a neighbour and delivered here has its status 01 queued for
    the sender by the same commit: a kill right after the delivery commit finds it queued."""
    pki = DevPki(tmp_path / "pki", key_type="rsa")
    directory = Directory.from_mapping(tomllib.loads(topology_text("four-tier")))
    far_cert, far_key = pki.client_files(FAR)
    signed = sign_package(_document(FAR, [DEPARTMENT]), load_identity(far_key, far_cert))
    cert, key = pki.client_files(PROVINCE)
    state = tmp_path / "state"
    store = _DiesAfterFirstDelivery(state)
    processor = Processor(
        me=PROVINCE,
        directory=directory,
        identity=load_identity(key, cert),
        trust=TrustStore.from_pem([pki.cafile.read_bytes()]),
        store=store,
    )
    meta = PackageMeta.for_bytes(signed, "doc", "edoc", FAR, [DEPARTMENT])
    async with store:
        received = await store.receive("t-1", signed, meta, "000.00.00.G22", time.time())
        with contextlib.suppress(_Killed):
            await processor.process_received(received.package_id)
        assert store.dead, "the delivery was committed"
    async with SqliteStore(state) as after:
        delivered = [e for e in await after.inbox_list(pending=False) if e.kind == "edoc"]
        assert [e.recipient for e in delivered] == [DEPARTMENT]
        summary = await after.queue_summary(time.time())
        assert summary.per_hop == {"000.00.00.G22": {"queued": 1}}
        (status,) = await after.packages(PackageState.ROUTED)
        assert (status.meta.kind, status.meta.recipients) == ("status", (FAR,))
        assert (await after.journal_verify()).ok
