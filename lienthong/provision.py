"""What ``lienthong init`` writes for a new node: its configuration, its certificate request, and
the lines its parent's operator adds to the directory.

Pure: values in, text and objects out; the command line reads answers and writes the files.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from lienthong.edxml.codes import code_problem
from lienthong.errors import ConfigError
from lienthong.trust.keys import PrivateKey

__all__ = [
    "DEFAULT_API",
    "DEFAULT_MQTT_PORT",
    "Address",
    "NodePlan",
    "config_text",
    "make_csr",
    "parent_notice",
    "parse_address",
]

DEFAULT_MQTT_PORT = 8883
DEFAULT_API = "127.0.0.1:8866"


@dataclass(frozen=True, slots=True)
class Address:
    """A host and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, default_port: int, what: str) -> Address:
    """``HOST``, ``HOST:PORT`` or ``[IPV6]:PORT`` as an :class:`Address`; ``what`` names the
    option in the :class:`ConfigError` raised for anything else."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ConfigError(f"{what}: {text!r} is not HOST or HOST:PORT")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"{what}: {port_text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{what}: port {port} is not between 1 and 65535")
    return Address(host, port)


@dataclass(frozen=True, slots=True)
class NodePlan:
    """The answers ``lienthong init`` collects, and where the node's files go.

    ``parent`` is the parent node's broker (None only for the national node); ``children`` is
    this node's own broker for its child nodes, as they reach it (None when it has none).
    """

    code: str
    parent: Address | None
    api: Address
    folder: Path
    state_dir: Path
    children: Address | None = None

    def __post_init__(self) -> None:
        problem = code_problem(self.code)
        if problem:
            raise ConfigError(f"agency code {self.code!r}: {problem}")
        if self.parent is None and self.children is None:
            raise ConfigError(
                "a node with neither a parent broker nor children of its own reaches no one:"
                " give the parent's broker, or the address of this node's broker for its children"
            )

    @property
    def key(self) -> Path:
        """The agency's private key."""
        return self.folder / "agency.key"

    @property
    def cert(self) -> Path:
        """The agency's certificate (from the state CA, or a development one)."""
        return self.folder / "agency.crt"

    @property
    def csr(self) -> Path:
        """The certificate signing request for the state CA."""
        return self.folder / "agency.csr"

    @property
    def trust_dir(self) -> Path:
        """The CA certificates this node trusts."""
        return self.folder / "trust"

    @property
    def cafile(self) -> Path:
        """The CA bundle the brokers' certificates chain to."""
        return self.trust_dir / "ca.crt"

    @property
    def directory(self) -> Path:
        """The directory of agencies, as the parent distributes it."""
        return self.folder / "directory.toml"

    @property
    def broker_cert(self) -> Path:
        """This node's broker's certificate (nodes with children)."""
        return self.folder / "broker.crt"

    @property
    def broker_key(self) -> Path:
        """This node's broker's key."""
        return self.folder / "broker.key"


def _q(value: object) -> str:
    """A TOML value (JSON strings and integers are TOML too)."""
    return json.dumps(value if not isinstance(value, Path) else str(value), ensure_ascii=False)


def config_text(plan: NodePlan, *, written_at: dt.datetime) -> str:
    """The daemon's configuration file for ``plan``, with comments for the operator."""
    lines = [
        f"# lienthong configuration of node {plan.code}, written by `lienthong init` on"
        f" {written_at:%Y-%m-%d}.",
        "# Every setting is described in /etc/lienthong/lienthong.toml.example; check this file",
        "# with `lienthong check`.",
        "",
        "[node]",
        f"code = {_q(plan.code)}",
        f"state_dir = {_q(plan.state_dir)}",
        f"directory = {_q(plan.directory)}           # from the parent node",
        "",
        "[identity]",
        f"key = {_q(plan.key)}",
        f"cert = {_q(plan.cert)}",
        "",
        "[trust]",
        f"ca = [{_q(plan.trust_dir)}]",
        "",
    ]
    for name, address in (("parent", plan.parent), ("children", plan.children)):
        if address is None:
            continue
        lines += [
            f"[links.{name}]",
            f"host = {_q(address.host)}",
            f"port = {address.port}",
            f"cafile = {_q(plan.cafile)}",
            "",
        ]
    lines += [
        "[gateway]                                 # the office software's API",
        f"host = {_q(plan.api.host)}",
        f"port = {plan.api.port}",
        "# [gateway.clients.<systemid>] with secret_file, send_for, receive_for: see the example",
        "",
    ]
    return "\n".join(lines)


def make_csr(key: PrivateKey, code: str) -> x509.CertificateSigningRequest:
    """A certificate signing request for agency ``code`` (CN = the code), signed by ``key``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def parent_notice(code: str, fingerprint: str | None, plan: NodePlan) -> str:
    """What the parent node's operator must add for this node, in words and TOML."""
    signers = f"[{_q(fingerprint)}]" if fingerprint else '["<fingerprint of agency.crt>"]'
    lines = [
        f"The operator of the parent node adds {code} to the directory it distributes:",
        "",
        "    [[agency]]",
        f"    code = {_q(code)}",
        '    name = "<the agency\'s name>"',
        "    node = true",
        f"    signers = {signers}",
        "",
        "Its broker needs nothing more: it accepts every certificate of the state CA and its ACL",
        "confines each node to its own inbox.",
    ]
    if fingerprint is None:
        lines += [
            "",
            f"The fingerprint is known once the state CA has answered {plan.csr.name}:",
            f"`lienthong keys fingerprint {plan.cert}` prints it.",
        ]
    return "\n".join(lines)
