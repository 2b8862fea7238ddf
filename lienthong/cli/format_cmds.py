"""Sub-commands of the format area: ``validate``, ``inspect`` and ``new``.

Files are read and written here; everything else is the pure :mod:`lienthong.edxml` core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from lienthong.edxml import EdocPackage, Package, new_edoc, validate
from lienthong.edxml.build import build
from lienthong.edxml.model import STATUS_CODES
from lienthong.edxml.parse import mime_type_for
from lienthong.errors import LienthongError, PeerInputError

_PRIORITIES = ("normal", "urgent", "very urgent", "express", "timed express")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    cmd = sub.add_parser("validate", help="check edXML packages against the format rules")
    cmd.add_argument("files", nargs="+", metavar="FILE", type=Path)
    cmd.add_argument(
        "--strict",
        action="store_true",
        help="deviations from QCVN 102 fail too (default: they are printed as warnings)",
    )
    cmd.set_defaults(func=cmd_validate)

    cmd = sub.add_parser("inspect", help="print a readable summary of an edXML package")
    cmd.add_argument("file", metavar="FILE", type=Path)
    cmd.set_defaults(func=cmd_inspect)

    cmd = sub.add_parser("new", help="write a new unsigned document package")
    cmd.add_argument("--from", dest="from_code", required=True, metavar="CODE")
    cmd.add_argument("--to", dest="to_codes", action="append", required=True, metavar="CODE")
    cmd.add_argument("--subject", required=True, metavar="TEXT")
    cmd.add_argument("--attach", action="extend", nargs="+", default=[], metavar="FILE", type=Path)
    cmd.add_argument("--number", default="1", metavar="N")
    cmd.add_argument("--notation", default="VT", metavar="X")
    cmd.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="where to write the package (default: standard output)",
    )
    cmd.set_defaults(func=cmd_new)


def _read(path: Path, what: str = "file") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LienthongError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def cmd_validate(args: argparse.Namespace) -> int:
    """Print ``FILE: valid`` (with a ``FILE: warning: PATH: MESSAGE`` line per deviation) or
    every error as ``FILE: PATH: MESSAGE``; 1 if any file has an error, or with ``--strict``
    a deviation."""
    status = 0
    for path in args.files:
        result = validate(_read(path))
        refusals = result.refusals(strict=args.strict)
        if not refusals:
            print(f"{path}: valid" + (" (with deviations)" if result.deviations else ""))
        else:
            status = 1
        for problem in result.problems:
            print(f"{path}: {problem.path}: {problem.message}")
        for deviation in result.deviations:
            label = "deviation" if args.strict else "warning"
            print(f"{path}: {label}: {deviation.path}: {deviation.message} [{deviation.kind}]")
    return status


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print a readable summary of one package and every finding; 1 when it has an error.

    A file whose model cannot be read (or that is not in the QCVN 102 layout) says why
    instead of printing a summary that would leave things out.
    """
    result = validate(_read(args.file))
    if result.package is None:
        reasons = "; ".join(str(p) for p in result.problems)
        raise PeerInputError(f"{args.file}: no package can be read from this file: {reasons}")
    for problem in result.problems:
        print(f"error:        {problem.path}: {problem.message}")
    if result.ok:
        print("\n".join(summary(result.package)))
    else:
        # The model of a package with errors may lack what the errors name (attachments
        # where the standard has none): never print a count that leaves them out.
        print(f"{args.file}: cannot be processed as QCVN 102; the header reads:")
        print("\n".join(summary(result.package, attachments=False)))
    for deviation in result.deviations:
        print(f"deviation:    {deviation.path}: {deviation.message} [{deviation.kind}]")
    return 0 if result.ok else 1


def summary(package: Package, *, attachments: bool = True) -> list[str]:
    """The lines ``inspect`` prints for ``package``; ``attachments=False`` leaves out the
    attachment lines (for a package whose attachments could not all be read)."""
    lines = [
        f"kind:         {package.kind}",
        f"DocumentId:   {package.document_id}",
        f"sender:       {package.sender} ({package.from_.organ_name})",
        f"signed:       {'yes' if package.signed else 'no'}",
    ]
    if isinstance(package, EdocPackage):
        other = package.other_info
        priority = other.priority if other is not None else None
        label = (
            _PRIORITIES[priority]
            if priority is not None and 0 <= priority < len(_PRIORITIES)
            else "not given"
        )
        business = package.business
        lines += [
            "recipients:   " + ", ".join(f"{o.organ_id} ({o.organ_name})" for o in package.to),
            f"number:       {package.code.number}/{package.code.notation}",
            f"subject:      {package.subject}",
            f"date:         {_or_missing(package.promulgation.date)}",
            f"priority:     {priority if priority is not None else '-'} ({label})",
            "business:     "
            + (
                "new (no business block)"
                if business is None
                else f"{business.doc_type.name.lower()} of {business.document_id}"
            ),
        ]
        if attachments:
            lines.append(f"attachments:  {len(package.attachments)}")
            lines += [
                f"  {a.name} ({a.content_type}, {len(a.content)} bytes)"
                for a in package.attachments
            ]
    else:
        meaning = STATUS_CODES.get(package.status_code, "unknown code")
        lines += [
            f"status:       {package.status_code} ({meaning})",
            f"description:  {package.description or ''}",
            f"time:         {package.timestamp.isoformat(sep=' ')}",
        ]
    lines.append(f"trace:        {len(package.traces)} hop(s)")
    lines += [
        f"  {t.organ_id or '(no agency)'} at {_or_missing(t.timestamp)}" for t in package.traces
    ]
    return lines


def _or_missing(value: dt.date | None) -> str:
    """A date or timestamp as ISO text (with a space before the time), or ``(missing)``."""
    if value is None:
        return "(missing)"
    return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()


def cmd_new(args: argparse.Namespace) -> int:
    """Write a new unsigned edoc to ``--output`` or standard output."""
    files = [(p.name, _read(p, "attachment"), mime_type_for(p.name)) for p in args.attach]
    try:
        package = new_edoc(
            from_code=args.from_code,
            to_codes=args.to_codes,
            subject=args.subject,
            attachments=files,
            today=dt.date.today(),
            number=args.number,
            notation=args.notation,
        )
        data = build(package)
    except ValueError as exc:
        raise LienthongError(str(exc)) from exc
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            args.output.write_bytes(data)
        except OSError as exc:
            raise LienthongError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    return 0
