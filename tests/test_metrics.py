"""The node's Prometheus metrics: counted in-process by the processor over a real store, and
scraped from ``/metrics`` of real daemons (lienthong.devnet.Network) while packages flow.

The helpers at the top (a two-node network, scraping, submitting through the office API) are
shared with the health and status-page tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from conftest import PROVINCE
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from test_network import wait_for

from lienthong.devnet.axis_client import Reply
from lienthong.devnet.network import Network
from lienthong.devnet.pki import HOST, DevPki
from lienthong.edxml import build, new_edoc
from lienthong.keyfiles import load_identity
from lienthong.metrics import Metrics
from lienthong.processing import Processor, SubmissionRefused
from lienthong.store import PackageMeta, SqliteStore, Store
from lienthong.trust import TrustStore, sign_package

NATIONAL = "000.00.00.G22"
DEPARTMENT = "000.00.01.H49"  # served by the province node
FAR = "000.03.07.H41"
TWO_NODES = f"""
national = "{NATIONAL}"

[[agency]]
code = "{NATIONAL}"
name = "Văn phòng Chính phủ"
node = true

[[agency]]
code = "{PROVINCE}"
name = "UBND tỉnh Quảng Nam"
node = true
"""
"""The national node (with the broker) and one province node under it."""

FAST = {
    "transfer": {"receipt_timeout_s": 2.0, "poll_s": 0.2},
    "store": {"lease_s": 6.0},
    "store.retry": {"base_delay_s": 0.3, "max_delay_s": 1.0, "max_attempts": 2},
    "daemon": {"drain_grace_s": 2.0},
}

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


# -- shared helpers ------------------------------------------------------------------------------


def two_node_network(root: Path) -> Network:
    """The national and province nodes with quick retries (two attempts, then dead)."""
    return Network(root, TWO_NODES, overrides=FAST)


@contextlib.contextmanager
def running(root: Path) -> Iterator[Network]:
    """A started two-node network, stopped (then killed) on leaving."""
    net = two_node_network(root)
    try:
        net.start()
        yield net
    finally:
        net.stop()
        net.kill()


def http(
    net: Network,
    code: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request to ``code``'s local HTTP server: (status, body), error statuses included."""
    url = f"http://{HOST}:{net.nodes[code].api_port}{path}"
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (local)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(net: Network, code: str) -> Samples:
    """``/metrics`` of ``code``'s daemon."""
    status, body = http(net, code, "/metrics")
    assert status == 200, body
    return parse_samples(body.decode("utf-8"))


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def document(sender: str, recipients: list[str], number: str) -> bytes:
    """An unsigned edoc from ``sender`` with one attachment."""
    return build(
        new_edoc(
            from_code=sender,
            to_codes=recipients,
            subject=f"Văn bản số {number}",
            attachments=[("cong-van.txt", f"Nội dung {number}".encode(), "text/plain")],
            today=dt.date.today(),
            number=number,
            notation="UBND-VP",
        )
    )


def send_edoc(net: Network, code: str, package: bytes) -> Reply:
    """sendEdoc by ``code``'s office software: the reply, success or refusal."""
    reply = asyncio.run(
        net.office(code).send_edoc(
            {"from": code, "servicetype": "eDoc", "messagetype": "edoc"}, package
        )
    )
    assert reply is not None
    return reply


def submit(net: Network, code: str, package: bytes) -> str:
    """sendEdoc that must succeed; the package id the node gives back."""
    reply = send_edoc(net, code, package)
    assert reply.ok, reply.desc
    return str(reply.json["DocId"])


# -- in-process ----------------------------------------------------------------------------------


def test_each_node_counts_in_its_own_registry() -> None:
    """Two Metrics never share a counter, and nothing lands in the process-wide registry."""
    one, two = Metrics(), Metrics()
    one.bytes_in(NATIONAL, 100)
    first = parse_samples(one.render().decode())
    second = parse_samples(two.render().decode())
    assert value(first, "lienthong_bytes_received_total", neighbour=NATIONAL) == 100
    assert value(second, "lienthong_bytes_received_total", neighbour=NATIONAL) == 0
    assert not [m for m in REGISTRY.collect() if m.name.startswith("lienthong")]


