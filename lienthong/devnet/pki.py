"""A development PKI written to files: a CA, the brokers' certificate, agency certificates.

For tests and the demo only: the keys are written unprotected. ``lienthong pki init`` makes the
same kind of CA for people; this class writes agency certificates on demand.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from lienthong.trust.pki import CertifiedKey, KeyType, issue_agency, issue_server, make_ca

HOST = "127.0.0.1"


class DevPki:
    """A development CA and certificate files under ``root``, written on first use."""

    def __init__(
        self, root: Path, ca_name: str = "lienthong test CA", key_type: KeyType = "ec"
    ) -> None:
        """Make the CA and the broker's server certificate for ``localhost``/127.0.0.1.

        ``key_type`` (``ec`` or ``rsa``) is used for agency keys; EC keys are made faster,
        RSA is what agencies use by default.
        """
        self.root = root
        self.key_type = key_type
        root.mkdir(parents=True, exist_ok=True)
        self.ca = make_ca(ca_name, key_type="ec")
        self.cafile = self._write("ca.pem", self.ca.cert_pem())
        server = issue_server(self.ca, "broker", hosts=("localhost", HOST), key_type="ec")
        self.server_cert, self.server_key = self._write_pair("broker", server)
        self._clients: dict[str, tuple[Path, Path]] = {}

    def _write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _write_pair(self, stem: str, pair: CertifiedKey) -> tuple[Path, Path]:
        cert = self._write(f"{stem}.crt", pair.cert_pem())
        return cert, self._write(f"{stem}.key", pair.key_pem())

    def client_files(self, code: str) -> tuple[Path, Path]:
        """``(certfile, keyfile)`` of an agency certificate with CN = ``code``."""
        if code not in self._clients:
            pair = issue_agency(self.ca, code, key_type=self.key_type)
            self._clients[code] = self._write_pair(f"client-{code}", pair)
        return self._clients[code]

    def client_context(self, code: str | None) -> ssl.SSLContext:
        """A TLS context trusting this CA and presenting ``code``'s certificate (none if None)."""
        context = ssl.create_default_context(cafile=str(self.cafile))
        if code is not None:
            cert, key = self.client_files(code)
            context.load_cert_chain(str(cert), str(key))
        return context
