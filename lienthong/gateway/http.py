"""The office-software HTTP API, in the national axis SDK's wire format.

:func:`make_app` builds the aiohttp application over a node's processor, store and directory;
:func:`serve` binds it to an address (plain HTTP on loopback, or HTTPS) and/or a unix socket
behind the connection guard of :mod:`lienthong.gateway.connections`; :func:`start_gateway`
does both from the ``[gateway]`` settings. The wire format itself (parameters, HMAC, replies)
is :mod:`lienthong.gateway.axis`; this module moves bytes between it and the node.

Every reply is HTTP 200 with a JSON body, refusals included: the SDK ignores the status
line. Each refusal is logged (``gateway_refused``) with the operation, the client and why.
Every reply closes its connection (the SDK opens one per call anyway).

A request is authenticated from its headers alone, before any of its body is read: an
``Expect: 100-continue`` is answered with the 100 only once the headers authenticate (else
with the refusal), and a refused request's body is never read into memory (aiohttp discards
it for a bounded time so the client sees the reply). ``sendEdoc`` streams its body to a file
in ``upload_dir`` with the package limit enforced while reading and a stall timeout between
reads; ``getEdoc`` streams its reply, the base64 made piece by piece.

An identical signed request (same client, operation and ``hash-header``) to ``sendEdoc`` or
``updateStatus`` is answered with the first successful reply and not run again: the SDK
re-sends a request whose connection dropped, and a captured one may be replayed.

Header bytes above ASCII pass aiohttp's parsers (the C parser, llhttp, and the pure-Python
one both accept obs-text in field values; control bytes are made ``?`` by the guard); they are
read from ``request.raw_headers`` as bytes, never from the decoded header map.

Inbox entries are the ``docId`` of received documents (``getEdoc``, ``updateStatus``); the
package id (sha256 of the signed package) is the ``DocId`` a ``sendEdoc`` returns and what
``getSentEdocList`` takes.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import ClientPayloadError, HttpVersion11, web

from lienthong.config import GatewaySettings
from lienthong.directory import Directory
from lienthong.dirholder import DirectoryHolder, fixed
from lienthong.edxml import EdocPackage, Package, parse, validate
from lienthong.edxml.streamed import LARGE_PACKAGE, validate_file
from lienthong.errors import ConfigError, LienthongError, TransientError
from lienthong.gateway import axis
from lienthong.gateway.axis import Authenticated, AxisError, Client, ErrorCode, HashPolicy
from lienthong.gateway.connections import (
    ConnectionLimits,
    ensure_open_files,
    guarded,
    peer_common_name,
    server_tls,
)
from lienthong.gateway.firsts import FirstResults
from lienthong.keyfiles import read_file
from lienthong.logs import get_logger
from lienthong.processing import Processor, SubmissionRefused, Submitted
from lienthong.routing import split_by_next_hop
from lienthong.store import ConcurrentChange, CorruptPackage, IllegalTransition, Store, UnknownId
from lienthong.store.blobs import file_digest
from lienthong.store.model import InboxEntry
from lienthong.xmlwork import off_loop

_log = get_logger("lienthong.gateway")

BODY_MARGIN = 64 * 1024
"""Room above the largest package for the CRLF and a stray multipart wrapper."""

RECENT_SUBMISSIONS = 4096
"""How many recent submissions (by digest of the bytes received) are remembered."""

RECENT_REQUESTS = 4096
"""How many recent successful non-idempotent requests (by ``hash-header``) are remembered."""

WRITE_PIECE = 1024 * 1024
"""A sendEdoc body is written to its file in pieces of about this size."""

BASE64_PIECE = 3 * 64 * 1024
"""getEdoc encodes this many package bytes at a time (a multiple of 3: the pieces join)."""

LINGER_S = 2.0
"""How long the unread body of a refused request is read and dropped, so the client reads
the refusal rather than a reset connection (aiohttp's lingering close)."""

MAX_FIELD = 64 * 1024
"""Longest header line accepted: the signed JSON repeats every parameter (``to`` lists)."""

REMOTE = web.AppKey("remote", bool)
_AUTH = web.RequestKey("auth", Authenticated)


@dataclass(frozen=True, slots=True)
class Base64:
    """A reply field whose value is the base64 of ``data`` (bytes, or a file read in pieces),
    streamed rather than built."""

    data: bytes | Path


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply: its bytes, or the head and tail around a streamed base64 field."""

    body: bytes
    ok: bool
    stream: bytes | Path | None = None
    tail: bytes = b""


Operation = Callable[[Authenticated, web.Request], Awaitable[dict[str, Any]]]


def load_clients(settings: GatewaySettings) -> dict[str, Client]:
    """The configured clients with their secrets read; :class:`ConfigError` naming the key."""
    clients: dict[str, Client] = {}
    for system_id, c in settings.clients.items():
        key = f"gateway.clients.{system_id}"
        has_file = c.secret_file != Path()
        if bool(c.secret) == has_file:
            raise ConfigError("give exactly one of secret and secret_file", key=key)
        secret = c.secret
        if has_file:
            raw = read_file(c.secret_file, f"secret file of client {system_id}")
            secret = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
            if not secret:
                raise ConfigError(f"the secret file {c.secret_file} is empty", key=key)
        if not (c.send_for or c.receive_for):
            raise ConfigError("needs send_for or receive_for: it could do nothing", key=key)
        clients[system_id] = Client(
            system_id,
            secret,
            frozenset(c.send_for),
            frozenset(c.receive_for),
            allow_from=tuple(axis.ip_network(text) for text in c.allow_from),
            certificate_cn=c.certificate_cn,
            strict=None if not c.validation else c.validation == "strict",
        )
    return clients


def _problems(data: bytes, max_bytes: int) -> list[str]:
    result = validate(data, max_bytes=max_bytes)
    return [str(p) for p in result.problems]


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _read_prefix(path: Path, size: int) -> bytes:
    with path.open("rb") as file:
        return file.read(size)


class Gateway:
    """The axis operations over one node's processor, store and directory."""

    def __init__(
        self,
        *,
        processor: Processor,
        store: Store,
        directory: Directory | DirectoryHolder,
        clients: Mapping[str, Client],
        clock: Callable[[], float] = time.time,
        policy: HashPolicy = HashPolicy.REFUSE,
        limits: ConnectionLimits | None = None,
        max_body_bytes: int | None = None,
        body_timeout_s: float = 30.0,
        upload_dir: Path | None = None,
    ) -> None:
        """``clients`` by system id; ``policy`` for requests whose HMAC cannot be checked;
        ``limits`` on connections; ``max_body_bytes`` (default: the processor's largest
        package plus a margin) and ``body_timeout_s`` (longest stall between two reads) for
        request bodies, which are written to ``upload_dir`` (default: the system's);
        ``directory`` the node's holder, read at each request (or one fixed directory)."""
        self.processor = processor
        self.store = store
        self.directories = (
            directory if isinstance(directory, DirectoryHolder) else fixed(directory, clock)
        )
        self.clients = dict(clients)
        self.clock = clock
        self.policy = policy
        self.limits = limits or ConnectionLimits()
        self.max_body_bytes = max_body_bytes or processor.max_package_bytes + BODY_MARGIN
        self.body_timeout_s = body_timeout_s
        self.upload_dir = upload_dir
        self._submissions: FirstResults[str, Submitted] = FirstResults(RECENT_SUBMISSIONS)
        self._replies: FirstResults[tuple[str, str, str], Reply] = FirstResults(
            RECENT_REQUESTS, keep=lambda reply: reply.ok
        )
        self.operations: dict[str, Operation] = {
            axis.SEND_EDOC: self.send_edoc,
            axis.GET_RECEIVED: self.received_list,
            axis.GET_EDOC: self.get_edoc,
            axis.UPDATE_STATUS: self.update_status,
            axis.GET_SENT: self.sent_list,
            axis.GET_AGENCIES: self.agencies,
        }

    def app(
        self, routes: Iterable[web.AbstractRouteDef] = (), *, remote: bool = False
    ) -> web.Application:
        """An application serving the operations on every path whose last segment names one;
        ``routes`` are matched first. ``remote``: the HTTPS listener's, where each client's
        ``allow_from`` (and certificate) is checked."""
        app = web.Application()
        app[REMOTE] = remote
        app[GATEWAY] = self
        app.router.add_routes(routes)
        app.router.add_route("*", "/{path:.*}", self.handle, expect_handler=self.expect)
        app.on_response_prepare.append(_close_after)
        return app

    # -- one request --------------------------------------------------------------------------

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: the 100 only for a request whose headers authenticate;
        a refused one gets its reply at once, its body never asked for."""
        operation = axis.operation_of(request.raw_path.split("?", 1)[0])
        with structlog.contextvars.bound_contextvars(operation=operation, peer=request.remote):
            try:
                self._authenticated(request, operation)
            except AxisError as err:
                return await self._respond(request, Reply(self._refused(operation, err), False))
        expect = request.headers.get("Expect", "")
        if request.version != HttpVersion11 or expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request: always 200 and an axis JSON reply."""
        operation = axis.operation_of(request.raw_path.split("?", 1)[0])
        with structlog.contextvars.bound_contextvars(operation=operation, peer=request.remote):
            reply = await self._call(request, operation)
            return await self._respond(request, reply)

    def _authenticated(self, request: web.Request, operation: str) -> Authenticated:
        """The request's client and signed parameters, from its headers alone (once)."""
        if _AUTH in request:
            return request[_AUTH]
        if operation not in self.operations:
            raise AxisError(
                ErrorCode.BAD_REQUEST,
                f"unknown operation {operation!r}; known: {', '.join(axis.OPERATIONS)}",
            )
        path = request.raw_path.split("?", 1)[0]
        auth = axis.authenticate(
            axis.parse_request(path, request.raw_headers), self.clients, self.policy
        )
        if request.app[REMOTE]:
            auth.client.check_remote(request.remote or "", peer_common_name(request.transport))
        request[_AUTH] = auth
        return auth

    async def _call(self, request: web.Request, operation: str) -> Reply:
        try:
            auth = self._authenticated(request, operation)
        except AxisError as err:
            return Reply(self._refused(operation, err), False)
        with structlog.contextvars.bound_contextvars(systemid=auth.client.system_id):
            if auth.check is axis.HashCheck.UNVERIFIABLE:
                _log.warning(
                    "gateway_hash_unverifiable_accepted",
                    reason="a header value was mangled on the way; accepted by policy",
                )
            if operation not in axis.NOT_IDEMPOTENT:
                return await self._run(auth, request)
            key = (auth.client.system_id, operation, auth.request.hash_header)
            reply, repeated = await self._replies.run(key, lambda: self._run(auth, request))
            if repeated:
                _log.info(
                    "gateway_request_repeated",
                    reason="the same signed request again: answered with the first reply",
                )
            return reply

    async def _run(self, auth: Authenticated, request: web.Request) -> Reply:
        operation = auth.request.operation
        try:
            fields = await self.operations[operation](auth, request)
        except AxisError as err:
            return Reply(self._refused(operation, err), False)
        except TransientError as exc:
            error = AxisError(ErrorCode.UNAVAILABLE, str(exc))
            return Reply(self._refused(operation, error), False)
        except Exception:  # our bug: log it loudly, but the SDK still needs a JSON reply
            _log.exception("gateway_internal_error")
            error = AxisError(ErrorCode.UNAVAILABLE, "internal error; see the node's log")
            return Reply(axis.failure(operation, error), False)
        streamed = [(name, value) for name, value in fields.items() if isinstance(value, Base64)]
        if not streamed:
            return Reply(axis.success(operation, **fields), True)
        [(name, value)] = streamed
        head, tail = axis.success_around(operation, name)
        return Reply(head, True, stream=value.data, tail=tail)

    async def _respond(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.stream is None:
            return web.Response(body=reply.body, content_type="application/json")
        stream = reply.stream
        size = (
            len(stream)
            if isinstance(stream, bytes)
            else (await asyncio.to_thread(os.stat, stream)).st_size
        )
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.content_length = len(reply.body) + 4 * ((size + 2) // 3) + len(reply.tail)
        await response.prepare(request)
        await response.write(reply.body)
        if isinstance(stream, bytes):
            data = memoryview(stream)
            for at in range(0, len(data), BASE64_PIECE):
                await response.write(base64.b64encode(data[at : at + BASE64_PIECE]))
        else:
            with await asyncio.to_thread(stream.open, "rb") as source:
                while piece := await asyncio.to_thread(source.read, BASE64_PIECE * 8):
                    await response.write(base64.b64encode(piece))
        await response.write(reply.tail)
        await response.write_eof()
        return response

    def _refused(self, operation: str, err: AxisError) -> bytes:
        _log.warning("gateway_refused", error_code=err.code.value, reason=err.desc)
        return axis.failure(operation, err)

    # -- sendEdoc -----------------------------------------------------------------------------

    async def send_edoc(self, auth: Authenticated, request: web.Request) -> dict[str, Any]:
        """Validate, sign, store and route the package; ``DocId`` is its package id."""
        path, size = await self._receive_body(request, axis.required(auth, "hash-file"))
        try:
            # A large package stays in its file (cut to the package's bytes) and is read in
            # pieces from there on; a small one is read into memory.
            data: bytes | Path = path
            if size > LARGE_PACKAGE:
                await asyncio.to_thread(os.truncate, path, size)
            else:
                data = await asyncio.to_thread(_read_prefix, path, size)
            pkg = await self._parse(data)
            axis.check_declared(auth, pkg.sender, pkg.kind)
            if pkg.sender not in auth.client.send_for:
                raise AxisError(
                    ErrorCode.FORBIDDEN,
                    f"client {auth.client.system_id} may not send for {pkg.sender} (the"
                    " package's From); it may send for:"
                    f" {', '.join(sorted(auth.client.send_for)) or 'none'}",
                )
            try:
                submitted = await self._submit_once(data, strict=auth.client.strict)
            except SubmissionRefused as exc:
                raise AxisError(
                    ErrorCode.REFUSED, "the package was refused: " + "; ".join(exc.problems)
                ) from exc
        finally:
            await asyncio.to_thread(_remove, path)
        _log.info(
            "gateway_package_accepted",
            document_id=submitted.document_id,
            package_id=submitted.package_id,
            kind=submitted.kind,
            duplicate=submitted.duplicate,
        )
        return {"DocId": submitted.package_id}

    async def _receive_body(self, request: web.Request, hash_file: str) -> tuple[Path, int]:
        """Stream the body to a file, checking the size limit as it comes and the stall
        timeout between reads; the file and how many of its bytes are the package."""
        limit = self.max_body_bytes
        too_large = AxisError(
            ErrorCode.REFUSED, f"the request is too large: the limit is {limit} bytes"
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        if self.upload_dir is not None:
            self.upload_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="sendEdoc-", suffix=".part", dir=self.upload_dir)
        path = Path(name)
        digest = axis.BodyDigest()
        try:
            with os.fdopen(fd, "wb") as out:
                pending = bytearray()
                while chunk := await self._read_some(request):
                    digest.update(chunk)
                    if digest.size > limit:
                        raise too_large
                    pending += chunk
                    if len(pending) >= WRITE_PIECE:
                        await asyncio.to_thread(out.write, pending)
                        pending = bytearray()
                await asyncio.to_thread(out.write, pending)
            return path, digest.package_size(hash_file)
        except BaseException:
            _remove(path)
            raise

    async def _read_some(self, request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await request.content.readany()
        except TimeoutError:
            raise AxisError(
                ErrorCode.BAD_REQUEST,
                f"the request body stalled: nothing arrived for {self.body_timeout_s:g} s",
            ) from None
        except (ConnectionError, ClientPayloadError) as exc:
            raise AxisError(ErrorCode.BAD_REQUEST, f"the request body ended early: {exc}") from exc

    async def _submit_once(self, data: bytes | Path, *, strict: bool | None) -> Submitted:
        """Submit ``data`` (``strict`` as :meth:`Processor.submit` takes it), recognising the
        same bytes sent again while or after it runs.

        A new SDK client object re-sending a package signs another request, so the replay
        memory does not see it. The store recognises the same signed bytes, which covers
        deterministic (RSA) signatures across restarts; this memory of recent submissions
        also covers ECDSA keys, whose signatures differ each time, and a re-send that arrives
        while the first is still being signed.
        """
        if isinstance(data, Path):
            digest = (await asyncio.to_thread(file_digest, data))[0]
        else:
            digest = hashlib.sha256(data).hexdigest()
        submitted, repeated = await self._submissions.run(
            digest, lambda: self.processor.submit(data, strict=strict)
        )
        if repeated:
            _log.info("submission_duplicate", package_id=submitted.package_id)
            return dataclasses.replace(submitted, duplicate=True)
        return submitted

    async def _parse(self, data: bytes | Path) -> Package:
        """The package (a large one in a file: read in pieces, its attachments placeholders),
        or the refusal listing every problem validation finds in it."""
        limit = self.processor.max_package_bytes
        if isinstance(data, Path):
            checked = await off_loop(validate_file, data, max_bytes=limit)
            if checked.result.package is None or checked.result.problems:
                problems = [str(p) for p in checked.result.problems] or ["cannot be read"]
                raise AxisError(
                    ErrorCode.REFUSED, "the package was refused: " + "; ".join(problems)
                )
            return checked.result.package
        try:
            return await off_loop(parse, data, max_bytes=limit)
        except LienthongError as exc:
            problems = await off_loop(_problems, data, limit) or [str(exc)]
            raise AxisError(
                ErrorCode.REFUSED, "the package was refused: " + "; ".join(problems)
            ) from exc

    # -- receiving ----------------------------------------------------------------------------

    async def received_list(
        self, auth: Authenticated, request: web.Request | None = None
    ) -> dict[str, Any]:
        """Pending inbox entries (new or failed) of the client's agencies, of the kinds asked."""
        kinds = axis.message_types(auth.param("messagetype"))
        rows = []
        for agency in sorted(auth.client.receive_for):
            for entry in await self.store.inbox_list(agency, pending=True):
                if entry.kind in kinds:
                    rows.append(_received_row(entry))
        return {"data": rows}

    async def get_edoc(
        self, auth: Authenticated, request: web.Request | None = None
    ) -> dict[str, Any]:
        """The package of inbox entry ``docId``, base64 (streamed); retrieval is acknowledged
        apart."""
        entry = await self._entry(auth, axis.required(auth, "docId"))
        try:
            data = await self._stored(entry.package_id)
        except CorruptPackage as exc:
            _log.error("package_corrupted", package_id=entry.package_id, reason=str(exc))
            raise AxisError(
                ErrorCode.UNAVAILABLE,
                f"received document {entry.entry_id} is corrupted on this node's disk and was"
                " quarantined; the node's operator is told; ask its sender to send it again",
            ) from exc
        return {"data": Base64(data)}

    async def _stored(self, package_id: str) -> bytes | Path:
        """A stored package: its file to read in pieces, or its bytes when it is small."""
        path = await self.store.package_file(package_id)
        return path if path is not None else await self.store.read_package(package_id)

    async def update_status(
        self, auth: Authenticated, request: web.Request | None = None
    ) -> dict[str, Any]:
        """Acknowledge the retrieval of entry ``docid``: ``done``, or ``fail`` to have it again.

        Idempotent: an entry already done stays done and the call succeeds.
        """
        status = axis.required(auth, "status")
        if status not in ("done", "fail"):
            raise AxisError(ErrorCode.BAD_REQUEST, f"status must be done or fail, not {status!r}")
        entry = await self._entry(auth, axis.required(auth, "docid"))
        if entry.state == "done":
            _log.info("gateway_ack_repeated", entry=entry.entry_id, status=status)
            return {}
        detail = f"updateStatus {status} by {auth.client.system_id}"
        try:
            await self.store.inbox_ack(entry.entry_id, status == "done", self.clock(), detail)
        except (IllegalTransition, ConcurrentChange):
            # the same call, re-sent after a dropped connection, may have won the race
            again = await self._entry(auth, str(entry.entry_id))
            if again.state != "done":
                raise
        _log.info("gateway_ack", entry=entry.entry_id, document_id=entry.document_id, status=status)
        return {}

    async def _entry(self, auth: Authenticated, doc_id: str) -> InboxEntry:
        """Inbox entry ``doc_id`` of one of the client's agencies, in any state."""
        missing = AxisError(
            ErrorCode.NOT_FOUND,
            f"no received document {doc_id!r} for the agencies of client {auth.client.system_id}",
        )
        if not doc_id.isdigit():
            raise missing
        entry = await self.store.inbox_entry(int(doc_id))
        if entry is None or entry.recipient not in auth.client.receive_for:
            raise missing
        return entry

    # -- sent documents and the directory ----------------------------------------------------

    async def sent_list(
        self, auth: Authenticated, request: web.Request | None = None
    ) -> dict[str, Any]:
        """Per-recipient state of the package ``docId`` the client sent, from its receipts."""
        doc_id = axis.required(auth, "docId")
        missing = AxisError(
            ErrorCode.NOT_FOUND,
            f"no package {doc_id!r} sent here for the agencies of client {auth.client.system_id}",
        )
        try:
            record = await self.store.get_package(doc_id)
        except UnknownId:
            raise missing from None
        meta = record.meta
        if record.from_peer is not None or meta.sender not in auth.client.send_for:
            raise missing
        source = await self._stored(doc_id) if meta.size > LARGE_PACKAGE else None
        pkg = await self._parse(source or await self.store.read_package(doc_id))
        receipts = await self.store.receipts(meta.document_id)
        directory = self.directory
        split = split_by_next_hop(self.processor.me, directory, meta.recipients)
        # Routing names a renamed recipient by its new code; the package by the one it had.
        hop_of = {r: hop for hop, rs in split.by_hop.items() for r in rs}
        title, notation = (
            (pkg.subject, pkg.code.notation)
            if isinstance(pkg, EdocPackage)
            else (f"status {pkg.status_code}", "")
        )
        rows = []
        for recipient in meta.recipients:
            state = axis.sent_state(
                recipient,
                next_hop=hop_of.get(directory.resolve(recipient)),
                created_at=record.created_at,
                receipts=receipts,
                codes=self.directories.version.codes_of(recipient),
            )
            rows.append(
                {
                    "senderDocId": record.package_id,
                    "receiverDocId": "",
                    "fromCode": meta.sender,
                    "toCode": recipient,
                    "sendStatus": state.send_status,
                    "sendStatusDesc": state.send_status_desc,
                    "receiveStatus": state.receive_status,
                    "receiveStatusDesc": state.receive_status_desc,
                    "sentTime": axis.format_time(state.sent_at),
                    "receivedTime": axis.format_time(state.received_at),
                    "title": title,
                    "notation": notation,
                    "messageType": meta.kind,
                    "serviceType": axis.SERVICE_TYPE,
                }
            )
        return {"data": rows}

    @property
    def directory(self) -> Directory:
        """The directory in force."""
        return self.directories.directory

    async def agencies(
        self, auth: Authenticated, request: web.Request | None = None
    ) -> dict[str, Any]:
        """The agencies of the directory in force; ``id`` is the agency code, ``pid`` the
        parent's code."""
        rows = []
        directory = self.directory
        for code in directory.codes:
            agency = directory.agency(code)
            rows.append(
                {
                    "id": code,
                    "code": code,
                    "name": agency.name,
                    "pid": agency.parent or "",
                    "mail": "",
                }
            )
        return {"data": rows}


_ENTRY_STATES = {
    "new": "not retrieved yet",
    "failed": "retrieval failed: offered again",
    "done": "retrieved",
}


def _received_row(entry: InboxEntry) -> dict[str, str]:
    added = axis.format_time(entry.added_at)
    return {
        "docId": str(entry.entry_id),
        "serviceType": axis.SERVICE_TYPE,
        "messageType": entry.kind,
        "from": entry.sender,
        "to": entry.recipient,
        "status": entry.state,
        "status_desc": _ENTRY_STATES.get(entry.state, entry.state),
        "created_time": added,
        "updated_time": added,
    }


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")


async def _close_after(request: web.Request, response: web.StreamResponse) -> None:
    """One request per connection: the header timer of the guard then covers every request."""
    response.force_close()


def make_app(
    processor: Processor,
    store: Store,
    directory: Directory | DirectoryHolder,
    clients: Mapping[str, Client],
    clock: Callable[[], float] = time.time,
    *,
    policy: HashPolicy = HashPolicy.REFUSE,
    max_body_bytes: int | None = None,
    routes: Iterable[web.AbstractRouteDef] = (),
    limits: ConnectionLimits | None = None,
    body_timeout_s: float = 30.0,
    upload_dir: Path | None = None,
    remote: bool = False,
) -> web.Application:
    """The application of a new :class:`Gateway` (see there for the options); ``routes``
    (the operator's pages) are matched before the operations."""
    gateway = Gateway(
        processor=processor,
        store=store,
        directory=directory,
        clients=clients,
        clock=clock,
        policy=policy,
        limits=limits,
        max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout_s,
        upload_dir=upload_dir,
    )
    return gateway.app(routes, remote=remote)


@dataclass
class Listener:
    """Served applications: where they listen, and how to stop them."""

    port: int | None = None
    socket: Path | None = None
    https_port: int | None = None
    addresses: list[str] = field(default_factory=list)
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _runners: list[web.AppRunner] = field(default_factory=list)

    def add(self, other: Listener) -> None:
        """Take over ``other``'s servers (it is then closed with this one)."""
        self.https_port = other.https_port or self.https_port
        self.addresses += other.addresses
        self._servers += other._servers
        self._runners += other._runners

    async def close(self) -> None:
        """Stop listening and finish the requests in progress."""
        for server in self._servers:
            server.close()
        for runner in self._runners:
            await runner.cleanup()
        self._servers.clear()
        self._runners.clear()


async def serve(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int | None = 0,
    socket: Path | None = None,
    tls: ssl.SSLContext | None = None,
) -> Listener:
    """Listen on ``host:port`` (0: a free port; None: no TCP), over TLS with ``tls``, and/or
    on the unix ``socket``; every connection guarded by the gateway's limits."""
    if port is None and socket is None:
        raise ConfigError("the gateway needs a TCP port or a unix socket", key="gateway")
    gateway = app[GATEWAY]
    runner = web.AppRunner(
        app,
        access_log=None,
        max_line_size=MAX_FIELD,
        max_field_size=MAX_FIELD,
        lingering_time=LINGER_S,
    )
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    listener = Listener(_runners=[runner])
    factory = guarded(runner.server, gateway.limits, tls)
    try:
        if port is not None:
            server = await loop.create_server(factory, host, port, reuse_address=True)
            listener._servers.append(server)
            bound = int(server.sockets[0].getsockname()[1])
            scheme = "https" if tls is not None else "http"
            listener.addresses.append(f"{scheme}://{host}:{bound}")
            if tls is None:
                listener.port = bound
            else:
                listener.https_port = bound
        if socket is not None:
            unix = await loop.create_unix_server(factory, str(socket))
            listener._servers.append(unix)
            os.chmod(socket, 0o660)  # the office software's group, not everyone
            listener.socket = socket
            listener.addresses.append(f"unix:{socket}")
    except OSError as exc:
        await listener.close()
        raise ConfigError(f"cannot listen: {exc.strerror or exc}", key="gateway") from exc
    _log.info("gateway_listening", addresses=listener.addresses)
    return listener


async def start_gateway(
    settings: GatewaySettings,
    processor: Processor,
    store: Store,
    directory: Directory | DirectoryHolder,
    clock: Callable[[], float] = time.time,
    routes: Iterable[web.AbstractRouteDef] = (),
    upload_dir: Path | None = None,
) -> Listener:
    """Load the clients, build the gateway and listen, all from ``[gateway]``: plain HTTP on
    the loopback port and/or unix socket (with ``routes`` before the operations), and HTTPS
    (the operations only) when ``[gateway.https]`` names a host."""
    limits = ConnectionLimits(
        total=settings.max_connections,
        per_address=settings.max_connections_per_address,
        header_timeout_s=settings.header_timeout_s,
    )
    ensure_open_files(settings.max_connections)
    gateway = Gateway(
        processor=processor,
        store=store,
        directory=directory,
        clients=load_clients(settings),
        clock=clock,
        policy=HashPolicy(settings.unverifiable_hash),
        limits=limits,
        body_timeout_s=settings.body_timeout_s,
        upload_dir=upload_dir,
    )
    https = settings.https
    tls = None
    if https.enabled:
        for name, path in (("cert", https.cert), ("key", https.key)):
            if path == Path():
                raise ConfigError("is required for the HTTPS listener", key=f"gateway.https.{name}")
        client_ca = https.client_ca if https.client_ca != Path() else None
        tls = server_tls(https.cert, https.key, client_ca)
    socket = settings.socket if settings.socket != Path() else None
    listener = Listener()
    if settings.port or socket is not None:
        listener = await serve(
            gateway.app(routes), host=settings.host, port=settings.port or None, socket=socket
        )
    if tls is not None:
        try:
            app = gateway.app(remote=True)
            remote = await serve(app, host=https.host, port=https.port, tls=tls)
        except ConfigError:
            await listener.close()
            raise
        listener.add(remote)
    return listener
