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


def _tick(spool: Spool, seconds: float) -> None:
    spool.clock.now += seconds  # type: ignore[attr-defined]


async def _queued(spool: Spool) -> int:
    summary = await spool.store.queue_summary(spool.clock())
    return summary.transfers.get(TransferState.QUEUED, 0)


async def test_a_closed_file_is_taken_sent_and_removed(spool: Spool) -> None:
    """A file whose writer has closed it is taken at the next scan, sent and removed."""
    async with spool.store:
        path = spool.root / "outbox" / "a.xml"
        path.write_bytes(_document([FAR], "1"))
        assert await spool.scan_outbox() == 1
        assert not path.exists()
        assert await _queued(spool) == 1


async def test_a_writer_that_pauses_is_not_read_half_written(spool: Spool) -> None:
    """A file still open by its writer is never taken, however long the writer pauses; it is
    taken once closed."""
    async with spool.store:
        data = _document([FAR], "2")
        with (spool.root / "outbox" / "b.xml").open("wb") as writer:
            writer.write(data[:100])
            writer.flush()
            assert await spool.scan_outbox() == 0
            _tick(spool, 3600)
            assert await spool.scan_outbox() == 0
            writer.write(data[100:])
        assert await spool.scan_outbox() == 1
        assert list((spool.root / "rejected").iterdir()) == []
        assert await _queued(spool) == 1


async def test_a_file_renamed_into_the_outbox_is_taken(spool: Spool) -> None:
    """The write-then-rename contract: written under a temporary name, renamed when whole."""
    async with spool.store:
        temporary = spool.root / "outbox" / ".c.xml.tmp"
        temporary.write_bytes(_document([FAR], "3"))
        assert await spool.scan_outbox() == 0
        temporary.rename(spool.root / "outbox" / "c.xml")
        assert await spool.scan_outbox() == 1


async def test_files_found_at_start_wait_until_they_settle(
    tmp_path: Path, province: Processor
) -> None:
    """A file there before the daemon started is taken only once unchanged for settle_s."""
    (tmp_path / "spool" / "outbox").mkdir(parents=True)
    (tmp_path / "spool" / "outbox" / "d.xml").write_bytes(_document([FAR], "4"))
    spool = Spool(tmp_path / "spool", province, province.store, clock=province.clock)
    async with spool.store:
        assert await spool.scan_outbox() == 0
        _tick(spool, 3)
        assert await spool.scan_outbox() == 1


async def test_temporary_names_are_ignored(spool: Spool) -> None:
    """Dot files and .tmp/.part files are never taken."""
    async with spool.store:
        for name in (".c.xml", "c.xml.tmp", "c.xml.part"):
            (spool.root / "outbox" / name).write_bytes(_document([FAR], "3"))
        await spool.scan_outbox()
        _tick(spool, 10)
        assert await spool.scan_outbox() == 0


async def test_a_refused_package_goes_to_rejected_with_an_error_file(spool: Spool) -> None:
    """An invalid package is moved to rejected/ beside a .error file naming each problem."""
    async with spool.store:
        (spool.root / "outbox" / "bad.xml").write_bytes(b"<edXML><not-a-package/></edXML>")
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
        assert [p.name for p in (spool.root / "inbox").iterdir() if p.name.startswith(".")] == []
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


# -- faults and attacks (issue 13, items 10-13) ------------------------------------------------


async def test_a_long_file_name_never_stops_the_spool(spool: Spool) -> None:
    """A 250-byte name (a Vietnamese title) is rejected with its .error beside it, the file
    next to it is still sent, and the spool stays healthy."""
    async with spool.store:
        long_name = ("Công văn về việc báo cáo tình hình " * 8).encode()[:246].decode(
            errors="ignore"
        ) + ".xml"
        assert len(long_name.encode()) > 240
        (spool.root / "outbox" / long_name).write_bytes(b"<edXML><broken/></edXML>")
        (spool.root / "outbox" / "good.xml").write_bytes(_document([FAR], "5"))
        assert await spool.scan_outbox() == 2
        rejected = sorted(p.name for p in (spool.root / "rejected").iterdir())
        assert len(rejected) == 2
        assert all(len(name.encode()) <= 255 for name in rejected)
        assert rejected[1] == rejected[0] + ".error"
        assert await _queued(spool) == 1
        assert spool.check().ok


