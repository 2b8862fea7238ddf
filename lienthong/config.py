"""The daemon's configuration: one TOML file, checked at start.

Every section is a frozen dataclass and a field of :class:`Config`, so adding a section
(``[links]``, ``[directory]``) is one dataclass and one field; the loader walks the fields.
Values are checked against the field types and each field's ``check`` metadata; any problem
raises :class:`ConfigError` naming the dotted key (``store.retry.max_attempts``) and what is
wrong. Unknown keys are refused with the list of known ones, so a misspelt setting never
silently falls back to its default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from lienthong.edxml.codes import code_problem
from lienthong.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/lienthong/lienthong.toml")

Check = Callable[[Any], str | None]


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _at_least_one(value: Any) -> str | None:
    return None if value >= 1 else "must be at least 1"


def _fraction(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _factor(value: Any) -> str | None:
    return None if value >= 1 else "must be 1 or more"


def _agency_code(value: Any) -> str | None:
    problem = code_problem(value)
    return None if problem is None else f"not an agency code: {problem}"


_NO_PATH = Path()
"""An unset path setting (``Path("")``, printed as ``.``); checked where it is required."""


def _setting(default: Any, check: Check | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """``[store.retry]``: the finite schedule for re-sending a transfer to a neighbour."""

    base_delay_s: float = _setting(2.0, _positive, "delay before the first retry")
    factor: float = _setting(2.0, _factor, "each delay is the previous one times this")
    max_delay_s: float = _setting(600.0, _positive, "no single delay is longer")
    jitter: float = _setting(0.2, _fraction, "each delay varies randomly by up to this share")
    max_attempts: int = _setting(20, _at_least_one, "attempts before dead-lettering")
    max_age_s: float = _setting(3 * 86400.0, _positive, "dead-letter a transfer this old")


STORE_BACKENDS = ("sqlite", "postgresql")


def _store_backend(value: Any) -> str | None:
    return None if value in STORE_BACKENDS else f"must be one of {', '.join(STORE_BACKENDS)}"


def _dsn(value: Any) -> str | None:
    if value == "" or value.startswith(("postgresql://", "postgres://")):
        return None
    return "must be a PostgreSQL URL: postgresql://user@host:5432/database"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """``[store]``: the store-and-forward engine."""

    backend: str = _setting(
        "sqlite", _store_backend, "sqlite (files in node.state_dir) or postgresql (at dsn)"
    )
    dsn: str = _setting("", _dsn, "with backend = postgresql: postgresql://user@host/database")
    password_file: Path = _setting(
        _NO_PATH, None, "file holding the PostgreSQL password (instead of one in the dsn)"
    )
    lock_check_s: float = _setting(
        1.0, _positive, "postgresql: the active daemon checks its hold on the store this often"
    )
    lease_s: float = _setting(60.0, _positive, "how long a taken transfer stays taken")
    group_commit_max_batch: int = _setting(256, _at_least_one, "writes per transaction at most")
    group_commit_max_wait_ms: float = _setting(
        1.0, _not_negative, "wait this long for more writes to group with the first"
    )
    bookkeeping_wait_ms: float = _setting(
        20.0,
        _not_negative,
        "bookkeeping (a transfer taken, a hop receipt) waits this long to share a commit",
    )
    package_max_age_s: float = _setting(7 * 86400.0, _positive, "dead-letter packages this old")
    busy_timeout_ms: int = _setting(5000, _at_least_one, "wait this long for a locked database")
    inline_max_bytes: int = _setting(
        16 * 1024, _not_negative, "packages smaller than this live in their database row"
    )
    intake_retry_s: float = _setting(
        5.0, _positive, "while intake is stopped (disk full), try the disk again this often"
    )
    retry: RetrySettings = field(default_factory=RetrySettings)


def _port(value: Any) -> str | None:
    return None if 0 < value < 65536 else "must be a TCP port number (1 to 65535)"


def _log_level(value: Any) -> str | None:
    levels = ("debug", "info", "warning", "error")
    return None if value in levels else f"must be one of {', '.join(levels)}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """``[node]``: who this daemon is and where it keeps its state."""

    code: str = _setting("", _agency_code, "agency code of the agency this node runs for")
    state_dir: Path = _setting(Path("/var/lib/lienthong"), None, "database and package files")
    directory: Path = _setting(_NO_PATH, None, "the directory of agencies (TOML)")


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """``[identity]``: the agency's signing key and certificate (also the MQTT client pair)."""

    key: Path = _setting(_NO_PATH, None, "PEM private key")
    cert: Path = _setting(_NO_PATH, None, "PEM certificate, CN = the node's agency code")
    passphrase_file: Path = _setting(_NO_PATH, None, "file holding the key's passphrase")
    passphrase_env: str = _setting("", None, "environment variable holding the passphrase")


