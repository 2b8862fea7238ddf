"""Sub-commands that set a node up: ``init``, ``broker-config``, ``check``."""

from __future__ import annotations

import argparse
import datetime as dt
import grp
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from lienthong import keyfiles, nodecheck, provision
from lienthong.brokersetup import ENGINES, BrokerPlan, own_path
from lienthong.cli.store_cmds import config_arg
from lienthong.cli.trust_cmds import DEV_WARNING, issue_broker, open_dev_ca
from lienthong.config import DEFAULT_CONFIG_PATH, load_config
from lienthong.errors import ConfigError, LienthongError
from lienthong.node import load_directory
from lienthong.processing import certificate_fingerprint
from lienthong.provision import NodePlan, parse_address
from lienthong.trust import pki
from lienthong.trust.keys import PrivateKey, load_certificates, load_private_key

DAEMON_GROUP = "lienthong"
"""Files the daemon reads are group-readable by it (systemd/lienthong.sysusers.conf)."""
BROKER_DIR = Path("/etc/lienthong-broker")
BROKER_STATE = Path("/var/lib/lienthong-broker")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    init = sub.add_parser(
        "init",
        help="set this node up: configuration, key, certificate request (asks what is missing)",
    )
    init.add_argument("--agency", metavar="CODE", help="the agency code this node runs for")
    init.add_argument(
        "--parent", metavar="HOST[:PORT]", help="the parent node's broker (port 8883 by default)"
    )
    init.add_argument(
        "--no-parent", action="store_true", help="this is the national node: it has no parent"
    )
    init.add_argument(
        "--api",
        metavar="HOST:PORT",
        help=f"the office software's API (default {provision.DEFAULT_API})",
    )
    init.add_argument(
        "--children",
        metavar="HOST[:PORT]",
        help="this node's broker for its child nodes, as they reach it (nodes with children)",
    )
    init.add_argument(
        "--directory", type=Path, metavar="FILE", help="the directory the parent node distributes"
    )
    init.add_argument(
        "--ca",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a certificate of the state CA to trust (repeat for intermediates)",
    )
    init.add_argument(
        "--dev-ca",
        type=Path,
        metavar="DIR",
        help="sign a DEVELOPMENT certificate with the CA in DIR (made there if absent)",
    )
    init.add_argument("--state-dir", type=Path, default=Path("/var/lib/lienthong"), metavar="DIR")
    init.add_argument("--force", action="store_true", help="replace an existing configuration")
    config_arg(init)
    init.set_defaults(func=_init)

    broker = sub.add_parser(
        "broker-config",
        help="write and test the broker configuration of a node with child nodes",
    )
    broker.add_argument("--engine", choices=sorted(ENGINES), default="mosquitto")
    broker.add_argument(
        "--out", type=Path, default=BROKER_DIR, metavar="DIR", help=f"default {BROKER_DIR}"
    )
    broker.add_argument(
        "--persistence", type=Path, default=BROKER_STATE, metavar="DIR", help="the broker's queue"
    )
    broker.add_argument(
        "--cert", type=Path, metavar="FILE", help="default: broker.crt beside the config"
    )
    broker.add_argument(
        "--key", type=Path, metavar="FILE", help="default: broker.key beside the config"
    )
    broker.add_argument(
        "--bind",
        default="0.0.0.0",  # noqa: S104 - the children's broker serves other machines
        metavar="ADDRESS",
        help="default: every address",
    )
    broker.add_argument("--user", help="the broker runs as this user (default: mosquitto, or nats)")
    broker.add_argument(
        "--host",
        metavar="NAME",
        help="the name this broker's certificate carries (default links.children.host)",
    )
    cluster = broker.add_argument_group("a member of a NATS cluster (--engine nats)")
    cluster.add_argument("--name", metavar="NAME", help="this member's name (default: host name)")
    cluster.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="the cluster address of a member: give all three, this one's too",
    )
    cluster.add_argument(
        "--cluster-port", type=int, default=6222, metavar="PORT", help="routes (default 6222)"
    )
    cluster.add_argument(
        "--client-port",
        type=int,
        default=4222,
        metavar="PORT",
        help="the NATS protocol on loopback, unused by nodes (default 4222)",
    )
    broker.add_argument(
        "--no-test", action="store_true", help="write the files, skip the test start"
    )
    config_arg(broker)
    broker.set_defaults(func=_broker_config)

    check = sub.add_parser("check", help="is this node ready to run: each check OK or what to do")
    config_arg(check)
    check.set_defaults(func=_check)


# -- init -------------------------------------------------------------------------------------


