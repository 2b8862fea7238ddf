"""The local HTTP API office software talks to, in the national axis SDK's wire format.

:func:`make_app` builds the aiohttp application over a node's processor, store and directory;
:func:`serve` binds it to a local address and/or a unix socket; :func:`start_gateway` does
both from the ``[gateway]`` settings. The wire format itself (parameters, HMAC, replies) is
:mod:`lienthong.gateway.axis`; this module moves bytes between it and the node.

Every reply is HTTP 200 with a JSON body, refusals included: the SDK ignores the status
line. Each refusal is logged (``gateway_refused``) with the operation, the client and why.

Header bytes above ASCII pass aiohttp's parsers (the C parser, llhttp, and the pure-Python
one both accept obs-text in field values); they are read from ``request.raw_headers`` as
bytes, never from the decoded header map. ``Expect: 100-continue`` is answered by aiohttp's
default expect handler as soon as the headers are routed, before the body is read.

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
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from lienthong.config import GatewaySettings
from lienthong.directory import Directory
from lienthong.dirholder import DirectoryHolder, fixed
from lienthong.edxml import EdocPackage, Package, parse, validate
from lienthong.errors import ConfigError, LienthongError, TransientError
from lienthong.gateway import axis
from lienthong.gateway.axis import Authenticated, AxisError, Client, ErrorCode, HashPolicy
from lienthong.keyfiles import read_file
from lienthong.logs import get_logger
from lienthong.processing import Processor, SubmissionRefused, Submitted
from lienthong.routing import split_by_next_hop
from lienthong.store import ConcurrentChange, IllegalTransition, Store, UnknownId
from lienthong.store.model import InboxEntry
from lienthong.xmlwork import off_loop

_log = get_logger("lienthong.gateway")

BODY_MARGIN = 64 * 1024
"""Room above the largest package for the CRLF and a stray multipart wrapper."""

RECENT_SUBMISSIONS = 4096
"""How many recent submissions (by digest of the bytes received) are remembered."""

Operation = Callable[[Authenticated], Awaitable[dict[str, Any]]]


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
            strict=None if not c.validation else c.validation == "strict",
        )
    return clients


def _problems(data: bytes, max_bytes: int) -> list[str]:
    result = validate(data, max_bytes=max_bytes)
    return [str(p) for p in result.problems]


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
    ) -> None:
        """``clients`` by system id; ``policy`` for requests whose HMAC cannot be checked;
        ``directory`` the node's holder, read at each request (or one fixed directory)."""
        self.processor = processor
        self.store = store
        self.directories = (
            directory if isinstance(directory, DirectoryHolder) else fixed(directory, clock)
        )
        self.clients = dict(clients)
        self.clock = clock
        self.policy = policy
        self._recent: OrderedDict[str, Submitted] = OrderedDict()
        self._running: dict[str, asyncio.Future[Submitted]] = {}
        self.operations: dict[str, Operation] = {
            axis.SEND_EDOC: self.send_edoc,
            axis.GET_RECEIVED: self.received_list,
            axis.GET_EDOC: self.get_edoc,
            axis.UPDATE_STATUS: self.update_status,
            axis.GET_SENT: self.sent_list,
            axis.GET_AGENCIES: self.agencies,
        }

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one request: always 200 and an axis JSON reply."""
        path = request.raw_path.split("?", 1)[0]
        operation = axis.operation_of(path)
        with structlog.contextvars.bound_contextvars(operation=operation, peer=request.remote):
            try:
                body = await request.read()
                reply = await self._call(path, operation, request, body)
            except web.HTTPRequestEntityTooLarge as exc:
                reply = self._refused(
                    operation, AxisError(ErrorCode.REFUSED, f"the request is too large: {exc.text}")
                )
        return web.Response(body=reply, content_type="application/json")

    async def _call(self, path: str, operation: str, request: web.Request, body: bytes) -> bytes:
        try:
            parsed = axis.parse_request(path, request.raw_headers, body)
            op = self.operations.get(operation)
            if op is None:
                raise AxisError(
                    ErrorCode.BAD_REQUEST,
                    f"unknown operation {operation!r}; known: {', '.join(axis.OPERATIONS)}",
                )
            auth = axis.authenticate(parsed, self.clients, self.policy)
            with structlog.contextvars.bound_contextvars(systemid=auth.client.system_id):
                if auth.check is axis.HashCheck.UNVERIFIABLE:
                    _log.warning(
                        "gateway_hash_unverifiable_accepted",
                        reason="a header value was mangled on the way; accepted by policy",
                    )
                fields = await op(auth)
                return axis.success(operation, **fields)
        except AxisError as err:
            return self._refused(operation, err)
        except TransientError as exc:
            return self._refused(operation, AxisError(ErrorCode.UNAVAILABLE, str(exc)))
        except Exception:  # our bug: log it loudly, but the SDK still needs a JSON reply
            _log.exception("gateway_internal_error")
            return axis.failure(
                operation, AxisError(ErrorCode.UNAVAILABLE, "internal error; see the node's log")
            )

    def _refused(self, operation: str, err: AxisError) -> bytes:
        _log.warning("gateway_refused", error_code=err.code.value, reason=err.desc)
        return axis.failure(operation, err)

    # -- sendEdoc -----------------------------------------------------------------------------

    async def send_edoc(self, auth: Authenticated) -> dict[str, Any]:
        """Validate, sign, store and route the package; ``DocId`` is its package id."""
        data = axis.package_bytes(auth.request.body, auth.param("hash-file"))
        pkg = await self._parse(data)
        if pkg.sender not in auth.client.send_for:
            raise AxisError(
                ErrorCode.FORBIDDEN,
                f"client {auth.client.system_id} may not send for {pkg.sender} (the package's"
                f" From); it may send for: {', '.join(sorted(auth.client.send_for)) or 'none'}",
            )
        declared = auth.param("messagetype")
        if declared and declared != pkg.kind:
            _log.info("gateway_messagetype_differs", messagetype=declared, package=pkg.kind)
        try:
            submitted = await self._submit_once(data, strict=auth.client.strict)
        except SubmissionRefused as exc:
            raise AxisError(
                ErrorCode.REFUSED, "the package was refused: " + "; ".join(exc.problems)
            ) from exc
        _log.info(
            "gateway_package_accepted",
            document_id=submitted.document_id,
            package_id=submitted.package_id,
            kind=submitted.kind,
            duplicate=submitted.duplicate,
        )
        return {"DocId": submitted.package_id}

    async def _submit_once(self, data: bytes, *, strict: bool | None) -> Submitted:
        """Submit ``data`` (``strict`` as :meth:`Processor.submit` takes it), recognising the
        same bytes sent again while or after it runs.

        The SDK re-sends a request whose connection dropped. The store recognises the same
        signed bytes, which covers deterministic (RSA) signatures across restarts; this
        memory of recent submissions also covers ECDSA keys, whose signatures differ each
        time, and a re-send that arrives while the first is still being signed. The
        submission is shielded, so a dropped connection never cuts it short.
        """
        digest = hashlib.sha256(data).hexdigest()
        known = self._recent.get(digest)
        if known is not None:
            _log.info("submission_duplicate", package_id=known.package_id)
            return dataclasses.replace(known, duplicate=True)
        running = self._running.get(digest)
        if running is not None:
            return dataclasses.replace(await asyncio.shield(running), duplicate=True)
        task = asyncio.ensure_future(self.processor.submit(data, strict=strict))
        self._running[digest] = task
        try:
            submitted = await asyncio.shield(task)
        finally:
            self._running.pop(digest, None)
        self._recent[digest] = submitted
        while len(self._recent) > RECENT_SUBMISSIONS:
            self._recent.popitem(last=False)
        return submitted

    async def _parse(self, data: bytes) -> Package:
        """The package, or the refusal listing every problem validation finds in it."""
        limit = self.processor.max_package_bytes
        try:
            return await off_loop(parse, data, max_bytes=limit)
        except LienthongError as exc:
            problems = await off_loop(_problems, data, limit) or [str(exc)]
            raise AxisError(
                ErrorCode.REFUSED, "the package was refused: " + "; ".join(problems)
            ) from exc

    # -- receiving ----------------------------------------------------------------------------

    async def received_list(self, auth: Authenticated) -> dict[str, Any]:
        """Pending inbox entries (new or failed) of the client's agencies, of the kinds asked."""
        kinds = axis.message_types(auth.param("messagetype"))
        rows = []
        for agency in sorted(auth.client.receive_for):
            for entry in await self.store.inbox_list(agency, pending=True):
                if entry.kind in kinds:
                    rows.append(_received_row(entry))
        return {"data": rows}

    async def get_edoc(self, auth: Authenticated) -> dict[str, Any]:
        """The package of inbox entry ``docId``, base64; retrieval is acknowledged apart."""
        entry = await self._entry(auth, axis.required(auth, "docId"))
        data = await self.store.read_package(entry.package_id)
        return {"data": base64.b64encode(data).decode("ascii")}

    async def update_status(self, auth: Authenticated) -> dict[str, Any]:
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

    async def sent_list(self, auth: Authenticated) -> dict[str, Any]:
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
        pkg = await self._parse(await self.store.read_package(doc_id))
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

    async def agencies(self, auth: Authenticated) -> dict[str, Any]:
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
) -> web.Application:
    """The aiohttp application: every path whose last segment names an operation.

    ``max_body_bytes`` defaults to the processor's largest package plus a margin; ``routes``
    (the operator's pages) are matched before the operations.
    """
    gateway = Gateway(
        processor=processor,
        store=store,
        directory=directory,
        clients=clients,
        clock=clock,
        policy=policy,
    )
    limit = max_body_bytes or processor.max_package_bytes + BODY_MARGIN
    app = web.Application(client_max_size=limit)
    app.router.add_routes(routes)
    app.router.add_route("*", "/{path:.*}", gateway.handle)
    return app


