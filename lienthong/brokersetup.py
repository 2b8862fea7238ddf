"""The broker a node with child nodes runs for them: its files, and a test start before use.

``lienthong broker-config`` builds a :class:`BrokerPlan` from the node's configuration and the
directory, asks an :class:`Engine` for the files, writes them, and has the engine start the
broker on them once, on a free local port with a throw-away store, until it completes a TLS
handshake with this node's own certificate. The engines: mosquitto (one broker), and
nats-server 2.9 (one member of a three-member cluster with JetStream; see
:mod:`lienthong.transport.natsconf`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from lienthong.errors import LienthongError
from lienthong.transport.brokerconf import BrokerSettings, render, render_acl
from lienthong.transport.natsconf import NatsMember
from lienthong.transport.natsconf import render as render_nats

__all__ = [
    "ENGINES",
    "BrokerPlan",
    "BrokerTestFailed",
    "Engine",
    "Mosquitto",
    "Nats",
    "free_port",
    "own_path",
    "tls_probe",
]

LOCAL = "127.0.0.1"
TEST_START_TIMEOUT_S = 15.0


class BrokerTestFailed(LienthongError):
    """The broker did not start on the files written, or refused this node's certificate."""


_LISTEN_PORTS = range(20000, 32768)
"""Where :func:`free_port` looks: below Linux's default ephemeral range (32768-60999), from
which the kernel gives outgoing connections their local port. A port chosen there could be
taken by one of the network's own MQTT connections before its daemon or broker binds it."""


_given: set[int] = set()
"""Ports :func:`free_port` has returned in this process: a network's ports are all chosen
before its first broker binds one, so a port free now may already be promised."""


def free_port(host: str = LOCAL) -> int:
    """A TCP port on ``host`` that nobody listens on right now, outside the ephemeral range
    (chosen at random, so that processes choosing at once rarely meet), and never one this
    process was given before."""
    for _ in range(100):
        port = random.choice(_LISTEN_PORTS)
        if port in _given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    while True:  # every try was taken: let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port


def tls_probe(
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None = None,
    timeout: float = 5.0,
    settle: float = 0.0,
) -> None:
    """Connect to ``host:port`` and complete a TLS handshake with ``context`` (which holds the
    client certificate); raise ``OSError``/``ssl.SSLError`` otherwise. ``server_hostname`` is the
    name the certificate must carry (default ``host``).

    With TLS 1.3 a server refuses a client certificate only after the handshake: ``settle``
    seconds are spent waiting for such a refusal (a broker waiting for CONNECT says nothing).
    """
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname or host) as tls,
    ):
        if settle <= 0:
            return
        tls.settimeout(settle)
        try:
            data = tls.recv(1)
        except TimeoutError:
            return
        if not data:
            raise ConnectionResetError("the broker closed the connection after the handshake")


def own_path(path: Path, user: str, *, owner: str | None = None) -> None:
    """Give ``path`` to the system user ``user`` and their group when running as root (no-op
    otherwise); with ``owner``, that user keeps it and ``user``'s group gets it."""
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
        uid = pwd.getpwnam(owner).pw_uid if owner else entry.pw_uid
    except KeyError as exc:
        raise LienthongError(f"there is no system user {exc.args[0]!r}") from None
    os.chown(path, uid, entry.pw_gid)


@dataclass(frozen=True, slots=True)
class BrokerPlan:
    """The broker of node ``node`` for its ``children``: where it listens, its certificate,
    where its files and its queue go. ``public_host`` is the name children connect to; the
    broker's certificate must carry it."""

    node: str
    children: tuple[str, ...]
    public_host: str
    port: int
    bind: str
    cafile: Path
    certfile: Path
    keyfile: Path
    out_dir: Path
    persistence_dir: Path
    user: str
    message_size_limit: int
    server_name: str = ""
    routes: tuple[str, ...] = ()
    cluster_port: int = 6222
    client_port: int = 4222
    """A cluster member's name, the ``host:port`` route addresses of every member, the port
    it listens for routes on and its loopback NATS protocol port (nats only)."""


class Engine(Protocol):
    """A broker program lienthong can configure."""

    name: str
    program: str
    user: str
    """The system user the broker runs as (Debian's package)."""

    def files(self, plan: BrokerPlan) -> dict[str, str]:
        """The files to write into ``plan.out_dir``: name -> text."""
        ...

    def test_start(self, plan: BrokerPlan, client: ssl.SSLContext, workdir: Path) -> None:
        """Start the broker on the written files (another port, a throw-away store under
        ``workdir``) until it accepts ``client``'s handshake, then stop it; raise
        :class:`BrokerTestFailed` with what it said otherwise."""
        ...