def _ask(value: str | None, prompt: str, option: str, default: str | None = None) -> str:
    """``value``, or the answer typed at ``prompt`` on a terminal, or ``default``."""
    if value is not None:
        return value
    if sys.stdin.isatty():
        shown = f" [{default}]" if default is not None else ""
        answer = input(f"{prompt}{shown}: ").strip()
        if answer or default is None:
            return answer
        return default
    if default is not None:
        return default
    raise ConfigError(f"give {option} (or run `lienthong init` on a terminal to be asked)")


def _plan(args: argparse.Namespace) -> NodePlan:
    code = _ask(args.agency, "Agency code of this node (e.g. 000.00.12.H49)", "--agency")
    parent = None
    if not args.no_parent:
        text = _ask(
            args.parent,
            "Parent node's broker, HOST[:PORT] (empty for the national node)",
            "--parent HOST[:PORT] or --no-parent",
        )
        if text:
            parent = parse_address(text, provision.DEFAULT_MQTT_PORT, "--parent")
    api = parse_address(
        _ask(args.api, "Address of the API for office software", "--api", provision.DEFAULT_API),
        8866,
        "--api",
    )
    children = None
    if args.children:
        children = parse_address(args.children, provision.DEFAULT_MQTT_PORT, "--children")
    folder = args.config.parent.resolve()
    return NodePlan(code, parent, api, folder, args.state_dir, children)


def _daemon_gid() -> int | None:
    try:
        return grp.getgrnam(DAEMON_GROUP).gr_gid
    except KeyError:
        return None


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically with ``mode``; group ``lienthong`` when it exists (root)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    gid = _daemon_gid()
    if gid is not None and os.geteuid() == 0:
        os.chown(tmp, 0, gid)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _key(path: Path) -> tuple[PrivateKey, bool]:
    """The key at ``path``, made there when absent (never replaced: certificates name it)."""
    if path.exists():
        return load_private_key(keyfiles.read_file(path, "key")), False
    key = pki.new_key("rsa")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o640)
    return key, True


def _init(args: argparse.Namespace) -> int:
    plan = _plan(args)
    config_path: Path = args.config
    if config_path.exists() and not args.force:
        raise ConfigError(f"{config_path} exists: keep it, or give --force to write it anew")
    plan.folder.mkdir(parents=True, exist_ok=True)
    plan.trust_dir.mkdir(exist_ok=True)
    key, made = _key(plan.key)
    print(f"{'wrote' if made else 'kept '}  {plan.key} (the agency's private key)")
    fingerprint = None
    if args.dev_ca is not None:
        fingerprint = _dev_certificates(plan, key, args.dev_ca)
    else:
        _state_ca_request(plan, key, args.ca)
        if plan.cert.exists():
            fingerprint = certificate_fingerprint(
                load_certificates(keyfiles.read_file(plan.cert, "certificate"))[0]
            )
    if args.directory is not None:
        _write(plan.directory, keyfiles.read_file(args.directory, "directory"), 0o640)
        print(f"wrote  {plan.directory}")
    now = dt.datetime.now(dt.UTC)
    _write(config_path, provision.config_text(plan, written_at=now).encode("utf-8"), 0o640)
    print(f"wrote  {config_path}")
    print()
    print(provision.parent_notice(plan.code, fingerprint, plan))
    print()
    todo = []
    given = "" if config_path == DEFAULT_CONFIG_PATH else f" --config {config_path}"
    if not plan.directory.exists():
        todo.append(f"put the directory your parent node distributes at {plan.directory}")
    if not plan.cert.exists():
        todo.append(f"send {plan.csr} to the state CA; put its answer at {plan.cert}")
    if plan.children is not None:
        todo.append(f"write and test the children's broker: lienthong broker-config{given}")
    todo += [
        f"check everything: lienthong check{given}",
        "start the daemon: systemctl enable --now lienthong",
    ]
    print("Next:")
    for number, step in enumerate(todo, 1):
        print(f"  {number}. {step}")
    return 0


def _dev_certificates(plan: NodePlan, key: PrivateKey, ca_dir: Path) -> str:
    """Issue the agency's (and its broker's) development certificates; the fingerprint."""
    print(DEV_WARNING)
    ca, made = open_dev_ca(ca_dir)
    print(f"{'wrote' if made else 'kept '}  {ca_dir / 'ca.crt'} ({ca.name})")
    issued = pki.issue_agency(ca, plan.code, key=key)
    _write(plan.cert, issued.cert_pem(), 0o644)
    _write(plan.cafile, ca.cert_pem(), 0o644)
    print(f"wrote  {plan.cert} (signed by {ca.name}) and {plan.cafile}")
    if plan.children is not None:
        broker_key, _ = _key(plan.broker_key)
        broker = issue_broker(ca, plan.children.host, key=broker_key)
        _write(plan.broker_cert, broker.cert_pem(), 0o644)
        print(f"wrote  {plan.broker_cert} for {plan.children.host} (the children's broker)")
    return certificate_fingerprint(issued.certificate)


