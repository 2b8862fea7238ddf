"""Attacks and faults on the office API: captured requests replayed or re-aimed, headers the SDK
mangles, the declared sender, resource exhaustion before authentication, the HTTPS listener.

Each test reproduces what an attacker (or a faulty client) did to the gateway, over real
sockets, against the same in-process node as ``test_gateway_http``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import test_gateway_http
from structlog.testing import capture_logs
from test_gateway_http import CLIENTS, DEPT, NODE, NOIVU, TINH, Env, document, received, send

from lienthong.config import parse_config
from lienthong.devnet.axis_client import AxisClient, contains_null, java_hex
from lienthong.devnet.pki import DevPki
from lienthong.edxml import build, new_edoc, parse
from lienthong.errors import ConfigError
from lienthong.gateway import Client, HashPolicy, Listener, make_app, serve
from lienthong.gateway.axis import ip_network
from lienthong.gateway.connections import ConnectionLimits, server_tls

env = test_gateway_http.env  # the same node and gateway, as a fixture of this module

WAIT_S = 20.0
"""How long a test waits for an answer that must come (never a timing assertion)."""


async def raw_request(
    port: int,
    path: str,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    content_length: int | None = None,
    send_body: bool = True,
) -> tuple[str, dict[str, Any]]:
    """POST with exactly these headers; the status line and the JSON reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = len(body) if content_length is None else content_length
        head = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
        head += [k + b": " + v for k, v in headers]
        head.append(f"Content-Length: {length}".encode())
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        if send_body:
            writer.write(body)
        await writer.drain()
        status, reply = await asyncio.wait_for(read_reply(reader), WAIT_S)
    finally:
        writer.close()
    return status, reply


async def read_reply(reader: asyncio.StreamReader) -> tuple[str, dict[str, Any]]:
    """One HTTP reply: its status line and its body as JSON."""
    status = (await reader.readline()).decode("latin-1").strip()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, json.loads(await reader.readexactly(length))


def captured(client: AxisClient, **params: str) -> list[tuple[bytes, bytes]]:
    """The headers of one request ``client`` signs with ``params`` (what a sniffer keeps)."""
    for key, value in params.items():
        client.headers.put(key, value)
    return client.signed_headers()


@asynccontextmanager
async def listening(
    env: Env, clients: dict[str, Client] | None = None, **kw: Any
) -> AsyncIterator[Listener]:
    """Another gateway over the same node, with other clients or options."""
    app = make_app(env.processor, env.store, env.directory, clients or CLIENTS, **kw)
    listener = await serve(app, port=0)
    try:
        yield listener
    finally:
        await listener.close()


# -- issue 13.1: a captured request must not open the API --------------------------------------


async def test_an_unsigned_docid_added_to_a_captured_request_fetches_nothing(env: Env) -> None:
    """The signed headers of getAgenciesList with an unsigned docId, sent to getEdoc: refused,
    the document is not returned."""
    await send(env.client(NOIVU), document(DEPT, [NODE]))
    [row] = await received(env.client(TINH))
    headers = captured(env.client(TINH))
    headers.append((b"XroadVnpt-docId", row["docId"].encode()))
    _, reply = await raw_request(env.listener.port or 0, "/x/getEdoc", headers, b"{}")
    assert reply["status"] == "FAIL"
    assert reply["data"] == ""
    assert "needs the parameter XroadVnpt-docId" in reply["ErrorDesc"]
    assert "signed" in reply["ErrorDesc"]


async def test_unsigned_docid_and_status_do_not_acknowledge_an_entry(env: Env) -> None:
    """A captured request re-aimed at updateStatus with unsigned docid/status changes nothing."""
    await send(env.client(NOIVU), document(DEPT, [NODE]))
    [row] = await received(env.client(TINH))
    headers = captured(env.client(TINH))
    headers += [(b"XroadVnpt-docid", row["docId"].encode()), (b"XroadVnpt-status", b"done")]
    _, reply = await raw_request(env.listener.port or 0, "/updateStatus", headers, b"{}")
    assert reply["status"] == "FAIL"
    assert [r["docId"] for r in await received(env.client(TINH))] == [row["docId"]]


