"""The status page on a real daemon: opened in headless Chromium (screenshot, figures read from
the rendered DOM after its live refresh), its JSON, and the requeue endpoint, which takes only
a same-origin POST carrying the page's token.

The scene: a province node sent one document to the national node (delivered, status 01
back), then the national daemon was stopped and a second document was dead-lettered after its
two attempts.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PROVINCE
from lxml import html as lxml_html
from test_metrics import (
    NATIONAL,
    Samples,
    document,
    http,
    running,
    scrape,
    submit,
    value,
    wait_for,
)
from test_report_store import CHROMIUM_FLAGS

from lienthong.devnet.network import Network
from lienthong.statuspage import TOKEN_HEADER
from lienthong.statuspage.render import SECTIONS, page, sections
from lienthong.statuspage.snapshot import DocumentRow, Snapshot, take_snapshot
from lienthong.store import PackageMeta, PackageState, SqliteStore
from lienthong.store.model import DeadLetter, PackageRecord, Receipt

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEAD = "lienthong_dead_letters"
FAILURES = "lienthong_transfer_failures_total"


@dataclass
class Scene:
    """The network and what happened in it."""

    net: Network
    delivered: str  # DocumentId of the document that got its status 01
    dead: str  # DocumentId of the dead-lettered one

    @property
    def base(self) -> str:
        """The province node's local server."""
        return f"http://127.0.0.1:{self.net.nodes[PROVINCE].api_port}"


def _dead_letters(net: Network) -> float:
    return value(scrape(net, PROVINCE), DEAD, kind="transfer")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    """One delivered document and one dead letter at the province node."""
    with running(tmp_path_factory.mktemp("statuspage-net")) as net:
        e2e = "lienthong_end_to_end_latency_seconds_count"
        submit(net, PROVINCE, document(PROVINCE, [NATIONAL], "301"))
        wait_for("status 01", lambda: value(scrape(net, PROVINCE), e2e) == 1, net)
        net.nodes[NATIONAL].stop()
        submit(net, PROVINCE, document(PROVINCE, [NATIONAL], "302"))
        wait_for("a dead letter", lambda: _dead_letters(net) == 1, net)
        day = _document_day(net)
        yield Scene(net, f"{PROVINCE},{day},301/UBND-VP", f"{PROVINCE},{day},302/UBND-VP")


def _document_day(net: Network) -> str:
    status, body = http(net, PROVINCE, "/status.json")
    assert status == 200
    ids = [d["record"]["meta"]["document_id"] for d in json.loads(body)["data"]["documents"]]
    return str(ids[0].split(",")[1])


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with a fresh profile; skip when it is not installed."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    return subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            "--window-size=1280,900",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_page_in_chromium_shows_links_queues_documents_and_dead_letters(
    scene: Scene, tmp_path: Path
) -> None:
    """Chromium renders the page (screenshot taken) and, after the script's live refresh, the
    DOM shows the link up, the dead transfer in the queue and the summary, the status 01 of
    the first document, and a requeue button for the second."""
    shot = tmp_path / "status.png"
    taken = chromium(tmp_path, f"--screenshot={shot}", f"{scene.base}/")
    assert shot.exists(), taken.stderr
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (1280, 900)
    assert len(png) > 20_000  # a blank page of that size is a few kilobytes
    # Virtual time lets the script's refreshes (immediately, then every 5 s) run first.
    dumped = chromium(tmp_path, "--virtual-time-budget=7000", "--dump-dom", f"{scene.base}/")
    dom = lxml_html.fromstring(dumped.stdout)
    assert int(dom.body.get("data-refreshes")) >= 1

    def one(xpath: str) -> lxml_html.HtmlElement:
        found = dom.xpath(xpath)
        assert len(found) == 1, (xpath, dumped.stdout[:2000])
        return found[0]

    assert one('//td[@data-link="parent"]').get("data-state") == "up"
    assert one('//*[@data-figure="links-up"]').get("data-value") == "1"
    assert one('//*[@data-figure="dead-letters"]').get("data-value") == "1"
    hop = one(f'//tr[@data-hop="{NATIONAL}"]')
    assert (hop.get("data-queued"), hop.get("data-dead")) == ("0", "1")
    delivered = one(f'//tr[@data-document="{scene.delivered}"]')
    assert delivered.xpath('.//li[@data-level="status"]/@data-code') == ["01"]
    assert delivered.xpath('.//li[@data-level="hop"]')
    button = one("//button[@data-requeue]")
    assert button.get("data-document") == scene.dead
    row = one(f'//tr[@data-dead="{button.get("data-requeue")}"]')
    assert "gave up after 2 attempts" in row.text_content()


