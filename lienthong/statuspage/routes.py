"""The operator's routes on the node's local HTTP server, beside the office-software API.

=====================  ===========================================================
``GET /metrics``       Prometheus text format (:mod:`lienthong.metrics`)
``GET /healthz``       every check of :mod:`lienthong.health`; 200 healthy, 503 not
``GET /``              the status page (:mod:`lienthong.statuspage.render`)
``GET /status.json``   the page's data and its HTML fragments, for the live refresh
``POST /requeue``      ``{"id": ...}``: put one dead letter back in the queue
=====================  ===========================================================

``/metrics`` and ``/healthz`` answer whoever reaches the listener (monitoring systems scrape
them). The page, its JSON and the requeue are for the operator on the machine: they answer
only requests whose ``Host`` is a loopback name or the configured listening address, so a web
page elsewhere cannot reach them by pointing its own domain name at 127.0.0.1 (DNS rebinding).

The requeue changes the store, so it also refuses any method but POST, a request that a
browser marks as coming from another site (``Origin`` not this server, ``Sec-Fetch-Site`` not
``same-origin``), and one without the ``X-Lienthong-Token`` header holding the token the page
carries. A page elsewhere cannot read that token, and cannot send a custom header to this
server without a CORS preflight, which is never granted.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from lienthong.dirholder import DirectoryHolder
from lienthong.errors import TransientError
from lienthong.health import Check, DiskLimits, check_node
from lienthong.logs import get_logger
from lienthong.metrics import CONTENT_TYPE, Metrics
from lienthong.statuspage.render import page, sections
from lienthong.statuspage.snapshot import Snapshot, take_snapshot
from lienthong.store import Store, UnknownId
from lienthong.transport.link import Link
from lienthong.trust import SigningIdentity

__all__ = ["TOKEN_HEADER", "Operator", "operator_routes"]

_log = get_logger("lienthong.statuspage")

TOKEN_HEADER = "X-Lienthong-Token"  # noqa: S105 (a header name, not a secret)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names, not a bind)
_MAX_REQUEUE_BODY = 4096

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operator:
    """What the operator's routes need of a running node.

    ``neighbours`` gives the neighbours it sends to in the directory in force (called at
    each request, so the page follows directory versions); ``token`` the secret the status
    page sends back
    with a requeue; ``listen_host`` the configured listening address (a name it may be
    reached by); ``on_requeued`` is called after a requeue, to wake the senders; ``checks``
    gives the health checks made elsewhere (the spool's).
    """

    node: str
    store: Store
    links: Mapping[str, Link]
    neighbours: Callable[[], Iterable[str]]
    identity: SigningIdentity | None
    state_dir: Path
    metrics: Metrics
    token: str
    listen_host: str = "127.0.0.1"
    on_requeued: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    disk: DiskLimits = field(default_factory=DiskLimits)
    checks: Callable[[], Sequence[Check]] = lambda: ()
    directory: DirectoryHolder | None = None

    @property
    def local_names(self) -> frozenset[str]:
        """The host names the page, its JSON and the requeue answer to."""
        extra = set() if self.listen_host in _WILDCARDS else {self.listen_host.strip("[]")}
        return LOOPBACK_NAMES | extra


def _refusal(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def _host_name(host: str) -> str:
    """``host`` of a ``Host`` header without its port, brackets of an IPv6 address removed."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _local_only(op: Operator, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        name = _host_name(request.host).lower()
        if name not in op.local_names:
            return _refusal(
                403,
                f"this page is for the operator on the node's machine; the host name {name!r}"
                f" is not one of {', '.join(sorted(op.local_names))}",
            )
        return await handler(request)

    return guarded


def _cross_site(request: web.Request) -> str | None:
    """Why a browser's request looks like it comes from another site, or None."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"the browser says the request comes from a {site} page"
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        return f"the request comes from the page of another origin ({origin})"
    return None


class _Routes:
    def __init__(self, op: Operator) -> None:
        self.op = op

    async def metrics(self, request: web.Request) -> web.Response:
        op = self.op
        await op.metrics.refresh(op.store, op.links, op.neighbours(), op.clock())
        return web.Response(body=op.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        op = self.op
        health = await check_node(
            node=op.node,
            store=op.store,
            links=op.links,
            identity=op.identity,
            state_dir=op.state_dir,
            now=op.clock(),
            limits=op.disk,
            extra=op.checks(),
            directory=op.directory,
        )
        if not health.ok:
            _log.warning("health_failing", checks={c.name: c.reason for c in health.failing})
        return web.json_response(health.as_json(), status=200 if health.ok else 503)

    async def _snapshot(self) -> Snapshot:
        op = self.op
        return await take_snapshot(
            node=op.node,
            store=op.store,
            links=op.links,
            hops=op.neighbours(),
            recent=op.metrics.recent,
            now=op.clock(),
            deviations=op.metrics.deviations_of,
            directory=op.directory,
        )

    async def page(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshot()
        return web.Response(
            text=page(snapshot, self.op.token),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    async def status(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshot()
        body = {"data": snapshot.as_json(), "html": sections(snapshot)}
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def requeue(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return _refusal(405, "requeue takes a POST from the status page", Allow="POST")
        why = _cross_site(request)
        if why is not None:
            return _refusal(403, why)
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.op.token.encode()):
            return _refusal(403, f"the {TOKEN_HEADER} header is missing or wrong")
        item_id = await self._requeue_id(request)
        if isinstance(item_id, web.Response):
            return item_id
        op = self.op
        try:
            count = await op.store.requeue(item_id, op.clock())
        except UnknownId as exc:  # also a letter requeued meanwhile, from another page
            return _refusal(404, str(exc))
        except TransientError as exc:
            return _refusal(503, f"the store could not requeue {item_id} now: {exc}")
        if count == 0:
            return _refusal(404, f"no dead transfer or expired package with id {item_id}")
        op.on_requeued()
        _log.info("dead_letter_requeued", item=item_id, count=count, by="status page")
        return web.json_response({"requeued": count, "id": item_id})

    @staticmethod
    async def _requeue_id(request: web.Request) -> str | web.Response:
        """The id of the dead letter the request names, or the refusal saying what is wrong."""
        if request.content_type != "application/json":
            return _refusal(415, 'the body must be JSON: {"id": "..."}')
        raw = await request.content.read(_MAX_REQUEUE_BODY + 1)
        if len(raw) > _MAX_REQUEUE_BODY:
            return _refusal(413, f"the body must be at most {_MAX_REQUEUE_BODY} bytes")
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _refusal(400, f"the body is not JSON: {exc}")
        item_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(item_id, str) or not item_id:
            return _refusal(400, 'the body must name the dead letter: {"id": "..."}')
        return item_id


def operator_routes(op: Operator) -> list[web.RouteDef]:
    """The routes to mount before the office-software API's catch-all route.

    The requeue route takes every method so that a GET gets its 405 here rather than
    falling through to the API.
    """
    routes = _Routes(op)
    return [
        web.get("/metrics", routes.metrics),
        web.get("/healthz", routes.healthz),
        web.get("/", _local_only(op, routes.page)),
        web.get("/status.json", _local_only(op, routes.status)),
        web.route("*", "/requeue", _local_only(op, routes.requeue)),
    ]
