"""A whole network on one machine: one broker per node with children, one daemon per node.

:class:`Network` reads a directory (the same TOML a node reads), makes a development PKI, a
broker for every node that has child nodes (the tier config with TLS client certificates and
the ACL), and a config file for every node; it then starts real ``lienthong run`` processes.
Each daemon gets its own ``NOTIFY_SOCKET``, so "ready" means what it means under systemd: the
daemon said READY=1 once its store was open and its links were up.

With ``national_cluster``, the national node's broker is a three-member NATS cluster
(:class:`~lienthong.devnet.natscluster.NatsCluster`) and the links to it list all three
members; the other tiers keep mosquitto.

Everything lives under one folder (``root``): ``pki/``, ``brokers/<code>/``,
``nodes/<code>/lienthong.toml`` with the node's ``state/`` and ``daemon.log``, and
``directory.toml``.

A node may keep its store in PostgreSQL (``postgres={code: dsn}``): it then runs as a pair, its
daemon and a second one (``nodes/<code>-standby/``, its own state folder and API port, the same
database) started after it, which waits as the standby (see :mod:`lienthong.node`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from lienthong.brokersetup import free_port
from lienthong.config import load_config
from lienthong.devnet.axis_client import AxisClient
from lienthong.devnet.broker import Broker
from lienthong.devnet.natscluster import NatsCluster
from lienthong.devnet.pki import HOST, DevPki
from lienthong.directory import Directory
from lienthong.resources import shipped_dir
from lienthong.store import Store
from lienthong.store.factory import store_for
from lienthong.store.model import InboxEntry, Receipt
from lienthong.trace import NodeView, collect_view
from lienthong.trust.pki import KeyType

T = TypeVar("T")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.3


AUTHORITY = "lienthong directory authority"
"""The common name of the development directory authority's certificate."""

OFFICE_CLIENT = "office"
"""The system id of the office software of every demonstration node."""


def office_secret(code: str) -> str:
    """The HMAC secret of ``code``'s office software (a development value, not a secret)."""
    return f"dev-secret-{code}"


def topology_text(name: str) -> str:
    """The text of a shipped example directory (``four-tier``, ``three-tier``, ``five-tier``)."""
    return (shipped_dir("config/topologies") / f"{name}.toml").read_text(encoding="utf-8")