@dataclass
class Listener:
    """A served application: where it listens, and how to stop it."""

    runner: web.AppRunner
    port: int | None = None
    socket: Path | None = None
    addresses: list[str] = field(default_factory=list)

    async def close(self) -> None:
        """Stop listening and finish the requests in progress."""
        await self.runner.cleanup()


async def serve(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int | None = 0,
    socket: Path | None = None,
) -> Listener:
    """Listen on ``host:port`` (0: a free port; None: no TCP) and/or the unix ``socket``."""
    if port is None and socket is None:
        raise ConfigError("the gateway needs a TCP port or a unix socket", key="gateway")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = Listener(runner)
    try:
        if port is not None:
            site = web.TCPSite(runner, host, port)
            await site.start()
            listener.port = int(runner.addresses[0][1])
            listener.addresses.append(f"http://{host}:{listener.port}")
        if socket is not None:
            unix = web.UnixSite(runner, str(socket))
            await unix.start()
            os.chmod(socket, 0o660)  # the office software's group, not everyone
            listener.socket = socket
            listener.addresses.append(f"unix:{socket}")
    except OSError as exc:
        await runner.cleanup()
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
) -> Listener:
    """Load the clients, build the application (with ``routes`` before the operations) and
    listen, all from ``[gateway]``."""
    app = make_app(
        processor,
        store,
        directory,
        load_clients(settings),
        clock,
        policy=HashPolicy(settings.unverifiable_hash),
        routes=routes,
    )
    return await serve(
        app,
        host=settings.host,
        port=settings.port or None,
        socket=settings.socket if settings.socket != Path() else None,
    )
