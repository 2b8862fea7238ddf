"""Directory versions on a node's disk: the one in force, the previous one, and what arrives.

Layout under ``<state_dir>/directory/``::

    v000000007.json     the version in force (the highest number present)
    v000000006.json     the previous one, kept; older ones are removed
    incoming/           versions published here (``lienthong directory publish --config``)
    refused/            versions that were refused, each with a ``.reason`` file beside it

A version is applied by writing its file under its final name with the store's durable writer
(temporary name, fsync, rename, fsync of the folder): a crash leaves either the old highest
file or the new one, never a partial one, so "which version is in force" is always one of the
two. When no signed version is stored, the node's directory file (``[node] directory``) is the
bootstrap version 0; an existing configuration therefore keeps working unchanged.

On start, a stored version that no longer verifies (the authority certificate changed, a file
damaged by hand) is moved to ``refused/`` with its reason and the next one down is used.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from lienthong.config import Config
from lienthong.dirversion import DirectoryVersion, VersionRefused, bootstrap_version, read_version
from lienthong.errors import ConfigError
from lienthong.keyfiles import read_file
from lienthong.logs import get_logger
from lienthong.store.blobs import write_durably
from lienthong.trust.keys import load_certificates

__all__ = ["InForce", "VersionFiles", "load_authority", "load_bootstrap", "load_in_force"]

_log = get_logger("lienthong.dirfiles")
_NAME_RE = re.compile(r"^v(\d{9})\.json$")
KEEP = 2
"""Versions kept on disk: the one in force and the previous one."""


def _name(number: int) -> str:
    return f"v{number:09d}.json"


class VersionFiles:
    """The folder of directory versions of one node."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "directory"
        self.incoming_dir = self.root / "incoming"
        self.refused_dir = self.root / "refused"

    def stored(self) -> list[tuple[int, Path]]:
        """``(number, path)`` of every stored version, highest first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.root.iterdir()
            if (m := _NAME_RE.match(p.name)) is not None
        ]
        return sorted(found, reverse=True)

    def write(self, version: DirectoryVersion) -> Path:
        """Store ``version`` durably under its number (it is then the one in force) and
        remove versions older than the previous one."""
        path = self.root / _name(version.number)
        write_durably(path, version.raw, f"directory version {version.number}")
        for _, old in self.stored()[KEEP:]:
            old.unlink(missing_ok=True)
        return path

    def incoming(self) -> list[Path]:
        """Version files waiting in ``incoming/``, oldest name first."""
        if not self.incoming_dir.is_dir():
            return []
        return sorted(p for p in self.incoming_dir.iterdir() if p.suffix == ".json")

    def put_incoming(self, data: bytes, stem: str) -> Path:
        """Drop a version file in ``incoming/`` for the running daemon to apply."""
        path = self.incoming_dir / f"{stem}.json"
        write_durably(path, data, "incoming directory version")
        return path

    def refuse(self, path: Path, reason: str) -> Path:
        """Move a refused version file to ``refused/`` with its reason beside it (kept)."""
        self.refused_dir.mkdir(parents=True, exist_ok=True)
        target = self.refused_dir / path.name
        path.replace(target)
        target.with_name(target.name + ".reason").write_text(reason + "\n", encoding="utf-8")
        return target


def load_authority(path: Path) -> x509.Certificate:
    """The directory authority's certificate (the first in a PEM file)."""
    return load_certificates(read_file(path, "directory authority certificate"))[0]


def load_bootstrap(config: Config) -> DirectoryVersion:
    """Version 0: the directory file named by ``[node] directory``, checked."""
    path = config.node.directory
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key="node.directory") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", key="node.directory") from exc
    return bootstrap_version(data, dt.datetime.fromtimestamp(mtime, dt.UTC))


@dataclass(frozen=True, slots=True)
class InForce:
    """The version a node runs, since when (the file's time), and where it came from."""

    version: DirectoryVersion
    since: float
    path: Path


def load_in_force(config: Config) -> InForce:
    """The highest stored signed version that verifies, else the bootstrap version.

    Without ``[directory] authority`` no signed version can be checked, so the directory file
    is used as it always was. Raises :class:`ConfigError` when the version chosen does not
    list this node as one that runs a node.
    """
    me = config.node.code
    chosen: InForce | None = None
    authority_path = config.directory.authority
    if authority_path != Path():
        authority = load_authority(authority_path)
        files = VersionFiles(config.node.state_dir)
        for number, path in files.stored():
            try:
                version = read_version(path.read_bytes(), authority)
            except (OSError, VersionRefused) as exc:
                _log.error("directory_version_unusable", number=number, reason=str(exc))
                files.refuse(path, str(exc))
                continue
            chosen = InForce(version, path.stat().st_mtime, path)
            break
    if chosen is None:
        path = config.node.directory
        if path == Path():
            raise ConfigError("is required to run the daemon", key="node.directory")
        version = load_bootstrap(config)  # a wrong file raises DirectoryError, every problem
        chosen = InForce(version, path.stat().st_mtime, path)
    if me not in chosen.version.directory.nodes:
        raise ConfigError(
            f"the directory {chosen.path} does not list {me} as an agency that runs a node"
            " (node = true)",
            key="node.code",
        )
    return chosen
