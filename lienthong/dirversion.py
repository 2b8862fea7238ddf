"""Directory versions: the whole directory, numbered, dated and signed by the directory authority.

Pure: bytes and values in, values out; no files, no clock (``now`` is passed in).

A version is one file of two parts, a header line and the body it signs::

    {"algorithm":"rsa-pkcs1v15-sha256","format":"lienthong-directory-signature/1",
     "signature":"<base64>","signer":"<sha256 of the authority certificate>"}
    {"aliases":[...],"directory":{...},"expires":"2025-08-01T00:00:00Z",
     "format":"lienthong-directory/1","issued":"2025-07-01T00:00:00Z","version":7}

The signature covers the body bytes exactly as they stand after the first newline. Why this
form and not an XML signature or the TOML text: the verifier checks the bytes it was given and
then parses them, so no canonicalization happens at verification time (none of XML-DSig's
transforms, none of TOML's many spellings of the same table); the publisher writes the body
as canonical JSON (sorted keys, no spaces, UTF-8), so the same input always gives the same
bytes, which makes versions comparable by digest. JSON represents everything a directory
document holds (text, booleans, lists, tables) and is parsed by the standard library. The
header is one line of JSON like the frames on the wire.

``directory`` is the directory document (:mod:`lienthong.directory`, the same keys as the TOML
file). ``aliases`` carry renamed codes for a period: ``{"old", "new", "until": "YYYY-MM-DD"}``:
a document addressed to the old code is routed to the new one until that day (included).

Checks, in order, each refusal a :class:`VersionRefused` with a ``reason`` token and a sentence:
``malformed`` (not a version file, or its directory is wrong), ``forged`` (the signature does
not verify with the authority's certificate), ``older`` / ``same`` (not newer than the version
in force), ``expired``, ``not-a-node`` (the version drops the node that would apply it).

A node without a signed version runs its directory file as the *bootstrap* version 0: never
expiring, replaced by any valid signed version.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from lienthong.directory import Directory, DirectoryError
from lienthong.edxml.codes import code_problem
from lienthong.errors import PeerInputError
from lienthong.trust.keys import PrivateKey

__all__ = [
    "Alias",
    "DirectoryVersion",
    "RefusalReason",
    "VersionRefused",
    "bootstrap_version",
    "check_applicable",
    "diff",
    "make_version",
    "peek_version",
    "read_version",
]

BODY_FORMAT = "lienthong-directory/1"
SIGNATURE_FORMAT = "lienthong-directory-signature/1"
_BODY_KEYS = frozenset({"format", "version", "issued", "expires", "aliases", "directory"})
_HEADER_KEYS = frozenset({"format", "algorithm", "signer", "signature"})
_ALGORITHMS = {"rsa-pkcs1v15-sha256", "ecdsa-sha256"}
MAX_HEADER = 4096

RefusalReason = Literal["malformed", "forged", "older", "same", "expired", "not-a-node"]


class VersionRefused(PeerInputError):
    """A directory version that is not applied; ``reason`` is a stable token for metrics."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason: RefusalReason = reason


@dataclass(frozen=True, slots=True)
class Alias:
    """``old`` was renamed ``new``; documents to ``old`` are routed to ``new`` until ``until``."""

    old: str
    new: str
    until: dt.date