def poll_until(check: Callable[[], bool], timeout: float) -> bool:
    """Call ``check`` every 0.3 s until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(POLL_S)
    return False


class NodeProcess:
    """One ``lienthong run`` process with its config, state folder and log."""

    def __init__(self, code: str, workdir: Path) -> None:
        self.code = code
        self.workdir = workdir
        self.api_port = free_port()
        self.config_path = workdir / "lienthong.toml"
        self.log_path = workdir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self._messages: list[str] = []

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start the daemon (with extra ``env``); :meth:`wait_ready` waits for its READY=1."""
        if self.running:
            raise RuntimeError(f"node {self.code} is already running")
        notify_path = self.workdir / "notify.sock"
        with contextlib.suppress(FileNotFoundError):
            notify_path.unlink()
        self._messages = []
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        full_env = {**os.environ, **(env or {}), "NOTIFY_SOCKET": str(notify_path)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lienthong", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Return once the daemon has sent READY=1; raise with its log if it dies or hangs."""
        assert self._notify is not None
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"node {self.code} exited with {self.process.returncode}:\n{self.log()}"
                )
            self._notify.settimeout(0.2)
            try:
                message = self._notify.recv(4096).decode("utf-8", errors="replace")
            except TimeoutError:
                continue
            self._messages.append(message)
            if "READY=1" in message.split("\n"):
                return
        raise RuntimeError(f"node {self.code} not ready after {timeout:g} s:\n{self.log()}")

    def notifications(self) -> list[str]:
        """Every sd_notify message the daemon has sent since it started (without waiting)."""
        if self._notify is not None:
            self._notify.settimeout(0)
            with contextlib.suppress(BlockingIOError, TimeoutError):
                while True:
                    message = self._notify.recv(4096)
                    self._messages.append(message.decode("utf-8", errors="replace"))
        return list(self._messages)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout``); the exit status."""
        if self.process is None:
            return None
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_notify()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the daemon dies where it stands."""
        if self.process is not None and self.running:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        self._close_notify()

    def _close_notify(self) -> None:
        self.notifications()  # keep what is still queued on the socket
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def peak_rss(self) -> int:
        """The process's peak resident memory so far (``VmHWM``), in bytes."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmHWM for node {self.code}")

    def log(self) -> str:
        """What the daemon has logged so far (JSON lines)."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_toml(sections: Mapping[str, Mapping[str, object]]) -> str:
    """A TOML document of plain ``[section]`` tables (dotted names for nested tables)."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


class Network:
    """Brokers and daemons for every node of a directory, under ``root``."""

    def __init__(
        self,
        root: Path,
        directory_text: str,
        *,
        key_type: KeyType = "rsa",
        overrides: Mapping[str, Mapping[str, object]] | None = None,
        national_cluster: bool = False,
        postgres: Mapping[str, str] | None = None,
    ) -> None:
        """Write the PKI, broker configs and node configs; start nothing yet.

        ``overrides`` are extra settings for every node's config, by section (for example
        ``{"transfer": {"receipt_timeout_s": 5}}``). ``national_cluster``: the national
        node's broker is a NATS cluster. ``postgres`` names the nodes whose store is in
        PostgreSQL, with the DSN of each one's database (an existing, empty one); each such
        node gets a standby daemon too (:attr:`standbys`).
        """
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.directory = Directory.from_mapping(tomllib.loads(directory_text))
        self.directory_path = root / "directory.toml"
        self.directory_path.write_text(directory_text, encoding="utf-8")
        self.pki = DevPki(root / "pki", "lienthong development CA", key_type=key_type)
        self.authority_cert, self.authority_key = self.pki.client_files(AUTHORITY)
        """The directory authority's pair: every node checks directory versions with it."""
        parents = {
            parent
            for node in self.directory.nodes
            if (parent := self.directory.node_parent(node)) is not None
        }
        # Each broker grants rights only to its own node and that node's children.
        served = {
            code: [n for n in self.directory.nodes if self.directory.node_parent(n) == code]
            for code in parents
        }
        self.brokers: dict[str, Broker | NatsCluster] = {
            code: Broker(self.pki, root / "brokers" / code, members=[code, *served[code]])
            for code in sorted(parents)
        }
        national = self.directory.national
        if national_cluster and national in self.brokers:
            self.brokers[national] = NatsCluster(
                self.pki,
                root / "brokers" / national,
                [national, *served[national]],
                "lienthong-national",
            )
        self.nodes = {
            code: NodeProcess(code, root / "nodes" / code) for code in sorted(self.directory.nodes)
        }
        self.postgres = dict(postgres or {})
        self.standbys = {
            code: NodeProcess(code, root / "nodes" / f"{code}-standby") for code in self.postgres
        }
        """The second daemon of each node whose store is in PostgreSQL."""
        for node in [*self.nodes.values(), *self.standbys.values()]:
            node.workdir.mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(
                render_toml(self._node_config(node, overrides or {})), encoding="utf-8"
            )

    def _node_config(
        self, node: NodeProcess, overrides: Mapping[str, Mapping[str, object]]
    ) -> dict[str, dict[str, object]]:
        code = node.code
        cert, key = self.pki.client_files(code)
        served = [a for a in self.directory.codes if self.directory.serving_node(a) == code]
        config: dict[str, dict[str, object]] = {
            "node": {
                "code": code,
                "state_dir": str(node.workdir / "state"),
                "directory": str(self.directory_path),
            },
            "identity": {"key": str(key), "cert": str(cert)},
            "trust": {"ca": [str(self.pki.cafile)]},
            "directory": {"authority": str(self.authority_cert), "check_s": 0.5},
            "gateway": {"port": node.api_port},
            f"gateway.clients.{OFFICE_CLIENT}": {
                "secret": office_secret(code),
                "send_for": served,
                "receive_for": served,
            },
        }
        parent = self.directory.node_parent(code)
        if parent is not None:
            config["links.parent"] = self._link(self.brokers[parent])
        if code in self.brokers:
            config["links.children"] = self._link(self.brokers[code])
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        if code in self.postgres:
            config.setdefault("store", {}).update(
                {"backend": "postgresql", "dsn": self.postgres[code]}
            )
        return config

    def _link(self, broker: Broker | NatsCluster) -> dict[str, object]:
        first, *others = broker.addresses
        host, port = first.rsplit(":", 1)
        link: dict[str, object] = {"host": host, "port": int(port), "cafile": str(self.pki.cafile)}
        if others:
            link["brokers"] = others
        if broker.engine != "mosquitto":
            link["engine"] = broker.engine
        return link

    def start(self, codes: Iterable[str] | None = None) -> None:
        """Start every broker, then the given nodes (all by default), and wait until ready;
        then their standby daemons, and wait until each says it is the standby."""
        for broker in self.brokers.values():
            if not broker.running:
                broker.start()
        chosen = list(codes if codes is not None else self.nodes)
        for code in chosen:
            self.nodes[code].start()
        for code in chosen:
            self.nodes[code].wait_ready()
        standbys = [self.standbys[c] for c in chosen if c in self.standbys]
        for node in standbys:
            node.start()
        for node in standbys:
            node.wait_ready()

    def stop(self) -> None:
        """SIGTERM every node, then stop every broker."""
        for node in [*self.standbys.values(), *self.nodes.values()]:
            node.stop()
        for broker in self.brokers.values():
            broker.stop()

    def kill(self) -> None:
        """SIGKILL everything (test clean-up)."""
        for node in [*self.standbys.values(), *self.nodes.values()]:
            node.kill()
        for broker in self.brokers.values():
            broker.kill()

    def _read(self, code: str, call: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``call`` on ``code``'s store (beside its running daemon) and return its result."""

        config = load_config(self.nodes[code].config_path)

        async def main() -> T:
            async with store_for(config.node.state_dir, config.store) as store:
                return await call(store)

        return asyncio.run(main())

    def inbox(self, code: str) -> list[InboxEntry]:
        """Every inbox entry at ``code``'s node, retrieved or not."""
        return self._read(code, lambda s: s.inbox_list(pending=False))

    def receipts(self, code: str, document_id: str) -> list[Receipt]:
        """Every receipt ``code``'s node holds about ``document_id``."""
        return self._read(code, lambda s: s.receipts(document_id))

    def views(self, document_id: str) -> list[NodeView]:
        """What each node holds about ``document_id``."""
        return [
            self._read(code, lambda s, c=code: collect_view(s, c, document_id))  # type: ignore[misc]
            for code in self.nodes
        ]

    def publish_directory(self, document_file: Path, number: int, *extra: str) -> str:
        """Sign ``document_file`` as directory version ``number`` with the development
        authority and hand it to the national node (``lienthong directory publish``); the
        command's output. Raises with it when the command fails."""
        national = self.directory.national
        out = self.root / f"directory-v{number}.json"
        result = self.lienthong(
            national,
            "directory",
            "publish",
            str(document_file),
            "--key",
            str(self.authority_key),
            "--cert",
            str(self.authority_cert),
            "--version",
            str(number),
            "--expires",
            "30",
            "-o",
            str(out),
            *extra,
        )
        if result.returncode != 0:
            raise RuntimeError(f"directory publish failed: {result.stderr}")
        return result.stdout

    def directory_version(self, code: str) -> int:
        """The directory version ``code``'s node runs (from ``lienthong directory status``)."""
        result = self.lienthong(code, "directory", "status", "--json")
        return int(json.loads(result.stdout)["version"]) if result.stdout else -1

    def office(self, code: str) -> AxisClient:
        """Office software at ``code``'s node, speaking the axis SDK's wire format to its API."""
        node = self.nodes[code]
        return AxisClient(
            f"http://{HOST}:{node.api_port}/",
            OFFICE_CLIENT,
            office_secret(code),
            port=node.api_port,
        )

    def lienthong(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``lienthong ARGS --config <code's config>`` and return its result."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "lienthong",
                *args,
                "--config",
                str(self.nodes[code].config_path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
