"""A scripted office-software client that speaks exactly like the national axis Java SDK.

What it copies from the SDK (spec/EDXML.md section 7):

- one client object lives long: its ``timestamp`` (``ddMMyyyy'T'HHmmss+SSSS``) is fixed when it
  is made, and every parameter it ever sent stays in its header map and is sent again, stale;
- the header map is a Java ``HashMap``: the ``XroadVnpt-`` headers, the ``sign-header-key``
  list and the ``sign-header`` JSON follow its iteration order (bucket order of
  ``String.hashCode``), not insertion order;
- ``sign-header`` is compact JSON (Gson, no HTML escaping), ``hash-header`` the lower-case hex
  HMAC-SHA256 over its UTF-8 bytes; header values go on the wire one byte per character:
  Latin-1 up to U+00FF, ``?`` (or the truncated low byte) above;
- ``Content-Type`` is both a parameter (``XroadVnpt-Content-Type``) and a plain header (the
  form entity of the list calls adds no second one: HttpClient's RequestContent keeps a
  Content-Type already set, and aiohttp refuses a duplicated one with a 400);
- ``sendEdoc`` posts the file and one CRLF, with ``hash-file`` in unpadded hex;
  ``getEdoc``/``updateStatus`` post ``{}`` with ``Expect: 100-continue`` and wait for the
  100 before the body; the list calls post an empty form;
- a new connection per call (over TLS with ``tls``), no timeout of its own, the reply's status
  line ignored and its body read line by line and joined.

Every reply is kept in :attr:`AxisClient.replies` so tests can check that none holds a null.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

USER_AGENT = "JAVASDKAgent/1.0.0 XRoad/VPCP"
VERSION = "3.0.201608"
CONTINUE_WAIT_S = 30.0
"""The SDK sends the body after 3 s without a 100; waiting longer shows whether one came."""


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    for unit in text.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


class JavaHashMap:
    """Keys and values iterated in the order a ``java.util.HashMap`` would give them."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}

    def put(self, key: str, value: str) -> None:
        """Insert or replace (a replaced key keeps its place, as in Java)."""
        self._items[key] = value

    def _capacity(self) -> int:
        capacity = 16
        while len(self._items) > capacity * 0.75:
            capacity *= 2
        return capacity

    def items(self) -> list[tuple[str, str]]:
        """Bucket order (spread hash masked by the table size), then insertion order."""
        mask = self._capacity() - 1

        def bucket(key: str) -> int:
            h = java_string_hash(key) & 0xFFFFFFFF
            return (h ^ (h >> 16)) & mask

        order = {key: i for i, key in enumerate(self._items)}
        keys = sorted(self._items, key=lambda k: (bucket(k), order[k]))
        return [(k, self._items[k]) for k in keys]


def gson(obj: Any) -> str:
    """Compact JSON as Gson's ``JsonObject.toString()`` writes it (non-ASCII kept as is)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def java_hex(digest: bytes) -> str:
    """``Integer.toHexString(0xFF & b)`` per byte: no zero padding."""
    return "".join(f"{b:x}" for b in digest)


def header_bytes(text: str, mangle: Literal["?", "truncate"] = "?") -> bytes:
    """A header value as the SDK's HTTP stack puts it on the wire: one byte per character."""
    out = bytearray()
    for ch in text:
        code = ord(ch)
        if code <= 0xFF:
            out.append(code)
        else:
            out += b"?" if mangle == "?" else bytes([code & 0xFF])
    return bytes(out)


@dataclass
class Reply:
    """What the SDK makes of a reply: the JSON object, plus what was seen on the wire."""

    json: dict[str, Any]
    raw: bytes
    status_line: str
    got_continue: bool | None = None

    @property
    def ok(self) -> bool:
        """``status`` OK and ``ErrorCode`` "0", as the SDK checks it."""
        return self.json.get("status") == "OK" and self.json.get("ErrorCode") == "0"

    @property
    def desc(self) -> str:
        """``ErrorDesc``."""
        return str(self.json.get("ErrorDesc"))