def _state_ca_request(plan: NodePlan, key: PrivateKey, cas: list[Path]) -> None:
    """Write the certificate request, and the state CA's certificates when given."""
    csr = provision.make_csr(key, plan.code)
    _write(plan.csr, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    print(f"wrote  {plan.csr} (send it to the state CA)")
    if cas:
        bundle = b"".join(keyfiles.read_file(path, "CA certificate") for path in cas)
        load_certificates(bundle)  # refuse anything that is not PEM certificates now
        _write(plan.cafile, bundle, 0o644)
        print(f"wrote  {plan.cafile}")
    elif not plan.cafile.exists():
        print(f"       put the state CA's certificate at {plan.cafile} (or give --ca FILE)")


# -- broker-config ------------------------------------------------------------------------------


def _broker_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    link = config.links.children
    if not link.enabled:
        raise ConfigError(
            "is not set: a node without children needs no broker; set it to the address child"
            " nodes reach this node's broker at",
            key="links.children.host",
        )
    engine = ENGINES[args.engine]
    user = args.user or engine.user
    if args.route and engine.name != "nats":
        raise LienthongError("--route is for --engine nats: mosquitto runs alone")
    directory = load_directory(config)
    me = config.node.code
    children = tuple(sorted(n for n in directory.nodes if directory.node_parent(n) == me))
    if not children:
        raise ConfigError(f"the directory lists no child node of {me}: it needs no broker")
    folder = args.config.parent
    out: Path = args.out.resolve()
    # The broker reads its certificate, key and ACL after dropping to its user, who may not
    # enter /etc/lienthong (it holds the agency's key): they get a folder of their own.
    copies = _install_broker_files(
        out,
        user,
        {
            "ca.crt": link.cafile,
            "broker.crt": args.cert or folder / "broker.crt",
            "broker.key": args.key or folder / "broker.key",
        },
    )
    plan = BrokerPlan(
        node=me,
        children=children,
        public_host=args.host or link.host,
        port=link.port,
        bind=args.bind,
        cafile=copies["ca.crt"],
        certfile=copies["broker.crt"],
        keyfile=copies["broker.key"],
        out_dir=out,
        persistence_dir=args.persistence.resolve(),
        user=user,
        message_size_limit=config.transfer.message_size_limit,
        server_name=args.name or socket.gethostname().split(".")[0],
        routes=tuple(args.route),
        cluster_port=args.cluster_port,
        client_port=args.client_port,
    )
    for name, text in engine.files(plan).items():
        _write_for(plan.out_dir / name, text.encode("utf-8"), user)
        print(f"wrote  {plan.out_dir / name}")
    plan.persistence_dir.mkdir(parents=True, exist_ok=True)
    own_path(plan.persistence_dir, plan.user)
    if not args.no_test:
        client = nodecheck.link_settings(config, "children").tls_context()
        with tempfile.TemporaryDirectory(prefix="lienthong-broker-test-") as work:
            engine.test_start(plan, client, Path(work))
        print(
            f"tested {engine.name}: it started on these files and accepted {me}'s certificate"
            f" for {plan.public_host}"
        )
    print(f"child nodes that connect to it: {', '.join(children)}")
    if engine.name == "nats":
        print(
            f"start it: nats-server -c {plan.out_dir / 'nats-server.conf'} as {user} on each"
            f" member (MQTT on {plan.bind}:{plan.port}, routes on {plan.cluster_port})"
        )
        return 0
    print(f"start it: systemctl enable --now lienthong-broker (listens on {plan.bind}:{plan.port})")
    return 0


def _install_broker_files(out: Path, user: str, sources: dict[str, Path]) -> dict[str, Path]:
    """Copy ``sources`` (name -> file) into ``out``, readable by the broker's ``user``."""
    for path in sources.values():
        if not path.is_file():
            raise LienthongError(f"{path} is missing: the broker needs it")
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o750)
    own_path(out, user, owner="root")
    copies = {}
    for name, path in sources.items():
        copies[name] = out / name
        _write_for(copies[name], keyfiles.read_file(path, name), user)
        print(f"wrote  {copies[name]} (from {path})")
    return copies


def _write_for(path: Path, data: bytes, user: str) -> None:
    """Write ``path`` as root's, readable by the group of ``user`` and nobody else."""
    path.write_bytes(data)
    path.chmod(0o640)
    own_path(path, user, owner="root")


# -- check --------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    checks = nodecheck.check_node_setup(args.config, now=dt.datetime.now(dt.UTC))
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'OK  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.reason}")
    failing = sum(not c.ok for c in checks)
    print("ready to run" if not failing else f"{failing} check(s) to fix before running")
    return 0 if not failing else 1
