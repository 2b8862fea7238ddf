"""A development PKI: a CA, agency certificates, broker certificates, CRLs.

Pure: every function returns objects (keys, certificates, PEM bytes); writing files is the
command line's job (``lienthong pki init``). This is for development and tests only: keys are
generated in memory, the CA has no policy, no audit and no protection. Production agencies use
certificates from the state CA.

Agency certificates carry the agency code as their CN and serve twice: they sign packages
(digitalSignature, nonRepudiation) and they are the node's MQTT TLS client certificate
(clientAuth). Broker certificates carry their host names and addresses as SANs (serverAuth).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lienthong.trust.keys import PrivateKey, load_private_key

KeyType = Literal["rsa", "ec"]
"""``rsa`` is RSA-2048, ``ec`` is ECDSA on P-256."""

DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 825
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between machines


@dataclass(frozen=True)
class CertifiedKey:
    """A private key and the certificate that goes with it (a CA, an agency or a broker)."""

    key: PrivateKey
    certificate: x509.Certificate

    @property
    def name(self) -> str:
        """The subject CN."""
        return common_name(self.certificate)

    def cert_pem(self) -> bytes:
        """The certificate as PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when ``passphrase`` is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(
        cls, key_pem: bytes, cert_pem: bytes, passphrase: bytes | None = None
    ) -> CertifiedKey:
        """Load a pair written by :meth:`key_pem` / :meth:`cert_pem` (e.g. an existing CA)."""
        return cls(load_private_key(key_pem, passphrase), x509.load_pem_x509_certificate(cert_pem))


def common_name(cert: x509.Certificate) -> str:
    """The subject CN of ``cert``, or the whole subject when it has no CN."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def new_key(key_type: KeyType = "rsa") -> PrivateKey:
    """A fresh private key: RSA-2048 or ECDSA P-256."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}: use 'rsa' or 'ec'")


def _window(
    not_before: dt.datetime | None, not_after: dt.datetime | None, days: int
) -> tuple[dt.datetime, dt.datetime]:
    start = not_before or dt.datetime.now(dt.UTC) - _BACKDATE
    end = not_after or start + dt.timedelta(days=days)
    if end <= start:
        raise ValueError("not_after must be later than not_before")
    return start, end


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_encipherment: bool = False,
    cert_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _build(
    subject: str,
    key: PrivateKey,
    issuer: CertifiedKey | None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    start: dt.datetime,
    end: dt.datetime,
) -> x509.Certificate:
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.certificate.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    return builder.sign(signer_key, hashes.SHA256())


def make_ca(
    name: str,
    *,
    key_type: KeyType = "rsa",
    parent: CertifiedKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = DEFAULT_CA_DAYS,
) -> CertifiedKey:
    """A CA named ``name``: self-signed, or an intermediate signed by ``parent``."""
    key = new_key(key_type)
    start, end = _window(not_before, not_after, days)
    cert = _build(
        name,
        key,
        parent,
        [
            (x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), True),
            (_key_usage(digital_signature=True, cert_sign=True), True),
        ],
        start,
        end,
    )
    return CertifiedKey(key, cert)


def _issue_leaf(
    ca: CertifiedKey,
    name: str,
    usage: x509.KeyUsage,
    extensions: Sequence[x509.ExtensionType],
    key_type: KeyType,
    window: tuple[dt.datetime | None, dt.datetime | None, int],
    key: PrivateKey | None = None,
) -> CertifiedKey:
    key = key or new_key(key_type)
    start, end = _window(*window)
    critical = [(x509.BasicConstraints(ca=False, path_length=None), True), (usage, True)]
    cert = _build(name, key, ca, critical + [(e, False) for e in extensions], start, end)
    return CertifiedKey(key, cert)


def issue_agency(
    ca: CertifiedKey,
    code: str,
    *,
    key_type: KeyType = "rsa",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = DEFAULT_LEAF_DAYS,
    key: PrivateKey | None = None,
) -> CertifiedKey:
    """An agency certificate, CN = ``code``: signs packages and is the node's MQTT client cert.

    Key usage digitalSignature + nonRepudiation, extended key usage clientAuth. ``key`` is
    the agency's existing key (``lienthong init`` makes it first); by default a new one.
    """
    return _issue_leaf(
        ca,
        code,
        _key_usage(digital_signature=True, content_commitment=True),
        [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
        key_type,
        (not_before, not_after, days),
        key,
    )


issue_client = issue_agency
"""An MQTT TLS client certificate for node ``code``: the same as an agency certificate.

Nodes present their agency certificate to the broker, so there is one kind of leaf for both;
this name exists for call sites that think of it as a client certificate.
"""


def issue_server(
    ca: CertifiedKey,
    name: str,
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
    *,
    key_type: KeyType = "rsa",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = DEFAULT_LEAF_DAYS,
    key: PrivateKey | None = None,
) -> CertifiedKey:
    """A TLS server certificate for an MQTT broker: CN = ``name``, SANs from ``hosts``.

    Each host that parses as an IP address becomes an IP SAN, the others DNS SANs. ``key``:
    an existing key, by default a new one. Extended key usage serverAuth, and clientAuth: the
    members of a broker cluster (nats-server routes) present it to one another.
    """
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    if not sans:
        raise ValueError("a server certificate needs at least one host name or address")
    return _issue_leaf(
        ca,
        name,
        _key_usage(digital_signature=True, key_encipherment=key_type == "rsa"),
        [
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            x509.SubjectAlternativeName(sans),
        ],
        key_type,
        (not_before, not_after, days),
        key,
    )


def make_crl(
    ca: CertifiedKey,
    revoked_serials: Iterable[int] | Mapping[int, dt.datetime],
    *,
    last_update: dt.datetime | None = None,
    next_update: dt.datetime | None = None,
    revoked_at: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing ``revoked_serials``.

    Pass a mapping serial -> revocation date to date each entry; otherwise every entry is
    dated ``revoked_at`` (default: ``last_update``, itself default now).
    """
    now = last_update or dt.datetime.now(dt.UTC) - _BACKDATE
    dates: Mapping[int, dt.datetime] = (
        revoked_serials
        if isinstance(revoked_serials, Mapping)
        else dict.fromkeys(revoked_serials, revoked_at or now)
    )
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(next_update or now + dt.timedelta(days=30))
    )
    for serial, when in dates.items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256())
