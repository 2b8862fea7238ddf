"""The edXML format (QCVN 102:2016): model, parse, build, validate. Pure: no I/O, no asyncio."""

from lienthong.edxml._tree import PackageError
from lienthong.edxml.build import build, manifest_for
from lienthong.edxml.model import (
    Attachment,
    BusinessDocType,
    EdocPackage,
    Package,
    StatusPackage,
)
from lienthong.edxml.new import new_edoc
from lienthong.edxml.parse import parse
from lienthong.edxml.validate import Problem, ValidationResult, validate

__all__ = [
    "Attachment",
    "BusinessDocType",
    "EdocPackage",
    "Package",
    "PackageError",
    "Problem",
    "StatusPackage",
    "ValidationResult",
    "build",
    "manifest_for",
    "new_edoc",
    "parse",
    "validate",
]