@dataclass(frozen=True, slots=True)
class DirectoryVersion:
    """One directory version: its number, dates, aliases, the directory, and its file bytes.

    ``expires`` is ``None`` only for the bootstrap version (number 0, ``raw`` empty).
    ``sha256`` is the digest of ``raw``; ``signer`` the fingerprint of the authority
    certificate it was signed with.
    """

    number: int
    issued: dt.datetime
    expires: dt.datetime | None
    directory: Directory
    document: Mapping[str, Any]
    aliases: tuple[Alias, ...] = ()
    raw: bytes = b""
    signer: str = ""
    sha256: str = field(default="")

    @property
    def bootstrap(self) -> bool:
        """True for version 0, read from the node's own directory file."""
        return self.number == 0

    def expired(self, now: dt.datetime) -> bool:
        """True when the version has an expiry and ``now`` is past it."""
        return self.expires is not None and now >= self.expires

    def active_aliases(self, today: dt.date) -> dict[str, str]:
        """``old -> new`` for the aliases still valid on ``today``."""
        return {a.old: a.new for a in self.aliases if today <= a.until}

    def codes_of(self, code: str) -> frozenset[str]:
        """``code`` and every code an alias of this version joins to it (old and new, past
        their period too): the codes one agency's receipts may carry."""
        codes = {code}
        grew = True
        while grew:
            joined = {a.new for a in self.aliases if a.old in codes}
            joined |= {a.old for a in self.aliases if a.new in codes}
            grew = not joined <= codes
            codes |= joined
        return frozenset(codes)

    def routing_directory(self, today: dt.date) -> Directory:
        """The directory with the aliases valid on ``today`` (what routing reads)."""
        active = self.active_aliases(today)
        return self.directory.with_aliases(active) if active else self.directory

    def describe(self) -> str:
        """``version 7 (issued ..., expires ...)`` or ``bootstrap version 0 (...)``."""
        if self.bootstrap:
            return "bootstrap version 0 (the node's directory file; no expiry)"
        assert self.expires is not None
        return f"version {self.number} (issued {_iso(self.issued)}, expires {_iso(self.expires)})"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, key: str) -> dt.datetime:
    if not isinstance(value, str):
        raise VersionRefused("malformed", f"{key} must be a UTC time like 2025-07-01T00:00:00Z")
    try:
        moment = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise VersionRefused(
            "malformed", f"{key} {value!r} is not a UTC time like 2025-07-01T00:00:00Z"
        ) from None
    return moment.replace(tzinfo=dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """The sha256 of a certificate's DER bytes, lower-case hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# -- aliases ----------------------------------------------------------------------------------


def _aliases(raw: Any, directory: Directory) -> tuple[Alias, ...]:
    if not isinstance(raw, list):
        raise VersionRefused("malformed", "aliases must be a list of {old, new, until}")
    out: list[Alias] = []
    problems: list[str] = []
    for i, item in enumerate(raw):
        where = f"aliases[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"old", "new", "until"}:
            problems.append(f"{where}: must have exactly old, new and until")
            continue
        old, new, until = item["old"], item["new"], item["until"]
        if not isinstance(old, str) or code_problem(old) is not None:
            problems.append(f"{where}.old: {old!r} is not an agency code")
            continue
        if not isinstance(new, str) or new not in directory:
            problems.append(f"{where}.new: {new!r} is not in the directory")
            continue
        if old in directory:
            problems.append(f"{where}.old: {old} is still listed; an alias is for a code gone")
            continue
        try:
            day = dt.date.fromisoformat(until) if isinstance(until, str) else None
        except ValueError:
            day = None
        if day is None:
            problems.append(f"{where}.until: {until!r} is not a date like 2026-01-01")
            continue
        out.append(Alias(old, new, day))
    if problems:
        raise VersionRefused("malformed", "the aliases are wrong: " + "; ".join(problems))
    return tuple(out)


def _alias_rows(aliases: Sequence[Alias]) -> list[dict[str, str]]:
    return [{"old": a.old, "new": a.new, "until": a.until.isoformat()} for a in aliases]


# -- signing ----------------------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sign(key: PrivateKey, body: bytes) -> tuple[str, bytes]:
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-pkcs1v15-sha256", key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return "ecdsa-sha256", key.sign(body, ec.ECDSA(hashes.SHA256()))


def _verify(cert: x509.Certificate, algorithm: str, signature: bytes, body: bytes) -> bool:
    public = cert.public_key()
    try:
        if algorithm == "rsa-pkcs1v15-sha256" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
            return True
        if algorithm == "ecdsa-sha256" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, body, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


def make_version(
    document: Mapping[str, Any],
    *,
    number: int,
    issued: dt.datetime,
    expires: dt.datetime,
    key: PrivateKey,
    cert: x509.Certificate,
    aliases: Sequence[Alias] = (),
) -> bytes:
    """The signed file of version ``number`` of ``document`` (a directory mapping).

    Raises :class:`VersionRefused` (``malformed``) when the document, the number, the dates or
    the aliases are wrong, so nothing wrong is ever signed, and ``ValueError`` when ``key``
    does not belong to ``cert``.
    """
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ValueError("the authority key does not belong to the authority certificate")
    body = _canonical(
        {
            "format": BODY_FORMAT,
            "version": number,
            "issued": _iso(issued),
            "expires": _iso(expires),
            "aliases": _alias_rows(aliases),
            "directory": document,
        }
    )
    _body(body)  # every check a receiver makes, made before signing
    algorithm, signature = _sign(key, body)
    header = {
        "format": SIGNATURE_FORMAT,
        "algorithm": algorithm,
        "signer": fingerprint(cert),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return _canonical(header) + b"\n" + body


# -- reading ----------------------------------------------------------------------------------


def _split(data: bytes) -> tuple[dict[str, Any], bytes]:
    end = data.find(b"\n", 0, MAX_HEADER + 1)
    if end < 0:
        raise VersionRefused("malformed", "not a directory version: no signature header line")
    try:
        header = json.loads(data[:end])
    except ValueError:
        raise VersionRefused(
            "malformed", "not a directory version: the header is not JSON"
        ) from None
    if (
        not isinstance(header, dict)
        or set(header) != _HEADER_KEYS
        or header.get("format") != SIGNATURE_FORMAT
        or header.get("algorithm") not in _ALGORITHMS
        or not isinstance(header.get("signature"), str)
        or not isinstance(header.get("signer"), str)
    ):
        raise VersionRefused(
            "malformed", f"not a directory version: the header is not a {SIGNATURE_FORMAT} header"
        )
    return header, data[end + 1 :]


def _body(body: bytes) -> tuple[dict[str, Any], Directory, tuple[Alias, ...]]:
    try:
        content = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise VersionRefused("malformed", "the signed body is not UTF-8 JSON") from None
    if not isinstance(content, dict) or set(content) != _BODY_KEYS:
        raise VersionRefused("malformed", f"the body must have exactly {sorted(_BODY_KEYS)}")
    if content["format"] != BODY_FORMAT:
        raise VersionRefused("malformed", f"body format {content['format']!r} is not {BODY_FORMAT}")
    number = content["version"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise VersionRefused("malformed", f"version {number!r} is not a whole number of 1 or more")
    issued = _parse_time(content["issued"], "issued")
    expires = _parse_time(content["expires"], "expires")
    if expires <= issued:
        raise VersionRefused("malformed", "the version expires before it is issued")
    try:
        directory = Directory.from_mapping(content["directory"])
    except DirectoryError as exc:
        raise VersionRefused(
            "malformed", f"the directory of version {number} is wrong: {exc}"
        ) from None
    return content, directory, _aliases(content["aliases"], directory)


def read_version(data: bytes, authority: x509.Certificate) -> DirectoryVersion:
    """Check the signature of a version file against ``authority``, then read it.

    Raises :class:`VersionRefused` with ``malformed`` or ``forged``. Nothing in the body is
    parsed before the signature is found good.
    """
    header, body = _split(data)
    try:
        signature = base64.b64decode(header["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise VersionRefused("forged", "the signature is not base64") from None
    expected = fingerprint(authority)
    if not _verify(authority, header["algorithm"], signature, body):
        signer = header["signer"]
        who = "" if signer == expected else f" (it names the signer {signer[:16]}...)"
        raise VersionRefused(
            "forged",
            "the signature does not verify with the directory authority certificate "
            f"{authority.subject.rfc4514_string()} ({expected[:16]}...){who}",
        )
    return _version(data, body, expected)


def peek_version(data: bytes) -> DirectoryVersion:
    """Read a version file *without* checking its signature (``directory show`` and ``diff``
    on a machine without the authority certificate); never use it to apply a version."""
    header, body = _split(data)
    return _version(data, body, header["signer"])


def _version(data: bytes, body: bytes, signer: str) -> DirectoryVersion:
    content, directory, aliases = _body(body)
    return DirectoryVersion(
        number=content["version"],
        issued=_parse_time(content["issued"], "issued"),
        expires=_parse_time(content["expires"], "expires"),
        directory=directory,
        document=content["directory"],
        aliases=aliases,
        raw=bytes(data),
        signer=signer,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def bootstrap_version(document: Mapping[str, Any], issued: dt.datetime) -> DirectoryVersion:
    """Version 0 from a node's own directory document (raises :class:`DirectoryError`)."""
    return DirectoryVersion(
        number=0,
        issued=issued,
        expires=None,
        directory=Directory.from_mapping(document),
        document=document,
    )


def check_applicable(
    candidate: DirectoryVersion, current: DirectoryVersion, me: str, now: dt.datetime
) -> None:
    """Raise :class:`VersionRefused` unless node ``me`` should replace ``current`` by
    ``candidate`` at ``now``: it must be newer, unexpired, and still list ``me`` as a node."""
    if candidate.number == current.number and candidate.sha256 == current.sha256:
        raise VersionRefused("same", f"version {candidate.number} is already in force")
    if candidate.number <= current.number:
        raise VersionRefused(
            "older",
            f"version {candidate.number} is not newer than version {current.number} in force",
        )
    if candidate.expired(now):
        assert candidate.expires is not None
        raise VersionRefused(
            "expired", f"version {candidate.number} expired at {_iso(candidate.expires)}"
        )
    if me not in candidate.directory.nodes:
        raise VersionRefused(
            "not-a-node",
            f"version {candidate.number} does not list {me} as an agency that runs a node",
        )


# -- comparing --------------------------------------------------------------------------------


def _agency_line(directory: Directory, code: str) -> dict[str, str]:
    agency = directory.agency(code)
    return {
        "name": agency.name,
        "parent": agency.parent or "-",
        "served by": agency.serving_node,
        "node": "yes" if agency.runs_node else "no",
    }


def diff(old: Directory, new: Directory) -> list[str]:
    """What changed from ``old`` to ``new``, one line per change, for people.

    ``+ CODE name`` added, ``- CODE name`` removed, ``~ CODE what: before -> after`` changed
    (name, parent, serving node, node, signers added and removed), then peer links.
    """
    lines: list[str] = []
    for code in new.codes:
        if code not in old:
            lines.append(f"+ {code} {new.agency(code).name} (under {new.parent_of(code) or '-'})")
    for code in old.codes:
        if code not in new:
            lines.append(f"- {code} {old.agency(code).name}")
    for code in new.codes:
        if code not in old:
            continue
        before, after = _agency_line(old, code), _agency_line(new, code)
        for key in before:
            if before[key] != after[key]:
                lines.append(f"~ {code} {key}: {before[key]} -> {after[key]}")
        added = new.agency(code).signers - old.agency(code).signers
        removed = old.agency(code).signers - new.agency(code).signers
        for fp in sorted(added):
            lines.append(f"~ {code} signer added: {fp}")
        for fp in sorted(removed):
            lines.append(f"~ {code} signer removed: {fp}")
    for link in sorted(new.peer_links - old.peer_links, key=sorted):
        lines.append(f"+ peer {' <-> '.join(sorted(link))}")
    for link in sorted(old.peer_links - new.peer_links, key=sorted):
        lines.append(f"- peer {' <-> '.join(sorted(link))}")
    return lines