async def test_a_body_of_the_attackers_choosing_is_not_delivered(env: Env) -> None:
    """sendEdoc with captured headers and another body: without a signed hash-file, or with
    one that does not match the body, nothing is stored."""
    forged = document(DEPT, [NODE], number="666")
    listing = captured(env.client(NOIVU))
    _, unsigned = await raw_request(env.listener.port or 0, "/sendEdoc", listing, forged)
    assert unsigned["status"] == "FAIL"
    assert "hash-file" in unsigned["ErrorDesc"]

    client = env.client(NOIVU)
    genuine = document(DEPT, [NODE], number="1")
    digest = java_hex(hashlib.sha256(genuine).digest())
    signed = captured(client, **{"from": DEPT, "messagetype": "edoc", "hash-file": digest})
    _, replaced = await raw_request(env.listener.port or 0, "/sendEdoc", signed, forged + b"\r\n")
    assert replaced["status"] == "FAIL"
    assert "replaced" in replaced["ErrorDesc"]
    assert await env.store.inbox_list(NODE) == []


async def test_an_identical_sendedoc_is_answered_from_the_first_result(env: Env) -> None:
    """The same signed sendEdoc again (a replay, or the SDK's re-send) gets the first DocId
    and is not submitted again, whatever body comes with it."""
    client = env.client(NOIVU)
    package = document(DEPT, [NODE])
    first = await send(client, package)
    assert first.ok, first.desc
    headers = client.signed_headers()
    with capture_logs() as logs:
        _, again = await raw_request(
            env.listener.port or 0, "/sendEdoc", headers, document(DEPT, [NODE], "9") + b"\r\n"
        )
    assert again["status"] == "OK"
    assert again["DocId"] == first.json["DocId"]
    events = [e["event"] for e in logs]
    assert "gateway_request_repeated" in events
    assert "gateway_package_accepted" not in events
    assert len(await env.store.inbox_list(NODE)) == 1


async def test_an_identical_update_status_is_not_run_again(env: Env) -> None:
    """A replayed updateStatus gets the first reply; the acknowledgement runs once."""
    await send(env.client(NOIVU), document(DEPT, [NODE]))
    client = env.client(TINH)
    [row] = await received(client)
    assert (await client.update_status({"docid": row["docId"], "status": "fail"})).ok
    with capture_logs() as logs:
        assert (await client.update_status({"docid": row["docId"], "status": "fail"})).ok
    events = [e["event"] for e in logs]
    assert "gateway_request_repeated" in events
    assert "gateway_ack" not in events


async def test_a_refused_request_is_tried_again_when_repeated(env: Env) -> None:
    """Only successes are remembered: the same request after a refusal runs again."""
    client = env.client(TINH)
    refused = await client.update_status({"docid": "12345", "status": "done"})
    assert not refused.ok
    with capture_logs() as logs:
        again = await client.update_status({"docid": "12345", "status": "done"})
    assert not again.ok
    assert "gateway_request_repeated" not in [e["event"] for e in logs]


# -- issue 10: mangled headers and the declared sender -----------------------------------------


@pytest.mark.parametrize("text", ["C:/Đăng ký", "Ăn\x01"])
async def test_control_bytes_in_a_header_get_the_axis_json_reply(env: Env, text: str) -> None:
    """ă, Ă, đ, Đ truncated to control bytes (or a control character itself) in a header: the
    SDK gets a JSON refusal it can read, never the HTTP parser's bare 400; accepted by policy."""
    client = env.client(TINH, mangle="truncate")
    client.headers.put("filePath", text)
    assert any(b < 0x20 for b in dict(client.signed_headers())[b"XroadVnpt-filePath"])
    refused = await client.get_received_edoc_list({"messagetype": "edoc"})
    assert refused.status_line.startswith("HTTP/1.1 200")
    assert not refused.ok
    assert "cannot be checked" in refused.desc
    assert not contains_null(refused.json)
    async with listening(env, policy=HashPolicy.ACCEPT) as lenient:
        client.port = lenient.port
        accepted = await client.get_received_edoc_list({"messagetype": "edoc"})
    assert accepted.ok, accepted.desc


