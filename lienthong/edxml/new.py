"""Make a new document package from the few facts a person gives on the command line."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from lienthong.edxml._layout import document_id_for
from lienthong.edxml.build import manifest_for
from lienthong.edxml.codes import parse_code
from lienthong.edxml.model import (
    Attachment,
    Code,
    DocumentType,
    EdocPackage,
    Organization,
    OtherInfo,
    PromulgationInfo,
    SignerInfo,
)

__all__ = ["new_edoc"]


def new_edoc(
    *,
    from_code: str,
    to_codes: Sequence[str],
    subject: str,
    attachments: Sequence[tuple[str, bytes, str]],
    today: dt.date,
    number: str = "1",
    notation: str = "VT",
    place: str = "",
    from_name: str | None = None,
    signer: str | None = None,
) -> EdocPackage:
    """An unsigned edoc from ``from_code`` to ``to_codes`` with ``(name, bytes, mime)`` files.

    The agency codes are checked (``CodeError`` names the bad one); the DocumentId is built
    from the sender, ``today``, ``number`` and ``notation``. Agency names default to the codes,
    the signer's name to the sending agency's name (QCVN 102 requires a SignerInfo, and an
    empty one is a deviation), the document type to 0 (unspecified), the priority to 0.
    """
    parse_code(from_code)
    for code in to_codes:
        parse_code(code)
    if not to_codes:
        raise ValueError("a document needs at least one recipient")
    files = tuple(
        Attachment(content_id=f"{i}", name=name, content_type=mime, content=content)
        for i, (name, content, mime) in enumerate(attachments, start=1)
    )
    return EdocPackage(
        from_=Organization(from_code, from_name or from_code),
        to=tuple(Organization(code, code) for code in to_codes),
        code=Code(number, notation),
        promulgation=PromulgationInfo(place, today),
        document_type=DocumentType(0),
        subject=subject,
        signer=SignerInfo(full_name=signer or from_name or from_code),
        document_id=document_id_for(from_code, today, number, notation),
        other_info=OtherInfo(priority=0),
        manifest=manifest_for(files),
        attachments=files,
    )
