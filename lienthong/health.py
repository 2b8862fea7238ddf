"""Whether a node can do its work right now, checked for real, for ``/healthz``.

Four checks, each with a reason an operator can act on:

``store``
    The store takes a write: :meth:`Store.resume_intake` writes and flushes a 64 KiB probe file
    in the state folder and commits an empty write transaction through the store's writer
    (``BEGIN IMMEDIATE`` ... ``COMMIT``, which fsyncs the WAL). It is journal-free: the probe
    changes no row and appends nothing to the journal. A store whose intake was blocked (disk
    full, database locked) and works again is unblocked by the same call.
``link:<name>``
    One per broker link: up, or why not (its state and last error).
``signing_key``
    The signing identity is loaded, its key matches its certificate, and the certificate is
    valid now (an expired one makes every package it signs refused downstream).
``directory``
    The directory version in force has not expired (the reason names it and its expiry; what
    the node refuses meanwhile is ``[directory] on_expiry``).
``disk``
    The file system holding the state folder has at least ``min_free_bytes`` free and at least
    ``min_free_ratio`` of its size.

The node is healthy when every check passes; :meth:`Health.as_json` is the body of
``/healthz`` (HTTP 200 when healthy, 503 otherwise).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from lienthong.dirholder import DirectoryHolder
from lienthong.errors import LienthongError
from lienthong.store import Store
from lienthong.transport.link import Link
from lienthong.trust import SigningIdentity

__all__ = ["Check", "DiskLimits", "Health", "check_disk", "check_node", "check_signing_key"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Check:
    """One check: its name, whether it passed, and why (or what was seen)."""

    name: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DiskLimits:
    """Below either limit, the disk holding the state folder is unhealthy."""

    min_free_bytes: int = 100 * MIB
    min_free_ratio: float = 0.05


@dataclass(frozen=True, slots=True)
class Health:
    """Every check of one node at ``at`` (seconds since the epoch)."""

    node: str
    at: float
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def failing(self) -> tuple[Check, ...]:
        """The checks that did not pass."""
        return tuple(c for c in self.checks if not c.ok)

    def as_json(self) -> dict[str, Any]:
        """``{"status": "healthy"|"unhealthy", "node", "at", "checks": {name: {ok, reason}}}``."""
        return {
            "status": "healthy" if self.ok else "unhealthy",
            "node": self.node,
            "at": self.at,
            "checks": {c.name: {"ok": c.ok, "reason": c.reason} for c in self.checks},
        }


async def check_store(store: Store) -> Check:
    """The store writes (see the module docstring for what the probe does)."""
    try:
        ok = await store.resume_intake()
    except (LienthongError, OSError, RuntimeError) as exc:
        return Check("store", False, f"the store cannot write: {exc}")
    if not ok:
        return Check("store", False, f"the store cannot write: {store.intake_blocked}")
    return Check("store", True, "a probe write was committed")


def check_link(name: str, link: Link) -> Check:
    """The link to one broker is up."""
    where = link.where
    if link.state == "up":
        return Check(f"link:{name}", True, f"up to {where}")
    error = f": {link.last_error}" if link.last_error else ""
    return Check(f"link:{name}", False, f"{link.state} to {where}{error}")


def check_signing_key(identity: SigningIdentity | None, now: float) -> Check:
    """The signing key is loaded, belongs to its certificate, and the certificate is valid."""
    if identity is None:
        return Check("signing_key", False, "no signing key is loaded")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    cert = identity.certificate
    if identity.key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return Check("signing_key", False, "the signing key does not belong to its certificate")
    at = dt.datetime.fromtimestamp(now, dt.UTC)
    subject = cert.subject.rfc4514_string()
    if at < cert.not_valid_before_utc:
        return Check(
            "signing_key",
            False,
            f"the certificate {subject} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}",
        )
    if at > cert.not_valid_after_utc:
        return Check(
            "signing_key",
            False,
            f"the certificate {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
        )
    return Check(
        "signing_key", True, f"loaded: {subject}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )


def check_disk(path: Path, limits: DiskLimits) -> Check:
    """The file system holding ``path`` has room (see :class:`DiskLimits`)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        return Check("disk", False, f"cannot read the free space of {path}: {exc.strerror}")
    free_mib = usage.free / MIB
    ratio = usage.free / usage.total if usage.total else 0.0
    seen = f"{free_mib:,.0f} MiB free ({ratio:.1%}) on the disk of {path}"
    if usage.free < limits.min_free_bytes:
        needed = f"at least {limits.min_free_bytes / MIB:,.0f} MiB needed"
        return Check("disk", False, f"{seen}; {needed}")
    if ratio < limits.min_free_ratio:
        return Check("disk", False, f"{seen}; at least {limits.min_free_ratio:.0%} needed")
    return Check("disk", True, seen)


async def check_node(
    *,
    node: str,
    store: Store,
    links: Mapping[str, Link],
    identity: SigningIdentity | None,
    state_dir: Path,
    now: float,
    limits: DiskLimits | None = None,
    extra: Sequence[Check] = (),
    directory: DirectoryHolder | None = None,
) -> Health:
    """Run every check of node ``node``; ``extra`` are checks made elsewhere (the spool)."""
    checks = [await check_store(store)]
    checks += [check_link(name, link) for name, link in links.items()]
    checks.append(check_signing_key(identity, now))
    if directory is not None:
        expiry = directory.expiry(now)
        checks.append(Check("directory", expiry.ok, expiry.message))
    checks.append(await asyncio.to_thread(check_disk, state_dir, limits or DiskLimits()))
    checks += extra
    return Health(node, now, tuple(checks))
