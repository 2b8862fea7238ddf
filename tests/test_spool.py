"""Spool folders: files dropped in outbox/ are sent or rejected with reasons; deliveries and
statuses are written to inbox/ and status/ atomically, attachments extracted with safe names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import PROVINCE

from lienthong.edxml import build, new_edoc
from lienthong.gateway.spool import Spool, safe_name
from lienthong.processing import Processor
from lienthong.store import TransferState

DEPARTMENT = "000.00.01.H49"
FAR = "000.03.07.H41"


@pytest.fixture
def spool(tmp_path: Path, province: Processor) -> Spool:
    """The province node's spool over its processor's in-memory store."""
    return Spool(tmp_path / "spool", province, province.store, settle_s=2.0, clock=province.clock)


def _document(to: list[str], number: str, attachment_name: str = "Công văn số 1.pdf") -> bytes:
    return build(
        new_edoc(
            from_code=PROVINCE,
            to_codes=to,
            subject="Thử thư mục",
            attachments=[(attachment_name, b"%PDF-1.4 test", "application/pdf")],
            today=dt.date.today(),
            number=number,
        )
    )


async def test_a_dropped_file_is_taken_only_once_it_has_settled(spool: Spool) -> None:
    """A file is left alone while it may still be written, then taken, sent and removed."""
    async with spool.store:
        path = spool.root / "outbox" / "a.xml"
        path.write_bytes(_document([FAR], "1"))
        assert await spool.scan_outbox() == 0  # first sight: not settled yet
        spool.clock.now += 1  # type: ignore[attr-defined]
        assert await spool.scan_outbox() == 0
        spool.clock.now += 2  # type: ignore[attr-defined]
        assert await spool.scan_outbox() == 1
        assert not path.exists()
        summary = await spool.store.queue_summary(spool.clock())
        assert summary.transfers.get(TransferState.QUEUED, 0) == 1


async def test_a_file_that_grows_is_not_taken(spool: Spool) -> None:
    """A file whose size changed since the last scan starts its settling time again."""
    async with spool.store:
        path = spool.root / "outbox" / "b.xml"
        data = _document([FAR], "2")
        path.write_bytes(data[:100])
        await spool.scan_outbox()
        spool.clock.now += 5  # type: ignore[attr-defined]
        path.write_bytes(data)
        assert await spool.scan_outbox() == 0
        assert path.exists()


async def test_temporary_names_are_ignored(spool: Spool) -> None:
    """Dot files and .tmp/.part files are never taken."""
    async with spool.store:
        for name in (".c.xml", "c.xml.tmp", "c.xml.part"):
            (spool.root / "outbox" / name).write_bytes(_document([FAR], "3"))
        await spool.scan_outbox()
        spool.clock.now += 10  # type: ignore[attr-defined]
        assert await spool.scan_outbox() == 0


async def test_a_refused_package_goes_to_rejected_with_an_error_file(spool: Spool) -> None:
    """An invalid package is moved to rejected/ beside a .error file naming each problem."""
    async with spool.store:
        (spool.root / "outbox" / "bad.xml").write_bytes(b"<edXML><not-a-package/></edXML>")
        await spool.scan_outbox()
        spool.clock.now += 3  # type: ignore[attr-defined]
        await spool.scan_outbox()
        assert (spool.root / "rejected" / "bad.xml").exists()
        error = (spool.root / "rejected" / "bad.xml.error").read_text()
        assert error.strip()
        assert "edXML" in error or "MessageHeader" in error or "Envelope" in error


async def test_deliveries_and_statuses_are_exported_and_acknowledged(spool: Spool) -> None:
    """A document for an agency this node serves lands in inbox/ with its attachment extracted
    under a safe name; the status 01 it causes lands in status/; both leave the pending list."""
    async with spool.store:
        await spool.processor.submit(_document([DEPARTMENT], "4"))
        assert await spool.export_inbox() == 2
        assert await spool.store.inbox_list(pending=True) == []
        (document,) = (spool.root / "inbox").glob("*.xml")
        assert document.read_bytes().startswith(b"<?xml")
        folder = document.with_suffix("")
        assert [p.name for p in folder.iterdir()] == ["Cong_van_so_1.pdf"]
        (status,) = (spool.root / "status").glob("*.xml")
        assert ".01." in status.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("Công văn đến.pdf", "Cong_van_den.pdf"),
        ("...", "file"),
        ("a/b\\c:d", "a_b_c_d"),
    ],
)
def test_safe_names_stay_in_their_folder(text: str, expected: str) -> None:
    """Path separators, parent references and marks are removed from file names."""
    assert safe_name(text) == expected