@dataclass(frozen=True, slots=True)
class TrustSettings:
    """``[trust]``: what signatures are checked against."""

    ca: tuple[Path, ...] = _setting((), None, "CA certificate files or folders")
    crls: tuple[Path, ...] = _setting((), None, "certificate revocation lists (PEM or DER)")
    allow_sha1: bool = _setting(False, None, "accept legacy RSA-SHA1 signatures, as weak")


def _split_address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _addresses(value: Any) -> str | None:
    for text in value:
        if _split_address(text) is None:
            return f"{text!r} is not host:port (mq2.example.vn:8883)"
    return None


BROKER_ENGINES = ("mosquitto", "nats")


def _engine(value: Any) -> str | None:
    return None if value in BROKER_ENGINES else f"must be one of {', '.join(BROKER_ENGINES)}"


@dataclass(frozen=True, slots=True)
class BrokerLink:
    """``[links.parent]`` or ``[links.children]``: one MQTT broker this node uses.

    A broker run as a cluster lists its other members in ``brokers``; the link moves to the
    next address when one fails, keeping its session.
    """

    host: str = _setting("", None, "broker host; empty: no such link")
    port: int = _setting(8883, _port, "broker TLS port")
    brokers: tuple[str, ...] = _setting(
        (), _addresses, "more host:port addresses of the same broker (cluster members)"
    )
    engine: str = _setting("mosquitto", _engine, "the broker program: mosquitto or nats")
    cafile: Path = _setting(_NO_PATH, None, "CA the broker's certificate chains to")
    keepalive_s: int = _setting(30, _at_least_one, "MQTT keepalive")

    @property
    def enabled(self) -> bool:
        """True when a host is set."""
        return bool(self.host)

    @property
    def alternates(self) -> tuple[tuple[str, int], ...]:
        """``brokers`` as ``(host, port)`` pairs, without ``host:port`` itself."""
        pairs = (_split_address(text) for text in self.brokers)
        return tuple(p for p in pairs if p is not None and p != (self.host, self.port))


@dataclass(frozen=True, slots=True)
class LinksSettings:
    """``[links]``: the parent's broker (absent at the top node) and our own, for children."""

    parent: BrokerLink = field(default_factory=BrokerLink)
    children: BrokerLink = field(default_factory=BrokerLink)


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """``[transfer]``: how packages travel to a neighbour."""

    receipt_timeout_s: float = _setting(30.0, _positive, "wait this long for a hop receipt")
    window: int = _setting(8, _at_least_one, "transfers in flight per neighbour at once")
    message_size_limit: int = _setting(
        1024 * 1024, _at_least_one, "the brokers' message_size_limit; frames stay below it"
    )
    max_package_bytes: int = _setting(
        2 * 1024 * 1024 * 1024, _at_least_one, "largest package (bytes, signed edXML)"
    )
    partial_ttl_s: float = _setting(
        600.0, _positive, "drop a transfer begun by a neighbour when it stalls this long"
    )
    poll_s: float = _setting(1.0, _positive, "look for due transfers at least this often")
    group_receipts: bool = _setting(
        True, None, "answer packages stored together with one receipts frame per neighbour"
    )


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """``[daemon]``: the running process."""

    drain_grace_s: float = _setting(20.0, _not_negative, "on SIGTERM, finish sends this long")
    log_level: str = _setting("info", _log_level, "debug, info, warning or error")


def _agency_codes(value: Any) -> str | None:
    for code in value:
        problem = code_problem(code)
        if problem is not None:
            return f"{code!r} is not an agency code: {problem}"
    return None


def _hash_policy(value: Any) -> str | None:
    return None if value in ("refuse", "accept") else "must be refuse or accept"


VALIDATION_MODES = ("lenient", "strict")


def _validation_mode(value: Any) -> str | None:
    return None if value in VALIDATION_MODES else "must be lenient or strict"


def _validation_mode_or_unset(value: Any) -> str | None:
    return None if value == "" else _validation_mode(value)


def _port_or_zero(value: Any) -> str | None:
    return None if 0 <= value < 65536 else "must be a TCP port number, or 0 for none"


def _networks(value: Any) -> str | None:
    for text in value:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{text!r} is not an IP address or network (10.1.2.3, 10.1.2.0/24)"
    return None


_LOOPBACK_NAMES = ("localhost",)


