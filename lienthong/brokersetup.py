"""The broker a node with child nodes runs for them: its files, and a test start before use.

``lienthong broker-config`` builds a :class:`BrokerPlan` from the node's configuration and the
directory, asks an :class:`Engine` for the files, writes them, and has the engine start the
broker on them once, on a free local port with a throw-away store, until it completes a TLS
handshake with this node's own certificate. Only mosquitto is an engine today; another one is
one more entry in :data:`ENGINES`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
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

__all__ = [
    "ENGINES",
    "BrokerPlan",
    "BrokerTestFailed",
    "Engine",
    "Mosquitto",
    "free_port",
    "own_path",
    "tls_probe",
]

LOCAL = "127.0.0.1"
TEST_START_TIMEOUT_S = 15.0


class BrokerTestFailed(LienthongError):
    """The broker did not start on the files written, or refused this node's certificate."""


def free_port(host: str = LOCAL) -> int:
    """A TCP port on ``host`` that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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


class Engine(Protocol):
    """A broker program lienthong can configure."""

    name: str
    program: str

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
        binary = shutil.which(self.program) or shutil.which(self.program, path="/usr/sbin")
        if binary is None:
            raise BrokerTestFailed("mosquitto is not installed: apt install mosquitto")
        store = workdir / "persistence"
        store.mkdir(parents=True)
        workdir.chmod(0o755)  # the broker reads and writes here after dropping privileges
        own_path(store, plan.user)
        trial = replace(plan, port=free_port(), bind=LOCAL, persistence_dir=store)
        config = workdir / self.config_name
        config.write_text(render(self._settings(trial)), encoding="utf-8")
        log = workdir / "mosquitto.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._wait(process, trial, client, log)
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait()

    def _wait(
        self, process: subprocess.Popen[bytes], trial: BrokerPlan, client: ssl.SSLContext, log: Path
    ) -> None:
        deadline = time.monotonic() + TEST_START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                said = log.read_text(encoding="utf-8", errors="replace").strip()
                raise BrokerTestFailed(
                    f"mosquitto stopped at once (exit {process.returncode}) on these files:\n{said}"
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
            f"mosquitto did not accept this node's certificate for {trial.public_host}"
            f" ({last}):\n{said}"
        )


ENGINES: dict[str, Engine] = {"mosquitto": Mosquitto()}
"""The broker programs ``lienthong broker-config --engine`` knows."""