class Mosquitto:
    """mosquitto 2 with the tier template (``config/mosquitto/``): TLS client certificates,
    identity from the certificate's CN, the inbox ACL."""

    name = "mosquitto"
    program = "mosquitto"
    user = "mosquitto"
    config_name = "mosquitto.conf"
    acl_name = "acl.conf"

    def _settings(self, plan: BrokerPlan) -> BrokerSettings:
        return BrokerSettings(
            port=plan.port,
            cafile=plan.cafile,
            certfile=plan.certfile,
            keyfile=plan.keyfile,
            acl_file=plan.out_dir / self.acl_name,
            persistence_dir=plan.persistence_dir,
            bind_address=plan.bind,
            user=plan.user,
            message_size_limit=plan.message_size_limit,
        )

    def files(self, plan: BrokerPlan) -> dict[str, str]:
        """The rendered tier config and the ACL, as is."""
        try:
            config = render(self._settings(plan))
        except ValueError as exc:
            raise LienthongError(f"cannot write the broker configuration: {exc}") from exc
        members = (plan.node, *plan.children)
        return {self.config_name: config, self.acl_name: render_acl(members)}

    def test_start(self, plan: BrokerPlan, client: ssl.SSLContext, workdir: Path) -> None:
        """mosquitto 2.0 has no configuration test switch: start it for real, briefly."""
        store = workdir / "persistence"
        store.mkdir(parents=True)
        workdir.chmod(0o755)  # the broker reads and writes here after dropping privileges
        own_path(store, plan.user)
        trial = replace(plan, port=free_port(), bind=LOCAL, persistence_dir=store)
        config = workdir / self.config_name
        config.write_text(render(self._settings(trial)), encoding="utf-8")
        _trial_run(self.program, config, trial, client, workdir)


class Nats:
    """nats-server 2.9: one member of the tier's three-member cluster (JetStream, MQTT), its
    nodes mapped from their certificates to users with the inbox permissions."""

    name = "nats"
    program = "nats-server"
    user = "nats"
    config_name = "nats-server.conf"

    def _member(self, plan: BrokerPlan) -> NatsMember:
        return NatsMember(
            server_name=plan.server_name,
            cluster_name=f"lienthong-{plan.node.replace('.', '-')}",
            mqtt_port=plan.port,
            cluster_port=plan.cluster_port,
            client_port=plan.client_port,
            routes=plan.routes,
            nodes=(plan.node, *plan.children),
            cafile=plan.cafile,
            certfile=plan.certfile,
            keyfile=plan.keyfile,
            store_dir=plan.persistence_dir,
            bind=plan.bind,
            message_size_limit=plan.message_size_limit,
        )

    def files(self, plan: BrokerPlan) -> dict[str, str]:
        """This member's configuration (users and permissions from the directory)."""
        if len(plan.routes) < 3:
            raise LienthongError(
                "a NATS cluster needs the route address of each of its three members:"
                " give --route HOST:PORT three times (this member's too)"
            )
        try:
            return {self.config_name: render_nats(self._member(plan))}
        except ValueError as exc:
            raise LienthongError(f"cannot write the broker configuration: {exc}") from exc

    def test_start(self, plan: BrokerPlan, client: ssl.SSLContext, workdir: Path) -> None:
        """Start this member alone (no routes, a throw-away JetStream folder) until its MQTT
        listener accepts ``client``'s handshake."""
        store = workdir / "jetstream"
        store.mkdir(parents=True)
        workdir.chmod(0o755)
        cluster_port = free_port()
        trial = replace(
            plan,
            port=free_port(),
            cluster_port=cluster_port,
            client_port=free_port(),
            bind=LOCAL,
            # JetStream in a cluster wants a route; one to itself, which nats-server skips.
            routes=(f"{LOCAL}:{cluster_port}",),
            persistence_dir=store,
        )
        config = workdir / self.config_name
        config.write_text(render_nats(self._member(trial)), encoding="utf-8")
        _trial_run(self.program, config, trial, client, workdir)


def _trial_run(
    program: str, config: Path, trial: BrokerPlan, client: ssl.SSLContext, workdir: Path
) -> None:
    """Run ``program -c config`` until it accepts ``client``'s TLS handshake on ``trial.port``
    for ``trial.public_host``, then stop it; :class:`BrokerTestFailed` with its log otherwise."""
    binary = shutil.which(program) or shutil.which(program, path="/usr/sbin")
    if binary is None:
        raise BrokerTestFailed(f"{program} is not installed: apt install {program}")
    log = workdir / f"{program}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(program, process, trial, client, log)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait(
    program: str,
    process: subprocess.Popen[bytes],
    trial: BrokerPlan,
    client: ssl.SSLContext,
    log: Path,
) -> None:
    deadline = time.monotonic() + TEST_START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text(encoding="utf-8", errors="replace").strip()
            raise BrokerTestFailed(
                f"{program} stopped at once (exit {process.returncode}) on these files:\n{said}"
            )
        try:
            tls_probe(LOCAL, trial.port, client, server_hostname=trial.public_host, settle=0.5)
            return
        except ssl.SSLError as exc:
            last = exc
            break  # the broker answered: a certificate problem, not a slow start
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    said = log.read_text(encoding="utf-8", errors="replace").strip()
    raise BrokerTestFailed(
        f"{program} did not accept this node's certificate for {trial.public_host}"
        f" ({last}):\n{said}"
    )


ENGINES: dict[str, Engine] = {"mosquitto": Mosquitto(), "nats": Nats()}
"""The broker programs ``lienthong broker-config --engine`` knows."""
