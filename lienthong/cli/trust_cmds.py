"""Sub-commands of the trust area: ``pki init``, ``sign``, ``verify``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lienthong import keyfiles
from lienthong.edxml.codes import code_problem
from lienthong.errors import ConfigError, LienthongError
from lienthong.trust import pki
from lienthong.trust.keys import PrivateKey
from lienthong.trust.sign import ALGORITHMS, sign_package
from lienthong.trust.verify import VerifyPolicy, verify_package

DEV_CA_NAME = "lienthong development CA"
DEV_WARNING = (
    "This is a DEVELOPMENT certificate authority, not for production: its key is stored"
    " unprotected. Production agencies use certificates from the state CA."
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    pki_parser = sub.add_parser("pki", help="development certificate authority")
    pki_sub = pki_parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    init = pki_sub.add_parser(
        "init",
        help="create (or extend) a development CA with agency and broker certificates",
        description=DEV_WARNING,
    )
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument("--ca", default=DEV_CA_NAME, metavar="NAME")
    init.add_argument("--agency", action="extend", nargs="+", default=[], metavar="CODE")
    init.add_argument("--broker", action="extend", nargs="+", default=[], metavar="NAME")
    init.add_argument("--key-type", choices=("rsa", "ec"), default="rsa")
    init.set_defaults(func=cmd_pki_init)

    sign = sub.add_parser("sign", help="sign an edXML package (XML-DSig enveloped)")
    sign.add_argument("file", type=Path, metavar="FILE")
    sign.add_argument("--key", required=True, metavar="KEY")
    sign.add_argument("--cert", required=True, metavar="CERT")
    sign.add_argument("--chain", metavar="PEM", help="intermediate CA certificates")
    _passphrase_options(sign)
    sign.add_argument("--algorithm", choices=sorted(ALGORITHMS), help="default: from the key")
    sign.add_argument("--replace", action="store_true", help="replace an existing signature")
    sign.add_argument("-o", "--output", type=Path, metavar="OUT", help="default: stdout")
    sign.set_defaults(func=cmd_sign)

    verify = sub.add_parser("verify", help="verify signed edXML packages")
    verify.add_argument("files", type=Path, nargs="+", metavar="FILE")
    verify.add_argument("--trust", required=True, action="append", metavar="DIR|FILE")
    verify.add_argument("--crl", action="extend", nargs="+", default=[], metavar="FILE")
    verify.add_argument("--allow-sha1", action="store_true")
    verify.add_argument(
        "--at", type=_timestamp, metavar="ISO-TIME", help="check certificates as of this time"
    )
    verify.set_defaults(func=cmd_verify)


def _passphrase_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", metavar="FILE")
    group.add_argument("--passphrase-env", metavar="VAR")


def _timestamp(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to a file that must not exist yet; False (untouched) when it does."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return True


def _write_pair(directory: Path, stem: str, issued: pki.CertifiedKey) -> None:
    # Key first: a crash between the two leaves a key without certificate, never the reverse.
    _write_new(directory / f"{stem}.key", issued.key_pem(), 0o600)
    _write_new(directory / f"{stem}.crt", issued.cert_pem(), 0o644)


def _existing(directory: Path, stem: str) -> bool:
    key, crt = directory / f"{stem}.key", directory / f"{stem}.crt"
    if key.exists() != crt.exists():
        raise ConfigError(f"{directory}: {stem}.key and {stem}.crt must both exist or neither")
    return key.exists()


def open_dev_ca(
    directory: Path, name: str = DEV_CA_NAME, key_type: pki.KeyType = "rsa"
) -> tuple[pki.CertifiedKey, bool]:
    """The development CA kept in ``directory`` (``ca.key``, ``ca.crt``), made there when
    absent; the flag is True when it was made now."""
    directory.mkdir(parents=True, exist_ok=True)
    if _existing(directory, "ca"):
        ca = pki.CertifiedKey.from_pem(
            keyfiles.read_file(directory / "ca.key", "CA key"),
            keyfiles.read_file(directory / "ca.crt", "CA certificate"),
        )
        return ca, False
    ca = pki.make_ca(name, key_type=key_type)
    _write_pair(directory, "ca", ca)
    return ca, True


def cmd_pki_init(args: argparse.Namespace) -> int:
    """Create DIR/ca.crt+key, then a key pair per agency and broker, keeping existing ones."""
    directory: Path = args.dir
    for code in args.agency:
        problem = code_problem(code)
        if problem:
            raise ConfigError(f"--agency {code}: {problem}")
    print(DEV_WARNING)
    ca, made = open_dev_ca(directory, args.ca, args.key_type)
    print(f"{'wrote' if made else 'kept '}  {directory / 'ca.crt'} ({ca.name})")
    wanted: list[tuple[str, Callable[..., pki.CertifiedKey]]]
    wanted = [(code, pki.issue_agency) for code in args.agency]
    wanted += [(name, issue_broker) for name in args.broker]
    for name, issue in wanted:
        if _existing(directory, name):
            print(f"kept   {directory / name}.crt")
            continue
        _write_pair(directory, name, issue(ca, name, key_type=args.key_type))
        print(f"wrote  {directory / name}.crt and .key")
    return 0


def issue_broker(
    ca: pki.CertifiedKey,
    name: str,
    *,
    key_type: pki.KeyType = "rsa",
    key: PrivateKey | None = None,
) -> pki.CertifiedKey:
    """A development broker certificate for host ``name``, also valid for this machine
    (``localhost``, 127.0.0.1): a node reaches its own broker by either."""
    hosts = ["localhost", "127.0.0.1"]
    if name not in hosts:
        hosts.append(name)
    return pki.issue_server(ca, name, hosts, key_type=key_type, key=key)


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign FILE with KEY/CERT and write the signed package to OUT or stdout."""
    passphrase = keyfiles.read_passphrase(args.passphrase_file, args.passphrase_env)
    identity = keyfiles.load_identity(args.key, args.cert, passphrase, args.chain)
    data = keyfiles.read_file(args.file, "package")
    try:
        signed = sign_package(data, identity, algorithm=args.algorithm, replace=args.replace)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    except LienthongError as exc:
        raise type(exc)(f"{args.file}: {exc}") from exc
    if args.output is None:
        sys.stdout.buffer.write(signed)
        sys.stdout.buffer.flush()
    else:
        args.output.write_bytes(signed)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify each FILE; print the outcome and reasons; exit 0 only when all are valid."""
    trust = keyfiles.load_trust_store(args.trust, args.crl)
    policy = VerifyPolicy(allow_sha1=args.allow_sha1)
    status = 0
    for path in args.files:
        result = verify_package(
            keyfiles.read_file(path, "package"), trust, at=args.at, policy=policy
        )
        if result.valid:
            print(f"{path}: valid, signed by {result.signer_subject} for {result.sender}")
        else:
            status = 1
            print(f"{path}: REFUSED")
        for reason in result.reasons:
            print(f"  {reason}")
    return status