@dataclass
class AxisClient:
    """One long-lived SDK client object (``KnobstickServiceImp``) for ``system_id``."""

    endpoint: str
    system_id: str
    secret: str
    host: str = "127.0.0.1"
    port: int | None = None
    unix_socket: Path | None = None
    tls: ssl.SSLContext | None = None
    mangle: Literal["?", "truncate"] = "?"
    created: dt.datetime = field(default_factory=dt.datetime.now)
    headers: JavaHashMap = field(default_factory=JavaHashMap)
    replies: list[Reply] = field(default_factory=list)

    def __post_init__(self) -> None:
        stamp = self.created.strftime("%d%m%YT%H%M%S") + f"+{self.created.microsecond // 1000:04d}"
        self.headers.put("timestamp", stamp)
        self.headers.put("systemid", self.system_id)

    # -- the SDK's operations -----------------------------------------------------------------

    async def send_edoc(
        self, params: dict[str, Any], package: bytes, *, drop: bool = False
    ) -> Reply | None:
        """``sendEdoc(jsonHeaders, file)``; with ``drop`` the connection is cut before the reply."""
        self.headers.put("Content-Type", "application/octet-stream")
        for key, value in params.items():
            text = gson(value) if key == "to" else str(value)
            self.headers.put(key, text)
        self.headers.put("hash-file", java_hex(hashlib.sha256(package).digest()))
        return await self._post("sendEdoc", package + b"\r\n", drop=drop)

    async def send_edoc_file(self, params: dict[str, Any], package: Path) -> Reply:
        """``sendEdoc`` of the package in a file, hashed and sent in pieces (for packages too
        large to hold)."""
        self.headers.put("Content-Type", "application/octet-stream")
        for key, value in params.items():
            self.headers.put(key, gson(value) if key == "to" else str(value))
        with open(package, "rb") as source:  # noqa: ASYNC230 - a test client
            digest = hashlib.file_digest(source, "sha256").digest()
        self.headers.put("hash-file", java_hex(digest))
        reply = await self._post("sendEdoc", package)
        assert reply is not None
        return reply

    async def get_received_edoc_list(self, params: dict[str, str]) -> Reply:
        """``getReceivedEdocList(jsonHeaders)``."""
        return await self._list("getReceivedEdocList", params)

    async def get_sent_edoc_list(self, params: dict[str, str]) -> Reply:
        """``getSentEdocList(jsonHeaders)``."""
        return await self._list("getSentEdocList", params)

    async def get_agencies_list(self, params: dict[str, str] | None = None) -> Reply:
        """``getAgenciesList``."""
        return await self._list("getAgenciesList", params or {})

    async def get_edoc(self, params: dict[str, str]) -> Reply:
        """``getEdoc(jsonHeaders)``: ``{}`` with Expect: 100-continue."""
        self.headers.put("Content-Type", "application/json")
        self._put(params)
        return await self._call("getEdoc", b"{}", expect=True)

    async def update_status(self, params: dict[str, str]) -> Reply:
        """``updateStatus(jsonHeaders)``: ``{}`` with Expect: 100-continue."""
        self.headers.put("Content-Type", "application/json")
        self._put(params)
        return await self._call("updateStatus", b"{}", expect=True)

    @staticmethod
    def edoc_of(reply: Reply) -> bytes:
        """The package bytes of a ``getEdoc`` reply (base64 ``data``)."""
        return base64.b64decode(reply.json["data"])

    # -- the wire -----------------------------------------------------------------------------

    def _put(self, params: dict[str, str]) -> None:
        for key, value in params.items():
            self.headers.put(key, value)

    async def _list(self, operation: str, params: dict[str, str]) -> Reply:
        self.headers.put("Content-Type", "application/json")
        self._put(params)
        return await self._call(operation, b"")

    async def _call(self, operation: str, body: bytes, *, expect: bool = False) -> Reply:
        reply = await self._post(operation, body, expect=expect)
        assert reply is not None
        return reply

    def signed_headers(self) -> list[tuple[bytes, bytes]]:
        """The header lines ``addXroadVnptHashHeader`` makes, in its order."""
        lines: list[tuple[str, str]] = []
        signed: dict[str, str] = {}
        names: list[str] = []
        for name, value in self.headers.items():
            if name == "Content-Type":
                lines.append((name, value))
            signed[f"XroadVnpt-{name}"] = value
            lines.append((f"XroadVnpt-{name}", value))
            names.append(name)
        sign_header = gson(signed)
        digest = hmac.new(
            self.secret.encode("utf-8"), sign_header.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        lines += [
            ("XroadVnpt-sign-header-key", ";".join(names)),
            ("XroadVnpt-sign-header", sign_header),
            ("XroadVnpt-hash-header", digest),
            ("User-Agent", USER_AGENT),
            ("XroadVnpt-version", VERSION),
        ]
        return [(k.encode("ascii"), header_bytes(v, self.mangle)) for k, v in lines]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_socket is not None:
            return await asyncio.open_unix_connection(str(self.unix_socket))
        assert self.port is not None
        return await asyncio.open_connection(self.host, self.port, ssl=self.tls)

    async def _post(
        self,
        operation: str,
        body: bytes | Path,
        *,
        expect: bool = False,
        drop: bool = False,
    ) -> Reply | None:
        path = self.endpoint + "/" + operation  # string concatenation, as the SDK does
        head = [f"POST {path} HTTP/1.1".encode(), b"Host: " + self.host.encode()]
        head += [k + b": " + v for k, v in self.signed_headers()]
        # A file is followed by CRLF, as the SDK ends the body.
        size = os.stat(body).st_size + 2 if isinstance(body, Path) else len(body)
        head.append(f"Content-Length: {size}".encode())
        if expect:
            head.append(b"Expect: 100-continue")
        reader, writer = await self._connect()
        try:
            writer.write(b"\r\n".join(head) + b"\r\n\r\n")
            got_continue = None
            if expect:
                await writer.drain()
                first = await asyncio.wait_for(reader.readline(), CONTINUE_WAIT_S)
                got_continue = first.startswith(b"HTTP/1.1 100")
                if got_continue:
                    await reader.readline()  # the empty line ending the interim response
            if isinstance(body, Path):
                with open(body, "rb") as source:  # noqa: ASYNC230 - a test client
                    while piece := source.read(1 << 20):
                        writer.write(piece)
                        await writer.drain()
                writer.write(b"\r\n")
            else:
                writer.write(body)
            await writer.drain()
            if drop:
                return None
            status_line = (await reader.readline()).decode("latin-1").strip()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            raw = await reader.readexactly(length)
        finally:
            writer.close()
        # BufferedReader.readLine() joined without line ends
        text = "".join(raw.decode("utf-8").splitlines())
        reply = Reply(json.loads(text), raw, status_line, got_continue)
        self.replies.append(reply)
        return reply


def contains_null(value: Any) -> bool:
    """True when a parsed JSON value holds a null anywhere."""
    if value is None:
        return True
    if isinstance(value, dict):
        return any(contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_null(v) for v in value)
    return False
