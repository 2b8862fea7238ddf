"""The office-software HTTP API, driven by a client that speaks exactly like the axis SDK.

The gateway runs in-process over a real processor (real RSA keys, the four-tier directory)
and a real store (SQLite file and the in-memory store, the same tests for both). The
province node 000.00.00.H49 serves itself and its department 000.00.01.H49: a document
between them is delivered at once; one for the district goes to the next hop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import http_parser
from structlog.testing import capture_logs

from lienthong import receipts
from lienthong.devnet.axis_client import AxisClient, Reply, contains_null
from lienthong.devnet.network import topology_text
from lienthong.devnet.pki import DevPki
from lienthong.directory import Directory
from lienthong.edxml import EdocPackage, build, new_edoc, parse, validate
from lienthong.edxml.model import Organization
from lienthong.gateway import Client, HashPolicy, Listener, make_app, serve
from lienthong.keyfiles import load_identity
from lienthong.processing import Processor
from lienthong.store import PackageState, SqliteStore, Store
from lienthong.trust import TrustStore

NODE = "000.00.00.H49"
DEPT = "000.00.01.H49"
DISTRICT = "000.00.05.H49"
NOIVU = Client("qlvb-noivu", "bí mật của Sở", frozenset({DEPT}), frozenset({DEPT}))
TINH = Client("qlvb-tinh", "secret-tinh", frozenset({NODE}), frozenset({NODE}))
CLIENTS = {c.system_id: c for c in (NOIVU, TINH)}


@dataclasses.dataclass
class Env:
    """A served gateway and what it stands on."""

    processor: Processor
    store: Store
    directory: Directory
    listener: Listener
    tmp: Path

    def client(self, who: Client, *, endpoint: str = "/lienthong", **kw: object) -> AxisClient:
        """A new long-lived SDK client object for ``who``."""
        return AxisClient(
            endpoint,
            who.system_id,
            who.secret,
            port=self.listener.port,
            **kw,  # type: ignore[arg-type]
        )

    async def serve(self, **kw: object) -> Listener:
        """Another listener over the same node, with other ``make_app`` options."""
        app = make_app(self.processor, self.store, self.directory, CLIENTS, **kw)  # type: ignore[arg-type]
        return await serve(app, port=0)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """The province node's gateway on a free local port."""
    store: Store = SqliteStore(tmp_path / "state")
    pki = DevPki(tmp_path / "pki", key_type="rsa")
    cert, key = pki.client_files(NODE)
    directory = Directory.from_mapping(tomllib.loads(topology_text("four-tier")))
    async with store:
        processor = Processor(
            me=NODE,
            directory=directory,
            identity=load_identity(key, cert),
            trust=TrustStore.from_pem([pki.cafile.read_bytes()]),
            store=store,
        )
        listener = await serve(make_app(processor, store, directory, CLIENTS), port=0)
        try:
            yield Env(processor, store, directory, listener, tmp_path)
        finally:
            await listener.close()


def document(sender: str, recipients: list[str], number: str = "12") -> bytes:
    """An unsigned edoc with one attachment."""
    pkg = new_edoc(
        from_code=sender,
        to_codes=recipients,
        subject=f"Công văn số {number} về việc báo cáo",
        attachments=[("bao-cao.txt", "Nội dung báo cáo".encode(), "text/plain")],
        today=dt.date.today(),
        number=number,
        notation="SNV-VP",
    )
    return build(pkg)


def status_package(signed_document: bytes, reporter: str, code: str) -> bytes:
    """A status package ``code`` about the document, from ``reporter``."""
    doc = parse(signed_document)
    assert isinstance(doc, EdocPackage)
    status = receipts.status_for(
        doc, reporter=Organization(reporter, reporter), code=code, now=time.time()
    )
    return build(status)


async def send(client: AxisClient, package: bytes, messagetype: str = "edoc") -> Reply:
    """sendEdoc with the parameters office software passes."""
    doc = parse(package)
    reply = await client.send_edoc(
        {"from": doc.sender, "servicetype": "eDoc", "messagetype": messagetype}, package
    )
    assert reply is not None
    return reply


