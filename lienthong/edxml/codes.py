"""Agency identifiers (mã định danh): the QCVN 102 13-character form and the longer Decision 20.

QCVN 102 form: ``L4L4L4.L3L3.L2L2.L1L1L1``, four groups read right to left. The rightmost group
(level 1) is a letter and two digits (``H49`` a province, ``G22`` the Government Office); an
all-zero group means that level is unused. ``000.00.00.H49`` is level 1, ``000.00.12.H49``
level 2, ``000.05.12.H49`` level 3, ``001.05.12.H49`` level 4. The parent by code zeroes the
leftmost non-zero group; a level-1 code has no parent by code (the national tier sits above it,
which the directory names).

The Decision 20/2020 form (up to 35 characters of ``[0-9A-Z.]``, level 1 first) is kept as an
opaque code: its tree position comes from a directory, not from its text.

Malformed codes are reported with :class:`CodeError` (a ``ValueError``) naming the problem; the
functions here never fail any other way on a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lienthong.errors import PeerInputError

_QCVN_RE = re.compile(r"^([0-9A-Z]{3})\.([0-9A-Z]{2})\.([0-9A-Z]{2})\.([A-Z][0-9]{2})$")
_FOUR_GROUPS_LEVEL1_LAST = re.compile(r"^[^.]*\.[^.]*\.[^.]*\.[A-Za-z][0-9]{2}$")
_D20_RE = re.compile(r"^[0-9A-Z]+(\.[0-9A-Z]+)*$")
_D20_MAX = 35
_GROUP_WIDTHS = (3, 2, 2, 3)

CodeKind = Literal["qcvn102", "d20"]


class CodeError(PeerInputError, ValueError):
    """A string that is not a valid agency code; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class AgencyCode:
    """A validated agency code.

    ``groups`` holds the QCVN 102 groups left to right (level 4, 3, 2, 1) and is ``None`` for
    an opaque Decision 20 code.
    """

    text: str
    kind: CodeKind
    groups: tuple[str, str, str, str] | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def level(self) -> int | None:
        """1 for a level-1 unit (ministry, province) down to 4; ``None`` for an opaque code."""
        if self.groups is None:
            return None
        return sum(1 for g in self.groups if not _is_zero(g))

    @property
    def parent(self) -> AgencyCode | None:
        """The parent by code, or ``None`` at level 1 and for opaque codes."""
        if self.groups is None:
            return None
        for i, group in enumerate(self.groups[:3]):
            if not _is_zero(group):
                zeroed = list(self.groups)
                zeroed[i] = "0" * _GROUP_WIDTHS[i]
                return _from_groups(tuple(zeroed))  # type: ignore[arg-type]
        return None

    def ancestors(self) -> list[AgencyCode]:
        """Parents by code, nearest first, ending at the level-1 code."""
        out: list[AgencyCode] = []
        node = self.parent
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    def is_ancestor_of(self, other: AgencyCode) -> bool:
        """True when ``self`` is a strict ancestor of ``other`` by code."""
        return any(a == self for a in other.ancestors())


def _is_zero(group: str) -> bool:
    return group.strip("0") == ""


def _from_groups(groups: tuple[str, str, str, str]) -> AgencyCode:
    return AgencyCode(".".join(groups), "qcvn102", groups)


def parse_code(text: str) -> AgencyCode:
    """Validate ``text`` as an agency code, or raise :class:`CodeError` saying why."""
    if not isinstance(text, str):
        raise CodeError(f"an agency code must be text, not {type(text).__name__}")
    if text != text.strip():
        raise CodeError(f"agency code {text!r} has spaces around it")
    if not text:
        raise CodeError("the agency code is empty")
    match = _QCVN_RE.match(text)
    if match:
        groups: tuple[str, str, str, str] = match.groups()  # type: ignore[assignment]
        used = [not _is_zero(g) for g in groups[:3]]
        # Levels are used from the right: a set group left of an unused one leaves a gap.
        for i in range(2):
            if used[i] and not used[i + 1]:
                raise CodeError(
                    f"agency code {text!r} sets level {4 - i} while level {3 - i} is unused"
                )
        return AgencyCode(text, "qcvn102", groups)
    if _FOUR_GROUPS_LEVEL1_LAST.match(text):
        raise CodeError(
            f"agency code {text!r} is not of the form 000.00.00.X00"
            " (groups of 3, 2, 2 and 3 characters, upper case, level-1 group a letter and"
            " two digits)"
        )
    if len(text) > _D20_MAX:
        raise CodeError(f"agency code {text!r} is longer than {_D20_MAX} characters")
    if not _D20_RE.match(text):
        raise CodeError(
            f"agency code {text!r} may hold only upper-case letters, digits and single dots"
        )
    return AgencyCode(text, "d20")


def code_problem(text: str) -> str | None:
    """The reason ``text`` is not a valid agency code, or ``None`` when it is one."""
    try:
        parse_code(text)
    except CodeError as exc:
        return str(exc)
    return None
