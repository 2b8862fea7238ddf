"""Read keys, certificates, CRLs, trust-store folders and passphrases from disk.

The shell around the pure trust core: everything here touches files or the environment and
turns what it finds into :mod:`lienthong.trust` objects. Failures raise :class:`ConfigError`
naming the file or variable at fault.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lienthong.errors import ConfigError
from lienthong.trust.keys import SigningIdentity
from lienthong.trust.truststore import TrustStore, load_crl

TRUST_SUFFIXES = (".crt", ".pem")
"""Files of a trust-store folder that are read as CA certificates."""


def read_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of ``path``; :class:`ConfigError` saying which ``what`` could not be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def read_passphrase(file: str | None = None, env: str | None = None) -> bytes | None:
    """The passphrase from ``file`` (one trailing newline stripped) or environment ``env``.

    None when neither is given; :class:`ConfigError` when both are, when the file cannot be
    read or the variable is not set.
    """
    if file and env:
        raise ConfigError("give the passphrase by file or by environment variable, not both")
    if file:
        text = read_file(file, "passphrase file")
        return text.removesuffix(b"\n").removesuffix(b"\r")
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"the environment variable {env} holding the passphrase is not set")
        return value.encode()
    return None


def load_identity(
    key: str | os.PathLike[str],
    cert: str | os.PathLike[str],
    passphrase: bytes | None = None,
    chain: str | os.PathLike[str] | None = None,
) -> SigningIdentity:
    """A :class:`SigningIdentity` from PEM files. Load it once and reuse it."""
    try:
        return SigningIdentity.from_pem(
            read_file(key, "private key"),
            read_file(cert, "certificate"),
            passphrase,
            read_file(chain, "certificate chain") if chain else None,
        )
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def trust_files(path: str | os.PathLike[str]) -> list[Path]:
    """The CA certificate files of a trust store: the file itself, or a folder's .crt/.pem."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in TRUST_SUFFIXES)
        if not files:
            raise ConfigError(f"the trust-store folder {p} holds no .crt or .pem file")
        return files
    return [p]


def load_trust_store(
    paths: Iterable[str | os.PathLike[str]], crls: Iterable[str | os.PathLike[str]] = ()
) -> TrustStore:
    """A :class:`TrustStore` from CA certificate files or folders, plus CRL files (PEM/DER).

    Every certificate found must be a CA certificate: a leaf in a trust folder is refused
    with its file name rather than ignored.
    """
    ca_pems = [(f, read_file(f, "CA certificate")) for p in paths for f in trust_files(p)]
    crl_blobs = [(Path(c), read_file(c, "CRL")) for c in crls]
    for name, blob in ca_pems:
        try:
            TrustStore.from_pem([blob])
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from exc
    for name, blob in crl_blobs:
        try:
            load_crl(blob)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from exc
    return TrustStore.from_pem([b for _, b in ca_pems], [b for _, b in crl_blobs])