async def test_a_from_header_the_client_may_not_send_for_is_refused(env: Env) -> None:
    """XroadVnpt-from naming another agency: refused, naming both it and the package's From."""
    reply = await env.client(NOIVU).send_edoc(
        {"from": NODE, "messagetype": "edoc"}, document(DEPT, [NODE])
    )
    assert reply is not None
    assert not reply.ok
    assert reply.json["ErrorCode"] == "3"
    assert f"may not send for {NODE}" in reply.desc
    assert f"the package's From is {DEPT}" in reply.desc
    assert await env.store.inbox_list(NODE) == []


async def test_a_from_header_that_differs_from_the_package_is_refused(env: Env) -> None:
    """A client that may send for two agencies declares one and sends the other's package."""
    both = Client("qlvb-both", "s", frozenset({DEPT, NODE}), frozenset({DEPT, NODE}))
    async with listening(env, {both.system_id: both}) as listener:
        client = AxisClient("/", both.system_id, both.secret, port=listener.port)
        reply = await client.send_edoc(
            {"from": NODE, "messagetype": "edoc"}, document(DEPT, [NODE])
        )
    assert reply is not None
    assert not reply.ok
    assert f"XroadVnpt-from is {NODE} but the package's From is {DEPT}" in reply.desc
    assert await env.store.inbox_list(NODE) == []


async def test_a_messagetype_that_differs_from_the_package_is_refused(env: Env) -> None:
    """messagetype status for an edoc package: refused naming both (it was only logged)."""
    reply = await send(env.client(NOIVU), document(DEPT, [NODE]), messagetype="status")
    assert not reply.ok
    assert "XroadVnpt-messagetype is status but the package is edoc" in reply.desc
    assert await env.store.inbox_list(NODE) == []


# -- issue 13.3: nothing costs before authentication ------------------------------------------


async def test_an_unauthenticated_upload_is_refused_before_its_body(env: Env) -> None:
    """A forged sendEdoc announcing 64 MB gets its refusal before sending one body byte."""
    forger = AxisClient("/", NOIVU.system_id, "not-the-secret", port=env.listener.port)
    headers = captured(forger, **{"hash-file": "ab"})
    status, reply = await raw_request(
        env.listener.port or 0, "/sendEdoc", headers, content_length=64 << 20, send_body=False
    )
    assert status.startswith("HTTP/1.1 200")
    assert "does not match" in reply["ErrorDesc"]


async def test_an_announced_body_over_the_limit_is_refused_unread(env: Env) -> None:
    """An authenticated sendEdoc whose Content-Length is over the limit is refused unread."""
    async with listening(env, max_body_bytes=1000) as listener:
        client = AxisClient("/", NOIVU.system_id, NOIVU.secret, port=listener.port)
        headers = captured(client, **{"hash-file": "ab", "from": DEPT})
        _, reply = await raw_request(
            listener.port or 0, "/sendEdoc", headers, content_length=5000, send_body=False
        )
    assert "too large" in reply["ErrorDesc"]


async def test_a_chunked_body_over_the_limit_is_cut_while_reading(env: Env) -> None:
    """A body without a length is counted as it comes and refused once over the limit."""
    async with listening(env, max_body_bytes=100_000) as listener:
        client = AxisClient("/", NOIVU.system_id, NOIVU.secret, port=listener.port)
        headers = captured(client, **{"hash-file": "ab", "from": DEPT})
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        head = [b"POST /sendEdoc HTTP/1.1", b"Host: x", b"Transfer-Encoding: chunked"]
        head += [k + b": " + v for k, v in headers]
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        piece = b"x" * 50_000
        try:
            for _ in range(4):
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            _, reply = await asyncio.wait_for(read_reply(reader), WAIT_S)
        finally:
            writer.close()
    assert "too large" in reply["ErrorDesc"]
    assert await env.store.inbox_list(NODE) == []