def _refusals(processor: Processor, stage: str, reason: str) -> float:
    samples = parse_samples(processor.metrics.render().decode())
    return value(samples, "lienthong_refusals_total", stage=stage, reason=reason)


async def test_submission_refusals_are_grouped_by_reason(province: Processor) -> None:
    """An unroutable recipient, a sender served elsewhere and an invalid package are counted
    under unknown_recipient, other and invalid."""
    invalid = document(PROVINCE, [FAR], "1").replace(
        b"<edXML:PromulgationDate>", b"<edXML:PromulgationDate>30/02/"
    )
    async with province.store:
        for package in (
            document(PROVINCE, ["000.00.09.H49"], "2"),
            document(FAR, [PROVINCE], "3"),
            invalid,
        ):
            with pytest.raises(SubmissionRefused):
                await province.submit(package)
    assert _refusals(province, "submission", "unknown_recipient") == 1
    assert _refusals(province, "submission", "other") == 1
    assert _refusals(province, "submission", "invalid") == 1


async def test_local_delivery_gives_an_end_to_end_sample(province: Processor) -> None:
    """A document for the department served here gets its status 01 at once: one end-to-end
    latency sample, one submission and two local deliveries (the edoc and the status)."""
    async with province.store:
        await province.submit(document(PROVINCE, [DEPARTMENT], "4"))
        await province.submit(document(PROVINCE, [DEPARTMENT], "4"))  # the same again
    samples = parse_samples(province.metrics.render().decode())
    assert value(samples, "lienthong_end_to_end_latency_seconds_count") == 1
    assert value(samples, "lienthong_packages_submitted_total", kind="edoc") == 1
    assert value(samples, "lienthong_packages_delivered_total", kind="edoc") == 1
    assert value(samples, "lienthong_packages_delivered_total", kind="status") == 1


async def _receive(processor: Processor, data: bytes, transfer_id: str) -> str:
    """Store ``data`` as a transfer from the national node and let the processor act on it."""
    meta = PackageMeta.for_bytes(data, f"doc-{transfer_id}", "edoc", FAR, [DEPARTMENT])
    result = await processor.store.receive(transfer_id, data, meta, NATIONAL, processor.clock())
    await processor.process_received(result.package_id)
    return result.package_id


async def test_signature_checks_and_refusals_at_reception(
    province: Processor, tmp_path: Path
) -> None:
    """A well-signed document counts one good check and a delivery; one altered after signing
    counts a refused check and a refusal for its signature."""
    pki = DevPki(tmp_path / "far-pki", key_type="rsa")
    cert, key = pki.client_files(FAR)
    province.trust = TrustStore.from_pem([pki.cafile.read_bytes()])
    identity = load_identity(key, cert)
    good = sign_package(document(FAR, [DEPARTMENT], "7"), identity)
    tampered = sign_package(document(FAR, [DEPARTMENT], "8"), identity).replace(
        "Văn bản số 8".encode(), "Văn bản số 9".encode()
    )
    async with province.store:
        await _receive(province, good, "t-good")
        await _receive(province, tampered, "t-tampered")
    samples = parse_samples(province.metrics.render().decode())
    assert value(samples, "lienthong_signature_checks_total", result="ok") == 1
    assert value(samples, "lienthong_packages_delivered_total", kind="edoc") == 1
    assert value(samples, "lienthong_signature_checks_total", result="refused") == 1
    assert value(samples, "lienthong_refusals_total", stage="reception", reason="signature") == 1
    assert value(samples, "lienthong_refusals_total", stage="reception", reason="invalid") == 0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A store in a temporary folder (opened by the test)."""
    return SqliteStore(tmp_path / "state")


async def test_queue_and_dead_letter_gauges_are_read_from_the_store(
    province: Processor, store: Store
) -> None:
    """After a submission the queue gauge shows it under its next hop with the age of the
    oldest; once expired, the dead-letter gauges count the package and its transfer."""
    province.store = store
    clock = province.clock
    async with store:
        await province.submit(document(PROVINCE, [FAR], "9"))
        clock.now += 42  # type: ignore[attr-defined]
        metrics = province.metrics
        await metrics.refresh(store, {}, [NATIONAL, "000.00.05.H49"], clock())
        queued = parse_samples(metrics.render().decode())
        clock.now += province.max_age_s + 1  # type: ignore[attr-defined]
        await store.expire(clock())
        await metrics.refresh(store, {}, [NATIONAL], clock())
        dead = parse_samples(metrics.render().decode())
    gauge = "lienthong_queue_transfers"
    assert value(queued, gauge, next_hop=NATIONAL, state="queued") == 1
    assert value(queued, gauge, next_hop="000.00.05.H49", state="queued") == 0
    oldest = "lienthong_queue_oldest_waiting_seconds"
    assert value(queued, oldest, next_hop=NATIONAL) == pytest.approx(42)
    assert value(queued, oldest, next_hop="000.00.05.H49") == 0
    assert value(dead, gauge, next_hop=NATIONAL, state="queued") == 0
    assert value(dead, "lienthong_dead_letters", kind="transfer") == 1
    assert value(dead, "lienthong_dead_letters", kind="package") == 1


# -- real daemons --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The two-node network, started once for this module."""
    with running(tmp_path_factory.mktemp("metrics-net")) as network:
        yield network


