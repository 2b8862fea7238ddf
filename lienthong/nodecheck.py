"""``lienthong check``: everything a node needs before it runs, each found OK or with what to do.

The checks read the node's files and reach its brokers; they never connect as the node over
MQTT (the brokers take the client id from the certificate, so a check that connected would
take the running daemon's session over): a TLS handshake with the node's certificate shows
that the broker is reachable, that its certificate is the one expected, and that it accepts
the node's certificate.
"""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lienthong.brokersetup import tls_probe
from lienthong.config import Config, check_for_daemon, load_config
from lienthong.directory import Directory
from lienthong.errors import LienthongError
from lienthong.health import Check, DiskLimits, check_disk, check_signing_key
from lienthong.node import link_settings, load_directory, load_keys
from lienthong.processing import certificate_fingerprint
from lienthong.transport.link import LinkSettings
from lienthong.trust import SigningIdentity
from lienthong.trust.pki import common_name

__all__ = [
    "DIRECTORY_MAX_AGE_DAYS",
    "RENEW_DAYS",
    "check_node_setup",
    "clock_check",
    "link_settings",
]

DIRECTORY_MAX_AGE_DAYS = 30
"""A directory older than this is likely to miss agencies added since."""
RENEW_DAYS = 30
"""A certificate that expires sooner than this is reported, to be renewed in time."""
EXAMPLE = Path("/etc/lienthong/lienthong.toml.example")


def check_node_setup(
    config_path: Path,
    *,
    now: dt.datetime,
    clock: Callable[[], Check] | None = None,
    tls_timeout: float = 5.0,
) -> list[Check]:
    """Every check of the node configured by ``config_path`` as of ``now``.

    ``clock`` checks the system clock (default :func:`clock_check`). A failing check that
    makes later ones meaningless (an unreadable configuration, key or certificate) ends the
    list.
    """
    try:
        config = load_config(config_path)
        check_for_daemon(config)
    except LienthongError as exc:
        return [Check("config", False, f"{exc}: fix {config_path} (every setting: {EXAMPLE})")]
    checks = [Check("config", True, f"{config_path} ({config.node.code})")]
    directory = None
    try:
        directory = load_directory(config)
    except LienthongError as exc:
        checks.append(
            Check(
                "directory",
                False,
                f"{exc}: put the directory your parent node distributes at {config.node.directory}",
            )
        )
    else:
        checks += _directory_checks(config, directory, now)
    try:
        identity, trust = load_keys(config)
    except LienthongError as exc:
        checks.append(
            Check(
                "certificate",
                False,
                f"{exc}: put the agency's key at {config.identity.key} and the certificate the"
                f" state CA issued for its request at {config.identity.cert}",
            )
        )
        return checks
    checks += _certificate_checks(config, identity, directory, now)
    chain = trust.check(identity.certificate, identity.certificates[1:], now)
    if chain.reasons:
        where = ", ".join(str(p) for p in config.trust.ca)
        checks.append(
            Check(
                "chain",
                False,
                f"{'; '.join(chain.reasons)}: put the state CA's certificate in {where}",
            )
        )
    else:
        names = " <- ".join(common_name(c) for c in chain.chain)
        checks.append(Check("chain", True, names))
    checks += [
        _broker_check(name, link, address, tls_timeout)
        for name, link in _links(config)
        for address in link.addresses  # every member of a broker cluster
    ]
    checks.append((clock or clock_check)())
    checks.append(parent_skew_check(config, directory))
    checks.append(check_disk(_existing(config.node.state_dir), DiskLimits()))
    return checks


def _directory_checks(config: Config, directory: Directory, now: dt.datetime) -> Iterator[Check]:
    me = config.node.code
    parent = directory.node_parent(me)
    children = sorted(n for n in directory.nodes if directory.node_parent(n) == me)
    where = f"parent {parent}" if parent else "the national node"
    yield Check(
        "directory",
        True,
        f"{len(directory.codes)} agencies; {me} is a node, {where}, {len(children)} child node(s)",
    )
    if children and not config.links.children.enabled:
        yield Check(
            "directory",
            False,
            f"the directory gives {me} child nodes ({', '.join(children)}) but links.children"
            " is not set: set it to this node's broker and run `lienthong broker-config`",
        )
    if parent and not config.links.parent.enabled:
        yield Check(
            "directory",
            False,
            f"the directory puts {me} under {parent} but links.parent is not set:"
            " set it to the parent node's broker",
        )
    modified = dt.datetime.fromtimestamp(config.node.directory.stat().st_mtime, dt.UTC)
    age = (now - modified).days
    if age > DIRECTORY_MAX_AGE_DAYS:
        yield Check(
            "directory age",
            False,
            f"{config.node.directory} is {age} days old: ask the parent node for the current one",
        )
    else:
        yield Check("directory age", True, f"{age} day(s) old")


