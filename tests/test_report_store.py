"""The report over real SQLite stores filled by real processors, whose figures are known.

Two nodes of the four-tier directory, each a :class:`Processor` over its own SQLite store with
a hand-moved clock and real EC keys: the province node (which also serves its department)
and a far commune's node. Packages move between them by taking each transfer from the
sender's store and handing it to the receiver's (``receive`` then ``process_received``), at
chosen times, so every status 01 and 02 is a real signed status package verified on arrival.
The run, in October 2026 (Vietnam time):

==  ======================  =============  ==========================================
A   province -> department  05/10 09:00    delivered here: 01 at once (0 s, same day)
B   province -> commune     05/10 10:00    01 back at 11:00 (1 h, same day)
C   province -> commune     06/10 23:00    01 back at 07/10 01:00 (2 h, next day)
D   province -> commune     08/10 09:00    changed on the way: quarantined, 02 back
E   province -> commune     20/10 09:00    still queued: no answer
F   department -> commune   10/10 08:00    01 back at 08:20 (20 min, same day)
G   province -> commune     30/09 20:00    before the period: not counted anywhere
H   commune -> province     12/10 14:00    verified 14:05; 01 reaches the commune 13/10 08:00
I   commune -> department   12/10 15:00    changed on the way: quarantined, 02 back
==  ======================  =============  ==========================================
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Clock
from lxml import html as lxml_html

from lienthong.cli import main
from lienthong.devnet.network import topology_text
from lienthong.directory import Directory
from lienthong.edxml import build, new_edoc
from lienthong.processing import Processor
from lienthong.receipts import VIETNAM
from lienthong.report import Period, compute, read_node, served_by
from lienthong.report.charts import SENT_COLOUR
from lienthong.report.figures import AgencyFigures, Report
from lienthong.store import PackageMeta, SqliteStore
from lienthong.trust import SigningIdentity, TrustStore
from lienthong.trust.pki import issue_agency, make_ca

PROVINCE, DEPT, FAR = "000.00.00.H49", "000.00.01.H49", "000.03.07.H41"
NATIONAL, FAR_DISTRICT = "000.00.00.G22", "000.00.07.H41"
OCTOBER = Period(dt.date(2026, 10, 1), dt.date(2026, 10, 31))
SUBJECT = "Báo cáo tháng"


def at(day: int, hour: int, minute: int = 0, month: int = 10) -> float:
    """An instant of 2026 in Vietnam local time."""
    return dt.datetime(2026, month, day, hour, minute, tzinfo=VIETNAM).timestamp()


@dataclass
class Side:
    """One node of the run: its code, processor, store and clock, and the neighbour
    packages come to it from."""

    code: str
    processor: Processor
    store: SqliteStore
    clock: Clock
    via: str

    async def submit(self, sender: str, to: str, number: str, when: float) -> None:
        """Submit a fresh document from ``sender`` to ``to`` at ``when``."""
        self.clock.now = when
        day = dt.datetime.fromtimestamp(when, VIETNAM).date()
        pkg = new_edoc(
            from_code=sender,
            to_codes=[to],
            subject=SUBJECT,
            attachments=[("bao-cao.txt", f"Văn bản {number}".encode(), "text/plain")],
            today=day,
            number=number,
        )
        await self.processor.submit(build(pkg))


async def hand_over(src: Side, dst: Side, when: float, *, change: bool = False) -> None:
    """Every transfer ``src`` has queued reaches ``dst`` at ``when`` (its content changed on
    the way if ``change``), and ``dst`` acts on it."""
    while (lease := await src.store.lease_transfer(None, src.clock())) is not None:
        data = await src.store.read_package(lease.package_id)
        await src.store.ack(lease.transfer_id, lease.sha256, src.clock())
        if change:
            data = data.replace(SUBJECT.encode(), "Báo cáo khác".encode())
        sender = (await src.store.get_package(lease.package_id)).meta.sender
        meta = PackageMeta.for_bytes(data, lease.document_id, lease.kind, sender, lease.recipients)
        dst.clock.now = when
        result = await dst.store.receive(lease.transfer_id, data, meta, dst.via, when)
        await dst.processor.process_received(result.package_id)


async def exchange(
    src: Side,
    dst: Side,
    sender: str,
    number: str,
    sent: float,
    arrives_after_min: int,
    answered_after_min: int,
    *,
    change: bool = False,
    to: str = "",
) -> None:
    """``sender`` at ``src`` sends document ``number`` at ``sent`` to ``to`` (default: the
    agency of ``dst``); it reaches ``dst`` that many minutes later, and the status answering
    it reaches ``src`` ``answered_after_min`` minutes after ``sent``."""
    await src.submit(sender, to or dst.code, number, sent)
    await hand_over(src, dst, sent + 60 * arrives_after_min, change=change)
    await hand_over(dst, src, sent + 60 * answered_after_min)


def _side(code: str, state: Path, ca_pem: bytes, key_cert: tuple[bytes, bytes], via: str) -> Side:
    directory = Directory.from_mapping(tomllib.loads(topology_text("four-tier")))
    clock = Clock(at(1, 0))
    store = SqliteStore(state)
    processor = Processor(
        me=code,
        directory=directory,
        identity=SigningIdentity.from_pem(*key_cert),
        trust=TrustStore.from_pem([ca_pem]),
        store=store,
        clock=clock,
    )
    return Side(code, processor, store, clock, via)


async def _run(root: Path) -> None:
    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ca = make_ca("report test CA", key_type="ec", not_before=since)
    pairs = {c: issue_agency(ca, c, key_type="ec", not_before=since) for c in (PROVINCE, FAR)}
    prov, far = (
        _side(c, root / c, ca.cert_pem(), (pairs[c].key_pem(), pairs[c].cert_pem()), via)
        for c, via in ((PROVINCE, NATIONAL), (FAR, FAR_DISTRICT))
    )
    async with prov.store, far.store:
        await exchange(prov, far, PROVINCE, "90", at(30, 20, month=9), 10, 20)  # G
        await prov.submit(PROVINCE, DEPT, "1", at(5, 9))  # A
        await exchange(prov, far, PROVINCE, "2", at(5, 10), 20, 60)  # B
        await exchange(prov, far, PROVINCE, "3", at(6, 23), 30, 120)  # C
        await exchange(prov, far, PROVINCE, "4", at(8, 9), 10, 30, change=True)  # D
        await exchange(prov, far, DEPT, "6", at(10, 8), 10, 20)  # F
        await exchange(far, prov, FAR, "8", at(12, 14), 5, 18 * 60)  # H
        await exchange(far, prov, FAR, "9", at(12, 15), 5, 30, change=True, to=DEPT)  # I
        await prov.submit(PROVINCE, FAR, "5", at(20, 9))  # E: stays queued


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding both nodes' state (``<code>/``) and their config files."""
    root = tmp_path_factory.mktemp("report-run")
    asyncio.run(_run(root))
    directory = root / "directory.toml"
    directory.write_text(topology_text("four-tier"), encoding="utf-8")
    for code in (PROVINCE, FAR):
        (root / f"{code}.toml").write_text(
            f'[node]\ncode = "{code}"\nstate_dir = "{root / code}"\ndirectory = "{directory}"\n',
            encoding="utf-8",
        )
    return root


