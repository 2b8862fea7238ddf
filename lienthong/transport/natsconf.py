"""Render the nats-server 2.9 configuration of one member of a tier's broker cluster.

The tier broker can be a NATS cluster instead of one mosquitto: three nats-server processes
(on three machines) joined by routes, with JetStream keeping the MQTT sessions and their queued
QoS 1 frames in streams replicated on every member (``mqtt { stream_replicas: 3 }``), so the
loss of any one machine loses neither a session nor a frame. Nodes connect over MQTT as they
do to mosquitto.

The node identity rules of mosquitto's tier config hold here too, stated in NATS' terms:

- every client presents a TLS certificate from the CA; ``verify_and_map`` makes its subject
  (``CN=<code>`` by default) the user name, and only the users listed here exist, one per node
  that uses this broker, all confined to MQTT connections;
- each user's permissions are :func:`node_permissions`: publish only with its own code as the
  sender segment, subscribe only to its own inbox (plus ``$MQTT.sub.>``, where the server
  delivers QoS 1 frames to the subscriptions a client made; a client cannot subscribe there
  itself, the server refuses MQTT filters under that prefix);
- the routes between members are TLS with certificates from the same CA whose DNS name must be
  the host of one of the configured routes (``verify_cert_and_check_known_urls``), so an
  agency's certificate cannot join the cluster.

NATS maps an MQTT topic to a subject by turning ``/`` into ``.`` and refuses topics with a
``.``: codes are written with ``_`` on this engine (``frames.TOPIC_DOT``). The plain NATS
protocol listener nats-server always opens is bound to loopback, and no user may use it.

:func:`render` is pure: settings in, config text out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lienthong.edxml.codes import code_problem
from lienthong.transport.frames import TOPIC_DOT, inbox_filter, inbox_topic

__all__ = [
    "ENGINE",
    "NatsMember",
    "node_permissions",
    "render",
    "subject_of",
]

ENGINE = "nats"
_DOT = TOPIC_DOT[ENGINE]
_DELIVERY_SUBJECTS = "$MQTT.sub.>"
# Characters the config parser or a route URL would misread in a word or a path.
_UNSAFE = re.compile(r"[\s\"'\\#{}\[\],;]")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEADROOM = 64 * 1024
"""Bytes allowed above the frames' size limit for the topic and the header NATS adds."""


def subject_of(topic: str) -> str:
    """The NATS subject of an MQTT topic or filter of ours (``/`` -> ``.``, ``+`` -> ``*``,
    ``#`` -> ``>``); our topics have no other character NATS treats specially."""
    return topic.replace("/", ".").replace("+", "*").replace("#", ">")


def node_permissions(code: str) -> tuple[list[str], list[str]]:
    """``(publish, subscribe)`` subjects node ``code`` is allowed: the NATS form of
    ``config/mosquitto/acl.conf``. ``ValueError`` if ``code`` is not an agency code."""
    publish = subject_of(inbox_topic(code, code, dot=_DOT)).split(".")
    publish[2] = "*"  # any recipient node; this node as the sender
    inbox = subject_of(inbox_filter(code, dot=_DOT)).removesuffix(".*") + ".>"
    return [".".join(publish)], [inbox, _DELIVERY_SUBJECTS]


@dataclass(frozen=True, slots=True)
class NatsMember:
    """One member of a tier's NATS cluster; paths as nats-server will see them.

    ``routes`` are the ``host:port`` cluster addresses of every member (this one's included:
    nats-server skips a route to itself). ``nodes`` are the agency codes allowed to connect;
    ``subject`` is the certificate subject each presents, with ``{code}`` for its code.
    """

    server_name: str
    cluster_name: str
    mqtt_port: int
    cluster_port: int
    client_port: int
    routes: tuple[str, ...]
    nodes: tuple[str, ...]
    cafile: Path
    certfile: Path
    keyfile: Path
    store_dir: Path
    bind: str = "0.0.0.0"  # noqa: S104 - a tier broker serves the nodes below it
    subject: str = "CN={code}"
    message_size_limit: int = 1024 * 1024
    replicas: int = 3
    ack_wait_s: int = 30

    def check(self) -> None:
        """``ValueError`` naming the first setting nats-server would misread or refuse."""
        for name in ("server_name", "cluster_name"):
            if not _NAME.match(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)!r}: letters, digits, - and _ only")
        for name in ("mqtt_port", "cluster_port", "client_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} {getattr(self, name)} is not between 1 and 65535")
        for name in ("cafile", "certfile", "keyfile", "store_dir"):
            text = str(getattr(self, name))
            if _UNSAFE.search(text) or not Path(text).is_absolute():
                raise ValueError(f"{name} {text!r} must be an absolute path without spaces")
        for route in self.routes:
            host, _, port = route.rpartition(":")
            if not host or _UNSAFE.search(host) or not port.isdigit():
                raise ValueError(f"route {route!r} must be host:port")
        if not self.nodes:
            raise ValueError("no node would be allowed to connect")
        for code in self.nodes:
            problem = code_problem(code)
            if problem is not None:
                raise ValueError(f"{code!r} is not an agency code: {problem}")
        if "{code}" not in self.subject or '"' in self.subject:
            raise ValueError(f"subject {self.subject!r} must contain {{code}} and no quote")
        if not 1 <= self.replicas <= 5 or self.message_size_limit < 1 or self.ack_wait_s < 1:
            raise ValueError("replicas must be 1 to 5, the size limit and ack_wait at least 1")
        if _UNSAFE.search(self.bind) or not self.bind:
            raise ValueError(f"bind {self.bind!r} must be one address")


