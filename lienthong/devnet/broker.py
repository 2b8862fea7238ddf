"""A mosquitto process with the project's tier configuration (TLS client certificates + ACL).

Started on a free port of 127.0.0.1 and considered ready once it completes a TLS handshake;
it can be stopped (SIGTERM: mosquitto saves its persistence), killed (SIGKILL) and started
again on the same port and storage, for fault tests and the demo. A member of a NATS cluster
(:mod:`lienthong.devnet.natscluster`) is the same kind of process with another program.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import ssl
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiomqtt

from lienthong.brokersetup import free_port, tls_probe
from lienthong.devnet.pki import HOST, DevPki
from lienthong.transport.brokerconf import ACL_PATH, BrokerSettings, render, render_acl

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
PROBE_CODE = "000.00.99.H99"
"""The identity used to check that a broker accepts TLS connections."""


class Broker:
    """One mosquitto process with the tier config; ``start``/``stop``/``kill``/``restart``."""

    program = "mosquitto"
    engine = "mosquitto"
    """The broker engine, as ``[links.*] engine`` names it."""

    def __init__(
        self,
        pki: DevPki,
        workdir: Path,
        port: int | None = None,
        members: Iterable[str] | None = None,
    ) -> None:
        """Render the config into ``workdir``; the port is chosen now and kept on restarts.
        ``members``: the only nodes the broker grants anything to (its ACL is then written
        for them, :func:`render_acl`); None: the shipped ``acl.conf`` (every node of the CA)."""
        self.members = None if members is None else tuple(members)
        self.pki = pki
        self.workdir = workdir
        self.port = port or free_port()
        self.host = HOST
        self.persistence_dir = workdir / "persistence"
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.program}.log"
        self.config_path = workdir / f"{self.program}.conf"
        self.config_path.write_text(self.render_config(), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of the broker (one; a cluster has several)."""
        return [f"{self.host}:{self.port}"]

    def render_config(self) -> str:
        """The broker's configuration text (the tier template)."""
        settings = BrokerSettings(
            port=self.port,
            cafile=self.pki.cafile,
            certfile=self.pki.server_cert,
            keyfile=self.pki.server_key,
            acl_file=ACL_PATH if self.members is None else self.workdir / "acl.conf",
            persistence_dir=self.persistence_dir,
            bind_address=HOST,
            # Tests may run as root; mosquitto would otherwise switch to a user that cannot
            # read the test's files.
            user=_current_user(),
        )
        if self.members is not None:
            acl = render_acl(self.members)
            (self.workdir / "acl.conf").write_text(acl, encoding="utf-8")
        return render(settings)

    def start(self) -> None:
        """Start the broker and return once it completes a TLS handshake on its port."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the broker is already running")
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.program, "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        context = self.pki.client_context(PROBE_CODE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"{self.program} exited with {code}:\n{self.log()}")
            try:
                tls_probe(self.host, self.port, context, timeout=1.0)
                return
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"{self.program} did not accept TLS on port {self.port}:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (the broker saves its persistence), then SIGKILL if it hangs."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving anything."""
        if not self.running:
            return
        assert self.process is not None
        self.process.kill()
        self.process.wait(STOP_TIMEOUT_S)

    def restart(self, *, hard: bool = False) -> None:
        """Stop (or kill, when ``hard``) and start again on the same port and storage."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def log(self) -> str:
        """What the broker has logged so far."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        return ""

    def client(self, code: str | None, **kwargs: Any) -> aiomqtt.Client:
        """An aiomqtt client to this broker presenting ``code``'s certificate."""
        kwargs.setdefault("identifier", code)
        kwargs.setdefault("timeout", 10)
        return aiomqtt.Client(
            self.host, self.port, tls_context=self.pki.client_context(code), **kwargs
        )


def _current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name
