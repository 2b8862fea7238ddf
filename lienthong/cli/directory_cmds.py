"""Sub-commands of the directory: ``directory publish``, ``apply``, ``show``, ``diff``, ``status``.

``publish`` signs a directory file (the TOML every node reads) as version N with the directory
authority's key; with ``--config`` it also hands the version to that node (normally the
national node), whose running daemon applies it and sends it down the tree. ``apply`` does
the same for a version signed elsewhere (an offline key). ``show`` and ``diff`` read version
files or directory TOML files; ``status`` says which version a node runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import tomllib
from pathlib import Path
from typing import Any

from lienthong.cli.store_cmds import config_arg
from lienthong.config import load_config
from lienthong.dirfiles import VersionFiles, load_authority, load_in_force
from lienthong.dirholder import DirectoryHolder
from lienthong.dirversion import (
    Alias,
    DirectoryVersion,
    bootstrap_version,
    diff,
    make_version,
    peek_version,
    read_version,
)
from lienthong.errors import ConfigError
from lienthong.keyfiles import read_file, read_passphrase
from lienthong.trust.keys import load_certificates, load_private_key


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    directory = sub.add_parser("directory", help="signed directory versions")
    dsub = directory.add_subparsers(dest="directory_command", required=True)

    publish = dsub.add_parser("publish", help="sign a directory file as version N")
    publish.add_argument("file", type=Path, metavar="FILE", help="directory TOML")
    publish.add_argument("--key", type=Path, required=True, help="the authority's private key")
    publish.add_argument("--cert", type=Path, required=True, help="the authority's certificate")
    publish.add_argument("--version", type=int, required=True, dest="number", metavar="N")
    publish.add_argument(
        "--expires", required=True, help="a date (YYYY-MM-DD, midnight UTC) or a number of days"
    )
    publish.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="OLD=NEW@UNTIL",
        help="route documents to the renamed code OLD to NEW until the date UNTIL",
    )
    publish.add_argument("--passphrase-env", help="environment variable holding the passphrase")
    publish.add_argument("-o", "--output", type=Path, help="where to write the version file")
    publish.add_argument(
        "--config", type=Path, help="also hand the version to this node's daemon to apply"
    )
    publish.set_defaults(func=_publish)

    apply = dsub.add_parser("apply", help="hand a signed version file to a node's daemon")
    apply.add_argument("file", type=Path, metavar="FILE")
    config_arg(apply)
    apply.set_defaults(func=_apply)

    show = dsub.add_parser("show", help="a version file or directory file, summarised")
    show.add_argument("file", type=Path, metavar="FILE")
    show.add_argument("--authority", type=Path, help="check the signature with this certificate")
    show.add_argument("--agencies", action="store_true", help="list every agency")
    show.set_defaults(func=_show)

    diff_cmd = dsub.add_parser("diff", help="what changed between two versions or files")
    diff_cmd.add_argument("old", type=Path, metavar="A")
    diff_cmd.add_argument("new", type=Path, metavar="B")
    diff_cmd.set_defaults(func=_diff)

    status = dsub.add_parser("status", help="the version a node runs, since when, its expiry")
    status.add_argument("--json", action="store_true")
    config_arg(status)
    status.set_defaults(func=_status)


def _read_any(path: Path, authority: Path | None = None) -> DirectoryVersion:
    """A version file (signature checked when ``authority`` is given), or a directory TOML
    file as a bootstrap version."""
    data = read_file(path, "directory file")
    if data.lstrip().startswith(b"{"):
        if authority is not None:
            return read_version(data, load_authority(authority))
        return peek_version(data)
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is neither a directory version nor a TOML file: {exc}") from exc
    return bootstrap_version(document, dt.datetime.now(dt.UTC))


def _expires(text: str, issued: dt.datetime) -> dt.datetime:
    if text.isdigit():
        return issued + dt.timedelta(days=int(text))
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--expires {text!r} is neither YYYY-MM-DD nor a number of days"
        ) from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _alias(text: str) -> Alias:
    try:
        old, rest = text.split("=", 1)
        new, until = rest.split("@", 1)
        return Alias(old.strip(), new.strip(), dt.date.fromisoformat(until.strip()))
    except ValueError:
        raise ConfigError(f"--alias {text!r} is not OLD=NEW@YYYY-MM-DD") from None


def _publish(args: argparse.Namespace) -> int:
    source = _read_any(args.file)
    if not source.bootstrap:
        raise ConfigError(f"{args.file} is already a signed version; publish a directory TOML")
    issued = dt.datetime.now(dt.UTC).replace(microsecond=0)
    passphrase = read_passphrase(None, args.passphrase_env)
    key = load_private_key(read_file(args.key, "authority key"), passphrase)
    cert = load_certificates(read_file(args.cert, "authority certificate"))[0]
    data = make_version(
        source.document,
        number=args.number,
        issued=issued,
        expires=_expires(args.expires, issued),
        key=key,
        cert=cert,
        aliases=[_alias(a) for a in args.alias],
    )
    version = peek_version(data)
    output = args.output or Path(f"directory-v{args.number}.json")
    output.write_bytes(data)
    print(f"wrote {output}: {version.describe()}, {len(version.directory)} agencies")
    if args.config is not None:
        _hand_over(args.config, data)
    return 0


def _hand_over(config_path: Path, data: bytes) -> None:
    config = load_config(config_path)
    if config.directory.authority == Path():
        raise ConfigError(
            "is not set: the node cannot check directory versions", "directory.authority"
        )
    version = read_version(data, load_authority(config.directory.authority))
    path = VersionFiles(config.node.state_dir).put_incoming(
        data, f"v{version.number}-{int(time.time())}"
    )
    print(f"handed {version.describe()} to {config.node.code}: {path}")


def _apply(args: argparse.Namespace) -> int:
    _hand_over(args.config, read_file(args.file, "directory version"))
    return 0


def _summary(version: DirectoryVersion) -> list[str]:
    directory = version.directory
    depth = {code: directory.depth(code) for code in directory.codes}
    tiers = [sum(1 for d in depth.values() if d == tier) for tier in range(max(depth.values()) + 1)]
    lines = [
        version.describe(),
        f"  national: {directory.national}",
        f"  agencies: {len(directory)} ({' / '.join(str(t) for t in tiers)} by tier),"
        f" nodes: {len(directory.nodes)}, signers: "
        f"{sum(len(directory.agency(c).signers) for c in directory.codes)}",
    ]
    if version.signer:
        lines.append(f"  signed by: {version.signer}")
    if version.raw:
        lines.append(f"  sha256: {version.sha256}, {len(version.raw):,} bytes")
    lines += [f"  alias: {a.old} -> {a.new} until {a.until}" for a in version.aliases]
    return lines


def _show(args: argparse.Namespace) -> int:
    version = _read_any(args.file, args.authority)
    print("\n".join(_summary(version)))
    if args.authority is None and not version.bootstrap:
        print("  (signature not checked: give --authority CERT)")
    if args.agencies:
        directory = version.directory
        for code in directory.codes:
            agency = directory.agency(code)
            node = "node" if agency.runs_node else f"served by {agency.serving_node}"
            print(f"  {'  ' * directory.depth(code)}{code}  {agency.name}  ({node})")
    return 0


def _diff(args: argparse.Namespace) -> int:
    old, new = _read_any(args.old), _read_any(args.new)
    lines = diff(old.directory, new.directory)
    old_aliases = {(a.old, a.new, a.until) for a in old.aliases}
    lines += [
        f"+ alias {a.old} -> {a.new} until {a.until}"
        for a in new.aliases
        if (a.old, a.new, a.until) not in old_aliases
    ]
    print("\n".join(lines) if lines else "no difference")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    in_force = load_in_force(config)
    holder = DirectoryHolder(
        in_force.version,
        in_force.since,
        policy=config.directory.on_expiry,  # type: ignore[arg-type]
    )
    now = time.time()
    expiry = holder.expiry(now)
    files = VersionFiles(config.node.state_dir)
    refused = (
        sorted(p.name for p in files.refused_dir.glob("*.json"))
        if files.refused_dir.is_dir()
        else []
    )
    if args.json:
        print(
            json.dumps(
                {
                    "node": config.node.code,
                    "version": in_force.version.number,
                    "since": in_force.since,
                    "expires": in_force.version.expires.timestamp()
                    if in_force.version.expires
                    else None,
                    "expiry": expiry.state,
                    "file": str(in_force.path),
                    "waiting": [p.name for p in files.incoming()],
                    "refused": refused,
                },
                indent=2,
            )
        )
        return 0
    since = dt.datetime.fromtimestamp(in_force.since, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{config.node.code}: {in_force.version.describe()}")
    print(f"  in force since {since}, from {in_force.path}")
    print(f"  {expiry.message}")
    for path in files.incoming():
        print(f"  waiting to be applied: {path.name}")
    for name in refused:
        print(f"  refused: {name}")
    return 0 if expiry.ok else 1