def _q(value: str | Path) -> str:
    return json.dumps(str(value))


def _tls(member: NatsMember, mode: str, indent: str = "  ") -> list[str]:
    body = [
        f"cert_file: {_q(member.certfile)}",
        f"key_file: {_q(member.keyfile)}",
        f"ca_file: {_q(member.cafile)}",
        f"{mode}: true",
        "timeout: 5",
    ]
    return [f"{indent}tls {{", *(f"{indent}  {line}" for line in body), f"{indent}}}"]


def _users(member: NatsMember) -> list[str]:
    lines = ["authorization {", "  users = ["]
    for code in member.nodes:
        publish, subscribe = node_permissions(code)
        lines += [
            "    {",
            f"      user: {_q(member.subject.format(code=code))}",
            "      permissions: {",
            f"        publish: {{ allow: [{', '.join(_q(s) for s in publish)}] }}",
            f"        subscribe: {{ allow: [{', '.join(_q(s) for s in subscribe)}] }}",
            "      }",
            '      allowed_connection_types: ["MQTT"]',
            "    }",
        ]
    return [*lines, "  ]", "}"]


def render(member: NatsMember) -> str:
    """The nats-server configuration text of ``member``; ``ValueError`` on a bad setting."""
    member.check()
    routes = ", ".join(_q(f"nats-route://{r}") for r in member.routes)
    lines = [
        f"# nats-server 2.9 member of the lienthong tier broker cluster {member.cluster_name}.",
        "# Written by `lienthong broker-config --engine nats` (lienthong/transport/natsconf.py).",
        f"server_name: {_q(member.server_name)}",
        "",
        "# The NATS protocol listener cannot be switched off: loopback only, no user may use it.",
        f"listen: {_q(f'127.0.0.1:{member.client_port}')}",
        *_tls(member, "verify_and_map", indent=""),
        "",
        "# Frames stay below the nodes' message_size_limit; the topic and NATS' header ride above.",
        f"max_payload: {member.message_size_limit + _HEADROOM}",
        "",
        "# Sessions and queued QoS 1 frames live in JetStream, replicated on the members.",
        "jetstream {",
        f"  store_dir: {_q(member.store_dir)}",
        "}",
        "",
        "cluster {",
        f"  name: {_q(member.cluster_name)}",
        f"  listen: {_q(f'{member.bind}:{member.cluster_port}')}",
        f"  routes: [{routes}]",
        "  # Members only: a route's certificate must name the host of one of the routes.",
        *_tls(member, "verify_cert_and_check_known_urls"),
        "}",
        "",
        "mqtt {",
        f"  listen: {_q(f'{member.bind}:{member.mqtt_port}')}",
        "  # A client is the node named by its certificate's subject (the users below).",
        *_tls(member, "verify_and_map"),
        f"  stream_replicas: {member.replicas}",
        "  # A QoS 1 frame not acknowledged by its subscriber this long is sent again.",
        f'  ack_wait: "{member.ack_wait_s}s"',
        "}",
        "",
        "# One user per node, with the NATS form of the inbox ACL (config/mosquitto/acl.conf):",
        "# it publishes only with its own code as the sender segment and reads only its inbox.",
        *_users(member),
        "",
    ]
    return "\n".join(lines)
