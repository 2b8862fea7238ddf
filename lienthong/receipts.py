"""Status packages a node writes by itself (pure): 01 on arrival, 02 on refusal.

A status package answers one document: its ``ResponseFor`` names the document's sender, number
and notation, promulgation date and DocumentId, and it travels back to that sender like any
package. The reporting agency (``From``) is the recipient that received the document, or this
node's own agency when the refusal happened on the way. The description of a 02 carries every
reason, one per line, in the words the checks produced, so the sender's clerk can act on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from lienthong.edxml.model import EdocPackage, Organization, ResponseFor, StatusPackage

ARRIVED = "01"
REFUSED = "02"

VIETNAM = dt.timezone(dt.timedelta(hours=7), "ICT")
"""Vietnam's time zone (no daylight saving): edXML timestamps are local times."""

_DESCRIPTION_MAX = 500
"""Longest Description validators accept (same limit as Subject)."""


def local_now(now: float) -> dt.datetime:
    """``now`` (seconds since the epoch) as a naive Vietnam local time, as edXML writes it."""
    return dt.datetime.fromtimestamp(now, VIETNAM).replace(tzinfo=None, microsecond=0)


def response_for(document: EdocPackage) -> ResponseFor:
    """The ``ResponseFor`` block that points back at ``document``."""
    return ResponseFor(
        organ_id=document.sender,
        code=f"{document.code.number}/{document.code.notation}",
        promulgation_date=document.promulgation.date,
        document_id=document.document_id,
    )


def status_for(
    document: EdocPackage,
    *,
    reporter: Organization,
    code: str,
    reasons: Sequence[str] = (),
    now: float,
) -> StatusPackage:
    """A status package with ``code`` from ``reporter`` about ``document``.

    ``reasons`` become the Description, one per line, cut to the 500 characters validators
    accept (the full list stays in the refusing node's quarantine record and logs).
    """
    description = "\n".join(reasons) or None
    if description is not None and len(description) > _DESCRIPTION_MAX:
        description = description[: _DESCRIPTION_MAX - 1] + "…"
    return StatusPackage(
        from_=reporter,
        response_for=response_for(document),
        status_code=code,
        timestamp=local_now(now),
        description=description,
    )
