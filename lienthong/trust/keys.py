"""Signing identities: an agency's private key with its certificate, loaded once.

Loading an RSA private key costs tens of milliseconds (the key is checked on load), far more
than signing a small package. Build one :class:`SigningIdentity` when the node starts and pass
it to every :func:`~lienthong.trust.sign.sign_package` call; never load keys per package.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lienthong.errors import ConfigError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""The key kinds packages are signed with: RSA (2048 bits or more) and ECDSA P-256."""


def load_private_key(pem: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM private key (PKCS#8 or traditional, encrypted or not).

    Raises :class:`ConfigError` naming the problem: a wrong or missing passphrase, a key that
    is not RSA or EC, bytes that are not a PEM key.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase or None)
    except TypeError as exc:
        # cryptography raises TypeError both for "encrypted, no password" and the reverse
        if passphrase:
            raise ConfigError(
                "the private key is not encrypted, but a passphrase was given"
            ) from exc
        raise ConfigError("the private key is encrypted: give its passphrase") from exc
    except ValueError as exc:
        if passphrase and b"ENCRYPTED" in pem:
            raise ConfigError("the passphrase does not decrypt the private key") from exc
        raise ConfigError(f"not a readable PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"unsupported private key type {type(key).__name__}: use RSA or EC")
    return key


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM blob, in order; raises :class:`ConfigError` if there is none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"not a readable PEM certificate ({exc})") from exc
    return certs


@dataclass(frozen=True)
class SigningIdentity:
    """The private key, its certificate and optional intermediate CA certificates.

    Build it once (see the module docstring) with :meth:`from_pem` and reuse it.
    """

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if self.key.public_key().public_bytes(*spki) != self.certificate.public_key().public_bytes(
            *spki
        ):
            raise ConfigError("the private key does not belong to the certificate")

    @classmethod
    def from_pem(
        cls,
        key_pem: bytes,
        cert_pem: bytes,
        passphrase: bytes | None = None,
        chain_pem: bytes | None = None,
    ) -> SigningIdentity:
        """Load the key and certificate; ``cert_pem`` may also hold the intermediates after
        the leaf, or they can be given apart in ``chain_pem``."""
        certs = load_certificates(cert_pem)
        extra = load_certificates(chain_pem) if chain_pem else []
        return cls(load_private_key(key_pem, passphrase), certs[0], tuple(certs[1:] + extra))

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """The leaf then the intermediates: what goes into KeyInfo."""
        return (self.certificate, *self.chain)

    @cached_property
    def certificates_base64(self) -> tuple[str, ...]:
        """:attr:`certificates` as the base64 text of ``ds:X509Certificate`` elements: the PEM
        body, lines included. Encoded on first use only, as every signature carries it."""
        return tuple(
            "".join(cert.public_bytes(serialization.Encoding.PEM).decode().splitlines(True)[1:-1])
            for cert in self.certificates
        )
