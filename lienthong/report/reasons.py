"""Why documents were refused, in a few stable labels a monthly report can count (pure).

A status 02 carries its reasons in the Description, one per line, in the words the refusing
node's checks produced (signature verification, certificate checks, edXML validation,
routing, expiry). The first line is the reason that stopped the document (verification
problems come before validation problems), so it alone decides the label. The labels are
column names of the CSV report: they never change meaning; new wordings are matched by
adding patterns, and anything unmatched is counted under ``other``, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReasonLabel:
    """One kind of refusal: its stable key and its names for people."""

    key: str
    vi: str
    en: str


SIGNATURE = ReasonLabel("signature", "Chữ ký số không hợp lệ", "invalid signature")
CERTIFICATE = ReasonLabel("certificate", "Chứng thư số không hợp lệ", "certificate")
FORMAT = ReasonLabel("format", "Sai định dạng edXML", "invalid format")
RECIPIENT = ReasonLabel("recipient", "Không chuyển được tới nơi nhận", "unknown recipient")
EXPIRED = ReasonLabel("expired", "Quá hạn chuyển", "not delivered in time")
OTHER = ReasonLabel("other", "Lý do khác", "other")

REASONS: tuple[ReasonLabel, ...] = (SIGNATURE, CERTIFICATE, FORMAT, RECIPIENT, EXPIRED, OTHER)
"""Every label, in the order reports show them."""

# Order matters: "the signature value does not verify with the certificate it carries" is a
# signature fault although it names a certificate, and "expired on" belongs to certificates
# while a document "not delivered within" its age limit is an expiry.
_RULES: tuple[tuple[ReasonLabel, re.Pattern[str]], ...] = (
    (EXPIRED, re.compile(r"not delivered within")),
    (RECIPIENT, re.compile(r"^recipient \S+:")),
    (FORMAT, re.compile(r"^/")),  # validation problems start with the field's path
    (
        SIGNATURE,
        re.compile(
            r"not signed|signature does not match|signature value does not verify"
            r"|signature is malformed|signature must cover|signatures where|MessageHeader"
            r"|SHA-1|carries no X\.509|names no sender"
        ),
    ),
    (CERTIFICATE, re.compile(r"certificate|\bCRL\b|revoked")),
    (FORMAT, re.compile(r"XML|package is empty|over the limit|cannot be read")),
)


def reason_of(description: str) -> ReasonLabel:
    """The label of a status 02 from its Description (``other`` when none matches)."""
    first = next((line.strip() for line in description.splitlines() if line.strip()), "")
    for label, pattern in _RULES:
        if pattern.search(first):
            return label
    return OTHER
