"""The national axis SDK's wire format (spec/EDXML.md section 7), as values. Pure: no I/O.

A request is ``POST <anything>/<operation>``; its parameters travel as ``XroadVnpt-<name>``
headers, names case-sensitive, and again inside the ``XroadVnpt-sign-header`` JSON, which the
``XroadVnpt-hash-header`` HMAC-SHA256 protects (key: the client's secret). Parameters are taken
**only** from that JSON, by the exact names an operation uses: a header outside it is not
signed, so anyone who captured one request could add it. An operation whose required
parameters are not in the signed JSON is refused (:data:`REQUIRED`), and ``sendEdoc``'s body
is bound to the request through the signed ``hash-file`` (:class:`BodyDigest`).

Header bytes above ASCII are not UTF-8: the SDK sends characters up to U+00FF as single
Latin-1 bytes (the HMAC verifies once they are re-encoded to UTF-8) and others as ``?`` or a
truncated byte, after which no HMAC can verify. :func:`authenticate` tells those cases apart
and a configured :class:`HashPolicy` decides the last one.

Replies are JSON objects the SDK can read: always ``status``, ``ErrorCode`` and ``ErrorDesc``
as strings plus the operation's own field, ASCII only, never a ``null`` (one ``null`` or a
missing field and the client drops the whole reply).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lienthong.edxml.model import STATUS_CODES
from lienthong.receipts import VIETNAM

PREFIX = "XroadVnpt-"
SIGN_HEADER = PREFIX + "sign-header"
HASH_HEADER = PREFIX + "hash-header"

SEND_EDOC = "sendEdoc"
GET_RECEIVED = "getReceivedEdocList"
GET_EDOC = "getEdoc"
UPDATE_STATUS = "updateStatus"
GET_SENT = "getSentEdocList"
GET_AGENCIES = "getAgenciesList"

OWN_FIELDS: Mapping[str, Mapping[str, Any]] = {
    SEND_EDOC: {"DocId": ""},
    GET_RECEIVED: {"data": []},
    GET_EDOC: {"data": ""},
    UPDATE_STATUS: {},
    GET_SENT: {"data": []},
    GET_AGENCIES: {"data": []},
}
"""Each operation's own reply fields with the value they carry when the call fails."""

OPERATIONS = tuple(OWN_FIELDS)

REQUIRED: Mapping[str, tuple[str, ...]] = {
    SEND_EDOC: ("hash-file",),
    GET_EDOC: ("docId",),
    UPDATE_STATUS: ("docid", "status"),
    GET_SENT: ("docId",),
}
"""Parameters each operation cannot do without; they must be in the signed JSON."""

NOT_IDEMPOTENT = frozenset({SEND_EDOC, UPDATE_STATUS})
"""Operations whose identical repetition is answered from the first result, not run again."""

SERVICE_TYPE = "eDoc"
MESSAGE_TYPES = ("edoc", "status")


class ErrorCode(enum.StrEnum):
    """``ErrorCode`` of a reply; the SDK only tests for ``"0"``, the rest is for people."""

    OK = "0"
    BAD_REQUEST = "1"
    UNAUTHENTICATED = "2"
    FORBIDDEN = "3"
    REFUSED = "4"
    NOT_FOUND = "5"
    UNAVAILABLE = "9"


class HashPolicy(enum.StrEnum):
    """What to do with a request whose HMAC cannot be checked (mangled header bytes)."""

    REFUSE = "refuse"
    ACCEPT = "accept"


class HashCheck(enum.StrEnum):
    """The outcome of checking ``XroadVnpt-hash-header``."""

    VERIFIED = "verified"  # over the bytes as sent (ASCII or UTF-8)
    VERIFIED_LATIN1 = "verified-latin1"  # after re-encoding Latin-1 bytes to UTF-8
    UNVERIFIABLE = "unverifiable"  # a value holds '?' or bytes the SDK mangled
    MISMATCH = "mismatch"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_network(text: str) -> Network:
    """An address (``10.1.2.3``) or network (``10.1.2.0/24``) of an ``allow_from`` list."""
    return ipaddress.ip_network(text, strict=False)