async def received(client: AxisClient, messagetype: str = "edoc") -> list[dict[str, str]]:
    """The rows of getReceivedEdocList; the call must succeed."""
    reply = await client.get_received_edoc_list({"servicetype": "eDoc", "messagetype": messagetype})
    assert reply.ok, reply.desc
    rows: list[dict[str, str]] = reply.json["data"]
    return rows


# -- every operation -------------------------------------------------------------------------


async def test_document_goes_from_one_client_to_another(env: Env) -> None:
    """sendEdoc, then the recipient lists, fetches (base64) and acknowledges the document."""
    sender, recipient = env.client(NOIVU), env.client(TINH)
    reply = await send(sender, document(DEPT, [NODE]))
    assert reply.ok, reply.desc
    package_id = reply.json["DocId"]
    assert len(package_id) == 64

    rows = await received(recipient)
    assert [(r["from"], r["to"], r["messageType"]) for r in rows] == [(DEPT, NODE, "edoc")]
    fetched = await recipient.get_edoc({"docId": rows[0]["docId"]})
    assert fetched.ok, fetched.desc
    assert fetched.got_continue is True
    data = AxisClient.edoc_of(fetched)
    assert data == await env.store.read_package(package_id)
    assert validate(data).ok
    assert parse(data).signed

    ack = await recipient.update_status({"docid": rows[0]["docId"], "status": "done"})
    assert ack.ok, ack.desc
    assert ack.got_continue is True
    assert await received(recipient) == []


async def test_status_01_reaches_the_sender_and_03_is_sent_back(env: Env) -> None:
    """The automatic 01 and a 03 sent with sendEdoc(messagetype=status) reach the sender."""
    sender, recipient = env.client(NOIVU), env.client(TINH)
    package_id = (await send(sender, document(DEPT, [NODE]))).json["DocId"]
    signed = await env.store.read_package(package_id)
    reply = await send(recipient, status_package(signed, NODE, "03"), "status")
    assert reply.ok, reply.desc

    rows = await received(sender, "status")
    codes = [parse(AxisClient.edoc_of(await sender.get_edoc({"docId": r["docId"]}))) for r in rows]
    assert [(s.kind, getattr(s, "status_code", "")) for s in codes] == [
        ("status", "01"),
        ("status", "03"),
    ]
    assert all(r["messageType"] == "status" and r["to"] == DEPT for r in rows)
    assert await received(sender, "edoc") == []


async def test_sent_list_shows_each_recipient_from_the_receipts(env: Env) -> None:
    """getSentEdocList: the local recipient delivered with its statuses, the far one queued
    until the next node's hop receipt, then sent."""
    sender = env.client(NOIVU)
    package_id = (await send(sender, document(DEPT, [NODE, DISTRICT]))).json["DocId"]
    signed = await env.store.read_package(package_id)
    await send(env.client(TINH), status_package(signed, NODE, "06"), "status")

    def by_recipient(reply: Reply) -> dict[str, dict[str, str]]:
        assert reply.ok, reply.desc
        return {row["toCode"]: row for row in reply.json["data"]}

    params = {"servicetype": "eDoc", "messagetype": "edoc", "docId": package_id}
    rows = by_recipient(await sender.get_sent_edoc_list(params))
    assert rows[NODE]["sendStatus"] == "delivered"
    assert rows[NODE]["receiveStatus"] == "06"
    assert rows[NODE]["receivedTime"] != ""
    assert rows[DISTRICT]["sendStatus"] == "queued"
    assert rows[DISTRICT]["receiveStatus"] == ""
    assert rows[DISTRICT]["notation"] == "SNV-VP"
    assert rows[DISTRICT]["title"].startswith("Công văn số 12")

    lease = await env.store.lease_transfer(DISTRICT, time.time())
    assert lease is not None
    await env.store.ack(lease.transfer_id, lease.sha256, time.time())
    rows = by_recipient(await sender.get_sent_edoc_list(params))
    assert rows[DISTRICT]["sendStatus"] == "sent"
    assert rows[DISTRICT]["sentTime"] != ""


async def test_agencies_list_comes_from_the_directory(env: Env) -> None:
    """getAgenciesList: every agency with id, code, name, pid and mail, no nulls."""
    reply = await env.client(TINH).get_agencies_list()
    assert reply.ok, reply.desc
    rows = {row["code"]: row for row in reply.json["data"]}
    assert set(rows) == set(env.directory.codes)
    assert rows[DEPT] == {
        "id": DEPT,
        "code": DEPT,
        "name": "Sở Nội vụ tỉnh Quảng Nam",
        "pid": NODE,
        "mail": "",
    }
    assert rows[env.directory.national]["pid"] == ""


