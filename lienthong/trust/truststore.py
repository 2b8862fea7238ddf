"""Trust anchors and CRLs, and the certificate-chain check that uses them.

The check is small and explicit rather than a general path builder: agencies' chains are
short (a state root, at most an intermediate, the agency certificate), and each failure has
to become a sentence an operator understands, which a generic verifier's error does not give.
Every step uses ``cryptography``: issuer signatures (``verify_directly_issued_by``), validity
dates at the time given, basicConstraints CA on every issuer, CRL entries with the CRL's own
signature checked against the issuing CA.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lienthong.errors import ConfigError
from lienthong.trust.keys import load_certificates

MAX_CHAIN = 6
"""Longest chain accepted, leaf and anchor included."""


def describe(cert: x509.Certificate) -> str:
    """The subject as people read it, e.g. ``CN=000.00.12.H49``."""
    try:
        return cert.subject.rfc4514_string()
    except ValueError:
        return f"<unreadable subject, serial {cert.serial_number:x}>"


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER bytes; :class:`ConfigError` when it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise ConfigError(f"not a readable CRL ({exc})") from exc


@dataclass(frozen=True)
class ChainCheck:
    """What :meth:`TrustStore.check` found: the chain (leaf first) and the refusals."""

    chain: tuple[x509.Certificate, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class TrustStore:
    """CA certificates trusted as anchors, and CRLs published by them or their sub-CAs.

    Build it once from the trust-store folder (``lienthong.keyfiles`` reads it) and reuse it.
    Raises :class:`ConfigError` when an anchor is not a CA certificate or a CRL issued by an
    anchor does not carry that anchor's signature.
    """

    anchors: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    def __post_init__(self) -> None:
        for anchor in self.anchors:
            if not _is_ca(anchor):
                raise ConfigError(
                    f"the trusted certificate {describe(anchor)} is not a CA certificate "
                    "(basicConstraints CA is not set)"
                )
        for crl in self.crls:
            named = [a for a in self.anchors if a.subject == crl.issuer]
            if named and not any(_crl_signed_by(crl, a) for a in named):
                raise ConfigError(
                    f"the CRL of {crl.issuer.rfc4514_string()} does not carry that CA's signature"
                )

    @classmethod
    def from_pem(cls, ca_pems: Iterable[bytes], crls: Iterable[bytes] = ()) -> TrustStore:
        """Anchors from PEM blobs (one or several certificates each), CRLs as PEM or DER."""
        anchors = [cert for pem in ca_pems for cert in load_certificates(pem)]
        return cls(tuple(anchors), tuple(load_crl(c) for c in crls))

    def check(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        at: dt.datetime,
    ) -> ChainCheck:
        """Build and check the chain from ``leaf`` to an anchor, as of ``at``.

        ``intermediates`` are the other certificates the signature carried; only those that
        actually issue a link are used. An empty ``reasons`` means the chain is good.
        """
        chain = [leaf]
        reasons: list[str] = []
        while True:
            current = chain[-1]
            anchor = next((a for a in self.anchors if _issued_by(current, a)), None)
            if anchor is not None:
                chain.append(anchor)
                break
            step = next(
                (c for c in intermediates if c not in chain and _issued_by(current, c)), None
            )
            if step is None or len(chain) >= MAX_CHAIN:
                who = "signing certificate" if current is leaf else "CA certificate"
                reasons.append(
                    f"the {who} {describe(current)} was not issued by a trusted CA "
                    f"(its issuer is {current.issuer.rfc4514_string()})"
                )
                break
            chain.append(step)
        for index, cert in enumerate(chain):
            reasons.extend(self._cert_problems(cert, chain, index, at))
        return ChainCheck(tuple(chain), tuple(reasons))

    def _cert_problems(
        self, cert: x509.Certificate, chain: list[x509.Certificate], index: int, at: dt.datetime
    ) -> list[str]:
        who = f"the signing certificate {describe(cert)}"
        if index:
            who = f"the CA certificate {describe(cert)}"
        problems: list[str] = []
        if at < cert.not_valid_before_utc:
            problems.append(f"{who} is not valid before {_when(cert.not_valid_before_utc)}")
        if at > cert.not_valid_after_utc:
            problems.append(f"{who} expired on {_when(cert.not_valid_after_utc)}")
        if index and not _is_ca(cert):
            problems.append(f"{who} is not a CA certificate (basicConstraints) but issued another")
        if not index and not _may_sign(cert):
            problems.append(f"{who} is not allowed to sign documents (keyUsage)")
        issuer = chain[index + 1] if index + 1 < len(chain) else None
        if issuer is not None:
            problems.extend(self._revocation(cert, issuer, who, at))
        return problems

    def _revocation(
        self, cert: x509.Certificate, issuer: x509.Certificate, who: str, at: dt.datetime
    ) -> list[str]:
        problems: list[str] = []
        for crl in self.crls:
            if crl.issuer != issuer.subject:
                continue
            if not _crl_signed_by(crl, issuer):
                problems.append(
                    f"a CRL naming {describe(issuer)} as issuer does not carry its signature, "
                    f"so revocation of {describe(cert)} cannot be checked"
                )
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            # A revocation dated after ``at`` (the time the package arrived) does not undo
            # a signature that was good when it was received.
            if entry is not None and entry.revocation_date_utc <= at:
                problems.append(f"{who} was revoked on {_when(entry.revocation_date_utc)}")
        return problems


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return crl.is_signature_valid(key)


def _may_sign(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.digital_signature or usage.content_commitment