def configs(root: Path) -> list[str]:
    """``--config`` arguments for both nodes."""
    return [arg for code in (PROVINCE, FAR) for arg in ("--config", str(root / f"{code}.toml"))]


EXPECTED = {
    # agency: sent, signed, verified, quarantined, confirmed, same day, times, refusals
    PROVINCE: (5, 5, 1, 0, 3, 2, (0.0, 3600.0, 7200.0), {"signature": 1}),
    DEPT: (1, 1, 1, 1, 1, 1, (1200.0,), {}),
    FAR: (2, 2, 3, 1, 1, 0, (64800.0,), {"signature": 1}),
}


def _as_expected(row: AgencyFigures) -> tuple[object, ...]:
    refusals = {k: v for k, v in row.refusals.items() if v}
    return (
        row.sent,
        row.sent_signed,
        row.received_verified,
        row.received_quarantined,
        row.confirmed,
        row.confirmed_same_day,
        row.times_to_01,
        refusals,
    )


async def _report(root: Path) -> Report:
    directory = Directory.from_mapping(tomllib.loads(topology_text("four-tier")))
    records = []
    for code in (PROVINCE, FAR):
        async with SqliteStore(root / code) as store:
            records.append(await read_node(store, code, served_by(directory, code), OCTOBER))
    return compute(OCTOBER, records)


async def test_figures_from_real_stores_match_the_known_run(run: Path) -> None:
    """Read through the store API, the two nodes give exactly the run's figures per agency:
    the document before the period, the one still queued and the changed ones land where
    they should."""
    report = await _report(run)
    assert [r.agency for r in report.agencies] == [PROVINCE, DEPT, FAR]
    assert {r.agency: _as_expected(r) for r in report.agencies} == EXPECTED
    province = report.agencies[0]
    assert (province.same_day_share, province.median_to_01, province.p95_to_01) == (
        0.4,
        3600.0,
        7200.0,
    )
    assert report.total.sent == 8
    assert report.total.received == 7