@dataclass(frozen=True, slots=True)
class Client:
    """An office-software installation: its system id, secret and the agencies it acts for.

    ``allow_from`` are the networks it may reach the HTTPS listener from (none: it may not);
    ``certificate_cn``, when set, the common name its client certificate must carry there.
    """

    system_id: str
    secret: str
    send_for: frozenset[str]
    receive_for: frozenset[str]
    allow_from: tuple[Network, ...] = ()
    certificate_cn: str = ""

    strict: bool | None = None
    """Refuse its packages that deviate from QCVN 102; ``None``: as the node's mode says."""

    def check_remote(self, address: str, common_name: str | None) -> None:
        """:class:`AxisError` unless a request over HTTPS from ``address`` (with a client
        certificate named ``common_name``) may come from this client."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is None or not any(ip in network for network in self.allow_from):
            allowed = ", ".join(str(n) for n in self.allow_from) or "none"
            raise AxisError(
                ErrorCode.FORBIDDEN,
                f"client {self.system_id} may not connect from {address} over HTTPS"
                f" (allow_from: {allowed})",
            )
        if self.certificate_cn and common_name != self.certificate_cn:
            raise AxisError(
                ErrorCode.FORBIDDEN,
                f"client {self.system_id} must present the certificate {self.certificate_cn},"
                f" not {common_name or 'none'}",
            )


class AxisError(Exception):
    """A refused request or call: the reply carries ``code`` and the sentence ``desc``."""

    def __init__(self, code: ErrorCode, desc: str) -> None:
        super().__init__(desc)
        self.code = code
        self.desc = desc


@dataclass(frozen=True, slots=True)
class AxisRequest:
    """A request's headers as received: the operation and the raw bytes of its parameters.

    ``headers`` maps each ``XroadVnpt-<name>`` header (prefix removed, name as sent) to its
    raw value; ``sign_header`` is the raw JSON the HMAC covers (``None`` if absent).
    """

    operation: str
    headers: Mapping[str, bytes]
    sign_header: bytes | None
    hash_header: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A request from a known client, its HMAC checked, with its parameters decoded."""

    request: AxisRequest
    client: Client
    check: HashCheck
    params: Mapping[str, str]

    def param(self, name: str) -> str | None:
        """The parameter ``name`` (exact, case-sensitive), or ``None`` when not sent."""
        return self.params.get(name)


def operation_of(path: str) -> str:
    """The operation a path names: its last non-empty segment (``//getEdoc`` too)."""
    segments = [s for s in path.split("/") if s]
    return segments[-1] if segments else ""


def parse_request(path: str, raw_headers: Iterable[tuple[bytes, bytes]]) -> AxisRequest:
    """Collect the ``XroadVnpt-`` headers of a request (the prefix matched without case)."""
    headers: dict[str, bytes] = {}
    prefix = PREFIX.lower().encode("ascii")
    for raw_name, value in raw_headers:
        if raw_name.lower().startswith(prefix):
            name = raw_name[len(prefix) :].decode("latin-1")
            headers.setdefault(name, value)
    sign = headers.pop("sign-header", None)
    hash_header = headers.pop("hash-header", b"").decode("latin-1").strip().lower()
    return AxisRequest(operation_of(path), headers, sign, hash_header)


