"""One node's MQTT connection to one broker: receive its inbox, publish to neighbours' inboxes.

A :class:`Link` holds one aiomqtt connection for node ``me`` (client id = ``me``, MQTT 3.1.1,
``clean_session=False``: the broker keeps the subscription and queues QoS 1 frames while the
node is away). :meth:`Link.run` connects, subscribes to ``inbox_filter(me)`` with QoS 1 and
hands every frame to ``on_message(sender, payload)``; when the connection fails or drops it
waits a capped, jittered exponential delay and connects again, forever, until cancelled.
:meth:`Link.publish` sends one frame with QoS 1 and raises :class:`LinkDown` when it cannot.
A frame on a topic that is not an inbox topic of ``me`` with an agency code as sender is logged
(``frame_unexpected_topic``) and skipped.

A link may know several addresses of one broker (the members of a cluster, ``alternates``
after ``host:port``): each failed or dropped connection moves it to the next address, round
and round, with the same client id and ``clean_session=False``, so the session the cluster
keeps is taken up wherever the link lands. ``engine`` says which broker program it talks to;
the topic form follows it (``frames.TOPIC_DOT``).

What a link does not promise, by design (see DESIGN.md section 3):

- aiomqtt 2.x acknowledges a QoS 1 frame (PUBACK) as soon as it arrives and queues it in the
  client; the frame is handed to ``on_message`` later. Each connection gets a fresh client, so
  frames still in that queue when the connection drops are never handed over, and the broker,
  having its PUBACK, will not send them again. A frame whose ``on_message`` fails is likewise
  gone. Both are recovered by the sender, which retransmits a transfer until the hop receipt.
- That queue is unbounded (a bounded one would drop acknowledged frames when full): a backlog
  the broker kept for this node arrives as fast as the network carries it and waits in memory
  until ``on_message`` takes it.
- A successful :meth:`Link.publish` means the broker took the frame, not that the neighbour has
  it; a failed one may still have reached the broker. Only hop receipts count as delivery.

The client library's own log lines (paho) are passed on as ``mqtt_client_log`` events; the
last error among them is added to the reason of a failed connection, because a refused TLS
client certificate surfaces there and only as a timeout elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import aiomqtt

from lienthong.backoff import Backoff
from lienthong.errors import TransientError
from lienthong.logs import get_logger
from lienthong.transport.frames import (
    TOPIC_DOT,
    FrameError,
    inbox_filter,
    inbox_topic,
    parse_topic,
)
from lienthong.transport.readgate import ReadGate

__all__ = ["Link", "LinkDown", "LinkSettings", "LinkState", "OnMessage"]

LinkState = Literal["connecting", "up", "down"]
OnMessage = Callable[[str, bytes], Awaitable[None]]
"""``on_message(sender, payload)``: called once per frame received, one at a time."""

_log = get_logger("lienthong.transport.link")
_SUBACK_FAILURE = 0x80
# aiomqtt warns on every publish beyond 10 awaiting their PUBACK; a node sending the chunks of a
# large package legitimately has many more.
_PENDING_CALLS_WARNING = 10_000


class _KeptQueue:
    """aiomqtt's queue of received messages, in hand. aiomqtt makes the queue from the class it
    is given (``queue_type``, its way of choosing the queue); the class this offers notes the
    queue it made, so that messages already received can be taken without a wait."""

    def __init__(self) -> None:
        made: list[asyncio.Queue[aiomqtt.Message]] = []

        class Queue(asyncio.Queue[aiomqtt.Message]):
            def __init__(self, maxsize: int = 0) -> None:
                super().__init__(maxsize)
                made.append(self)

        self.queue_type: type[asyncio.Queue[aiomqtt.Message]] = Queue
        self._made = made

    @property
    def queue(self) -> asyncio.Queue[aiomqtt.Message]:
        """The queue the client made (it makes one, when it is created)."""
        (queue,) = self._made
        return queue


class LinkDown(TransientError):
    """The link is not connected, or a publish over it failed or timed out."""


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where one broker is and how to reach it.

    ``name`` labels the link in logs and health output (``parent``, ``children``, ...).
    ``cafile`` is the CA the broker's certificate must chain to; ``certfile``/``keyfile`` are
    this node's client certificate (CN = node code) and key. ``connect_timeout`` bounds the
    wait for the broker's CONNACK and SUBACK (TCP connect and TLS handshake have the client
    library's own 5 s bound); ``publish_timeout`` bounds the wait for a PUBACK.
    ``alternates`` are more ``(host, port)`` addresses of the same broker, tried in turn after
    ``host:port``; ``engine`` is a key of ``frames.TOPIC_DOT``.
    """

    name: str
    host: str
    port: int
    cafile: Path
    certfile: Path
    keyfile: Path
    keepalive: int = 30
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.2
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0
    alternates: tuple[tuple[str, int], ...] = ()
    engine: str = "mosquitto"

    def __post_init__(self) -> None:
        for _, port in self.addresses:
            if not 1 <= port <= 65535:
                raise ValueError(f"link {self.name}: port {port} is not between 1 and 65535")
        if self.engine not in TOPIC_DOT:
            raise ValueError(f"link {self.name}: unknown broker engine {self.engine!r}")
        if self.keepalive < 1:
            raise ValueError(f"link {self.name}: keepalive must be at least 1 second")
        if not (self.connect_timeout > 0 and self.publish_timeout > 0):
            raise ValueError(f"link {self.name}: timeouts must be greater than 0")

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every address of the broker, ``host:port`` first."""
        return ((self.host, self.port), *self.alternates)

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context trusting ``cafile`` and presenting this node's certificate.

        Raises ``OSError``/``ssl.SSLError`` when a file is missing or unusable.
        """
        context = ssl.create_default_context(cafile=str(self.cafile))
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        return context