async def test_a_failing_file_shows_in_the_health_check(spool: Spool) -> None:
    """A file that cannot be taken is reported by check() (so /healthz) until it goes through,
    and the other files are taken meanwhile."""
    async with spool.store:
        (spool.root / "outbox" / "x.xml").write_bytes(_document([FAR], "6"))
        taken = spool.root / "outbox" / ".taken"
        taken.rmdir()
        taken.write_bytes(b"")  # the taken folder replaced by a file: every take fails
        await spool.scan_once()
        check = spool.check()
        assert not check.ok
        assert "outbox/x.xml" in check.reason
        taken.unlink()
        taken.mkdir()
        (spool.root / "outbox" / "x.xml").touch()  # closed again: whole
        await spool.scan_once()
        assert spool.check().ok
        assert await _queued(spool) == 1


async def test_two_documents_with_one_document_id_are_kept_apart(spool: Spool) -> None:
    """A corrected re-send with the same DocumentId gets its own file and folder: nothing is
    overwritten, no attachment lands in the other's folder."""
    async with spool.store:
        await spool.processor.submit(_document([DEPARTMENT], "7", "first.pdf"))
        await spool.processor.submit(_document([DEPARTMENT], "7", "second.pdf"))
        entries = [e for e in await spool.store.inbox_list(pending=True) if e.kind == "edoc"]
        assert len({e.document_id for e in entries}) == 1
        assert len(entries) == 2
        await spool.export_inbox()
        documents = sorted((spool.root / "inbox").glob("*.xml"))
        assert len(documents) == 2
        folders = [sorted(p.name for p in d.with_suffix("").iterdir()) for d in documents]
        assert sorted(folders) == [["first.pdf"], ["second.pdf"]]


async def test_a_link_in_the_outbox_is_refused_not_followed(spool: Spool, tmp_path: Path) -> None:
    """A symbolic link in outbox/ to a private file: the file is not signed or sent; the link
    goes to rejected/ with the reason, the private file stays."""
    async with spool.store:
        private = tmp_path / "private.xml"
        private.write_bytes(_document([FAR], "8"))
        (spool.root / "outbox" / "link.xml").symlink_to(private)
        await spool.scan_outbox()
        _tick(spool, 10)
        await spool.scan_outbox()
        assert await _queued(spool) == 0
        assert (spool.root / "rejected" / "link.xml").is_symlink()
        assert "symbolic link" in (spool.root / "rejected" / "link.xml.error").read_text()
        assert private.exists()


async def test_a_link_planted_in_the_inbox_is_never_written_through(
    spool: Spool, tmp_path: Path
) -> None:
    """Links planted where the document and its attachments would go: nothing is written
    outside the spool, the entry stays pending and the fault is reported."""
    async with spool.store:
        await spool.processor.submit(_document([DEPARTMENT], "9"))
        [entry] = [e for e in await spool.store.inbox_list(pending=True) if e.kind == "edoc"]
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        for stem in (
            safe_name(f"{entry.document_id}.{entry.recipient}"),
            safe_name(f"{entry.entry_id}.{entry.document_id}.{entry.recipient}"),
        ):
            (spool.root / "inbox" / stem).symlink_to(elsewhere)
            (spool.root / "inbox" / f"{stem}.xml").symlink_to(elsewhere / "doc.xml")
        await spool.scan_once()
        assert list(elsewhere.iterdir()) == []
        assert entry.entry_id in [e.entry_id for e in await spool.store.inbox_list(pending=True)]
        assert not spool.check().ok


async def test_a_large_package_goes_through_the_spool_in_pieces(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above the large-package size, a file dropped in outbox/ is submitted from its file, and
    a delivery lands in inbox/ copied in pieces with its attachment decoded to its own file,
    byte for byte."""
    for module in ("lienthong.processing", "lienthong.gateway.spool"):
        monkeypatch.setattr(f"{module}.LARGE_PACKAGE", 1000)
    attachment = bytes(range(256)) * 300
    data = build(
        new_edoc(
            from_code=PROVINCE,
            to_codes=[DEPARTMENT],
            subject="Hồ sơ lớn",
            attachments=[("scan.pdf", attachment, "application/pdf")],
            today=dt.date.today(),
            number="9",
        )
    )
    async with spool.store:
        (spool.root / "outbox" / "big.xml").write_bytes(data)
        assert await spool.scan_outbox() == 1
        assert await spool.export_inbox() == 2
        (document,) = (spool.root / "inbox").glob("*.xml")
        assert (document.with_suffix("") / "scan.pdf").read_bytes() == attachment
        assert b"<Signature" in document.read_bytes() or b":Signature" in document.read_bytes()
        assert [p.name for p in (spool.root / "inbox").iterdir() if p.name.startswith(".")] == []