def _certificate_checks(
    config: Config, identity: SigningIdentity, directory: Directory | None, now: dt.datetime
) -> Iterator[Check]:
    me = config.node.code
    cert = identity.certificate
    dates = check_signing_key(identity, now.timestamp())
    yield Check(
        "certificate",
        dates.ok,
        dates.reason if dates.ok else f"{dates.reason}: ask the state CA for a new certificate",
    )
    left = (cert.not_valid_after_utc - now).days
    if dates.ok and left < RENEW_DAYS:
        yield Check(
            "certificate",
            False,
            f"expires in {left} day(s): send a new request to the state CA now",
        )
    fingerprint = certificate_fingerprint(cert)
    if common_name(cert) != me:
        yield Check(
            "binding",
            False,
            f"the certificate is for {common_name(cert)}, not {me}: it cannot sign for this"
            " node nor connect as it; request one with CN = the agency code",
        )
        return
    agency = directory.get(me) if directory is not None else None
    if agency is not None and agency.signers and fingerprint not in agency.signers:
        yield Check(
            "binding",
            False,
            f"the directory does not list this certificate for {me}: give the parent node the"
            f" code {me} and the fingerprint {fingerprint}",
        )
        return
    listed = "listed in the directory" if agency and agency.signers else "CN"
    yield Check("binding", True, f"{me} ({listed}), fingerprint {fingerprint}")


def _links(config: Config) -> Iterator[tuple[str, LinkSettings]]:
    for name in ("parent", "children"):
        if getattr(config.links, name).enabled:
            yield name, link_settings(config, name)


def _broker_check(name: str, link: LinkSettings, address: tuple[str, int], timeout: float) -> Check:
    label = f"broker {name}"
    host, port = address
    where = f"{host}:{port}"
    try:
        context = link.tls_context()
    except (OSError, ssl.SSLError) as exc:
        return Check(label, False, f"cannot use {link.cafile} or the node's certificate: {exc}")
    try:
        tls_probe(host, port, context, timeout=timeout, settle=1.0)
    except ssl.SSLCertVerificationError as exc:
        return Check(
            label,
            False,
            f"{where}: its certificate is not accepted ({exc.verify_message}): check the host"
            f" name and that {link.cafile} holds the CA that issued it",
        )
    except ssl.SSLError as exc:
        return Check(
            label,
            False,
            f"{where} refused this node's certificate ({exc.reason or exc}): the broker must"
            " trust the CA that issued it",
        )
    except OSError as exc:
        hint = (
            "start it: systemctl start lienthong-broker"
            if name == "children"
            else ("check the address and that the firewall lets this server reach it")
        )
        return Check(label, False, f"cannot reach {where} ({exc}): {hint}")
    return Check(label, True, f"{where} accepts this node's certificate")


def clock_check() -> Check:
    """Whether the system clock is kept by NTP (``timedatectl``).

    Signatures, receipts and certificate dates all carry times; a node whose clock drifts
    refuses good certificates or dates its receipts wrong. The brokers do not
    carry the parent's time, so this check is that this clock is synchronised, and
    :func:`parent_skew_check` compares it with the parent's as the daemon measured it.
    """
    try:
        result = subprocess.run(
            ["timedatectl", "show", "--property=NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("clock", False, f"cannot ask timedatectl ({exc}): make sure NTP keeps time")
    if result.returncode != 0:
        said = result.stderr.strip() or f"exit {result.returncode}"
        return Check("clock", False, f"timedatectl cannot tell ({said}): make sure NTP keeps time")
    if result.stdout.strip() == "yes":
        return Check("clock", True, "synchronised by NTP")
    return Check(
        "clock",
        False,
        "not synchronised by NTP: `timedatectl set-ntp true` (systemd-timesyncd or chrony)",
    )


MAX_SKEW_S = 60.0
"""A parent whose clock differs by more than this is reported: receipts and certificate
dates start to disagree."""


def parent_skew_check(
    config: Config, directory: Directory | None, *, timeout: float = 3.0
) -> Check:
    """How far the parent node's clock is from this one, as the running daemon measured it
    from the parent's last hop receipt (read from its ``/metrics`` on the local server).

    Not measured (no parent, daemon not running, no receipt yet) is not a failure: it says so.
    """
    parent = None if directory is None else directory.node_parent(config.node.code)
    if parent is None:
        return Check("clock skew", True, "no parent node to compare with")
    url = f"http://{config.gateway.host}:{config.gateway.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            text = reply.read().decode("utf-8")
    except (OSError, ValueError) as exc:
        return Check(
            "clock skew",
            True,
            f"not measured: the daemon's {url} does not answer ({exc}); it measures the skew"
            " from the parent's hop receipts once it runs",
        )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "lienthong_clock_skew_seconds"
                and sample.labels.get("neighbour") == parent
            ):
                return _skew_verdict(parent, sample.value)
    return Check("clock skew", True, f"not measured yet: no hop receipt from {parent} so far")


def _skew_verdict(parent: str, skew: float) -> Check:
    way = "ahead of" if skew > 0 else "behind"
    said = f"the parent {parent}'s clock is {abs(skew):.1f} s {way} this one"
    if abs(skew) <= MAX_SKEW_S:
        return Check("clock skew", True, said)
    return Check(
        "clock skew", False, f"{said}: make NTP keep both in time (`timedatectl set-ntp true`)"
    )


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the state folder may not exist before the
    first start)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