def test_cli_csv_has_the_known_rows(run: Path, tmp_path: Path) -> None:
    """``lienthong report --format csv -o FILE`` over both configs writes one row per agency
    with the run's figures, names from the directory, and a byte-order mark for spreadsheets."""
    out = tmp_path / "october.csv"
    status = main(
        ["report", "--from", "2026-10-01", "--to", "2026-10-31", *configs(run), "-o", str(out)]
    )
    assert status == 0
    raw = out.read_bytes()
    assert raw.startswith("\ufeff".encode())
    rows = {r["agency"]: r for r in csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))}
    assert list(rows) == [PROVINCE, DEPT, FAR]
    p = rows[PROVINCE]
    assert p["name"] == "UBND tỉnh Quảng Nam"
    assert (p["period_from"], p["period_to"]) == ("2026-10-01", "2026-10-31")
    assert (p["sent"], p["sent_signed"], p["signed_share"]) == ("5", "5", "1.0000")
    assert (p["same_day_share"], p["median_to_01_s"], p["p95_to_01_s"]) == (
        "0.4000",
        "3600",
        "7200",
    )
    assert (p["refused"], p["refused_signature"], p["refused_other"]) == ("1", "1", "0")
    d = rows[DEPT]
    assert (d["received"], d["received_verified"], d["received_quarantined"]) == ("2", "1", "1")
    assert d["verified_share"] == "0.5000"
    f = rows[FAR]
    assert (f["confirmed"], f["confirmed_same_day"], f["median_to_01_s"]) == ("1", "0", "64800")


def test_cli_refuses_a_backwards_period_and_a_missing_store(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A period ending before it starts, and a node without a store, are one-line errors."""
    assert main(["report", "--from", "2026-10-31", "--to", "2026-10-01", *configs(run)]) == 1
    assert "ends (2026-10-01) before it starts (2026-10-31)" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text(
        f'[node]\ncode = "{PROVINCE}"\nstate_dir = "{tmp_path / "none"}"\n'
        f'directory = "{run / "directory.toml"}"\n',
        encoding="utf-8",
    )
    assert (
        main(["report", "--from", "2026-10-01", "--to", "2026-10-31", "--config", str(empty)]) == 1
    )
    assert "no store database in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--from", "1/10/2026", "--to", "2026-10-31"])
    assert "not a date (yyyy-mm-dd): '1/10/2026'" in capsys.readouterr().err


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, on ``url`` with ``extra`` flags."""
    command = [
        "chromium",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--window-size=1280,1600",
        *extra,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def browser() -> str:
    """The chromium binary; the test is skipped, saying why, where it is not installed."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return path


def test_html_report_in_chromium_shows_the_known_figures(
    run: Path, tmp_path: Path, browser: str
) -> None:
    """The HTML page, opened in headless Chromium, shows the period, the nodes and the run's
    figures in its table; its screenshot has the charts drawn."""
    page = tmp_path / "october.html"
    args = ["report", "--from", "2026-10-01", "--to", "2026-10-31", "--format", "html"]
    assert main([*args, *configs(run), "-o", str(page)]) == 0
    shot = tmp_path / "october.png"
    chromium(tmp_path, page.as_uri(), f"--screenshot={shot}")
    dom = lxml_html.fromstring(chromium(tmp_path, page.as_uri(), "--dump-dom").stdout)

    def cell(agency: str, key: str) -> str:
        found = dom.xpath(f'//table[@id="figures"]//td[@data-agency="{agency}"][@data-key="{key}"]')
        assert len(found) == 1, (agency, key)
        return str(found[0].text_content())

    assert dom.findtext(".//strong[@id='period']") == "01/10/2026 – 31/10/2026"
    assert dom.findtext(".//strong[@id='nodes']") == (
        "UBND tỉnh Quảng Nam (000.00.00.H49); UBND xã Diên An (000.03.07.H41)"
    )
    assert [cell(PROVINCE, k) for k in ("sent", "signed_share", "same_day_share")] == [
        "5",
        "100 %",
        "40 %",
    ]
    assert [cell(PROVINCE, k) for k in ("median_to_01_s", "p95_to_01_s", "refused")] == [
        "1 giờ",
        "2 giờ",
        "1",
    ]
    assert [cell(DEPT, k) for k in ("received", "verified_share", "received_quarantined")] == [
        "2",
        "50 %",
        "1",
    ]
    assert [cell(FAR, k) for k in ("median_to_01_s", "same_day_share")] == ["18 giờ", "0 %"]
    assert [cell("", k) for k in ("sent", "received", "same_day_share")] == ["8", "7", "37,5 %"]
    assert len(dom.xpath("//figure/*[local-name()='svg']")) == 3
    assert _pixels_of(shot, SENT_COLOUR) > 500  # the bars were drawn


def _pixels_of(png: Path, colour: str) -> int:
    """How many pixels of the image ``png`` have the colour ``#rrggbb`` (within a little)."""
    from PIL import Image

    want = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    with Image.open(png) as image:
        data = image.convert("RGB").tobytes()
    pixels = (data[i : i + 3] for i in range(0, len(data), 3))
    return sum(1 for p in pixels if all(abs(a - b) <= 6 for a, b in zip(p, want, strict=True)))
