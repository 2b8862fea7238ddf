"""One running daemon: wires the store, the links, the senders and the processor, and owns
their life cycle.

Start: the configuration is checked (every missing or wrong setting named), the directory,
the signing key and the trust store are loaded once, the store is opened, and the links to
the brokers are started. READY is announced to systemd only when the store is open and every
link is up; packages a previous run left half-done are resumed before that.

Run: one task group with named tasks (``link:<name>``, ``sender:<neighbour>``,
``processor:<n>``, ``housekeeping``, ``watchdog``). A failing task is a bug and stops the daemon
(systemd restarts it); faults of the world (a broker down, a bad package) are handled inside
the tasks and never end them.

Operators: the local HTTP server that serves the office-software API also serves ``/metrics``,
``/healthz`` and the status page (:mod:`lienthong.statuspage`); the receiver, the senders and
the processor count into one :class:`~lienthong.metrics.Metrics` per node.

Stop (SIGTERM or SIGINT): intake stops (the office-software API closes, no new transfer frames
are taken, no new transfers leased), transfers in flight get ``daemon.drain_grace_s`` to
receive their hop receipts, then everything is cancelled. Work cut short stays in the store
and resumes on the next start.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from lienthong.config import Config, check_for_daemon
from lienthong.directory import Directory
from lienthong.errors import ConfigError
from lienthong.gateway import Listener, start_gateway
from lienthong.gateway.spool import Spool
from lienthong.keyfiles import load_identity, load_trust_store, read_passphrase
from lienthong.logs import get_logger
from lienthong.metrics import Metrics
from lienthong.processing import Processor
from lienthong.sdnotify import Notifier, watchdog_interval
from lienthong.statuspage import Operator, operator_routes
from lienthong.store import PackageState, SqliteStore
from lienthong.transport.frames import max_chunk_for
from lienthong.transport.link import Link, LinkSettings, OnMessage
from lienthong.transport.receiver import Receiver
from lienthong.transport.sender import HopSender, ReceiptWaiter
from lienthong.trust import SigningIdentity, TrustStore, VerifyPolicy

_log = get_logger("lienthong.node")

PROCESSORS = 4
"""Received packages verified and routed at once (their checks run in worker threads)."""

HOUSEKEEPING_S = 60.0
"""How often expired packages and transfers are dead-lettered."""

_IN_PROGRESS = (PackageState.STORED, PackageState.VERIFIED, PackageState.ROUTED)
"""Packages whose documents the status page lists after a restart."""


def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the long-running tasks: they never end by themselves."""
    for task in tasks:
        task.cancel()


def load_directory(config: Config) -> Directory:
    """The directory file named by ``node.directory``, checked."""
    path = config.node.directory
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key="node.directory") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", key="node.directory") from exc
    directory = Directory.from_mapping(data)
    me = config.node.code
    if me not in directory.nodes:
        raise ConfigError(
            f"the directory {path} does not list {me} as an agency that runs a node (node = true)",
            key="node.code",
        )
    return directory


def load_keys(config: Config) -> tuple[SigningIdentity, TrustStore]:
    """The signing identity and the trust store, each loaded once."""
    ident = config.identity
    passphrase = read_passphrase(
        str(ident.passphrase_file) if ident.passphrase_file != Path() else None,
        ident.passphrase_env or None,
    )
    identity = load_identity(ident.key, ident.cert, passphrase)
    trust = load_trust_store(config.trust.ca, config.trust.crls)
    return identity, trust


