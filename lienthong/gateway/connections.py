"""Connections to the office API, guarded before aiohttp sees a byte.

Every connection goes through a :class:`GuardedProtocol` wrapped around aiohttp's own request
handler. It

- counts connections, in total and per client address, and turns away those above the
  :class:`ConnectionLimits` (with an axis JSON reply on plain connections, so the SDK can
  read why), before any TLS handshake or parsing;
- closes a connection whose request headers (and TLS handshake) have not arrived whole within
  ``header_timeout_s``: a client that sends half a request and waits holds nothing for long;
- replaces control bytes in the header section by ``?``. The SDK writes a character above
  U+00FF in a header as its low byte, which for ``ă``, ``Ă``, ``đ``, ``Đ`` (and others) is a
  control character that HTTP parsers reject with a bare 400 the SDK cannot read. As ``?``
  it is the mangling the HMAC check already knows (:class:`~lienthong.gateway.axis.HashCheck`
  ``UNVERIFIABLE``): answered with the axis's JSON error, or accepted by policy.

Body reads and their timeout are the handler's (a body is read only once the headers have
authenticated the request); every reply closes its connection, so one connection is one
request and the header timer covers each request.
"""

from __future__ import annotations

import asyncio
import re
import resource
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lienthong.errors import ConfigError
from lienthong.gateway import axis
from lienthong.logs import get_logger

_log = get_logger("lienthong.gateway")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTROLS = bytes(
    ord("?") if (b < 0x20 and b not in b"\t\r\n") or b == 0x7F else b for b in range(256)
)
LOCAL = "local"
"""The address of a unix-socket client, for the counts."""


@dataclass
class ConnectionLimits:
    """Caps on open connections, shared by every listener of one gateway."""

    total: int = 256
    per_address: int = 32
    header_timeout_s: float = 10.0
    _by_address: Counter[str] = field(default_factory=Counter)

    @property
    def open(self) -> int:
        """Connections open now."""
        return sum(self._by_address.values())

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; why not, when it is over a cap."""
        if self.open >= self.total:
            return f"the office API has {self.total} connections open, its limit"
        if self._by_address[address] >= self.per_address:
            return f"{address} has {self.per_address} connections open, its limit"
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """Forget a connection counted by :meth:`admit`."""
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]


def refusal_bytes(reason: str) -> bytes:
    """A whole HTTP reply carrying the axis JSON failure ``reason``, closing the connection."""
    body = axis.failure("", axis.AxisError(axis.ErrorCode.UNAVAILABLE, reason))
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedProtocol(asyncio.Protocol):
    """One connection: the limits, the header timer and the header bytes, around ``inner``."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        limits: ConnectionLimits,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.inner = inner
        self.limits = limits
        self.tls = tls
        self.address: str | None = None  # set once admitted
        self._timer: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._tail = b""
        self._transport: asyncio.BaseTransport | None = None
        self._handed_over = False  # the inner protocol has had connection_made
        self._tls_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit or turn away; arm the header timer; start TLS or hand over to aiohttp."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else LOCAL
        refused = self.limits.admit(address)
        if refused is not None:
            _log.warning("gateway_connection_refused", peer=address, reason=refused)
            if self.tls is None and isinstance(transport, asyncio.WriteTransport):
                transport.write(refusal_bytes(refused))
            transport.close()
            return
        self.address = address
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.limits.header_timeout_s, self._too_slow)
        if self.tls is None:
            self._hand_over(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # nothing reaches us until start_tls takes the transport
        self._tls_task = loop.create_task(self._start_tls(transport))

    def data_received(self, data: bytes) -> None:
        """Pass the bytes on, the header section's control bytes replaced."""
        if self._in_headers:
            data = self._headers(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        """As the inner protocol says."""
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the count and tell the inner protocol."""
        self._release()
        if self._handed_over:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Flow control, passed on."""
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Flow control, passed on."""
        self.inner.resume_writing()

    # -- internals ----------------------------------------------------------------------------

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(
                raw,
                self,
                self.tls,
                server_side=True,
                ssl_handshake_timeout=self.limits.header_timeout_s,
            )
        except Exception as exc:  # a failed handshake, a timeout, a peer gone: this one only
            _log.warning("gateway_tls_failed", peer=self.address, reason=str(exc) or repr(exc))
            raw.close()
            self._release()
            return
        if secure is None or raw.is_closing():
            self._release()
            return
        self._hand_over(secure)

    def _hand_over(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._handed_over = True
        self.inner.connection_made(transport)

    def _headers(self, data: bytes) -> bytes:
        joined = self._tail + data
        end = _HEADER_END.search(joined)
        if end is None:
            head_len = len(data)
            self._tail = joined[-3:]
        else:
            head_len = max(end.end() - len(self._tail), 0)
            self._in_headers = False
            if self._timer is not None:
                self._timer.cancel()
        return data[:head_len].translate(_CONTROLS) + data[head_len:]

    def _too_slow(self) -> None:
        _log.warning(
            "gateway_header_timeout",
            peer=self.address,
            timeout_s=self.limits.header_timeout_s,
        )
        if self._transport is not None:
            self._transport.close()

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.address is not None:
            self.limits.release(self.address)
            self.address = None


def guarded(
    factory: Callable[[], Any], limits: ConnectionLimits, tls: ssl.SSLContext | None = None
) -> Callable[[], GuardedProtocol]:
    """A protocol factory for ``loop.create_server``: ``factory()`` (aiohttp's server) guarded."""
    return lambda: GuardedProtocol(factory(), limits, tls)


def server_tls(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The HTTPS listener's context: TLS 1.2 or later; with ``client_ca``, a client
    certificate chaining to it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS files: {exc}", key="gateway.https") from exc
    return context


def peer_common_name(transport: asyncio.BaseTransport | None) -> str | None:
    """The verified client certificate's common name on a TLS connection, else ``None``."""
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


OPEN_FILES_RESERVE = 512
"""Open files kept for the store, package files, spool and broker links beside connections."""


def ensure_open_files(max_connections: int) -> None:
    """Raise the soft limit on open files so ``max_connections`` cannot starve the store;
    :class:`ConfigError` when the hard limit is too low (raise ``LimitNOFILE``)."""
    needed = max_connections + OPEN_FILES_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigError(
                f"{max_connections} connections and {OPEN_FILES_RESERVE} files for the rest need"
                f" {needed} open files, but the limit is {hard}: lower it or raise LimitNOFILE",
                key="gateway.max_connections",
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
