"""What a node does with packages, in-process over a store in a temporary folder: refusals at
submission, duplicates, local delivery with status 01 (never lost to a stop), expiry answered
with status 02."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, PROVINCE

from lienthong.devnet.network import topology_text
from lienthong.devnet.pki import DevPki
from lienthong.directory import Directory
from lienthong.edxml import BusinessDocType, build, new_edoc, parse, validate
from lienthong.edxml.model import Business
from lienthong.keyfiles import load_identity
from lienthong.processing import Processor, SubmissionRefused
from lienthong.store import PackageMeta, PackageState, ReceiveOutcome, SqliteStore
from lienthong.trust import TrustStore, sign_package

DEPARTMENT = "000.00.01.H49"  # served by the province node
FAR = "000.03.07.H41"
NATIONAL = "000.00.00.G22"


def _document(
    sender: str, to: list[str], number: str = "1", attachment: bytes = b"noi dung"
) -> bytes:
    return build(
        new_edoc(
            from_code=sender,
            to_codes=to,
            subject="Thử xử lý",
            attachments=[("a.txt", attachment, "text/plain")],
            today=dt.date.today(),
            number=number,
        )
    )


async def test_invalid_package_is_refused_with_every_problem(province: Processor) -> None:
    """A package with several faults is refused in strict mode listing each, and nothing is
    stored."""
    data = _document(PROVINCE, [FAR]).replace(b"<edXML:Subject>", b"<edXML:Subject>" + b"x" * 600)
    data = data.replace(b"<edXML:Priority>0<", b"<edXML:Priority>9<")
    async with province.store:
        with pytest.raises(SubmissionRefused) as info:
            await province.submit(data, strict=True)
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


# -- real traffic: deviations are shown, refused only in strict mode --------------------------

REAL = sorted(p.name for p in DATA.glob("real_*.xml") if p.name != "real_test_system_codes.xml")


def _real(name: str) -> bytes:
    """A corpus file of real-traffic shape, sent by the department to the province (local)
    and a commune of the other province (routed)."""
    data = (DATA / name).read_bytes()
    return data.replace(b"000.00.00.G22", DEPARTMENT.encode()).replace(
        b"000.00.12.H49", FAR.encode()
    )


@pytest.mark.parametrize("name", REAL)
async def test_real_variants_are_accepted_and_their_deviations_counted(
    province: Processor, name: str
) -> None:
    """Each variant real traffic has is taken in lenient mode, delivered here and routed on,
    and its deviations are counted by kind and remembered for the status page."""
    async with province.store:
        done = await province.submit(_real(name))
        assert done.local == (PROVINCE,)
        assert done.hops == {"000.00.00.G22": (FAR,)}
        shown = province.metrics.deviations_of[done.package_id]
        assert shown
        assert all(line.endswith("]") for line in shown)
        metrics = province.metrics.render().decode()
        kind = shown[0].rsplit("[", 1)[1].rstrip("]")
        assert f'lienthong_deviations_total{{kind="{kind}",stage="submission"}}' in metrics


@pytest.mark.parametrize("name", REAL)
async def test_strict_mode_refuses_the_variants_naming_each_deviation(
    province: Processor, name: str
) -> None:
    """In strict mode the same files are refused at submission with the deviations as reasons;
    a lenient call (a client configured lenient) still passes on the strict node."""
    strict = province
    strict.strict = True
    data = _real(name)
    expected = validate(data).deviations
    async with strict.store:
        with pytest.raises(SubmissionRefused) as info:
            await strict.submit(data)
        assert info.value.problems == tuple(str(d) for d in expected)
        assert await strict.store.packages(PackageState.STORED) == []
        done = await strict.submit(data, strict=False)
        assert done.local == (PROVINCE,)


def test_a_test_system_code_is_a_routing_error_not_a_format_error(
    province: Processor,
) -> None:
    """An agency code outside the QCVN form is a deviation of the format; it is refused only
    because the directory does not list it (a recipient that cannot be routed)."""
    data = _real("real_test_system_codes.xml")
    result = validate(data)
    assert result.ok
    assert [d.kind for d in result.deviations] == ["agency_code"]
    problems, cause = province._submission_problems(result.package)  # type: ignore[arg-type]
    assert cause == "unknown_recipient"
    assert any("vxp.saas.03" in p for p in problems)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("invalid_no_recipient.xml", "names no recipient"),
        ("invalid_manifest_mismatch.xml", "no attachment matches"),
        ("invalid_document_id_february_30.xml", "not a valid date"),
    ],
)
async def test_errors_refuse_in_both_modes(
    province: Processor, strict: bool, name: str, words: str
) -> None:
    """No recipient, an attachment that does not match its reference, a date that does not
    exist: refused at submission whatever the mode."""
    async with province.store:
        with pytest.raises(SubmissionRefused) as info:
            await province.submit(_real(name), strict=strict)
        assert any(words in p for p in info.value.problems)


async def test_a_revoke_without_business_document_id_withdraws_the_original(
    province: Processor,
) -> None:
    """The official SDK's revoke (the original's header, Bussiness without DocumentId) withdraws
    the copy delivered earlier, is answered 15, and stays in the inbox itself."""
    original = (DATA / "edoc_valid.xml").read_bytes()
    original = original.replace(b"000.00.00.G22", DEPARTMENT.encode()).replace(
        b"000.00.12.H49", FAR.encode()
    )
    async with province.store:
        first = await province.submit(original)
        revoke = await province.submit(_real("real_revoke_no_business_document_id.xml"))
        assert revoke.document_id == first.document_id
        entries = await province.store.inbox_list(recipient=PROVINCE, pending=False)
        states = {e.package_id: e.state for e in entries}
        assert states[first.package_id] == "revoked"
        assert states[revoke.package_id] == "new"
        codes = [r.code for r in await province.store.receipts(first.document_id)]
        assert "15" in codes


# -- the frame is never believed over the signed package ---------------------------------------


def _signed_far(province: Processor, tmp_path: Path, to: list[str], number: str) -> bytes:
    """A document signed by the far commune, whose CA the province now trusts."""
    pki = DevPki(tmp_path / f"far-pki-{number}", key_type="rsa")
    cert, key = pki.client_files(FAR)
    province.trust = TrustStore.from_pem([pki.cafile.read_bytes()])
    return sign_package(_document(FAR, to, number), load_identity(key, cert))


async def _received(
    province: Processor, data: bytes, kind: str, recipients: list[str], transfer_id: str
) -> str:
    """``data`` stored as a transfer from the national node whose frame said ``kind`` and
    ``recipients``, then acted on."""
    meta = PackageMeta.for_bytes(data, "frame-doc", kind, FAR, recipients)  # type: ignore[arg-type]
    result = await province.store.receive(transfer_id, data, meta, NATIONAL, province.clock())
    await province.process_received(result.package_id)
    return result.package_id


async def test_a_frame_readdressed_to_an_agency_the_sender_never_named_is_not_delivered(
    province: Processor, tmp_path: Path
) -> None:
    """A package signed for the national node, framed as if for the department served here, is
    quarantined naming the department; nothing reaches an inbox, no status is sent."""
    data = _signed_far(province, tmp_path, [NATIONAL], "31")
    async with province.store:
        package_id = await _received(province, data, "edoc", [DEPARTMENT], "t-readdressed")
        record = await province.store.get_package(package_id)
        assert record.state == PackageState.QUARANTINED
        assert f"the frame addresses {DEPARTMENT}, whom the signed package does not name" in (
            record.reason or ""
        )
        assert await province.store.inbox_list(pending=False) == []
        summary = await province.store.queue_summary(province.clock())
        assert sum(summary.transfers.values()) == 0


async def test_a_frame_that_lies_about_the_kind_is_not_delivered(
    province: Processor, tmp_path: Path
) -> None:
    """An edoc framed as a status is quarantined naming both kinds, and not delivered."""
    data = _signed_far(province, tmp_path, [DEPARTMENT], "32")
    async with province.store:
        package_id = await _received(province, data, "status", [DEPARTMENT], "t-kind")
        record = await province.store.get_package(package_id)
        assert record.state == PackageState.QUARANTINED
        assert "the frame says 'status', the signed package is 'edoc'" in (record.reason or "")
        assert await province.store.inbox_list(pending=False) == []


async def test_an_honest_frame_is_delivered(province: Processor, tmp_path: Path) -> None:
    """The same package framed truthfully is delivered to the department (control case)."""
    data = _signed_far(province, tmp_path, [DEPARTMENT], "33")
    async with province.store:
        await _received(province, data, "edoc", [DEPARTMENT], "t-honest")
        entries = await province.store.inbox_list(recipient=DEPARTMENT, pending=False)
        assert [e.kind for e in entries] == ["edoc"]


class _Killed(Exception):
    """Stands for the process dying where it stands."""


class _DiesAfterFirstDelivery(SqliteStore):
    """A store whose process dies right after the first commit that delivers something: every
    later write fails as if the daemon had been killed."""

    dead = False

    async def _write(self, op: Any, blobs: Any = (), **how: Any) -> Any:
        if self.dead:
            raise _Killed("killed")
        result = await super()._write(op, blobs, **how)
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


def _large_document(sender: str, to: list[str], number: str = "88") -> bytes:
    return _document(sender, to, number, bytes(range(256)) * 200)


async def test_large_package_is_submitted_and_received_from_files(
    province: Processor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the large-package size, a submitted file is validated in pieces, signed file to
    file and adopted by the store (its signature verifies); a large package received from a
    neighbour is validated and verified from its file and delivered with its status 01."""
    from lienthong.trust import verify_file

    monkeypatch.setattr("lienthong.processing.LARGE_PACKAGE", 1000)
    source = tmp_path / "submitted.xml"
    source.write_bytes(_large_document(PROVINCE, [DEPARTMENT]))
    async with province.store:
        done = await province.submit(source)
        assert done.local == (DEPARTMENT,)
        assert source.exists()  # the office software's file is left as it was
        stored = await province.store.package_file(done.package_id)
        assert stored is not None
        verification = verify_file(stored, province.trust)
        assert verification.valid, verification.reasons
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == done.package_id

        signed = sign_package(_large_document(PROVINCE, [DEPARTMENT], "89"), province.identity)
        meta = PackageMeta.for_bytes(signed, "89", "edoc", PROVINCE, [DEPARTMENT])
        incoming = tmp_path / "incoming"
        incoming.write_bytes(signed)
        received = await province.store.receive(
            "t-large", incoming, meta, NATIONAL, province.clock()
        )
        assert received.outcome == ReceiveOutcome.NEW
        await province.process_received(meta.sha256)
        record = await province.store.get_package(meta.sha256)
        assert record.state == PackageState.DELIVERED
        assert not await asyncio.to_thread(lambda: list(tmp_path.glob("signed-*")))