# -- no document lost or duplicated ---------------------------------------------------------


async def test_sendedoc_resent_after_a_dropped_connection_is_recognised(env: Env) -> None:
    """The SDK re-sends sendEdoc when the connection drops: the package is stored once and
    both answers name it; a gateway started afresh recognises it too."""
    client = env.client(NOIVU)
    package = document(DEPT, [NODE])
    assert await client.send_edoc({"from": DEPT, "messagetype": "edoc"}, package, drop=True) is None
    for _ in range(200):
        if await env.store.inbox_list(NODE):
            break
        await asyncio.sleep(0.05)
    again = await send(client, package)
    assert again.ok, again.desc
    entries = await env.store.inbox_list(NODE)
    assert [e.package_id for e in entries] == [again.json["DocId"]]

    fresh = await env.serve()
    try:
        other = AxisClient("/", NOIVU.system_id, NOIVU.secret, port=fresh.port)
        third = await send(other, package)
    finally:
        await fresh.close()
    assert third.json["DocId"] == again.json["DocId"]
    assert len(await env.store.inbox_list(NODE)) == 1


async def test_unacknowledged_documents_are_offered_again(env: Env) -> None:
    """getEdoc alone or updateStatus fail leaves the document in the list; done removes it."""
    await send(env.client(NOIVU), document(DEPT, [NODE]))
    recipient = env.client(TINH)
    [row] = await received(recipient)
    assert (await recipient.get_edoc({"docId": row["docId"]})).ok
    assert [r["docId"] for r in await received(recipient)] == [row["docId"]]
    assert (await recipient.update_status({"docid": row["docId"], "status": "fail"})).ok
    [again] = await received(recipient)
    assert (again["docId"], again["status"]) == (row["docId"], "failed")
    assert (await recipient.update_status({"docid": row["docId"], "status": "done"})).ok
    assert await received(recipient) == []


async def test_acknowledging_twice_is_harmless(env: Env) -> None:
    """updateStatus done twice (a re-sent request) succeeds twice and records one retrieval."""
    package_id = (await send(env.client(NOIVU), document(DEPT, [NODE]))).json["DocId"]
    recipient = env.client(TINH)
    [row] = await received(recipient)
    for _ in range(2):
        reply = await recipient.update_status({"docid": row["docId"], "status": "done"})
        assert reply.ok, reply.desc
    document_id = parse(await env.store.read_package(package_id)).document_id
    retrievals = [r for r in await env.store.receipts(document_id) if r.level == "retrieval"]
    assert [(r.code, r.by) for r in retrievals] == [("done", NODE)]


async def test_a_long_lived_client_resends_stale_parameters(env: Env) -> None:
    """Stale status/docid/filePath from earlier calls are ignored; docId and docid differ."""
    for number in ("1", "2"):
        await send(env.client(NOIVU), document(DEPT, [NODE], number))
    client = env.client(TINH)
    first, second = await received(client)
    await client.update_status({"docid": first["docId"], "status": "done", "filePath": "/tmp/x"})
    # the stale docid (first) stays in the client's headers beside the new docId
    fetched = await client.get_edoc({"docId": second["docId"]})
    assert fetched.ok, fetched.desc
    assert parse(AxisClient.edoc_of(fetched)).document_id.endswith("2/SNV-VP")
    # the stale status=done rides along on the list call and changes nothing
    assert [r["docId"] for r in await received(client)] == [second["docId"]]


# -- refusals ---------------------------------------------------------------------------------


