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

Active and standby: with the store on PostgreSQL (``[store] backend = "postgresql"``), two
daemons of one node may share it. Before anything else a daemon takes the node's active lock
(:mod:`lienthong.standby`); while another daemon holds it, this one is the standby: it says
READY with a standby status, answers ``/healthz`` with ``"status": "standby"`` (HTTP 503) on the
API port, and connects to nothing else. Once it gets the lock it opens the store as its
exclusive writer, puts the transfers the previous daemon had in flight back in the queue, and
starts like a restart. The active daemon checks its lock connection all along and stops once it
fails (``active-lock`` task).

Stop (SIGTERM or SIGINT): intake stops (the office-software API closes, no new transfer frames
are taken, no new transfers leased), transfers in flight get ``daemon.drain_grace_s`` to
receive their hop receipts, then everything is cancelled. Work cut short stays in the store
and resumes on the next start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from lienthong import wakeup
from lienthong.config import Config, check_for_daemon
from lienthong.directory import Directory
from lienthong.dirfiles import VersionFiles, load_authority, load_in_force
from lienthong.dirholder import DirectoryHolder
from lienthong.dirsync import DirectorySync, claims
from lienthong.dirversion import DirectoryVersion
from lienthong.errors import ConfigError
from lienthong.gateway import Listener, start_gateway
from lienthong.gateway.spool import Spool
from lienthong.keyfiles import load_identity, load_trust_store, read_passphrase
from lienthong.logs import get_logger
from lienthong.metrics import Metrics
from lienthong.processing import Processor
from lienthong.routing import split_by_next_hop
from lienthong.sdnotify import Notifier, watchdog_interval
from lienthong.standby import ActiveLock, LostActiveLock
from lienthong.statuspage import Operator, operator_routes
from lienthong.store import PackageState, TransferState
from lienthong.store.factory import store_for
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
    """The directory in force at the node: its highest stored signed version that verifies,
    else its directory file (see :mod:`lienthong.dirfiles`), with today's aliases."""
    return load_in_force(config).version.routing_directory(dt.datetime.now(dt.UTC).date())


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