def _loopback(value: Any) -> str | None:
    """The plain-HTTP listener stays on this machine: requests on it travel unencrypted."""
    if value in _LOOPBACK_NAMES:
        return None
    try:
        if ipaddress.ip_address(value.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass
    return (
        "must be a loopback address (127.0.0.1, ::1): the plain-HTTP API must not be"
        " reachable from the network; serve other servers with [gateway.https]"
    )


@dataclass(frozen=True, slots=True)
class GatewayClient:
    """``[gateway.clients.<systemid>]``: one office-software installation and its secret."""

    secret: str = _setting("", None, "the HMAC secret (or give secret_file)")
    secret_file: Path = _setting(_NO_PATH, None, "file holding the HMAC secret")
    send_for: tuple[str, ...] = _setting((), _agency_codes, "agencies it may send for")
    receive_for: tuple[str, ...] = _setting((), _agency_codes, "agencies it receives for")
    allow_from: tuple[str, ...] = _setting(
        (), _networks, "addresses or networks it may use the HTTPS listener from; none: not at all"
    )
    certificate_cn: str = _setting(
        "", None, "over HTTPS, its client certificate must have this common name"
    )

    validation: str = _setting(
        "", _validation_mode_or_unset, "lenient or strict for this client; unset: [validation]"
    )


@dataclass(frozen=True, slots=True)
class HttpsSettings:
    """``[gateway.https]``: the API over TLS for office software on other servers."""

    host: str = _setting("", None, "address to listen on; empty: no HTTPS listener")
    port: int = _setting(8867, _port, "TCP port")
    cert: Path = _setting(_NO_PATH, None, "PEM server certificate (chain)")
    key: Path = _setting(_NO_PATH, None, "PEM private key of the certificate")
    client_ca: Path = _setting(
        _NO_PATH, None, "require client certificates chaining to this CA (PEM); unset: not"
    )

    @property
    def enabled(self) -> bool:
        """True when a host is set."""
        return bool(self.host)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """``[gateway]``: the local HTTP API office software talks to (axis SDK wire format)."""

    host: str = _setting("127.0.0.1", _loopback, "loopback address of the plain-HTTP listener")
    port: int = _setting(8866, _port_or_zero, "TCP port; 0 for none (socket only)")
    socket: Path = _setting(_NO_PATH, None, "also listen on this unix socket")
    unverifiable_hash: str = _setting(
        "refuse", _hash_policy, "a request whose HMAC cannot be checked (mangled header bytes)"
    )
    header_timeout_s: float = _setting(
        10.0, _positive, "close a connection whose request headers are not whole by then"
    )
    body_timeout_s: float = _setting(
        30.0, _positive, "refuse a request body that stalls this long between two reads"
    )
    max_connections: int = _setting(256, _at_least_one, "open connections at most, in total")
    max_connections_per_address: int = _setting(
        32, _at_least_one, "open connections at most from one client address"
    )
    https: HttpsSettings = field(default_factory=HttpsSettings)
    clients: dict[str, GatewayClient] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """``[validation]``: how packages from this node's own office software are checked.

    Lenient (the default) accepts the deviations from QCVN 102 that real producers live with
    and shows them; strict refuses a submission that has any. Packages from neighbours are
    always taken leniently: the axis carries such packages, and refusing them helps no one.
    """

    mode: str = _setting("lenient", _validation_mode, "lenient or strict, for submissions")

    @property
    def strict(self) -> bool:
        """True in strict mode."""
        return self.mode == "strict"


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    """``[spool]``: folders for office software that only drops and picks up files."""

    dir: Path = _setting(
        _NO_PATH, None, "spool folder (outbox, inbox, status, rejected); unset: off"
    )
    settle_s: float = _setting(2.0, _not_negative, "a dropped file must stay unchanged this long")
    poll_s: float = _setting(1.0, _positive, "scan the folders this often")

    @property
    def enabled(self) -> bool:
        """True when a folder is set."""
        return self.dir != _NO_PATH


def _expiry_policy(value: Any) -> str | None:
    return None if value in ("warn", "refuse_submissions") else "must be warn or refuse_submissions"


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    """``[directory]``: signed directory versions from the directory authority."""

    authority: Path = _setting(
        _NO_PATH, None, "the directory authority's certificate; unset: the directory file only"
    )
    on_expiry: str = _setting(
        "warn", _expiry_policy, "past expiry: warn (keep routing) or refuse_submissions"
    )
    warn_before_s: float = _setting(7 * 86400.0, _not_negative, "warn this long before expiry")
    ask_parent_s: float = _setting(
        600.0, _positive, "ask the parent for a newer version this often"
    )
    check_s: float = _setting(2.0, _positive, "look for versions published here this often")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration file."""

    node: NodeSettings = field(default_factory=NodeSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    links: LinksSettings = field(default_factory=LinksSettings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)


_REQUIRED = {"node.code"}

T = TypeVar("T")


def load_config(path: Path = DEFAULT_CONFIG_PATH) -> Config:
    """Read and check the TOML file at ``path``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    return parse_config(raw.decode("utf-8", errors="replace"), source=str(path), base=path.parent)


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Check the TOML ``text``; ``source`` names it in errors.

    Relative paths are taken relative to ``base`` (the config file's folder when loaded from a
    file), so a folder of configs and keys can move as a whole.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    for key in sorted(_REQUIRED):
        section, name = key.split(".")
        if name not in data.get(section, {}):
            raise ConfigError("is required", key=key)
    return _build(Config, data, prefix="", base=base)


def _build(cls: type[T], data: Any, prefix: str, base: Path | None) -> T:
    """An instance of the dataclass ``cls`` from the table ``data`` at ``prefix``."""
    if not isinstance(data, dict):
        raise ConfigError("must be a table", key=prefix.rstrip(".") or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(fields))}",
            key=f"{prefix}{unknown[0]}",
        )
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, f"{key}.", base)  # type: ignore[arg-type]
            continue
        if get_origin(kind) is dict:
            values[name] = _build_table(get_args(kind)[1], value, key, base)
            continue
        values[name] = _coerce(kind, value, key, base)
        check = fields[name].metadata.get("check")
        problem = check(values[name]) if check else None
        if problem:
            raise ConfigError(f"{problem} (got {value!r})", key=key)
    return cls(**values)