async def test_unknown_client_and_wrong_hmac_are_refused_and_logged(env: Env) -> None:
    """An unknown systemid or a wrong secret: FAIL with a clear reason and a log line."""
    ghost = AxisClient("/lienthong", "ghost", "x", port=env.listener.port)
    forger = AxisClient("/lienthong", NOIVU.system_id, "not-the-secret", port=env.listener.port)
    with capture_logs() as logs:
        unknown = await ghost.get_agencies_list()
        wrong = await forger.get_received_edoc_list({"messagetype": "edoc"})
    assert not unknown.ok
    assert "unknown client systemid 'ghost'" in unknown.desc
    assert not wrong.ok
    assert "hash-header does not match" in wrong.desc
    assert unknown.json["data"] == []
    assert wrong.json["data"] == []
    refused = [e for e in logs if e["event"] == "gateway_refused"]
    assert [e["error_code"] for e in refused] == ["2", "2"]
    assert "ghost" in refused[0]["reason"]


async def test_a_sender_the_client_may_not_send_for_is_refused(env: Env) -> None:
    """A package whose From is not among the client's agencies is refused, nothing stored."""
    with capture_logs() as logs:
        reply = await send(env.client(NOIVU), document(NODE, [DEPT]))
    assert not reply.ok
    assert f"may not send for {NODE}" in reply.desc
    assert reply.json["DocId"] == ""
    assert await env.store.inbox_list(DEPT) == []
    assert any(e["event"] == "gateway_refused" and e["error_code"] == "3" for e in logs)


async def test_an_invalid_package_is_refused_with_every_problem(env: Env, data_dir: Path) -> None:
    """sendEdoc of a package with several faults lists each of them in ErrorDesc."""
    package = (
        (data_dir / "invalid_manifest_mismatch.xml")
        .read_bytes()
        .replace(b"000.00.00.G22", DEPT.encode())
    )
    problems = validate(package).problems
    assert len(problems) == 2
    reply = await send(env.client(NOIVU), package)
    assert not reply.ok
    assert reply.json["ErrorCode"] == "4"
    for problem in problems:
        assert f"{problem.path}: {problem.message}" in reply.desc


async def test_a_damaged_package_fails_its_hash_file(env: Env) -> None:
    """A body whose sha256 is not hash-file is refused as damaged on the way."""
    client = env.client(NOIVU)
    package = document(DEPT, [NODE])
    client.headers.put("hash-file", "0" * 64)
    client.headers.put("Content-Type", "application/octet-stream")
    reply = await client._post("sendEdoc", package + b"\r\n")
    assert reply is not None
    assert not reply.ok
    assert "damaged" in reply.desc


async def test_other_agencies_documents_are_not_found(env: Env) -> None:
    """A client cannot fetch, acknowledge or trace what belongs to another client."""
    package_id = (await send(env.client(NOIVU), document(DEPT, [NODE]))).json["DocId"]
    [row] = await received(env.client(TINH))
    intruder = env.client(NOIVU)
    fetched = await intruder.get_edoc({"docId": row["docId"]})
    assert not fetched.ok
    assert fetched.json["data"] == ""
    assert not (await intruder.update_status({"docid": row["docId"], "status": "done"})).ok
    sent = await env.client(TINH).get_sent_edoc_list({"docId": package_id})
    assert not sent.ok
    assert sent.json["data"] == []
    assert len(await received(env.client(TINH))) == 1


async def test_no_reply_ever_holds_a_null(env: Env) -> None:
    """Every reply, success or failure, has status/ErrorCode/ErrorDesc strings and no null."""
    client, other = env.client(NOIVU), env.client(TINH)
    await send(client, document(DEPT, [NODE]))
    await client.send_edoc({"from": DEPT, "messagetype": "edoc"}, b"<not-edxml/>")
    await received(other)
    await other.get_edoc({"docId": "999"})
    await other.update_status({"docid": "999", "status": "maybe"})
    await client.get_sent_edoc_list({"docId": "nope"})
    await client.get_agencies_list()
    replies = client.replies + other.replies
    assert len(replies) == 7
    for reply in replies:
        assert not contains_null(reply.json)
        assert reply.status_line.startswith("HTTP/1.1 200")
        assert reply.raw.isascii()
        assert all(isinstance(reply.json[k], str) for k in ("status", "ErrorCode", "ErrorDesc"))


# -- the SDK's wire quirks --------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/lienthong/", "/", "/a/b/c"])
async def test_any_prefix_and_a_double_slash_reach_the_operation(env: Env, endpoint: str) -> None:
    """An endpoint configured with a trailing / gives //operation, which still works."""
    reply = await env.client(TINH, endpoint=endpoint).get_agencies_list()
    assert reply.ok, reply.desc