def test_status_json_has_the_data_and_the_fragments(scene: Scene) -> None:
    """status.json gives the snapshot's data and one HTML fragment per part of the page."""
    status, body = http(scene.net, PROVINCE, "/status.json")
    assert status == 200
    reply = json.loads(body)
    assert set(reply["html"]) == set(SECTIONS)
    data = reply["data"]
    assert [(link["name"], link["state"]) for link in data["links"]] == [("parent", "up")]
    assert data["dead_total"] == 1
    ids = {d["record"]["meta"]["document_id"] for d in data["documents"]}
    assert ids == {scene.delivered, scene.dead}


def _token(scene: Scene) -> str:
    status, body = http(scene.net, PROVINCE, "/")
    assert status == 200
    meta = lxml_html.fromstring(body).xpath('//meta[@name="lienthong-token"]/@content')
    return str(meta[0])


def _requeue_id(scene: Scene) -> str:
    status, body = http(scene.net, PROVINCE, "/status.json")
    assert status == 200
    return str(json.loads(body)["data"]["dead_letters"][0]["id"])


def _post(scene: Scene, body: bytes, **headers: str) -> tuple[int, str]:
    status, reply = http(scene.net, PROVINCE, "/requeue", method="POST", body=body, headers=headers)
    return status, json.loads(reply)["error"] if status != 200 else reply.decode()


def test_requeue_refuses_requests_that_do_not_come_from_the_page(scene: Scene) -> None:
    """GET, a missing token, another origin or site, another host name, a body that is not
    JSON and an unknown id are each refused with their reason; the dead letter stays."""
    token = _token(scene)
    body = json.dumps({"id": _requeue_id(scene)}).encode()
    good = {TOKEN_HEADER: token, "Content-Type": "application/json"}
    status, reply = http(scene.net, PROVINCE, "/requeue")
    assert status == 405
    assert json.loads(reply)["error"] == "requeue takes a POST from the status page"
    cases = [
        ({"Content-Type": "application/json"}, body, 403, f"{TOKEN_HEADER} header"),
        ({**good, TOKEN_HEADER: token[:-1] + "x"}, body, 403, "missing or wrong"),
        ({**good, "Origin": "http://example.org"}, body, 403, "another origin"),
        ({**good, "Sec-Fetch-Site": "cross-site"}, body, 403, "cross-site page"),
        ({**good, "Host": "lienthong.example.org"}, body, 403, "not one of"),
        ({**good, "Content-Type": "text/plain"}, body, 415, "must be JSON"),
        (good, b"{not json", 400, "not JSON"),
        (good, b'{"id": "nothing-dead"}', 404, "nothing-dead"),
    ]
    for headers, data, want_status, want_reason in cases:
        status, reason = _post(scene, data, **headers)
        assert (status, want_reason in reason) == (want_status, True), (headers, reason)
    assert _dead_letters(scene.net) == 1