class _ClientLog(logging.Handler):
    """Passes the client library's log lines on to structlog and keeps the last error."""

    def __init__(self, link: str) -> None:
        super().__init__(logging.WARNING)
        self.link = link
        self.last_error: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.last_error = message
        _log.warning(
            "mqtt_client_log", link=self.link, client_level=record.levelname, message=message
        )


def _raise_dropped_cancel() -> None:
    """Raise the cancellation of the running task that an aiomqtt call returned through.

    aiomqtt waits for its acknowledgements (CONNACK, SUBACK, and PUBACK unless told to wait
    for ever, as :meth:`Link.publish` does) with asyncio.wait_for, which under Python 3.11
    returns the result, dropping the cancellation, when the task is cancelled in the loop turn
    the acknowledgement arrives in (fixed in 3.12): a daemon stopping would wait for a task
    that goes on. A cancellation still requested (not withdrawn with ``uncancel``) is raised
    again here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: BaseException) -> str:
    """One line naming what went wrong, with the underlying cause aiomqtt chains on."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


class Link:
    """One node's connection to one broker; see the module docstring for the contract.

    ``state`` is ``connecting``, ``up`` or ``down``; ``since`` is the wall-clock time of its
    last change; ``last_error`` the reason of the most recent failure (kept after recovery, for
    operators); ``connects`` counts successful connections; ``attempts`` the failures since
    the last one.
    """

    def __init__(
        self,
        settings: LinkSettings,
        me: str,
        on_message: OnMessage,
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Check ``me`` and load the TLS files now, so a bad setting fails at start."""
        inbox_filter(me)  # ValueError naming the problem if ``me`` is not an agency code
        self.settings = settings
        self.me = me
        self._on_message = on_message
        self._tls = settings.tls_context()
        self._backoff = Backoff(
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            jitter=settings.backoff_jitter,
            rng=rng,
        )
        self._client_log = _ClientLog(settings.name)
        self._logger = logging.Logger(f"mqtt.{settings.name}", logging.WARNING)
        self._logger.addHandler(self._client_log)
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self.state: LinkState = "down"
        self.since = time.time()
        self.last_error: str | None = None
        self.connects = 0
        self._phase = "connect"
        self._dot = TOPIC_DOT[settings.engine]
        self._address = 0

    @property
    def address(self) -> tuple[str, int]:
        """The broker address the link is connected or connecting to."""
        return self.settings.addresses[self._address]

    @property
    def where(self) -> str:
        """:attr:`address` as ``host:port``, for people."""
        host, port = self.address
        return f"{host}:{port}"

    @property
    def attempts(self) -> int:
        """Failed connections (or dropped ones) since the last successful connection."""
        return self._backoff.attempt

    def _context(self) -> dict[str, Any]:
        host, port = self.address
        return {"link": self.settings.name, "node": self.me, "host": host, "port": port}

    def _set_state(self, state: LinkState) -> None:
        self.state = state
        self.since = time.time()
        if state == "up":
            self._up.set()
        else:
            self._up.clear()

    # A readiness check wants a yes/no answer, not an exception to catch: hence the argument.
    async def wait_up(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the link is up (True) or ``timeout`` seconds pass (False)."""
        if self._up.is_set():
            return True  # the common case, asked before every transfer: no timer
        try:
            async with asyncio.timeout(timeout):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> NoReturn:
        """Connect, receive, reconnect after failures with backoff; returns only by cancellation."""
        try:
            while True:
                self._set_state("connecting")
                _log.info("link_connecting", attempt=self.attempts + 1, **self._context())
                self._client_log.last_error = None
                self._phase = "connect"
                try:
                    await self._session()
                except (aiomqtt.MqttError, OSError) as exc:
                    # A refused CONNACK is raised through the same wait_for, which drops a
                    # cancellation that came with it: stop instead of connecting again.
                    _raise_dropped_cancel()
                    reason = f"{self._phase}: {_describe(exc)}"
                    client_error = self._client_log.last_error
                    if client_error and client_error not in reason:
                        reason = f"{reason} ({client_error})"
                finally:
                    self._client = None
                # The next attempt goes to the next member: the one that failed may be gone.
                self._address = (self._address + 1) % len(self.settings.addresses)
                delay = self._backoff.next_delay()
                self.last_error = reason
                self._set_state("down")
                _log.warning(
                    "link_down", reason=reason, retry_in=round(delay, 3), **self._context()
                )
                await asyncio.sleep(delay)
        finally:
            self.last_error = "the link was stopped"
            self._set_state("down")
            _log.info("link_stopped", **self._context())

    async def _session(self) -> NoReturn:
        """One connection, from CONNECT to the error that ends it."""
        settings = self.settings
        host, port = self.address
        kept = _KeptQueue()
        client = aiomqtt.Client(
            host,
            port,
            identifier=self.me,
            clean_session=False,
            keepalive=settings.keepalive,
            timeout=settings.connect_timeout,
            tls_context=self._tls,
            logger=self._logger,
            # Frames and hop receipts are small and answered at once: without TCP_NODELAY,
            # Nagle's algorithm holds each one back by tens of milliseconds per hop.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            queue_type=kept.queue_type,
        )
        client.pending_calls_threshold = _PENDING_CALLS_WARNING
        async with client:
            _raise_dropped_cancel()
            self._phase = "subscribe"
            granted = await client.subscribe(inbox_filter(self.me, dot=self._dot), qos=1)
            _raise_dropped_cancel()
            # paho gives ReasonCode objects (MQTT 3.1.1 granted QoS in ``.value``); 0x80 = refused.
            if any(getattr(code, "value", code) >= _SUBACK_FAILURE for code in granted):
                raise aiomqtt.MqttError(f"the broker refused the subscription to {self.me}'s inbox")
            self._client = client
            self.connects += 1
            self._backoff.reset()
            self._set_state("up")
            _log.info("link_up", connects=self.connects, **self._context())
            self._phase = "connection lost"
            gate = ReadGate(client)  # frames wait at the broker, not in memory
            messages, queue = client.messages, kept.queue
            while True:
                # A frame already received is taken at once; aiomqtt's iterator makes a task
                # and a wait for every message, and a turn of the loop, even then. It is
                # waited for (until the connection ends: MqttError) only when none is.
                message = queue.get_nowait() if queue.qsize() else await anext(messages)
                gate.taken()
                await self._deliver(message)

    async def _deliver(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message.payload
        try:
            to, sender = parse_topic(topic, dot=self._dot)
            if to != self.me:
                raise FrameError(f"topic {topic!r} is another node's inbox")
        except FrameError as exc:
            _log.warning("frame_unexpected_topic", topic=topic, error=str(exc), **self._context())
            return
        if not isinstance(payload, bytes):
            _log.warning(
                "frame_unexpected_payload",
                peer=sender,
                type=type(payload).__name__,
                **self._context(),
            )
            return
        # Every frame passes here: no context dict is built for a line that is mostly filtered.
        _log.debug("frame_received", peer=sender, size=len(payload), link=self.settings.name)
        try:
            await self._on_message(sender, payload)
        except Exception as exc:
            _log.error(
                "frame_handler_failed",
                peer=sender,
                size=len(payload),
                error=_describe(exc),
                exc_info=True,
                **self._context(),
            )

    async def publish(self, to: str, payload: bytes) -> None:
        """Send ``payload`` to node ``to``'s inbox with QoS 1 and wait for the broker's PUBACK.

        Raises :class:`LinkDown` at once when the link is not up, and when the publish fails or
        its PUBACK does not come within ``publish_timeout``. ``ValueError`` if ``to`` is not an
        agency code.
        """
        topic = inbox_topic(to, self.me, dot=self._dot)
        client = self._client
        if client is None or self.state != "up":
            raise LinkDown(
                f"link {self.settings.name} ({self.where}) is"
                f" {self.state}: {self.last_error or 'not connected yet'}"
            )
        wait = self.settings.publish_timeout
        try:
            # The wait is bounded here, not by aiomqtt: its own bound goes through
            # asyncio.wait_for, which under Python 3.11 makes a task for every publish (and
            # can drop a cancellation that comes with the PUBACK); waiting for ever, aiomqtt
            # awaits the PUBACK itself, and a cancellation reaches this task as it should.
            async with asyncio.timeout(wait):
                await client.publish(topic, payload, qos=1, timeout=math.inf)
        except aiomqtt.MqttError as exc:
            raise LinkDown(
                f"publish to {to} over link {self.settings.name} failed: {_describe(exc)}"
            ) from exc
        except TimeoutError:
            raise LinkDown(
                f"publish to {to} over link {self.settings.name} failed:"
                f" no PUBACK within {wait:g} s"
            ) from None