def link_settings(config: Config, name: str) -> LinkSettings:
    """How the node reaches the broker of link ``name`` (``parent`` or ``children``)."""
    broker = getattr(config.links, name)
    return LinkSettings(
        name=name,
        host=broker.host,
        port=broker.port,
        alternates=broker.alternates,
        engine=broker.engine,
        cafile=broker.cafile,
        certfile=config.identity.cert,
        keyfile=config.identity.key,
        keepalive=broker.keepalive_s,
    )


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
        in_force = load_in_force(config)
        self.directories = DirectoryHolder(
            in_force.version,
            in_force.since,
            policy=config.directory.on_expiry,  # type: ignore[arg-type]
            warn_before_s=config.directory.warn_before_s,
            clock=clock,
        )
        """The directory in force: the one place every part reads it from."""
        self.identity, self.trust = load_keys(config)
        shared = config.store.backend == "postgresql"
        self.active_lock = ActiveLock(self.me, config.store) if shared else None
        """Held while this daemon is the active one of a pair sharing a PostgreSQL store."""
        self.standby_reason: str | None = None
        """Why this daemon waits as the standby, while it does."""
        self.store = store_for(config.node.state_dir, config.store, exclusive=shared)
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
            partial_dir=config.node.state_dir / "partial",
            max_package_bytes=config.transfer.max_package_bytes,
            partial_ttl=config.transfer.partial_ttl_s,
            clock=clock,
            metrics=self.metrics,
            transit=lambda recipients: self.processor.transit_hops(recipients),
            on_routed=self._wake_senders,
            # Such a package lives in its row: a file would be written, read back and removed.
            in_memory_max=config.store.inline_max_bytes - 1,
            group_receipts=config.transfer.group_receipts,
        )
        self.senders = self._make_senders()
        authority = config.directory.authority
        self.dirsync = DirectorySync(
            me=self.me,
            holder=self.directories,
            files=VersionFiles(config.node.state_dir),
            authority=load_authority(authority) if authority != Path() else None,
            links=self.links,
            max_chunk=max_chunk_for(config.transfer.message_size_limit),
            ask_parent_s=config.directory.ask_parent_s,
            check_s=config.directory.check_s,
            on_applied=self._follow_directory,
            clock=clock,
        )
        self._tg: asyncio.TaskGroup | None = None
        self._late_tasks: list[asyncio.Task[Any]] = []
        """Senders started for neighbours a new directory version added."""
        self.processor = Processor(
            me=self.me,
            directory=self.directories,
            identity=self.identity,
            trust=self.trust,
            store=self.store,
            verify_policy=VerifyPolicy(allow_sha1=config.trust.allow_sha1),
            max_package_bytes=config.transfer.max_package_bytes,
            max_age_s=config.store.package_max_age_s,
            clock=clock,
            on_enqueued=self._wake_senders,
            metrics=self.metrics,
            strict=config.validation.strict,
            work_dir=config.node.state_dir / "work",
        )
        self._stop = asyncio.Event()
        self._neighbours_of: tuple[Directory, dict[str, str]] | None = None
        self._routes_changed = asyncio.Event()
        self._routes_waiting = 0
        self._rerouting = asyncio.Lock()
        """Transfers in flight that the last re-routing pass left for the next one."""
        self.gateway: Listener | None = None
        self.spool: Spool | None = None

    # -- wiring -------------------------------------------------------------------------------

    def _make_links(self) -> dict[str, Link]:
        links: dict[str, Link] = {}
        for name, broker in (
            ("parent", self.config.links.parent),
            ("children", self.config.links.children),
        ):
            if not broker.enabled:
                continue
            try:
                settings = link_settings(self.config, name)
                links[name] = Link(settings, self.me, self._on_message(name))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot set up the link: {exc}", key=f"links.{name}") from exc
        return links

    def _on_message(self, name: str) -> OnMessage:
        # Links are made before the receiver, so the link is looked up when a frame arrives.
        async def on_message(sender: str, payload: bytes) -> None:
            if not self._is_neighbour(sender, name):
                # The broker proves who sent it, but any node of the CA can reach a broker:
                # only the directory's neighbours on this link may hand this node anything.
                self.metrics.frame_refused(sender)
                _log.warning(
                    "frame_from_stranger",
                    peer=sender,
                    link=name,
                    reason=f"{sender} is not a neighbour of {self.me} over the {name} link",
                )
                return
            if claims(payload):  # directory versions: their own frames, their own handler
                await self.dirsync.on_frame(sender, payload)
                return
            await self.receiver.on_frame(self.links[name], sender, payload)

        return on_message

    @property
    def directory(self) -> Directory:
        """The directory in force (read from :attr:`directories` at each use)."""
        return self.directories.directory

    def _is_neighbour(self, sender: str, link_name: str) -> bool:
        """True when the directory in force makes ``sender`` a neighbour reached over
        ``link_name`` (worked out once per directory: a state-sized one has thousands of
        nodes)."""
        directory = self.directory
        cached = self._neighbours_of
        if cached is None or cached[0] is not directory:
            try:
                found = self.neighbours()
            except ConfigError:
                found = {}
            cached = self._neighbours_of = (directory, found)
        return cached[1].get(sender) == link_name

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

    def _neighbour_codes(self) -> list[str]:
        """The neighbours of the directory in force (those it sends to if it cannot say)."""
        try:
            return list(self.neighbours())
        except ConfigError:
            return list(self.senders)

    def _make_senders(self) -> dict[str, HopSender]:
        return {
            neighbour: self._make_sender(neighbour, link_name)
            for neighbour, link_name in self.neighbours().items()
        }

    def _make_sender(self, neighbour: str, link_name: str) -> HopSender:
        transfer = self.config.transfer
        link = self.links.get(link_name)
        if link is None:
            raise ConfigError(
                f"the directory makes {neighbour} a neighbour of {self.me} through the"
                f" {link_name} broker, but links.{link_name}.host is not set",
                key=f"links.{link_name}.host",
            )
        return HopSender(
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

    async def _follow_directory(self, previous: DirectoryVersion, new: DirectoryVersion) -> None:
        """A new directory version is in force: send to the neighbours it adds, and re-route
        what is queued (:meth:`_reroute`).

        Senders of neighbours it removes keep running, so a transfer in flight to one of them
        settles (acknowledged, or back in the queue to be re-routed).
        """
        try:
            neighbours = self.neighbours()
        except ConfigError as exc:
            _log.error("directory_neighbours_unusable", reason=str(exc))
            return
        for neighbour, link_name in neighbours.items():
            if neighbour in self.senders or link_name not in self.links:
                continue
            sender = self._make_sender(neighbour, link_name)
            self.senders[neighbour] = sender
            if self._tg is not None:
                task = self._tg.create_task(sender.run(), name=f"sender:{neighbour}")
                self._late_tasks.append(task)
            _log.info("neighbour_added", neighbour=neighbour, link=link_name)
        await self._reroute()

    async def _reroute(self) -> int:
        """Re-route every queued or dead transfer whose recipients the directory in force
        routes elsewhere (:meth:`Processor.reroute`); how many wait in flight meanwhile.

        A transfer in flight is left to its sender: it is re-routed once it is back in the
        queue (no hop receipt) or done (acknowledged), at the next pass. Passes run after
        each new version, at start, then every ``transfer.poll_s`` while any such transfer
        is in flight (:meth:`_follow_routes`), and every :data:`HOUSEKEEPING_S`.
        """
        waiting = 0
        async with self._rerouting:  # one pass at a time: a transfer is re-routed once
            for transfer in await self.store.open_transfers():
                if transfer.state == TransferState.IN_FLIGHT:
                    split = split_by_next_hop(self.me, self.directory, transfer.recipients)
                    waiting += not split.only_to(transfer.next_hop)
                    continue
                try:
                    await self.processor.reroute(transfer, self.store.reroute)
                except Exception as exc:  # one transfer must never stop the others
                    _log.error(
                        "transfer_not_rerouted",
                        transfer_id=transfer.transfer_id,
                        reason=str(exc),
                        exc_info=True,
                    )
        self._routes_waiting = waiting
        if waiting:
            self._routes_changed.set()
        return waiting

    async def _follow_routes(self) -> None:
        """Re-route at start, after transfers were left in flight by a pass, and every
        :data:`HOUSEKEEPING_S` (a safety net: a pass changes nothing when routes hold)."""
        self._routes_changed.set()
        while True:
            try:
                async with asyncio.timeout(HOUSEKEEPING_S):
                    await self._routes_changed.wait()
            except TimeoutError:
                pass
            self._routes_changed.clear()
            if self._routes_waiting:
                await asyncio.sleep(self.config.transfer.poll_s)
            try:
                await self._reroute()
            except Exception as exc:  # retried at the next round; never stops the node
                _log.error("reroute_failed", reason=str(exc), exc_info=True)

    def _on_wakeup(self, hops: wakeup.Hops) -> None:
        self._wake_senders(self.senders if hops is None else hops)

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
        """Serve until :meth:`request_stop`, then drain and return (with a PostgreSQL store,
        once this daemon is the active one: see the module docstring)."""
        structlog.contextvars.bind_contextvars(node=self.me)
        if self.active_lock is not None and not await self._wait_active():
            _log.info("node_stopped")
            return
        try:
            await self._run_active()
        except* LostActiveLock as lost:
            raise lost.exceptions[0] from None  # exit 1 with the reason; systemd restarts it
        finally:
            if self.active_lock is not None:
                await self.active_lock.release()

    async def _run_active(self) -> None:
        async with self.store:
            if self.active_lock is not None:
                # The lock proves the daemon that took these transfers is gone.
                released = await self.store.release_leases(
                    self.clock(), "taken over from the daemon that was active"
                )
                if released:
                    _log.info("transfers_released", count=len(released))
            # Files a crash left behind: partial transfers (sent again) and package files
            # whose row was never committed.
            await asyncio.to_thread(self.receiver.collect_leftovers)
            await self.store.collect_orphans()
            # Work left half-done by a previous run is finished before any link delivers new
            # frames, so the two never handle the same package at once.
            await self._remember_in_progress()
            await self.dirsync.apply_published()  # routes of what is resumed: the newest
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
            self._tg = tg
            tasks: list[asyncio.Task[Any]] = [
                tg.create_task(link.run(), name=f"link:{name}") for name, link in self.links.items()
            ]
            tasks += [
                tg.create_task(self._process(), name=f"processor:{i}") for i in range(PROCESSORS)
            ]
            tasks.append(tg.create_task(self._watchdog(), name="watchdog"))
            if self.active_lock is not None:
                tasks.append(tg.create_task(self._keep_active(), name="active-lock"))
            tasks.append(tg.create_task(self.receiver.sweep(), name="partial-sweep"))
            if not await self._wait_links_up():
                _cancel(tasks)
                return
            tasks += [
                tg.create_task(sender.run(), name=f"sender:{hop}")
                for hop, sender in self.senders.items()
            ]
            tasks.append(tg.create_task(self._housekeeping(), name="housekeeping"))
            tasks.append(tg.create_task(self._follow_routes(), name="reroute"))
            tasks.append(tg.create_task(self.dirsync.run(), name="directory"))
            if self.config.spool.enabled:
                self.spool = self._spool()
                tasks.append(tg.create_task(self.spool.run(), name="spool"))
            self.gateway = await self._start_gateway()
            # Commands beside the daemon (`lienthong send`) say when they queue transfers.
            wakeups = wakeup.listen(self.config.node.state_dir, self._on_wakeup)
            try:
                status = self.describe()
                self.notifier.ready(status)
                _log.info("node_ready", status=status, resumed=resumed)
                await self._stop.wait()
            finally:
                if wakeups is not None:
                    wakeups.close()
            await self._drain()
            self.receiver.cancel()
            _cancel(tasks + self._late_tasks)

    async def _keep_active(self) -> None:
        """Stop the daemon (the task fails) once the active lock is lost."""
        assert self.active_lock is not None
        try:
            await self.active_lock.hold()
        except LostActiveLock as exc:
            _log.critical("active_lock_lost", reason=str(exc))
            raise

    async def _wait_active(self) -> bool:
        """Take the active lock, serving the standby's ``/healthz`` meanwhile; False when a
        stop was requested first."""
        assert self.active_lock is not None
        listener = await self._standby_listener()
        waiting = [
            asyncio.create_task(self.active_lock.acquire(self._on_standby), name="active-lock"),
            asyncio.create_task(self._stop.wait(), name="stop"),
        ]
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            _cancel([*waiting, watchdog])
            await asyncio.gather(*waiting, watchdog, return_exceptions=True)
            if listener is not None:
                await listener.cleanup()
        acquired = waiting[0]
        if not acquired.cancelled() and acquired.exception() is not None:
            raise acquired.exception()  # type: ignore[misc]  # a refused DSN: ConfigError
        if self._stop.is_set():
            await self.active_lock.release()
            return False
        if self.standby_reason is not None:
            _log.info("taking_over", was=self.standby_reason)
        self.standby_reason = None
        return True

    def _on_standby(self, reason: str) -> None:
        self.standby_reason = reason
        if reason.startswith("standby"):
            self.notifier.ready(reason)  # a standby is up: systemd must not time its start out
        else:
            self.notifier.status(reason)

    async def _standby_listener(self) -> web.AppRunner | None:
        """``/healthz`` on the API port while this daemon is the standby (HTTP 503 with
        ``"status": "standby"`` and the reason); nothing else is served."""
        settings = self.config.gateway
        if not settings.port:
            return None

        async def healthz(request: web.Request) -> web.Response:
            body = {
                "status": "standby",
                "node": self.me,
                "at": self.clock(),
                "reason": self.standby_reason or "taking the active lock",
            }
            return web.json_response(body, status=503)

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
                key="gateway.port",
            ) from exc
        return runner

    async def _start_gateway(self) -> Listener | None:
        """The office-software API, when a port or a socket is configured."""
        settings = self.config.gateway
        if not settings.port and settings.socket == Path() and not settings.https.enabled:
            return None
        try:
            return await start_gateway(
                settings,
                self.processor,
                self.store,
                self.directories,
                self.clock,
                routes=operator_routes(self.operator()),
                upload_dir=self.config.node.state_dir / "uploads",
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
            neighbours=self._neighbour_codes,
            identity=self.identity,
            state_dir=self.config.node.state_dir,
            metrics=self.metrics,
            token=self.requeue_token,
            listen_host=self.config.gateway.host,
            on_requeued=lambda: self._wake_senders(self.senders),
            checks=lambda: [self.spool.check()] if self.spool is not None else [],
            clock=self.clock,
            directory=self.directories,
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
            self.notifier.status(f"waiting for the {name} broker {link.where}")
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