async def test_a_stalled_body_is_refused(env: Env) -> None:
    """An authenticated upload that stops sending gets a refusal once the stall timeout passes."""
    async with listening(env, body_timeout_s=0.3) as listener:
        client = AxisClient("/", NOIVU.system_id, NOIVU.secret, port=listener.port)
        headers = captured(client, **{"hash-file": "ab", "from": DEPT})
        _, reply = await raw_request(
            listener.port or 0, "/sendEdoc", headers, b"<edXML>", content_length=5000
        )
    assert "stalled" in reply["ErrorDesc"]


async def test_half_sent_headers_are_closed(env: Env) -> None:
    """A connection whose headers never end is closed once the header timeout passes."""
    limits = ConnectionLimits(header_timeout_s=0.3)
    async with listening(env, limits=limits) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"POST /getEdoc HTTP/1.1\r\nHost: x\r\nXroadVnpt-systemid: q")
        await writer.drain()
        try:
            assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
        finally:
            writer.close()
        assert limits.open == 0


async def test_connections_are_capped_per_address_and_in_total(env: Env) -> None:
    """Idle connections over the caps are turned away with a JSON reply the SDK reads."""
    for limits, words in (
        (ConnectionLimits(per_address=2, total=10), "127.0.0.1 has 2 connections open"),
        (ConnectionLimits(per_address=10, total=2), "has 2 connections open, its limit"),
    ):
        async with listening(env, limits=limits) as listener:
            idle = [await asyncio.open_connection("127.0.0.1", listener.port) for _ in range(2)]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                _, reply = await asyncio.wait_for(read_reply(reader), WAIT_S)
                writer.close()
            finally:
                for _, w in idle:
                    w.close()
            assert reply["status"] == "FAIL"
            assert words in reply["ErrorDesc"]


async def test_expect_continue_is_withheld_from_an_unauthenticated_request(env: Env) -> None:
    """Expect: 100-continue with a wrong HMAC gets the refusal instead of the 100."""
    forger = AxisClient("/", TINH.system_id, "wrong", port=env.listener.port)
    reply = await forger.get_edoc({"docId": "1"})
    assert reply.got_continue is False
    assert "does not match" in reply.desc


async def test_a_large_package_goes_through_streamed_both_ways(env: Env) -> None:
    """A 3 MB attachment: sendEdoc streams it through a file in upload_dir (removed after),
    getEdoc streams the base64 back; the package arrives intact."""
    scan = os.urandom(3 * 1024 * 1024)
    package = build(
        new_edoc(
            from_code=DEPT,
            to_codes=[NODE],
            subject="Bản quét",
            attachments=[("ban-quet.pdf", scan, "application/pdf")],
            today=dt.date.today(),
            number="77",
        )
    )
    uploads = env.tmp / "uploads"
    async with listening(env, upload_dir=uploads) as listener:
        sender = AxisClient("/", NOIVU.system_id, NOIVU.secret, port=listener.port)
        sent = await send(sender, package)
        assert sent.ok, sent.desc
        assert list(uploads.iterdir()) == []
        recipient = AxisClient("/", TINH.system_id, TINH.secret, port=listener.port)
        [row] = await received(recipient)
        fetched = await recipient.get_edoc({"docId": row["docId"]})
    assert fetched.ok, fetched.desc
    assert AxisClient.edoc_of(fetched) == await env.store.read_package(sent.json["DocId"])
    [attachment] = parse(AxisClient.edoc_of(fetched)).attachments  # type: ignore[union-attr]
    assert attachment.content == scan


# -- issue 13.2: HTTPS for office software on other servers ------------------------------------