def test_counters_move_as_a_document_flows(net: Network) -> None:
    """One document from the province to the national node moves, on both sides, the package,
    byte, signature and latency series by exactly what happened, once status 01 is back."""
    before_p, before_n = scrape(net, PROVINCE), scrape(net, NATIONAL)
    e2e = "lienthong_end_to_end_latency_seconds_count"
    submit(net, PROVINCE, document(PROVINCE, [NATIONAL], "101"))
    wait_for(
        "status 01 back at the province",
        lambda: value(scrape(net, PROVINCE), e2e) > value(before_p, e2e),
        net,
    )
    after_p, after_n = scrape(net, PROVINCE), scrape(net, NATIONAL)

    def moved(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(after_p, before_p, "lienthong_packages_submitted_total", kind="edoc") == 1
    sent = "lienthong_packages_sent_total"
    assert moved(after_p, before_p, sent, kind="edoc", neighbour=NATIONAL) == 1
    hop = "lienthong_hop_latency_seconds_count"
    assert moved(after_p, before_p, hop, neighbour=NATIONAL) == 1
    assert moved(after_p, before_p, e2e) == 1
    assert moved(after_p, before_p, "lienthong_end_to_end_latency_seconds_sum") > 0
    received = "lienthong_packages_received_total"
    assert moved(after_p, before_p, received, kind="status", neighbour=NATIONAL) == 1
    assert moved(after_n, before_n, received, kind="edoc", neighbour=PROVINCE) == 1
    assert moved(after_n, before_n, "lienthong_signature_checks_total", result="ok") == 1
    assert moved(after_n, before_n, "lienthong_packages_delivered_total", kind="edoc") == 1
    assert moved(after_n, before_n, sent, kind="status", neighbour=PROVINCE) == 1
    out = moved(after_p, before_p, "lienthong_bytes_sent_total", neighbour=NATIONAL)
    came = moved(after_n, before_n, "lienthong_bytes_received_total", neighbour=PROVINCE)
    assert out > 1000
    assert came >= out  # the frames sent, plus any retransmission
    for samples, link in ((after_p, "parent"), (after_n, "children")):
        links = {k: v for k, v in samples.items() if k[0] == "lienthong_link_up"}
        assert [v for k, v in links.items() if ("link", link) in k[1]] == [1.0]
    queued = "lienthong_queue_transfers"
    assert value(after_p, queued, next_hop=NATIONAL, state="queued") == 0
    assert (queued, frozenset({("next_hop", NATIONAL), ("state", "queued")})) in after_p


def test_a_refused_submission_is_counted_by_reason(net: Network) -> None:
    """sendEdoc for a recipient the directory does not know is refused, and the daemon counts
    one unknown_recipient refusal at submission."""
    name = "lienthong_refusals_total"
    labels = {"stage": "submission", "reason": "unknown_recipient"}
    before = value(scrape(net, PROVINCE), name, **labels)
    reply = send_edoc(net, PROVINCE, document(PROVINCE, ["000.00.00.H41"], "102"))
    assert not reply.ok
    assert "000.00.00.H41" in reply.desc
    assert value(scrape(net, PROVINCE), name, **labels) == before + 1