def _build_table(cls: type[T], data: Any, key: str, base: Path | None) -> dict[str, T]:
    """A ``dict[str, cls]`` from a table of tables (``[gateway.clients.<name>]``)."""
    if not isinstance(data, dict):
        raise ConfigError("must be a table of tables", key=key)
    return {name: _build(cls, item, f"{key}.{name}.", base) for name, item in data.items()}


def _path(text: str, base: Path | None) -> Path:
    path = Path(text)
    return base / path if text and base is not None and not path.is_absolute() else path


def _coerce(kind: Any, value: Any, key: str, base: Path | None) -> Any:
    """``value`` as the field type ``kind``, or a ConfigError naming ``key``."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str or kind is Path:
        ok = isinstance(value, str)
        value = _path(value, base) if ok and kind is Path else value
    elif kind == tuple[str, ...]:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise ConfigError(f"must be a list of strings (got {value!r})", key=key)
        value = tuple(value)
    elif kind == tuple[Path, ...]:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(_path(v, base) for v in value) if ok else value
        if not ok:
            raise ConfigError(f"must be a list of path strings (got {value!r})", key=key)
    else:  # pragma: no cover - a field type this loader does not know is our bug
        raise TypeError(f"unsupported setting type {kind!r} for {key}")
    if not ok:
        name = {float: "number", int: "integer", Path: "path string"}.get(kind, kind.__name__)
        raise ConfigError(f"must be a {name} (got {value!r})", key=key)
    return value


def check_store(settings: StoreSettings) -> None:
    """Raise :class:`ConfigError` unless ``[store]`` names a store that can be opened: with
    ``backend = "postgresql"``, a ``dsn``, and a readable, non-empty ``password_file`` if set."""
    if settings.backend != "postgresql":
        return
    if not settings.dsn:
        raise ConfigError(
            'is required with backend = "postgresql" (postgresql://user@host:5432/database)',
            key="store.dsn",
        )
    if settings.password_file != _NO_PATH:
        store_password(settings)


def store_password(settings: StoreSettings) -> str | None:
    """The PostgreSQL password from ``store.password_file`` (its first line), or None when
    no file is set; :class:`ConfigError` naming the file when it cannot be read or is empty."""
    if settings.password_file == _NO_PATH:
        return None
    path = settings.password_file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the password file {path}: {exc.strerror}", key="store.password_file"
        ) from exc
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(f"the password file {path} is empty", key="store.password_file")
    return password


def check_for_daemon(config: Config) -> None:
    """Raise :class:`ConfigError` naming the first setting ``lienthong run`` cannot do without.

    Commands that only read a node's state (``queue``, ``journal verify``) need just
    ``[node]``; the daemon also needs its directory, key, trust store and at least one link.
    """
    check_store(config.store)
    required: list[tuple[str, Path]] = [
        ("node.directory", config.node.directory),
        ("identity.key", config.identity.key),
        ("identity.cert", config.identity.cert),
    ]
    for name, link in (("parent", config.links.parent), ("children", config.links.children)):
        if link.enabled:
            required.append((f"links.{name}.cafile", link.cafile))
    for key, path in required:
        if path == _NO_PATH:
            raise ConfigError("is required to run the daemon", key=key)
    if not config.trust.ca:
        raise ConfigError("needs at least one CA certificate file or folder", key="trust.ca")
    if not (config.links.parent.enabled or config.links.children.enabled):
        raise ConfigError(
            "neither links.parent.host nor links.children.host is set: the node would reach no one",
            key="links",
        )
