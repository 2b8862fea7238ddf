"""Render the mosquitto configuration of one tier from ``config/mosquitto/tier.conf.in``.

:func:`render_text` is pure (template text in, config text out); :func:`render` reads the
template shipped with the project. The ACL (``acl.conf``) has no placeholders: it is used as is,
from wherever the operator keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lienthong.resources import shipped_dir

__all__ = [
    "ACL_PATH",
    "DEFAULT_MESSAGE_SIZE_LIMIT",
    "TEMPLATE_PATH",
    "BrokerSettings",
    "render",
    "render_acl",
    "render_text",
]

_CONFIG_DIR = shipped_dir("config/mosquitto")
TEMPLATE_PATH = _CONFIG_DIR / "tier.conf.in"
ACL_PATH = _CONFIG_DIR / "acl.conf"

DEFAULT_MESSAGE_SIZE_LIMIT = 1024 * 1024
"""1 MiB per publish: frames carry chunks below it (see ``frames.max_chunk_for``)."""

_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
# mosquitto reads a value up to the end of the line and splits some on spaces: keep paths plain.
_UNSAFE_PATH = re.compile(r"[\s#]")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Everything a tier's broker config needs; paths as the broker will see them."""

    port: int
    cafile: Path
    certfile: Path
    keyfile: Path
    acl_file: Path
    persistence_dir: Path
    bind_address: str = "0.0.0.0"  # noqa: S104 - a tier broker serves the nodes below it
    user: str = "mosquitto"
    message_size_limit: int = DEFAULT_MESSAGE_SIZE_LIMIT
    max_queued_messages: int = 1_000_000
    max_queued_bytes: int = 4 * 1024**3
    max_inflight_messages: int = 100

    def values(self) -> dict[str, str]:
        """The placeholder values, checked: ``ValueError`` names a bad one."""
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not between 1 and 65535")
        for name in ("message_size_limit", "max_queued_messages", "max_inflight_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_queued_bytes < self.message_size_limit:
            raise ValueError("max_queued_bytes must hold at least one message of the size limit")
        paths = {
            "CAFILE": self.cafile,
            "CERTFILE": self.certfile,
            "KEYFILE": self.keyfile,
            "ACL_FILE": self.acl_file,
            "PERSISTENCE_DIR": self.persistence_dir,
        }
        out: dict[str, str] = {}
        for key, path in paths.items():
            text = str(path)
            if _UNSAFE_PATH.search(text) or not Path(text).is_absolute():
                raise ValueError(f"{key.lower()} {text!r} must be an absolute path without spaces")
            out[key] = text.rstrip("/") if key == "PERSISTENCE_DIR" else text
        for key, word in (("USER", self.user), ("BIND_ADDRESS", self.bind_address)):
            if not word or _UNSAFE_PATH.search(word):
                raise ValueError(f"{key.lower()} {word!r} must be one word")
            out[key] = word
        out["PORT"] = str(self.port)
        out["MESSAGE_SIZE_LIMIT"] = str(self.message_size_limit)
        out["MAX_QUEUED_MESSAGES"] = str(self.max_queued_messages)
        out["MAX_QUEUED_BYTES"] = str(self.max_queued_bytes)
        out["MAX_INFLIGHT_MESSAGES"] = str(self.max_inflight_messages)
        return out


def render_acl(members: Iterable[str]) -> str:
    """The ACL of a tier broker that serves only ``members``: the node that runs it and its
    child nodes (peers under it are among them).

    The same rights as ``acl.conf`` (publish only as oneself, read only one's own inbox), but
    granted per user, so a certificate of the same CA that belongs to no member (a commune
    trying the national broker) connects to nothing it may use: no user, no right."""
    codes = sorted(set(members))
    for code in codes:
        if not code or any(c.isspace() or c in "+#/" for c in code):
            raise ValueError(f"{code!r} cannot name a broker user")
    lines = [
        "# lienthong broker ACL for the nodes this broker serves (written by lienthong).",
        "# A node publishes only with its own code as the sender segment and reads only its",
        "# own inbox; a client whose certificate names no node below is granted nothing.",
    ]
    for code in codes:
        lines += [
            "",
            f"user {code}",
            f"topic write lienthong/v1/+/in/{code}",
            f"topic read lienthong/v1/{code}/in/#",
        ]
    return "\n".join(lines) + "\n"


def render_text(template: str, settings: BrokerSettings) -> str:
    """Fill every ``@NAME@`` of ``template``; ``ValueError`` on an unknown or unfilled one."""
    values = settings.values()
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise ValueError(f"the broker template has unknown placeholders: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def render(settings: BrokerSettings, template_path: Path = TEMPLATE_PATH) -> str:
    """The config text for ``settings`` from the template file at ``template_path``."""
    return render_text(template_path.read_text(encoding="utf-8"), settings)