class Node:
    """The daemon of agency ``config.node.code``."""

    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Check the configuration and load everything that can fail, before any task starts."""
        check_for_daemon(config)
        self.config = config
        self.me = config.node.code
        self.clock = clock
        self.notifier = notifier or Notifier()
        self.directory = load_directory(config)
        self.identity, self.trust = load_keys(config)
        self.store = SqliteStore(config.node.state_dir, config.store)
        self.metrics = Metrics()
        self.requeue_token = secrets.token_urlsafe(32)
        """Sent back by the status page with a requeue; a page elsewhere cannot read it."""
        self.receipts = ReceiptWaiter()
        self._work: asyncio.Queue[str] = asyncio.Queue()
        self.links = self._make_links()
        self.receiver = Receiver(
            store=self.store,
            receipts=self.receipts,
            on_package=self._work.put,
            max_package_bytes=config.transfer.max_package_bytes,
            clock=clock,
            metrics=self.metrics,
            transit=lambda recipients: self.processor.transit_hops(recipients),
            on_routed=self._wake_senders,
        )
        self.senders = self._make_senders()
        self.processor = Processor(
            me=self.me,
            directory=self.directory,
            identity=self.identity,
            trust=self.trust,
            store=self.store,
            verify_policy=VerifyPolicy(allow_sha1=config.trust.allow_sha1),
            max_package_bytes=config.transfer.max_package_bytes,
            max_age_s=config.store.package_max_age_s,
            clock=clock,
            on_enqueued=self._wake_senders,
            metrics=self.metrics,
        )
        self._stop = asyncio.Event()
        self.gateway: Listener | None = None

    # -- wiring -------------------------------------------------------------------------------

    def _make_links(self) -> dict[str, Link]:
        links: dict[str, Link] = {}
        for name, broker in (
            ("parent", self.config.links.parent),
            ("children", self.config.links.children),
        ):
            if not broker.enabled:
                continue
            settings = LinkSettings(
                name=name,
                host=broker.host,
                port=broker.port,
                cafile=broker.cafile,
                certfile=self.config.identity.cert,
                keyfile=self.config.identity.key,
                keepalive=broker.keepalive_s,
            )
            try:
                links[name] = Link(settings, self.me, self._on_message(name))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot set up the link: {exc}", key=f"links.{name}") from exc
        return links

    def _on_message(self, name: str) -> OnMessage:
        # Links are made before the receiver, so the link is looked up when a frame arrives.
        async def on_message(sender: str, payload: bytes) -> None:
            await self.receiver.on_frame(self.links[name], sender, payload)

        return on_message

    def neighbours(self) -> dict[str, str]:
        """Each neighbour node and the name of the link that reaches it.

        A peer link joins two nodes with the same parent node: both are clients of the
        parent's broker, whose ACL lets each publish into the other's inbox, so peers talk
        over the parent link without a broker of their own. Peers under different parents
        would need a broker both use, which the configuration cannot name yet: refused.
        """
        out: dict[str, str] = {}
        parent = self.directory.node_parent(self.me)
        if parent is not None:
            out[parent] = "parent"
        for node in sorted(self.directory.nodes):
            if node != self.me and self.directory.node_parent(node) == self.me:
                out[node] = "children"
        for peer in sorted(self.directory.peers_of(self.me)):
            if parent is None or self.directory.node_parent(peer) != parent:
                raise ConfigError(
                    f"the peer link between {self.me} and {peer} joins nodes under different"
                    " parents; only peers that share a parent node (and so its broker) are"
                    " supported",
                    key="node.directory",
                )
            out[peer] = "parent"
        return out

    def _make_senders(self) -> dict[str, HopSender]:
        transfer = self.config.transfer
        senders: dict[str, HopSender] = {}
        for neighbour, link_name in self.neighbours().items():
            link = self.links.get(link_name)
            if link is None:
                raise ConfigError(
                    f"the directory makes {neighbour} a neighbour of {self.me} through the"
                    f" {link_name} broker, but links.{link_name}.host is not set",
                    key=f"links.{link_name}.host",
                )
            senders[neighbour] = HopSender(
                neighbour=neighbour,
                link=link,
                store=self.store,
                receipts=self.receipts,
                max_chunk=max_chunk_for(transfer.message_size_limit),
                receipt_timeout=transfer.receipt_timeout_s,
                window=transfer.window,
                poll=transfer.poll_s,
                clock=self.clock,
                metrics=self.metrics,
            )
        return senders

    def _wake_senders(self, hops: Iterable[str]) -> None:
        for hop in hops:
            sender = self.senders.get(hop)
            if sender is not None:
                sender.wake()

    # -- life cycle ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin the graceful stop (safe to call from a signal handler, more than once)."""
        self._stop.set()

    async def run(self) -> None:
        """Serve until :meth:`request_stop`, then drain and return."""
        structlog.contextvars.bind_contextvars(node=self.me)
        async with self.store:
            # Work left half-done by a previous run is finished before any link delivers new
            # frames, so the two never handle the same package at once.
            await self._remember_in_progress()
            resumed = await self.processor.resume()
            try:
                await self._serve(resumed)
            finally:
                if self.gateway is not None:
                    await self.gateway.close()
                    self.gateway = None
        _log.info("node_stopped")

    async def _serve(self, resumed: int) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks: list[asyncio.Task[Any]] = [
                tg.create_task(link.run(), name=f"link:{name}") for name, link in self.links.items()
            ]
            tasks += [
                tg.create_task(self._process(), name=f"processor:{i}")
                for i in range(PROCESSORS)
            ]
            tasks.append(tg.create_task(self._watchdog(), name="watchdog"))
            if not await self._wait_links_up():
                _cancel(tasks)
                return
            tasks += [
                tg.create_task(sender.run(), name=f"sender:{hop}")
                for hop, sender in self.senders.items()
            ]
            tasks.append(tg.create_task(self._housekeeping(), name="housekeeping"))
            if self.config.spool.enabled:
                tasks.append(tg.create_task(self._spool().run(), name="spool"))
            self.gateway = await self._start_gateway()
            status = self.describe()
            self.notifier.ready(status)
            _log.info("node_ready", status=status, resumed=resumed)
            await self._stop.wait()
            await self._drain()
            self.receiver.cancel()
            _cancel(tasks)

    async def _start_gateway(self) -> Listener | None:
        """The office-software API, when a port or a socket is configured."""
        settings = self.config.gateway
        if not settings.port and settings.socket == Path():
            return None
        try:
            return await start_gateway(
                settings,
                self.processor,
                self.store,
                self.directory,
                self.clock,
                routes=operator_routes(self.operator()),
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
                key="gateway.port",
            ) from exc

    def operator(self) -> Operator:
        """What the operator's routes (metrics, health, status page) read of this node."""
        return Operator(
            node=self.me,
            store=self.store,
            links=self.links,
            hops=tuple(self.senders),
            identity=self.identity,
            state_dir=self.config.node.state_dir,
            metrics=self.metrics,
            token=self.requeue_token,
            listen_host=self.config.gateway.host,
            on_requeued=lambda: self._wake_senders(self.senders),
            clock=self.clock,
        )

    async def _remember_in_progress(self) -> None:
        """List the documents still in progress on the status page after a restart."""
        records = [r for state in _IN_PROGRESS for r in await self.store.packages(state)]
        for record in sorted(records, key=lambda r: r.updated_at):
            if record.meta.kind == "edoc":
                self.metrics.recent.append(record.package_id)

    def _spool(self) -> Spool:
        settings = self.config.spool
        return Spool(
            settings.dir,
            self.processor,
            self.store,
            settle_s=settings.settle_s,
            poll_s=settings.poll_s,
            clock=self.clock,
        )

    async def _wait_links_up(self) -> bool:
        """Wait until every link is up, or a stop is requested first (False)."""
        for name, link in self.links.items():
            self.notifier.status(f"waiting for the {name} broker {link.settings.host}")
            while not await link.wait_up(1.0):
                if self._stop.is_set():
                    return False
        return True

    async def _drain(self) -> None:
        grace = self.config.daemon.drain_grace_s
        in_flight = sum(s.in_flight for s in self.senders.values())
        self.notifier.stopping(f"draining {in_flight} transfer(s) for up to {grace:g} s")
        _log.info("node_stopping", in_flight=in_flight, grace_s=grace)
        self.receiver.accepting = False
        if self.gateway is not None:
            await self.gateway.close()
            self.gateway = None
        for sender in self.senders.values():
            sender.stop_taking()
        try:
            async with asyncio.timeout(grace):
                await self.receiver.drain()
                await asyncio.gather(*(s.drain() for s in self.senders.values()))
                await self._work.join()
        except TimeoutError:
            left = sum(s.in_flight for s in self.senders.values())
            _log.warning("drain_cut_short", in_flight=left)

    def describe(self) -> str:
        """A one-line state for ``systemctl status``."""
        links = ", ".join(f"{name} {link.state}" for name, link in self.links.items())
        api = f"; API on {', '.join(self.gateway.addresses)}" if self.gateway else ""
        return f"{self.me}: links {links}{api}"

    # -- tasks --------------------------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            package_id = await self._work.get()
            try:
                await self.processor.process_received(package_id)
            except Exception as exc:  # one package must never stop the node
                # The package stays stored in its state and is resumed at the next start.
                _log.error(
                    "processing_failed", package_id=package_id, reason=str(exc), exc_info=True
                )
            finally:
                self._work.task_done()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                await self._expire()
            except Exception as exc:  # retried at the next round; never stops the node
                _log.error("housekeeping_failed", reason=str(exc), exc_info=True)

    async def _expire(self) -> None:
        """Dead-letter what is too old and tell the senders of expired documents."""
        expired = await self.store.expire(self.clock())
        for _ in expired.packages:
            self.metrics.refused("expiry", "expired")
        if expired.packages or expired.transfers:
            _log.warning(
                "dead_lettered_by_age",
                packages=list(expired.packages),
                transfers=list(expired.transfers),
            )
            await self.processor.answer_expired(expired.packages)

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)