def _decode(raw: bytes, latin1: bool) -> str:
    if not latin1:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def _signed_params(text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AxisError(ErrorCode.BAD_REQUEST, f"{SIGN_HEADER} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AxisError(ErrorCode.BAD_REQUEST, f"{SIGN_HEADER} is not a JSON object")
    return {
        key[len(PREFIX) :]: value if isinstance(value, str) else json.dumps(value)
        for key, value in data.items()
        if key.startswith(PREFIX)
    }


def hmac_hex(secret: str, message: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``message`` keyed with the UTF-8 ``secret``."""
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def check_hash(secret: str, sign_header: bytes, hash_header: str) -> HashCheck:
    """Check ``hash_header`` over ``sign_header`` as sent, then as Latin-1 re-encoded."""
    if hmac.compare_digest(hmac_hex(secret, sign_header), hash_header):
        return HashCheck.VERIFIED
    if any(b >= 0x80 for b in sign_header):
        recoded = sign_header.decode("latin-1").encode("utf-8")
        if hmac.compare_digest(hmac_hex(secret, recoded), hash_header):
            return HashCheck.VERIFIED_LATIN1
    values = _signed_params(_decode(sign_header, latin1=True)).values()
    if any("?" in v or any(ord(c) >= 0x80 for c in v) for v in values):
        return HashCheck.UNVERIFIABLE
    return HashCheck.MISMATCH


def authenticate(
    request: AxisRequest, clients: Mapping[str, Client], policy: HashPolicy
) -> Authenticated:
    """The client and its signed parameters; :class:`AxisError` for an unknown client, a
    missing or wrong HMAC, one that cannot be checked (by ``policy``), or a required parameter
    of the operation that is not signed.

    Only the signed JSON counts, ``systemid`` included: unsigned ``XroadVnpt-`` headers are
    ignored, so a captured request cannot be turned into another by adding headers.
    """
    if request.sign_header is None or not request.hash_header:
        raise AxisError(
            ErrorCode.UNAUTHENTICATED, f"the request has no {SIGN_HEADER} or {HASH_HEADER}"
        )
    signed = _signed_params(_decode(request.sign_header, latin1=True))
    system_id = signed.get("systemid", "")
    if not system_id:
        raise AxisError(ErrorCode.UNAUTHENTICATED, f"{SIGN_HEADER} names no systemid")
    client = clients.get(system_id)
    if client is None:
        raise AxisError(ErrorCode.UNAUTHENTICATED, f"unknown client systemid {system_id!r}")
    check = check_hash(client.secret, request.sign_header, request.hash_header)
    if check is HashCheck.MISMATCH:
        raise AxisError(
            ErrorCode.UNAUTHENTICATED,
            f"{HASH_HEADER} does not match: the request is not signed with the secret of"
            f" client {system_id}",
        )
    if check is HashCheck.UNVERIFIABLE and policy is HashPolicy.REFUSE:
        raise AxisError(
            ErrorCode.UNAUTHENTICATED,
            f"{HASH_HEADER} cannot be checked: a header value holds '?' or a byte that a"
            " character above U+00FF was mangled into (or the secret is wrong); such text"
            " belongs in the package, not in headers",
        )
    latin1 = check is not HashCheck.VERIFIED
    params = _signed_params(_decode(request.sign_header, latin1))
    auth = Authenticated(request, client, check, params)
    for name in REQUIRED.get(request.operation, ()):
        required(auth, name)
    return auth


# -- sendEdoc -----------------------------------------------------------------------------------


def java_hex(digest: bytes) -> str:
    """Hex the way the SDK writes ``hash-file``: each byte without zero padding (0x0c: ``c``)."""
    return "".join(f"{b:x}" for b in digest)


def _digest_text(digest: bytes) -> tuple[str, str]:
    return java_hex(digest), digest.hex()


class BodyDigest:
    """The SHA-256 of a ``sendEdoc`` body fed in pieces, with and without its last CRLF.

    The SDK posts the file and one CRLF and signs ``hash-file`` over the file, so the last
    two bytes are held back until the end: :meth:`package_size` then says which prefix of
    the body is the package (the body without that CRLF, or the whole body).
    """

    def __init__(self) -> None:
        self._head = hashlib.sha256()  # every byte but the held-back tail
        self._tail = b""
        self.size = 0

    def update(self, chunk: bytes) -> None:
        """Feed the next piece of the body."""
        self.size += len(chunk)
        joined = self._tail + chunk
        self._head.update(joined[:-2])
        self._tail = joined[-2:]

    def package_size(self, hash_file: str) -> int:
        """How many leading bytes of the body are the package signed by ``hash_file``.

        :class:`AxisError` when the body is empty or matches ``hash_file`` (in the SDK's
        unpadded hex or plain hex) neither with nor without its last CRLF.
        """
        whole = self._head.copy()
        whole.update(self._tail)
        candidates = [(self.size, whole.digest())]
        if self._tail == b"\r\n":
            candidates.insert(0, (self.size - 2, self._head.digest()))
        if candidates[0][0] == 0:
            raise AxisError(ErrorCode.BAD_REQUEST, "sendEdoc without a package: the body is empty")
        wanted = hash_file.strip().lower()
        for size, digest in candidates:
            if wanted in _digest_text(digest):
                return size
        raise AxisError(
            ErrorCode.REFUSED,
            f"hash-file {hash_file} is not the sha256 of the package received"
            f" ({java_hex(candidates[0][1])}): it was damaged or replaced on the way",
        )


def check_declared(auth: Authenticated, sender: str, kind: str) -> None:
    """The signed ``from`` and ``messagetype``, when given, must fit the client and package.

    :class:`AxisError` naming both values: ``from`` an agency the client may not send for
    (``FORBIDDEN``), or differing from the package's ``From``; ``messagetype`` differing from
    the package's kind.
    """
    declared = auth.param("from")
    client = auth.client
    if declared and declared not in client.send_for:
        raise AxisError(
            ErrorCode.FORBIDDEN,
            f"client {client.system_id} may not send for {declared} ({PREFIX}from); the"
            f" package's From is {sender}; it may send for:"
            f" {', '.join(sorted(client.send_for)) or 'none'}",
        )
    if declared and declared != sender:
        raise AxisError(
            ErrorCode.REFUSED,
            f"{PREFIX}from is {declared} but the package's From is {sender}",
        )
    messagetype = auth.param("messagetype")
    if messagetype and messagetype != kind:
        raise AxisError(
            ErrorCode.REFUSED,
            f"{PREFIX}messagetype is {messagetype} but the package is {kind}",
        )


# -- replies ------------------------------------------------------------------------------------


def _no_nulls(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return {str(k): _no_nulls(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nulls(v) for v in value]
    return value


def render(operation: str, code: ErrorCode, desc: str, fields: Mapping[str, Any]) -> bytes:
    """A reply body: compact ASCII JSON on one line, every field present, no ``null``."""
    body: dict[str, Any] = {
        "status": "OK" if code is ErrorCode.OK else "FAIL",
        "ErrorCode": code.value,
        "ErrorDesc": desc,
    }
    body.update(OWN_FIELDS.get(operation, {}))
    body.update(fields)
    return json.dumps(_no_nulls(body), ensure_ascii=True, separators=(",", ":")).encode("ascii")


def success(operation: str, **fields: Any) -> bytes:
    """A successful reply with the operation's own ``fields``."""
    return render(operation, ErrorCode.OK, "Success", fields)


def success_around(operation: str, name: str) -> tuple[bytes, bytes]:
    """A successful reply split where the string field ``name`` goes, to stream a large
    value (base64 text) between the two halves without ever holding it whole."""
    marker = json.dumps(name) + ':""'
    whole = success(operation, **{name: ""}).decode("ascii")
    at = whole.index(marker) + len(marker) - 1
    return whole[:at].encode("ascii"), whole[at:].encode("ascii")


def failure(operation: str, error: AxisError) -> bytes:
    """A failed reply; the operation's own fields hold their empty values."""
    return render(operation, error.code, error.desc, {})


# -- the operations' parameters and rows ----------------------------------------------------------


def message_types(value: str | None) -> tuple[str, ...]:
    """The kinds a list asks for: ``edoc`` or ``status``; both when not given."""
    if value is None or value == "":
        return MESSAGE_TYPES
    if value not in MESSAGE_TYPES:
        raise AxisError(ErrorCode.BAD_REQUEST, f"messagetype must be edoc or status, not {value!r}")
    return (value,)


def required(auth: Authenticated, name: str) -> str:
    """The parameter ``name``; :class:`AxisError` naming it when missing or empty."""
    value = auth.param(name)
    if not value:
        raise AxisError(
            ErrorCode.BAD_REQUEST,
            f"{auth.request.operation} needs the parameter {PREFIX}{name} (exact case) in the"
            f" signed {SIGN_HEADER}",
        )
    return value


def format_time(at: float | None) -> str:
    """``at`` as Vietnam local time ``yyyy/MM/dd HH:mm:ss``; ``""`` for no time."""
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, VIETNAM).strftime("%Y/%m/%d %H:%M:%S")


class ReceiptLike(Protocol):
    """The fields of a store receipt that the sent list reads."""

    @property
    def level(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def by(self) -> str: ...
    @property
    def at(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SentState:
    """What the sender's node knows of one recipient of a package it sent."""

    recipient: str
    send_status: str
    send_status_desc: str
    sent_at: float | None
    receive_status: str = ""
    receive_status_desc: str = "no status from the recipient yet"
    received_at: float | None = None


def sent_state(
    recipient: str,
    *,
    next_hop: str | None,
    created_at: float,
    receipts: Sequence[ReceiptLike],
    codes: Collection[str] = (),
) -> SentState:
    """The state of ``recipient`` from the receipts of the document.

    ``next_hop`` is where the package went for it (``None``: delivered at this node). Sent
    means the next node stored it (hop receipt); the receive status is the latest status
    package from the recipient, received at its 01 (or its first status). ``codes`` are
    other codes of the same agency (renamed by a directory version): their statuses count.
    """
    send: tuple[str, str, float | None]
    if next_hop is None:
        send = ("delivered", "delivered to the inbox at this node", created_at)
    else:
        hops = [r for r in receipts if r.level == "hop" and r.by == next_hop and r.at >= created_at]
        if hops:
            send = ("sent", f"stored by the next node {next_hop}", hops[0].at)
        else:
            send = ("queued", f"waiting for the next node {next_hop}", None)
    statuses = [r for r in receipts if r.level == "status" and (r.by == recipient or r.by in codes)]
    if not statuses:
        return SentState(recipient, send[0], send[1], send[2])
    last = statuses[-1]
    arrived = [r.at for r in statuses if r.code == "01"]
    return SentState(
        recipient,
        send[0],
        send[1],
        send[2],
        receive_status=last.code,
        receive_status_desc=STATUS_CODES.get(last.code, "unknown status"),
        received_at=arrived[0] if arrived else statuses[0].at,
    )