@asynccontextmanager
async def https(
    env: Env, client: Client, *, client_certificates: bool = False
) -> AsyncIterator[tuple[int, DevPki]]:
    """An HTTPS listener (API only) for ``client``; its port and the test CA."""
    pki = DevPki(env.tmp / "https-pki")
    tls = server_tls(pki.server_cert, pki.server_key, pki.cafile if client_certificates else None)
    app = make_app(env.processor, env.store, env.directory, {client.system_id: client}, remote=True)
    listener = await serve(app, port=0, tls=tls)
    try:
        assert listener.https_port is not None
        yield listener.https_port, pki
    finally:
        await listener.close()


def tls_client(who: Client, port: int, pki: DevPki, cert_of: str | None = None) -> AxisClient:
    """An SDK client over TLS trusting the test CA, presenting ``cert_of``'s certificate."""
    return AxisClient("/", who.system_id, who.secret, port=port, tls=pki.client_context(cert_of))


def allowed(who: Client, *networks: str, certificate_cn: str = "") -> Client:
    """``who`` reaching the HTTPS listener from ``networks``."""
    return Client(
        who.system_id,
        who.secret,
        who.send_for,
        who.receive_for,
        allow_from=tuple(ip_network(n) for n in networks),
        certificate_cn=certificate_cn,
    )


async def test_https_serves_an_allowed_address_and_refuses_others(env: Env) -> None:
    """Over HTTPS a client is served from its allow_from addresses only; the operator's
    routes are not served there."""
    local = allowed(TINH, "127.0.0.0/8")
    async with https(env, local) as (port, pki):
        client = tls_client(local, port, pki)
        reply = await client.get_agencies_list()
        metrics = await client._post("metrics", b"")
    assert reply.ok, reply.desc
    assert metrics is not None
    assert "unknown operation 'metrics'" in metrics.desc
    elsewhere = allowed(TINH, "10.1.2.0/24")
    async with https(env, elsewhere) as (port, pki):
        refused = await tls_client(elsewhere, port, pki).get_agencies_list()
    assert not refused.ok
    assert "may not connect from 127.0.0.1 over HTTPS (allow_from: 10.1.2.0/24)" in refused.desc


async def test_https_client_certificates_are_required_and_bound(env: Env) -> None:
    """With a client CA, a connection without a certificate fails its handshake, and a
    client with certificate_cn must present that certificate."""
    bound = allowed(TINH, "127.0.0.1", certificate_cn=NODE)
    async with https(env, bound, client_certificates=True) as (port, pki):
        # TLS 1.3: the client finishes its handshake first, then finds the connection closed
        with pytest.raises((ssl.SSLError, ConnectionError, ValueError)):
            await tls_client(bound, port, pki).get_agencies_list()
        wrong = await tls_client(bound, port, pki, cert_of=DEPT).get_agencies_list()
        right = await tls_client(bound, port, pki, cert_of=NODE).get_agencies_list()
    assert not wrong.ok
    assert f"must present the certificate {NODE}, not {DEPT}" in wrong.desc
    assert right.ok, right.desc


def test_the_plain_listener_must_stay_on_loopback() -> None:
    """gateway.host on a network address is refused: plain HTTP there exposes every request."""
    base = '[node]\ncode = "000.00.00.H49"\n[gateway]\n'
    with pytest.raises(ConfigError, match="loopback") as info:
        parse_config(base + 'host = "0.0.0.0"\n')
    assert info.value.key == "gateway.host"
    assert parse_config(base + 'host = "::1"\n').gateway.host == "::1"
    https_settings = parse_config(
        base
        + '[gateway.https]\nhost = "0.0.0.0"\ncert = "c"\nkey = "k"\n'
        + '[gateway.clients.a]\nsecret = "s"\nreceive_for = ["000.00.00.H49"]\n'
        + 'allow_from = ["10.1.2.0/24", "10.9.9.9"]\n'
    ).gateway
    assert https_settings.https.enabled
    with pytest.raises(ConfigError, match="not an IP address") as bad:
        parse_config(base + '[gateway.clients.a]\nallow_from = ["ten"]\n')
    assert bad.value.key == "gateway.clients.a.allow_from"