def test_requeue_from_the_page_sends_the_dead_letter_again(scene: Scene) -> None:
    """A same-origin POST with the page's token requeues the dead transfer: the node tries it
    again (its neighbour still down, it fails twice more and is dead-lettered again)."""
    before: Samples = scrape(scene.net, PROVINCE)
    item = _requeue_id(scene)
    status, reply = _post(
        scene,
        json.dumps({"id": item}).encode(),
        **{
            TOKEN_HEADER: _token(scene),
            "Content-Type": "application/json",
            "Origin": scene.base,
            "Sec-Fetch-Site": "same-origin",
        },
    )
    assert status == 200
    assert json.loads(reply) == {"requeued": 1, "id": item}
    dead_before = value(before, FAILURES, neighbour=NATIONAL, outcome="dead")
    wait_for(
        "the requeued transfer to be tried and dead-lettered again",
        lambda: (
            value(scrape(scene.net, PROVINCE), FAILURES, neighbour=NATIONAL, outcome="dead")
            == dead_before + 1
        ),
        scene.net,
    )
    assert _dead_letters(scene.net) == 1


def test_values_from_peers_are_escaped(tmp_path: Path) -> None:
    """A DocumentId, a reason or a receipt detail holding markup is shown as text, never as
    markup: document ids come from other agencies' packages."""
    evil = '<script>alert("x")</script>'
    snapshot = Snapshot(
        node=PROVINCE,
        at=1_800_000_000.0,
        links=(),
        queues=(),
        oldest_waiting=None,
        packages={},
        intake_blocked=None,
        documents=(
            DocumentRow(
                PackageRecord(
                    package_id="p1",
                    meta=PackageMeta(evil, "edoc", PROVINCE, (evil,), "0" * 64, 1),
                    state=PackageState.ROUTED,
                    from_peer=evil,
                    created_at=1.0,
                    updated_at=1.0,
                    reason=evil,
                ),
                (Receipt(evil, "status", "01", evil, 2.0, evil),),
                (f"edXMLEnvelope/edXMLHeader/MessageHeader/DocumentId: {evil} [document_id]",),
            ),
        ),
        dead_letters=(DeadLetter("transfer", evil, "p1", evil, evil, 3, evil, 1.0),),
        dead_total=1,
    )
    rendered = page(snapshot, token="t")
    assert evil not in rendered
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in rendered
    dom = lxml_html.fromstring(rendered)
    assert len(dom.xpath("//script")) == 1  # the page's own script only
    shown = dom.xpath('//details[@class="deviations"]')
    assert len(shown) == 1
    assert "1 deviation(s) from QCVN 102" in shown[0].text_content()
    assert f"DocumentId: {evil} [document_id]" in shown[0].text_content()


async def test_a_hundred_neighbours_stay_readable_and_a_former_one_is_marked(
    tmp_path: Path,
) -> None:
    """At a node with 130 neighbours (a state-sized national node), only hops with something
    waiting get rows; the idle ones are one collapsed line; a hop that the directory in force
    no longer names keeps its row, marked, while transfers wait for it."""
    neighbours = [f"000.00.00.H{n:02d}" for n in range(1, 100)]
    neighbours += [f"000.00.00.G{n:02d}" for n in range(1, 32)]
    former = "000.00.05.H49"
    async with SqliteStore(tmp_path / "state") as store:
        meta = PackageMeta.for_bytes(b"x", "d1", "edoc", PROVINCE, [NATIONAL])
        package_id, _ = await store.put_package(b"x", meta, 1.0)
        await store.enqueue(package_id, {former: [NATIONAL], neighbours[0]: [NATIONAL]}, 1.0)
        snapshot = await take_snapshot(
            node=PROVINCE, store=store, links={}, hops=neighbours, recent=(), now=2.0
        )
    assert len(snapshot.queues) == 131
    dom = lxml_html.fromstring(sections(snapshot)["queues"])
    rows = {r.get("data-hop"): r.get("data-neighbour") for r in dom.xpath("//tr[@data-hop]")}
    assert rows == {former: "no", neighbours[0]: "yes"}
    assert "no longer a neighbour" in dom.xpath(f'//tr[@data-hop="{former}"]')[0].text_content()
    idle = dom.xpath("//details[@class='idle']")[0]
    assert "129 more neighbours with nothing waiting" in idle.text_content()
    assert len(idle.xpath(".//code[@data-idle-hop]")) == 129