def test_the_c_http_parser_is_the_one_serving() -> None:
    """The raw-socket tests below run against aiohttp's C parser (llhttp), unless disabled."""
    if http_parser.HttpRequestParser is http_parser.HttpRequestParserPy:
        pytest.skip("aiohttp runs without its C extensions here")
    assert http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser"


async def test_a_latin1_header_value_verifies(env: Env) -> None:
    """A parameter with characters up to U+00FF travels as Latin-1 bytes and verifies."""
    client = env.client(TINH)
    client.headers.put("filePath", "C:/Phòng Tài chính/edoc")
    wire = dict(client.signed_headers())[b"XroadVnpt-sign-header"]
    assert b"\xf2" in wire  # "ò" as one Latin-1 byte, not UTF-8
    reply = await client.get_received_edoc_list({"messagetype": "edoc"})
    assert reply.ok, reply.desc


@pytest.mark.parametrize("mangle", ["?", "truncate"])
async def test_a_mangled_header_value_follows_the_policy(env: Env, mangle: str) -> None:
    """Characters above U+00FF break the HMAC: refused by default, accepted and logged if
    the operator chose so."""
    client = env.client(TINH, mangle=mangle)
    # "ư" and "ờ" become "?" or the bytes 0xB0 and 0xDD
    client.headers.put("filePath", "C:/Người dùng/edoc")
    refused = await client.get_received_edoc_list({"messagetype": "edoc"})
    assert not refused.ok
    assert "cannot be checked" in refused.desc

    lenient = await env.serve(policy=HashPolicy.ACCEPT)
    try:
        client.port = lenient.port
        with capture_logs() as logs:
            accepted = await client.get_received_edoc_list({"messagetype": "edoc"})
    finally:
        await lenient.close()
    assert accepted.ok, accepted.desc
    assert any(e["event"] == "gateway_hash_unverifiable_accepted" for e in logs)


async def test_expect_100_continue_is_answered_before_the_body(env: Env) -> None:
    """Over a raw socket: headers with Expect: 100-continue get the 100 before any body."""
    client = env.client(TINH)
    client.headers.put("Content-Type", "application/json")
    head = [b"POST /lienthong/getAgenciesList HTTP/1.1", b"Host: 127.0.0.1"]
    head += [k + b": " + v for k, v in client.signed_headers()]
    head += [b"Content-Length: 2", b"Expect: 100-continue"]
    reader, writer = await asyncio.open_connection("127.0.0.1", env.listener.port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"{}")
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert final.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_unix_socket_listener_serves_the_same_api(env: Env) -> None:
    """The API also listens on a unix socket, readable by its group only."""
    path = env.tmp / "gw.sock"
    app = make_app(env.processor, env.store, env.directory, CLIENTS)
    listener = await serve(app, port=None, socket=path)
    try:
        assert path.stat().st_mode & 0o777 == 0o660
        client = AxisClient("/lienthong", TINH.system_id, TINH.secret, unix_socket=path)
        reply = await client.get_agencies_list()
    finally:
        await listener.close()
    assert reply.ok, reply.desc


async def test_a_document_corrupted_on_disk_is_not_served(env: Env) -> None:
    """getEdoc of a delivered document whose file changed on disk answers a failure that says
    so (never the bad bytes with Success), and the package is quarantined."""
    pkg = new_edoc(
        from_code=DEPT,
        to_codes=[NODE],
        subject="Bản quét lớn",
        # Large enough to live in a file and not in the store's memory of recent packages.
        attachments=[("scan.pdf", os.urandom(5 * 1024 * 1024), "application/pdf")],
        today=dt.date.today(),
        number="77",
        notation="SNV-VP",
    )
    reply = await send(env.client(NOIVU), build(pkg))
    assert reply.ok, reply.desc
    recipient = env.client(TINH)
    [row] = await received(recipient)
    package_id = reply.json["DocId"]
    path = env.tmp / "state" / "packages" / package_id[:2] / package_id
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    fetched = await recipient.get_edoc({"docId": row["docId"]})
    assert not fetched.ok
    assert fetched.json["data"] == ""
    assert "corrupted on this node's disk" in fetched.desc
    record = await env.store.get_package(package_id)
    assert record.state == PackageState.QUARANTINED
